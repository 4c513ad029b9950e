"""A training step shared by worker processes, each on its rows of the batch.

The B rows of a batch are independent sequences: no row's forward or
backward pass reads another's.  With P workers, worker p takes the rows
R_p (a contiguous share, B/P of them) and computes

    loss_p  = −Σ_{t, b ∈ R_p} log P(y<t>_b | y<1..t-1>_b) / (T·B)
    grads_p = ∂loss_p/∂θ

dividing by the whole batch's token count T·B, so that

    loss = Σ_p loss_p,    grads = Σ_p grads_p

are the mean loss and its gradient, the same numbers one process computes
(up to the order in which floats are added).  This process sums them and
takes the optimizer step; the workers read the weights, the rows' inputs,
carried states and dropout masks from one block of shared memory and
write their gradients, final states and losses back into it.

Why processes: a step's time loops are per-step ufuncs, which NumPy runs on
one core, with Python in between; BLAS uses the other core only during the
matmuls.  Threads would share one interpreter lock.  Two processes with
single-threaded BLAS, each on half the batch, keep both cores busy
throughout; but each half's step matmuls read the whole weight matrix,
so a worker needs enough rows per byte of weights (`auto_workers` below;
measurements in docs/performance.md).  An LSTM's step is split by hidden
units instead, where the machine allows (`charlm.workers.units`): the
same protocol and shared block, other arrays in it.

Protocol, over a command pipe (stdin) and a reply pipe (stdout) per
worker: a worker says b"R" when it is ready; b"S" + one byte (1: dropout
masks are given) asks for a step, answered by b"D" (done) or b"E" + a
4-byte length + a UTF-8 message (an error).  This process sends commands
to worker 0 only, and each worker passes a command on to the next before
it starts on it.  End of input tells a worker to exit (and so, as its
end of the next one's pipe closes, the next one), so workers never
outlive this process.  They run in their own session: a Ctrl-C at the
terminal reaches this process only, which finishes the step and saves.
"""

from __future__ import annotations

import json
import mmap
import os
import select
import subprocess

import numpy as np

from charlm import model
from charlm.cells import NUM_STATES
from charlm.workers import units
from charlm.workers.process import (MAX_AUTO_WORKERS, STARTUP_SECONDS, WorkerError, detach_stdio, ended, error_reply,
                                    read_error, read_exactly, reap, shared_memory, start)

ALIGN = 64                           # every shared array starts on a cache line
MIN_ROWS = 8                         # rows of the batch per worker, at least
MAX_WEIGHT_BYTES_PER_ROW = 100 << 10  # of the largest weight matrix a step multiplies, per row of a worker ...
WIDE_ROWS = 16                        # ... or, with this many rows per worker or more,
MAX_WEIGHT_BYTES_PER_WIDE_ROW = 448 << 10   # this much per row

# ----------------------------------------------------------------------------
# How many workers
# ----------------------------------------------------------------------------

def step_weight_bytes(arch: model.Arch, itemsize: int) -> int:
    """Bytes of the largest weight matrix one time step multiplies (see `charlm.cells`)."""
    G, H, V = arch.gates, arch.hidden_size, arch.vocab_size
    if arch.cell == "rnn":
        return H * H * itemsize                                    # W_hh
    K = 2 * H + 1 if arch.num_layers > 1 else H                    # [h; x; 1] above layer 0
    if model.concatenated(arch, 0, MIN_ROWS):
        K = max(K, H + V)                                          # [h; onehot(x)] in layer 0
    return G * H * K * itemsize


def auto_workers(arch: model.Arch, batch_size: int, itemsize: int, cores: int, posix: bool = os.name == "posix") -> int:
    """The number of workers `--workers auto` uses: as many as cores allow with enough rows each.

    A worker's step matmuls multiply its rows by the whole weight matrix,
    and single-threaded BLAS repacks all of it on every call, which its
    rows must pay for (`enough_rows`; the measurements behind it are in
    docs/performance.md, "Worker processes").  Otherwise one process,
    whose BLAS splits each matmul over the cores.
    At most MAX_AUTO_WORKERS: on a machine with more cores each worker's
    BLAS gets its share of them (`process.start`).  An LSTM whose step can be
    split by hidden units (`units.split_by_units`) takes that many workers
    whatever the batch: each reads its share of W only.
    """
    if not posix:
        return 1
    P = min(cores, MAX_AUTO_WORKERS)
    if P > 1 and units.split_by_units(arch, batch_size, P):
        return P                        # split by hidden units: each worker reads its P-th of W (charlm.workers.units)
    weights = step_weight_bytes(arch, itemsize)
    best = 1
    for p in range(2, P + 1):
        if enough_rows(batch_size // p, weights):
            best = p
    return best


def enough_rows(rows: int, weights: int) -> bool:
    """Whether `rows` rows of the batch pay for a worker that multiplies them by `weights` bytes of W each step.

    At least MIN_ROWS rows and MAX_WEIGHT_BYTES_PER_ROW for each; from
    WIDE_ROWS rows on, up to MAX_WEIGHT_BYTES_PER_WIDE_ROW for each (16
    columns of a product pay for much more of the repacking than 8).
    Training with two workers against one process, here: GRU 2×384 and
    2×512 at batch 32 (216 and 384 KiB a row) 8–10 % faster, GRU 2×768 at
    64 (432 KiB) 10 %; but GRU 2×256 at batch 16 (192 KiB for each of 8
    rows) 8 % slower, the RNN 1×2048 at 64 (512 KiB) 9 % slower, and the
    LSTM 2×512 at 32 (512 KiB) and GRU 2×768 at 32 (864 KiB) no faster.
    """
    if rows >= WIDE_ROWS:
        return weights <= MAX_WEIGHT_BYTES_PER_WIDE_ROW * rows
    return rows >= MIN_ROWS and weights <= MAX_WEIGHT_BYTES_PER_ROW * rows


def split_rows(batch_size: int, workers: int) -> list[tuple[int, int]]:
    """Contiguous shares of the batch rows, sizes differing by at most one."""
    return [(s.start, s.stop) for s in units.shares(batch_size, workers)]


# ----------------------------------------------------------------------------
# The shared block: named arrays at fixed offsets, laid out alike on both sides
# ----------------------------------------------------------------------------

def layout(spec: dict) -> tuple[dict, int]:
    """{name: (offset, shape, dtype)} and the total size in bytes, from a run's description."""
    entries = units.layout_entries(spec) if spec["split"] == "units" else _row_entries(spec)
    table, offset = {}, 0
    for name, shape, dt in entries:
        table[name] = (offset, shape, dt)
        size = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        offset += -(-max(size, 1) // ALIGN) * ALIGN
    return table, offset


def _row_entries(spec: dict) -> list[tuple]:
    """What a step split by rows of the batch shares: the weights, and each worker's rows, states and gradients."""
    arch = model.Arch(**spec["arch"])
    dtype, T, H = np.dtype(spec["dtype"]), spec["seq_len"], arch.hidden_size
    shapes = model.param_shapes(arch)
    states = NUM_STATES[arch.cell]
    entries = [(f"param:{k}", shape, dtype) for k, shape in shapes.items()]
    for p, (a, b) in enumerate(spec["rows"]):
        n = b - a
        entries += [(f"x:{p}", (T, n), np.dtype(np.int32)), (f"y:{p}", (T, n), np.dtype(np.int32)),
                    (f"loss:{p}", (), np.dtype(np.float64))]
        for l in range(arch.num_layers):
            entries.append((f"mask:{p}:{l}", (T, H, n), dtype))
            for s in range(states):
                entries += [(f"carry:{p}:{l}:{s}", (n, H), dtype), (f"final:{p}:{l}:{s}", (n, H), dtype)]
        entries += [(f"grad:{p}:{k}", shape, dtype) for k, shape in shapes.items()]
    return entries


def views(table: dict, buf) -> dict:
    """The named arrays of `layout`, as views of the shared buffer."""
    return {name: np.ndarray(shape, dtype=dt, buffer=buf, offset=off) for name, (off, shape, dt) in table.items()}


# ----------------------------------------------------------------------------
# This process's side
# ----------------------------------------------------------------------------

class TrainWorkers:
    """P worker processes and the shared block; `loss_and_grads` is `model.loss_and_grads` for the whole batch."""

    def __init__(self, arch: model.Arch, dtype, batch_size: int, seq_len: int, count: int):
        self._commands = None
        self.arch = arch
        self.rows = split_rows(batch_size, count)
        self.shapes = model.param_shapes(arch)
        self.states = NUM_STATES[arch.cell]
        self.split = "units" if units.split_by_units(arch, batch_size, count) else "rows"
        spec = {"arch": vars(arch), "dtype": np.dtype(dtype).name, "seq_len": seq_len, "rows": self.rows,
                "denominator": batch_size * seq_len, "split": self.split, "batch": batch_size, "workers": count}
        table, size = layout(spec)
        self.procs: list[subprocess.Popen] = []
        # Commands go down a chain: this process writes to worker 0, and each worker passes the
        # command on to the next before it starts.  (Written to each worker in turn, the first
        # wake-up could take this process's core and hold up the next command by a scheduler
        # slice, 4-5 ms; and a worker reading another's command could not be ruled out with one
        # pipe for all.)
        fd = shared_memory(size)
        pipes = []                                          # (read end, write end) of each worker's commands
        try:
            for _ in range(count):
                pipes.append(os.pipe())
            self._commands = pipes[0][1]                    # closed by close() from now on
            self._buf = mmap.mmap(fd, size)
            self.v = views(table, self._buf)
            for p in range(count):
                following = pipes[p + 1][1] if p + 1 < count else -1
                self.procs.append(start(__name__, count, [json.dumps(spec), str(fd), str(p), str(following)],
                                        stdin=pipes[p][0], pass_fds=(fd,) + ((following,) if following >= 0 else ()),
                                        buffered=False))
            for proc in self.procs:
                self._expect(proc, b"R", timeout=STARTUP_SECONDS)
        except BaseException:
            self.close()
            raise
        finally:
            os.close(fd)
            for p, (r, w) in enumerate(pipes):              # the workers hold them now
                os.close(r)
                if p > 0 or len(pipes) < count:             # (pipes[0]'s write end is self._commands once all exist)
                    os.close(w)

    def loss_and_grads(self, params: dict, x, y, carry, masks=None):
        """(loss, grads, final state) of the whole batch, as `model.loss_and_grads` returns them."""
        v = self.v
        for k, p in params.items():
            np.copyto(v[f"param:{k}"], p)
        if self.split == "units":
            units.put(v, x, y, carry, masks)
        else:
            self._put_rows(x, y, carry, masks)
        try:                                     # to worker 0, which passes it on
            os.write(self._commands, b"S" + bytes([masks is not None]))
        except OSError as e:
            raise WorkerError(self._ended(self.procs[0], e)) from None
        self._expect_all(b"D")
        if self.split == "units":
            return units.take(v, self.arch, len(self.procs))
        return self._take_rows()

    def _put_rows(self, x, y, carry, masks) -> None:
        v = self.v
        for p, (a, b) in enumerate(self.rows):
            np.copyto(v[f"x:{p}"], x[:, a:b])
            np.copyto(v[f"y:{p}"], y[:, a:b])
            for l, state in enumerate(carry):
                for s, arr in enumerate(state):
                    np.copyto(v[f"carry:{p}:{l}:{s}"], arr[a:b])
                if masks is not None:
                    np.copyto(v[f"mask:{p}:{l}"], masks[l][:, :, a:b])

    def _take_rows(self):
        v, P = self.v, len(self.rows)
        grads = {k: units.summed(v, f"grad:{{}}:{k}", P) for k in self.shapes}
        final = [tuple(np.concatenate([v[f"final:{p}:{l}:{s}"] for p in range(P)]) for s in range(self.states))
                 for l in range(self.arch.num_layers)]
        return float(units.summed(v, "loss:{}", P)), grads, final

    def _expect_all(self, reply: bytes) -> None:
        """Wait for `reply` from every worker, in the order they answer; the first failure raises WorkerError.

        Split by units, the others are told to stop waiting for the failed one first.
        """
        waiting = {proc.stdout.fileno(): proc for proc in self.procs}
        try:
            while waiting:
                for fd in select.select(list(waiting), [], [])[0]:
                    self._expect(waiting.pop(fd), reply)
        except WorkerError:
            if self.split == "units":
                units.abort(self.v, len(self.procs))
            raise

    def _expect(self, proc, reply: bytes, timeout: float | None = None) -> None:
        """Wait for `reply`; a worker's error message, its exit, or the timeout raise WorkerError."""
        fd = proc.stdout.fileno()
        if timeout is not None:
            if not select.select([fd], [], [], timeout)[0]:
                raise WorkerError(f"a worker process did not start within {timeout} s")
        got = os.read(fd, 1)
        if got == reply:
            return
        if got == b"E":
            raise WorkerError(read_error(lambda n: read_exactly(fd, n)))
        raise WorkerError(self._ended(proc, None if got == b"" else f"unexpected reply {got!r}"))

    @staticmethod
    def _ended(proc, why) -> str:
        return ended(proc, why, "a worker process")

    def close(self) -> None:
        """End the workers (end of input; killed if they do not exit within a few seconds) and free the block."""
        if getattr(self, "_commands", None) is not None:   # end of input: worker 0 exits, and so in turn the others
            os.close(self._commands)
            self._commands = None
        reap(self.procs)
        for proc in self.procs:
            proc.stdout.close()
        self.procs = []
        self.v = None
        buf, self._buf = getattr(self, "_buf", None), None
        if buf is not None:
            try:
                buf.close()
            except BufferError:     # a view is still referenced; the mapping goes with it
                pass


class StepComputer:
    """Computes a training step's loss and gradients: shared by workers, or in this process.

    If a worker fails (it ran out of memory, or was killed), the workers
    are ended, `on_failure(message)` is called, and this step and the
    following ones are computed here: the run goes on.
    """

    def __init__(self, arch: model.Arch, dtype, batch_size: int, seq_len: int, workers: int, on_failure=lambda msg: None):
        self.workers = None
        self.on_failure = on_failure
        self.count = 1
        if workers > 1:
            try:
                self.workers = TrainWorkers(arch, dtype, batch_size, seq_len, workers)
                self.count = workers
            except (WorkerError, OSError) as e:
                on_failure(str(e))

    def loss_and_grads(self, params, arch, x, y, carry, masks=None):
        if self.workers is not None:
            try:
                return self.workers.loss_and_grads(params, x, y, carry, masks)
            except WorkerError as e:
                self.close()
                self.on_failure(str(e))
        return model.loss_and_grads(params, arch, x, y, carry, masks=masks)

    def close(self) -> None:
        if self.workers is not None:
            self.workers.close()
            self.workers = None
            self.count = 1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ----------------------------------------------------------------------------
# The worker's side
# ----------------------------------------------------------------------------

def serve(argv: list[str]) -> None:
    """A worker's main loop: `argv` is the run's description (JSON), the shared block's fd, the worker's index."""
    spec, fd, p, following = json.loads(argv[0]), int(argv[1]), int(argv[2]), int(argv[3])
    commands, replies = detach_stdio()
    table, size = layout(spec)
    buf = mmap.mmap(fd, size)
    os.close(fd)
    v = views(table, buf)
    arch = model.Arch(**spec["arch"])
    barrier = units.Barrier(v["flags"], p) if spec["split"] == "units" else None
    os.write(replies, b"R")
    while True:
        ask = os.read(commands, 2)
        if len(ask) < 2:
            return                                   # end of input: the run is over (or its process is gone)
        if following >= 0:
            try:
                os.write(following, ask)             # the next worker's command
            except OSError:
                following = -1                       # it is gone; the parent finds out when it waits for it
        try:
            with np.errstate(all="ignore"):          # non-finite steps are the parent's to report
                if barrier is not None:
                    units.step(v, spec, p, barrier, bool(ask[1]))
                else:
                    _rows_step(v, spec, arch, p, bool(ask[1]))
            reply = b"D"
        except Exception as e:                       # (MemoryError included)
            if barrier is not None:
                units.abort(v, spec["workers"])      # the others stop waiting for this one
            reply = error_reply(e)
        os.write(replies, reply)


def _rows_step(v: dict, spec: dict, arch: model.Arch, p: int, with_masks: bool) -> None:
    """Worker p's part of a step split by rows: its rows' loss, gradients and final states."""
    layers = range(arch.num_layers)
    states = NUM_STATES[arch.cell]
    params = {k: v[f"param:{k}"] for k in model.param_shapes(arch)}
    carry = [tuple(v[f"carry:{p}:{l}:{s}"] for s in range(states)) for l in layers]
    masks = [v[f"mask:{p}:{l}"] for l in layers] if with_masks else None
    loss, grads, final = model.loss_and_grads(params, arch, v[f"x:{p}"], v[f"y:{p}"], carry, masks=masks,
                                              denominator=spec["denominator"])
    for k, g in grads.items():
        np.copyto(v[f"grad:{p}:{k}"], g)
    for l in layers:
        for s in range(states):
            np.copyto(v[f"final:{p}:{l}:{s}"], final[l][s])
    v[f"loss:{p}"][...] = loss
