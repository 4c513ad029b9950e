"""Batches of sentences scored in worker processes, one batch at a time each.

`score --file` reads its sentences in batches (`charlm.score`) that do not
depend on one another.  In one process the per-step ufuncs of a batch run
on one core and BLAS uses the second only during the matmuls; P worker
processes with single-threaded BLAS, each reading whole batches, keep both
cores busy throughout (an LSTM 2×256 scoring 10,000 lines of Shakespeare:
57,000–64,000 characters a second against 44,000–51,000, docs/performance.md).
A batch is read whole by one worker, with the same code as in one process
(`inference.network_log_probs`); the numbers agree up to float rounding (BLAS
adds in another order with one thread than with two, docs/commands.md, score).

Protocol, over each worker's standard input and output: this process
writes, once the worker has said b"R" (ready), the model (a JSON
description as an array of bytes, then every parameter) and then, per
batch, the sequences' lengths and their ids laid end to end, every array
in NumPy's .npy format (read with `allow_pickle=False`).  The worker
answers each batch with b"D" and the log-probabilities laid end to end
(float64), or b"E" + a 4-byte length + a UTF-8 message.  A worker has one batch at a
time, handed out longest first as workers become free.  End of input tells
a worker to exit; workers run in their own session, so a Ctrl-C reaches
this process only.  A worker that fails (killed, out of memory) is
reported through `on_failure` and its batch, and those after it, are read
here.
"""

from __future__ import annotations

import io
import json
import os
import select
import subprocess
from collections import deque
from typing import Callable, Iterator

import numpy as np

from charlm import inference, model
from charlm.workers.process import (MAX_AUTO_WORKERS, STARTUP_SECONDS, WorkerError, detach_stdio, ended, error_reply,
                                    read_error, reap, start)

MIN_WORK = 2e11        # matmul FLOPs to read, from which `auto` starts workers (starting them takes about 0.3 s)


def auto_workers(arch: model.Arch, num_tokens: int, num_batches: int, cores: int,
                 posix: bool = os.name == "posix") -> int:
    """The number of workers `score --workers auto` uses: 2 on two cores, for two batches or more and work enough.

    Work enough: num_tokens × `inference.token_flops(arch)` ≥ MIN_WORK, about
    two seconds of one process (an LSTM 2×256: 125,000 tokens; measured
    here, workers start to gain from about 35,000, and read 160,000 tokens
    in 2.9 s against 4.4).
    """
    if not posix or cores < 2 or num_batches < 2 or num_tokens * inference.token_flops(arch) < MIN_WORK:
        return 1
    return min(cores, MAX_AUTO_WORKERS, num_batches)


def batch_log_probs(params, arch: model.Arch, batches: list[list[np.ndarray]], workers: int = 1,
                    on_failure: Callable[[str], None] = lambda msg: None) -> Iterator[tuple[int, list[np.ndarray]]]:
    """(j, the network's log P of every token of each sequence of batches[j]), for every batch, in any order.

    Each batch's sequences are longest first, as `inference.network_log_probs` wants them.
    """
    done: set[int] = set()
    if workers > 1 and len(batches) > 1:
        try:
            pool = ScoreWorkers(params, arch, min(workers, len(batches)))
        except (WorkerError, OSError) as e:
            on_failure(str(e))
        else:
            with pool:
                try:
                    for j, logps in pool.run(batches, range(len(batches))):
                        done.add(j)
                        yield j, logps
                except WorkerError as e:
                    on_failure(str(e))
    for j in range(len(batches)):
        if j not in done:                            # all of them in this process, or what the workers left
            yield j, inference.network_log_probs(params, arch, batches[j])


def _send_array(stream, a: np.ndarray) -> None:
    """`a` in .npy format (written to memory first: NumPy's own writer wants a seekable file)."""
    frame = io.BytesIO()
    np.lib.format.write_array(frame, np.ascontiguousarray(a), allow_pickle=False)
    stream.write(frame.getbuffer())


def _read_array(stream) -> np.ndarray:
    """One array in .npy format from a pipe; EOFError at end of input, ValueError for anything but plain numbers."""
    version = np.lib.format.read_magic(stream)
    header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
    if header is None:
        raise ValueError(f"unsupported .npy version {version}")
    shape, fortran, dtype = header(stream)
    if dtype.hasobject or fortran:
        raise ValueError("only C-ordered arrays of numbers are sent")
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("end of input in the middle of an array")
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()


def _send_batch(stream, seqs: list[np.ndarray]) -> None:
    _send_array(stream, np.array([len(q) for q in seqs], dtype=np.int64))
    _send_array(stream, np.concatenate(seqs).astype(np.int64, copy=False))
    stream.flush()


def _split(flat: np.ndarray, lengths) -> list[np.ndarray]:
    return np.split(flat, np.cumsum(lengths)[:-1])


class ScoreWorkers:
    """P worker processes holding the model; `run` scores batches on them."""

    def __init__(self, params, arch: model.Arch, count: int):
        self.procs: list[subprocess.Popen] = []
        names = sorted(params)
        about = np.frombuffer(json.dumps({"arch": vars(arch), "names": names}).encode(), dtype=np.uint8)
        try:
            for _ in range(count):
                self.procs.append(start(__name__, count))
            for proc in self.procs:
                if not select.select([proc.stdout], [], [], STARTUP_SECONDS)[0]:
                    raise WorkerError(f"a scoring worker did not start within {STARTUP_SECONDS} s")
                self._reply(proc)                                # b"R": it runs, and reads
                _send_array(proc.stdin, about)
                for name in names:
                    _send_array(proc.stdin, params[name])
                proc.stdin.flush()
        except BrokenPipeError:
            self.close(now=True)
            raise WorkerError("a scoring worker exited while starting") from None
        except BaseException:
            self.close(now=True)
            raise

    def run(self, batches: list[list[np.ndarray]], which) -> Iterator[tuple[int, list[np.ndarray]]]:
        """Score batches[j] for j in `which` (longest first), yielding (j, log-probabilities per sequence)."""
        todo = deque(sorted(which, key=lambda j: -sum(len(q) for q in batches[j])))
        busy: dict[subprocess.Popen, int] = {}                   # worker -> the batch it is reading
        for proc in self.procs:
            if todo:
                busy[proc] = self._give(proc, batches, todo.popleft())
        while busy:
            for stream in select.select([proc.stdout for proc in busy], [], [])[0]:
                proc = next(p for p in busy if p.stdout is stream)
                j = busy.pop(proc)
                flat = self._reply(proc)
                if todo:                                         # its next batch, before this one is used
                    busy[proc] = self._give(proc, batches, todo.popleft())
                yield j, _split(flat, [len(q) for q in batches[j]])

    def _give(self, proc, batches, j: int) -> int:
        try:
            _send_batch(proc.stdin, batches[j])
        except OSError:                                          # (BrokenPipeError: it exited)
            raise WorkerError(self._ended(proc, "it stopped reading")) from None
        return j

    def _reply(self, proc) -> np.ndarray | None:
        """b"R" (None), or b"D" and an array; an error reply or an exit raise WorkerError."""
        got = proc.stdout.read(1)
        if got == b"R":
            return None
        if got == b"D":
            try:
                return _read_array(proc.stdout)
            except (ValueError, EOFError) as e:
                raise WorkerError(self._ended(proc, f"a reply was cut short: {e}")) from None
        if got == b"E":
            raise WorkerError(read_error(proc.stdout.read))
        raise WorkerError(self._ended(proc, None if got == b"" else f"unexpected reply {got!r}"))

    @staticmethod
    def _ended(proc, why) -> str:
        return ended(proc, why, "a scoring worker")

    def close(self, now: bool = False) -> None:
        """End the workers: end of input (killed if they do not exit within a few seconds), or
        with `now` (a Ctrl-C, an error: whatever they are reading is not wanted) killed at once."""
        for proc in self.procs:
            if now:
                proc.kill()
            for stream in (proc.stdin, proc.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
        reap(self.procs)
        self.procs = []

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        self.close(now=kind is not None)


# ----------------------------------------------------------------------------
# The worker's side
# ----------------------------------------------------------------------------

def serve(argv: list[str]) -> None:
    """A worker's main loop: read the model, then score batches until end of input (`argv` is empty)."""
    commands, replies = (os.fdopen(fd, mode) for fd, mode in zip(detach_stdio(), ("rb", "wb")))
    replies.write(b"R")
    replies.flush()
    about = json.loads(_read_array(commands).tobytes())
    arch = model.Arch(**about["arch"])
    params = {name: _read_array(commands) for name in about["names"]}
    while True:
        try:
            lengths = _read_array(commands)
        except (ValueError, EOFError):
            return                                    # end of input: the scoring is over (or its process is gone)
        ids = _read_array(commands).astype(np.intp)
        try:
            flat = np.concatenate(inference.network_log_probs(params, arch, _split(ids, lengths)))
            replies.write(b"D")
            _send_array(replies, flat)
        except Exception as e:                        # (MemoryError included)
            replies.write(error_reply(e))
        replies.flush()
