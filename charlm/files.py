"""Files at the edge: opening what the user names, and atomic writes.

Opening: a missing path, a directory, or an unreadable file is a one-line
error of the caller's kind (CorpusError, VocabError, ...), naming the path.

Writing: a temporary file beside the target, fsync, rename.  A reader (or a
crash at any moment) sees either the old file or the new one, never a
partial write.  A failed write leaves the old file untouched and raises a
one-line :class:`CharlmError`.  A symbolic link is written through (its
target is replaced, the link stays); a file that is not a regular file (a
device, a FIFO) is refused, since renaming onto it would replace it.  The
new file gets the old file's permissions, or the usual ones of a new file
(0666 less the umask).
"""

from __future__ import annotations

import io
import os
import stat
import sys
import tempfile
from typing import BinaryIO, Callable

from charlm.errors import CharlmError


_stdin = {"by": None, "data": b""}   # standard input is read once, for one input of a command


def read_stdin(what: str) -> bytes:
    """All of standard input, as the input `what` ("corpus", "checkpoint", ...); refused for a second input."""
    if _stdin["by"] is None:
        _stdin["by"], _stdin["data"] = what, sys.stdin.buffer.read()
    elif _stdin["by"] != what:
        raise CharlmError(f"standard input is already the {_stdin['by']}: the {what} cannot be read from - as well")
    return _stdin["data"]


def forget_stdin() -> None:
    """A new command reads its own standard input (matters when commands run in one process, as in tests)."""
    _stdin["by"], _stdin["data"] = None, b""


def open_user_file(path: str, what: str, error: type[CharlmError] = CharlmError, hint: str = "") -> BinaryIO:
    """Open a file the user named, for reading bytes; refuse clearly what cannot be read.

    `what` names the file in messages ("corpus", "checkpoint", ...); `hint`
    is appended to the not-found message.  "-" is standard input.
    """
    if path == "-":
        return io.BytesIO(read_stdin(what))
    if not os.path.exists(path):
        raise error(f"{what} not found: {path}{hint}")
    if os.path.isdir(path):
        raise error(f"{what} is a directory, not a file: {path}")
    try:
        return open(path, "rb")
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror}") from None


def atomic_write(path: str, write: Callable[[BinaryIO], None]) -> None:
    """Call `write(file)` on a temporary file, then rename it onto `path`."""
    path = os.fspath(path)
    check_output_path(path)
    shown, path = path, os.path.realpath(path)   # through a symbolic link, onto its target
    directory = os.path.dirname(path)
    mode = _new_file_mode(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
        if hasattr(os, "fchmod"):     # (not on Windows before Python 3.13, where mode bits mean little)
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(directory)
    except OSError as e:
        reason = e.strerror or str(e)
        raise CharlmError(f"cannot write {shown}: {reason} (the previous file, if any, is intact)") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def check_output_path(path: str) -> None:
    """Refuse an output path that cannot be replaced by a new regular file."""
    if path == "-":
        raise CharlmError("cannot write this output to - (standard output): give a file name")
    if os.path.isdir(path):
        raise CharlmError(f"cannot write {path}: it is a directory")
    if os.path.exists(path) and not os.path.isfile(path):
        raise CharlmError(f"cannot write {path}: it is not a regular file (a device, FIFO or socket)")


def same_file(a: str, b: str) -> bool:
    """Whether two paths name one existing file (through links)."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def _new_file_mode(path: str) -> int:
    """The permissions of the file being replaced, else 0666 less the umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write_bytes(path: str, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def text_source(path: str, what: str):
    """A text source: a path, or its bytes when it can be read only once.

    "-" is standard input (read once, for one input: `what`); a pipe or FIFO
    (`charlm train <(zcat corpus.gz)`) is read into memory here, since
    training reads its corpus twice (to count, then to encode).
    """
    if path == "-":
        return read_stdin(what)
    if os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path):
        with open_user_file(path, what) as f:
            return f.read()
    return path


def check_writable(path: str, inputs: dict[str, str | list[str] | None] | None = None, replaces=None) -> None:
    """Raise CharlmError now if `path` could not be written at the end (or would replace one of the `inputs`:
    {what: a path, or several}).

    `replaces` = (what, option, test): an existing file may be replaced only
    if `test(path)` says it is such a file (a checkpoint, a vocabulary).
    """
    check_output_path(path)
    for what, given in (inputs or {}).items():
        for source in [given] if isinstance(given, str) or given is None else given:
            if source and source != "-" and same_file(path, source):
                raise CharlmError(f"{path} is the {what}: refusing to write over it (name another output file)")
    directory = os.path.dirname(os.path.abspath(os.path.realpath(path)))
    if not os.path.isdir(directory):
        raise CharlmError(f"cannot write {path}: directory {os.path.dirname(path) or directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise CharlmError(f"cannot write {path}: directory {os.path.dirname(path) or directory} is not writable")
    if replaces is not None and os.path.isfile(path) and not replaces[2](path):
        what, option, _ = replaces
        raise CharlmError(f"{path} exists and is not a charlm {what}: refusing to overwrite it "
                          f"(name another {option}, or remove it)")


def read_capped(path: str, what: str, error: type[CharlmError], limit: int, kind: str) -> bytes:
    """The bytes of a small file the user names (`what`: how to name it), refused before parsing if it holds
    more than `limit` bytes, more than any `kind` needs."""
    with open_user_file(path, what, error) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise error(f"{what} {path} is larger than {limit >> 20} MiB, more than any {kind} needs; refusing to "
                    "parse it")
    return data
