"""Files at the edge: opening what the user names, and atomic writes.

Opening: a missing path, a directory, or an unreadable file is a one-line
error of the caller's kind (CorpusError, VocabError, ...), naming the path.

Writing: a temporary file beside the target, fsync, rename.  A reader (or a
crash at any moment) sees either the old file or the new one, never a
partial write.  A failed write leaves the old file untouched and raises a
one-line :class:`CharlmError`.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
from typing import BinaryIO, Callable

from charlm.errors import CharlmError


def open_user_file(path: str, what: str, error: type[CharlmError] = CharlmError, hint: str = "") -> BinaryIO:
    """Open a file the user named, for reading bytes; refuse clearly what cannot be read.

    `what` names the file in messages ("corpus", "checkpoint", ...); `hint`
    is appended to the not-found message.  "-" is standard input.
    """
    if path == "-":
        return io.BytesIO(sys.stdin.buffer.read())
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
    if os.path.isdir(path):
        raise CharlmError(f"cannot write {path}: it is a directory")
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(directory)
    except OSError as e:
        reason = e.strerror or str(e)
        raise CharlmError(f"cannot write {path}: {reason} (the previous file, if any, is intact)") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


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
