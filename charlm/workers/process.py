"""One way to start, feed, reap and report a worker process.

Both kinds of worker (`charlm.workers.train`, `charlm.workers.score`) are a
fresh Python interpreter running that module's `serve`, with
single-threaded BLAS (each worker's share of the cores), in a session of
its own (a Ctrl-C at the terminal reaches the parent only), talking over
its standard input and output.  A worker answers a request it could not
carry out with an error frame (`error_reply`); the parent turns that, a
worker's exit, or a worker that does not start into `WorkerError` and
carries on in its own process.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")
STARTUP_SECONDS = 120                # a worker that has not started by then is given up
MAX_AUTO_WORKERS = 2                 # what `auto` uses at most (more were never measured; --workers N asks for N)
_BOOT = "import sys; sys.path[0] = {root!r}; from {module} import serve; serve(sys.argv[1:])"


class WorkerError(Exception):
    """A worker failed or exited; the caller carries on in its own process."""


def usable_cores() -> int:
    """Cores this process may run on, at most what OPENBLAS_NUM_THREADS or OMP_NUM_THREADS allow."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:                      # (macOS, Windows)
        n = os.cpu_count() or 1
    for var in THREAD_VARIABLES[:2]:
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) >= 1:
            n = min(n, int(value))
    return n


def start(module: str, count: int, args: list[str] = (), stdin=subprocess.PIPE, pass_fds=(),
          buffered: bool = True) -> subprocess.Popen:
    """A worker process running `module.serve(args)`, one of `count`: its BLAS gets its share of the cores.

    `buffered`: its pipes are buffered streams (read whole frames with `read(n)`), else raw file objects.
    """
    threads = str(max(1, usable_cores() // count))
    env = dict(os.environ, **{var: threads for var in THREAD_VARIABLES})
    boot = _BOOT.format(root=str(Path(__file__).resolve().parents[2]), module=module)
    return subprocess.Popen([sys.executable, "-c", boot, *args], stdin=stdin, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, pass_fds=tuple(pass_fds), env=env,
                            start_new_session=True, bufsize=-1 if buffered else 0)


def detach_stdio() -> tuple[int, int]:
    """In a worker: (commands, replies), its own copies of stdin and stdout; stray output then goes nowhere."""
    from charlm.allocator import keep_freed_memory

    keep_freed_memory()
    commands, replies = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    return commands, replies


def ended(proc: subprocess.Popen, why: str | None, who: str) -> str:
    """What became of a worker that stopped replying: its exit code, or that it hangs (`who`: how to name it)."""
    try:
        code = proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return f"{who} stopped answering ({why})"
    return f"{who} exited with code {code}" + (f" ({why})" if why else "")


def reap(procs) -> None:
    """Wait for each worker to exit (they were told to); one that has not within a few seconds is killed."""
    for proc in procs:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def error_reply(e: BaseException) -> bytes:
    """A worker's answer when its work raised: b"E", a 4-byte length and a UTF-8 message of at most 2,000 bytes."""
    text = f"{type(e).__name__}: {e}".encode("utf-8", "replace")[:2000]
    return b"E" + struct.pack("<I", len(text)) + text


def read_error(read) -> str:
    """The message of an error frame whose b"E" was just read; `read(n)` reads n bytes from the worker."""
    (n,) = struct.unpack("<I", read(4))
    return read(n).decode("utf-8", "replace")


def shared_memory(size: int) -> int:
    """A file descriptor of `size` bytes of memory no other process can find (memfd, else an unlinked temp file)."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("charlm-step")
    else:
        fd, path = tempfile.mkstemp(prefix="charlm-step-")
        os.unlink(path)
    try:
        os.ftruncate(fd, size)
    except OSError:
        os.close(fd)
        raise
    return fd


def read_exactly(fd: int, n: int) -> bytes:
    """n bytes from a worker's pipe; its end in the middle is a WorkerError."""
    out = b""
    while len(out) < n:
        chunk = os.read(fd, n - len(out))
        if not chunk:
            raise WorkerError("a worker process exited in the middle of a reply")
        out += chunk
    return out
