"""Atomic file writes: a temporary file beside the target, fsync, rename.

A reader (or a crash at any moment) sees either the old file or the new one,
never a partial write.  A failed write leaves the old file untouched and
raises a one-line :class:`CharlmError`.
"""

from __future__ import annotations

import os
import tempfile
from typing import Callable, BinaryIO

from charlm.errors import CharlmError


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
