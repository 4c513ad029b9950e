"""A training step of an LSTM stack split by hidden units over P worker processes.

Splitting the batch (`charlm.workers.train`) gives each worker B/P rows
but the whole weight matrix, which single-threaded BLAS reads and repacks
on every step's call: for the LSTM's wide W that costs more than the second
core gains.  Split by hidden units instead, worker p owns the units J_p (a
contiguous share of H) of every layer, and with them the gate rows
R_p = {k·H + j : k = i, f, g, o; j ∈ J_p} of W = [W_hh | W_u]:

    forward, step t:    a<t>[R_p] = W[R_p] [h<t-1>; u<t>]        its gates' pre-activations
                        c<t>[J_p], h<t>[J_p]                    elementwise, its units only
    backward, step t:   da<t>[R_p]                              elementwise, its units only
                        dh<t-1>[J_p] = W_hh[:, J_p]ᵀ da<t>       reads every worker's rows of da<t>
    after the loops:    dW[R_p] = Σ_t da<t>[R_p] [h<t-1>; u<t>]ᵀ
                        the input gradient of the layer below:  dx<t>[J_p] = W_ih[:, J_p]ᵀ da<t>

The same equations as one process (`charlm.cells.lstm`, which the workers
run with their rows), the same numbers up to the order of float sums.  Each
worker multiplies by its P-th of W only, and the per-step elementwise
work, which a single process runs on one core, is shared as well.  The
head's logits, loss and gradients are split by time steps: worker p takes
its share of the steps, and this process adds the head's gradients up.

A layer's steps depend on each other, so the workers meet after each step
(h<t> and da<t> are read by all): `Barrier`, a counter per worker in the
shared block that each one raises and then waits on the others' (spinning,
then yielding the core).  That relies on stores reaching other cores in
program order (x86-64's memory model; `ORDERED_STORES`), so other machines
split the batch instead.
"""

from __future__ import annotations

import os
import platform

import numpy as np

from charlm import model
from charlm.cells import lstm_backward, lstm_forward, swap_layout
from charlm.loss import cross_entropy
from charlm.workers.process import WorkerError

ORDERED_STORES = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")
MIN_UNITS = 32          # hidden units per worker, at least
SPINS = 2000            # a barrier spins this many times (about 0.2 ms) before it yields its core each time


def split_by_units(arch: model.Arch, batch: int, workers: int) -> bool:
    """Whether a step of `workers` > 1 processes is split by hidden units (else by rows of the batch)."""
    return (workers > 1 and ORDERED_STORES and os.name == "posix" and arch.cell == "lstm"
            and not arch.bidirectional and arch.hidden_size >= MIN_UNITS * workers
            and model.concatenated(arch, 0, batch))


def shares(n: int, parts: int) -> list[slice]:
    """Contiguous shares of range(n), sizes differing by at most one."""
    edges = np.linspace(0, n, parts + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def gate_rows(H: int, J: slice) -> np.ndarray:
    """R: the rows of the four gate blocks (i, f, g, o) that belong to the units J."""
    return np.concatenate([np.arange(k * H + J.start, k * H + J.stop) for k in range(4)])


def layout_entries(spec: dict) -> list[tuple]:
    """(name, shape, dtype) of everything the split step shares: inputs, outputs and the layers' working arrays."""
    arch = model.Arch(**spec["arch"])
    dtype, T, B, P = np.dtype(spec["dtype"]), spec["seq_len"], spec["batch"], spec["workers"]
    H, V, L = arch.hidden_size, arch.vocab_size, arch.num_layers
    i32, f64 = np.dtype(np.int32), np.dtype(np.float64)
    shapes = model.param_shapes(arch)
    entries = [(f"param:{k}", s, dtype) for k, s in shapes.items()]
    entries += [(f"grad:{k}", s, dtype) for k, s in shapes.items() if k.startswith("layers.")]
    for p in range(P):
        entries += [(f"grad:{p}:{k}", shapes[k], dtype) for k in ("head.weight", "head.bias")]
        entries.append((f"loss:{p}", (), f64))
    entries += [("x", (T, B), i32), ("y", (T, B), i32), ("flags", (P + 1, 8), np.dtype(np.int64))]
    for l in range(L):
        K = H + V if l == 0 else 2 * H + 1
        entries += [(f"mask:{l}", (T, H, B), dtype), (f"xh:{l}", (T + 1, K, B), dtype), (f"xs:{l}", (T + 1, B, K), dtype)]
        entries += [(f"{kind}:{l}:{s}", (B, H), dtype) for kind in ("carry", "final") for s in range(2)]
    entries += [("top", (T, H, B), dtype), ("dtop", (T, H, B), dtype), ("dstep", (2, P, H, B), dtype)]
    if L > 1:
        entries.append(("da", (T, B, 4 * H), dtype))
    return entries


# ----------------------------------------------------------------------------
# The training process's side
# ----------------------------------------------------------------------------

def put(v: dict, x, y, carry, masks) -> None:
    """Copy a step's inputs into the shared block (the weights: `TrainWorkers.loss_and_grads`)."""
    np.copyto(v["x"], x)
    np.copyto(v["y"], y)
    for l, state in enumerate(carry):
        for s, arr in enumerate(state):
            np.copyto(v[f"carry:{l}:{s}"], arr)
        if masks is not None:
            np.copyto(v[f"mask:{l}"], masks[l])


def take(v: dict, arch: model.Arch, workers: int):
    """(loss, grads, final state) of the step the workers have computed."""
    grads = {k: v[f"grad:{k}"].copy() for k in model.param_shapes(arch) if k.startswith("layers.")}
    grads.update({k: summed(v, f"grad:{{}}:{k}", workers) for k in ("head.weight", "head.bias")})
    final = [tuple(v[f"final:{l}:{s}"].copy() for s in range(2)) for l in range(arch.num_layers)]
    return float(summed(v, "loss:{}", workers)), grads, final


def summed(v: dict, name: str, workers: int) -> np.ndarray:
    """Σ_p v[name.format(p)] over the workers' slots, added in worker order (a new array)."""
    total = v[name.format(0)].copy()
    for p in range(1, workers):
        total += v[name.format(p)]
    return total


def abort(v: dict, workers: int) -> None:
    """Tell the workers to stop waiting for each other (one of them failed): the flags' last row."""
    v["flags"][workers, 0] = 1


# ----------------------------------------------------------------------------
# A worker's side
# ----------------------------------------------------------------------------

class Barrier:
    """Calling it waits until every worker has called it as often (see the module's docstring)."""

    def __init__(self, flags: np.ndarray, p: int):
        P = len(flags) - 1
        self.mine = flags[p]
        self.others = [flags[q] for q in range(P) if q != p]
        self.abort = flags[P]
        self.count = 0
        self.parent = os.getppid()

    def __call__(self) -> None:
        self.count += 1
        n = self.count
        self.mine[0] = n
        for other in self.others:
            spins = 0
            while other[0] < n:
                spins += 1
                if spins > SPINS:
                    if self.abort[0] or os.getppid() != self.parent:
                        raise WorkerError("another worker process or the training process failed")
                    os.sched_yield()


def step(v: dict, spec: dict, p: int, barrier: Barrier, with_masks: bool) -> None:
    """Worker p's part of a training step: its units of every layer, its time steps of the head."""
    arch = model.Arch(**spec["arch"])
    P, T, B = spec["workers"], spec["seq_len"], spec["batch"]
    H, L = arch.hidden_size, arch.num_layers
    J = shares(H, P)[p]
    R = gate_rows(H, J)
    params = {k: v[f"param:{k}"] for k in model.param_shapes(arch)}
    dtype = params["head.weight"].dtype
    x = v["x"]
    keep = model.state_keep(arch, x, dtype)
    keep = None if keep is None else np.swapaxes(keep, 1, 2)            # (T, 1, B)
    masks = [v[f"mask:{l}"][:, J] for l in range(L)] if with_masks else None
    for l in range(L):                      # the constant rows of [h; u], its share of the time steps
        model.write_constant_inputs(l, x, H, v[f"xh:{l}"], v[f"xs:{l}"], shares(T + 1, P)[p])
    caches = []
    for l in range(L):
        state0 = tuple(np.ascontiguousarray(v[f"carry:{l}:{s}"][:, J].T) for s in range(2))
        hs, final, cache = lstm_forward(v[f"xh:{l}"], model.concatenated_weights(params, l, R), state0, keep,
                                        xs=v[f"xs:{l}"], units=J, sync=barrier)   # (its first sync: the inputs are in)
        caches.append(cache)
        for s in range(2):
            v[f"final:{l}:{s}"][:, J] = final[s].T
        out = hs if masks is None else hs * masks[l]
        if l + 1 < L:                       # the next layer's u<t> = [out<t>; 1], its units' rows
            v[f"xh:{l + 1}"][:T, H + J.start:H + J.stop] = out
            v[f"xs:{l + 1}"][:T, :, H + J.start:H + J.stop] = np.swapaxes(out, 1, 2)
        else:
            v["top"][:, J] = out
    barrier()                               # the top layer's outputs are all in
    _head(v, params, v["y"], shares(T, P)[p], p, spec["denominator"])
    barrier()                               # and so are the gradients of them
    dhs = v["dtop"][:, J]
    for l in reversed(range(L)):
        if masks is not None:
            dhs = dhs * masks[l]
        W_hh, W_ih = params[f"layers.{l}.weight_hh"], params[f"layers.{l}.weight_ih"]
        da, _, dW = lstm_backward(dhs, None, caches[l], recurrent=_exchange(v["dstep"], W_hh, R, J, p, barrier))
        _put_weight_gradients(v, l, R, H, dW)
        if l > 0:                           # the gradient of the layer below's outputs, its units
            v["da"].reshape(T, B, 4, H)[..., J] = da.reshape(T, B, 4, -1)
            barrier()
            dx = v["da"].reshape(-1, 4 * H) @ W_ih[:, J]
            dhs = swap_layout(dx.reshape(T, B, -1))


def _head(v: dict, params: dict, y: np.ndarray, ts: slice, p: int, denominator: int) -> None:
    """logits = head.weight · top<t> + head.bias for the steps ts; their loss, the head's gradients, d top<t>."""
    top = np.ascontiguousarray(np.swapaxes(v["top"][ts], 1, 2))            # (t, B, H)
    loss, dlogits, _ = cross_entropy(model.head(params, top), y[ts], None, denominator)
    grads, dtop = model.head_backward(params, dlogits, top)
    for k, g in grads.items():
        v[f"grad:{p}:{k}"][...] = g
    v["dtop"][ts] = np.swapaxes(dtop, 1, 2)
    v[f"loss:{p}"][...] = loss


def _exchange(dstep: np.ndarray, W_hh: np.ndarray, R: np.ndarray, J: slice, p: int, barrier: Barrier):
    """`recurrent` for lstm_backward: dh<t-1>[J] = Σ_q (W_hh[R_q]ᵀ da<t>[R_q])[J], a sum over the workers q.

    Each worker multiplies its own rows (all of them in its cache) into its
    slot of the shared (P, H, B) buffer; after a barrier it adds up its
    units' rows of every slot, in worker order.  Two buffers, by step
    parity: a worker writes step t−1's product while a slower one may still
    read step t's.
    """
    WT = np.ascontiguousarray(W_hh[R].T)                                   # (H, its 4·units rows)

    def recurrent(t, da_t, out):
        slots = dstep[t % 2]
        np.matmul(WT, da_t, out=slots[p])
        barrier()
        np.add(slots[0, J], slots[1, J], out=out)
        for q in range(2, len(slots)):
            out += slots[q, J]
    return recurrent


def _put_weight_gradients(v: dict, l: int, R: np.ndarray, H: int, dW: np.ndarray) -> None:
    """Rows R of layer l's gradients from dW = [dW_hh | dW_u] (`model.concatenated_gradients`)."""
    for k, g in zip(("weight_hh", "weight_ih", "bias"), model.concatenated_gradients(dW, l, H)):
        v[f"grad:layers.{l}.{k}"][R] = g
