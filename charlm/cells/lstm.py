"""The LSTM: forward and backward over a whole sequence, and one step for generation (see `charlm.cells`)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from charlm.allocator import aligned_empty
from charlm.cells.common import _batch_major_inputs, _half_affine, _halve_rows, _initial_gradient, _matmul_over_time, _sigmoid_scale


# ----------------------------------------------------------------------------
# LSTM, gate blocks in order i, f, g, o:
#   [i f g o] = W [h<t-1>; u<t>]           W = [W_hh | W_u]
#   c<t> = σ(f)·c<t-1> + σ(i)·tanh(g)
#   h<t> = σ(o)·tanh(c<t>)
# ----------------------------------------------------------------------------

def lstm_forward(xh, W, state0, keep=None, gx=None, cache=True, xs=None, units=None, sync=None):
    """The LSTM over T steps; see "The gated cells" above for xh, W, gx, keep and xs.

    Split by hidden units (`charlm.workers.units`), a process computes the
    gate rows of its units only: W holds those rows, `units` (a slice) says
    which rows of xh's h part it writes, and `sync()`, called after every
    step, waits until the other processes have written theirs.
    """
    H = W.shape[0] // 4
    T, B = xh.shape[0] - 1, xh.shape[2]
    G = 4 * H
    j = slice(0, H) if units is None else units    # the rows of h<t> in xh that this call writes
    xs = _batch_major_inputs(xh, H, xs) if cache else None
    Ws = W * _sigmoid_scale(4, H, (0, 1, 3), W.dtype)[:, None]    # σ rows halved
    if gx is not None:
        _halve_rows(gx, ((0, 2 * H), (3 * H, 4 * H)))
    gates = gx if gx is not None or not cache else aligned_empty((T, G, B), W.dtype)
    cs = aligned_empty((T, H, B), W.dtype) if cache else None
    tcs = aligned_empty((T, H, B), W.dtype) if cache else None    # tanh(c<t>)
    hs = xh[1:, j] if keep is None else aligned_empty((T, H, B), W.dtype)
    buf = aligned_empty((G, B), W.dtype)
    tmp = aligned_empty((H, B), W.dtype)
    c_bufs = None if cache else aligned_empty((2, H, B), W.dtype)
    g4 = (buf[None] if gates is None else gates).reshape(-1, 4, H, B)   # the gate blocks of each step
    h, c = state0
    if keep is not None:                           # a new sequence starts from zero
        h, c = np.multiply(h, keep[0], out=xh[0, j]), c * keep[0]
    else:
        xh[0, j] = h
    if sync is not None:
        sync()
    for t in range(T):
        if xs is not None:
            np.copyto(xs[t, :, j], xh[t, j].T)    # h<t-1>, batch-major
        if gates is None:                          # pre-activations (σ blocks halved)
            a = np.matmul(Ws, xh[t], out=buf)
        elif gx is None:
            a = np.matmul(Ws, xh[t], out=gates[t])
        else:
            a = gates[t]
            a += np.matmul(Ws, xh[t], out=buf)
        np.tanh(a, out=a)                          # tanh(g); tanh(x/2) for i, f, o
        a4 = g4[0 if gates is None else t]
        i, f, g, o = a4[0], a4[1], a4[2], a4[3]
        _half_affine(a4[:2])                       # σ(i), σ(f)
        _half_affine(o)                            # σ(o)
        c_t = np.multiply(f, c, out=cs[t] if cache else c_bufs[t % 2])   # c = σ(f)·c<t-1>
        c_t += np.multiply(i, g, out=tmp)          #   + σ(i)·tanh(g)
        tc = np.tanh(c_t, out=tcs[t] if cache else tmp)
        h = np.multiply(o, tc, out=hs[t])          # h = σ(o)·tanh(c)
        c = c_t
        if keep is not None and t + 1 < T:         # the next step's state: zero where a sequence starts
            np.multiply(h, keep[t + 1], out=xh[t + 1, j])
            c = c_t * keep[t + 1]
        if sync is not None:
            sync()
    if not cache:
        return hs, (h, c_t), None
    np.copyto(xs[T, :, j], h.T)
    return hs, (h, c_t), (xs, gates, cs, tcs, state0[1], W, keep)


def lstm_backward(dhs, dstate_final, cache, recurrent=None):
    """BPTT through `lstm_forward`: da (T, B, 4H) batch-major, (dh<0>, dc<0>), dW (4H, K).

    dhs (T, H, B) and the states are feature-major; da is the gradient of
    the pre-activations, dW = Σ_t da<t> [h<t-1>; u<t>]ᵀ.  `recurrent(t,
    da<t>, out)`, optional, computes W_hhᵀ da<t> into out (split by units,
    da<t> holds this process's gate rows and the product needs every
    process's: `charlm.workers.units`).
    """
    xs, gates, cs, tcs, c0, W, keep = cache
    T, H, B = cs.shape
    g4 = gates.reshape(T, 4, H, B)
    da = aligned_empty((T, B, 4 * H), W.dtype)                      # batch-major, for the dW matmul
    da_t = aligned_empty((4 * H, B), W.dtype)                       # one step's, feature-major
    da_i, da_f, da_g, da_o = da_t.reshape(4, H, B)
    da_if = da_t[:2 * H].reshape(2, H, B)
    if recurrent is None:
        WT = np.ascontiguousarray(W[:, :H].T)                       # W_hhᵀ (H, G)
        recurrent = lambda t, da_t, out: np.matmul(WT, da_t, out=out)  # noqa: E731
    dh, dc = _initial_gradient(dstate_final, 2, (H, B), W.dtype)
    tmp = aligned_empty((H, B), W.dtype)
    dh_o = aligned_empty((H, B), W.dtype)
    dh_otc = aligned_empty((H, B), W.dtype)
    # Each step's arrays are small and stay in cache, so the local derivatives
    # are computed here, step by step, with in-place ufuncs, into one
    # (G·H, B) buffer that the recurrent matmul reads and that is then copied,
    # transposed, into da<t> (cheaper than writing the steps feature-major
    # and transposing all of da afterwards).
    for t in reversed(range(T)):
        i, f, g, o = g4[t, 0], g4[t, 1], g4[t, 2], g4[t, 3]
        tc = tcs[t]
        c_prev = cs[t - 1] if t > 0 else c0
        if keep is not None:
            c_prev = c_prev * keep[t]
        dh += dhs[t]                                                  # dh<t>
        np.multiply(dh, o, out=dh_o)                                  # dh·σ(o)
        np.multiply(dh_o, tc, out=dh_otc)                             # dh·σ(o)·tanh(c)
        # da_o = dh·σ(o)(1 - σ(o))·tanh(c)
        np.subtract(1.0, o, out=da_o); da_o *= dh_otc
        # dc<t> = dc from step t+1 + dh·σ(o)·(1 - tanh²(c))
        np.multiply(dh_otc, tc, out=tmp); np.subtract(dh_o, tmp, out=tmp)
        dc += tmp
        # [da_i da_f] = dc·σ(1 - σ) of [i f] (one pass over both blocks), then ·tanh(g) and ·c<t-1>
        if_ = g4[t, :2]
        np.subtract(1.0, if_, out=da_if); da_if *= if_; da_if *= dc
        da_i *= g
        da_f *= c_prev
        # da_g = dc·σ(i)·(1 - tanh²(g))
        np.multiply(g, g, out=da_g); np.subtract(1.0, da_g, out=da_g); da_g *= i; da_g *= dc
        dc *= f                                                       # to c<t-1>: σ(f)·dc
        recurrent(t, da_t, dh)                                        # to h<t-1>: W_hhᵀ da<t>
        np.copyto(da[t], da_t.T)
        if keep is not None:
            dh *= keep[t]
            dc *= keep[t]
    return da, (dh, dc), _matmul_over_time(da, xs[:T])


def lstm_step(gx_t, state, W_hhT, activation=None):
    """One step for inference; W_hhT is W_hhᵀ (H, 4H), contiguous."""
    h, c = state
    H = h.shape[-1]
    a = np.dot(h, W_hhT)
    a += gx_t
    a *= _step_scale(H, a.dtype)             # ½ on the σ rows, so that one tanh(a/2) call serves all gates:
    np.tanh(a, out=a)                        # tanh(g); tanh(x/2) for i, f, o
    s = a + 1.0
    s *= 0.5                                 # σ(x) = ½·tanh(x/2) + ½ (its g block is unused)
    c_t = s[:, H:2 * H] * c                  # c = σ(f)·c<t-1>
    c_t += s[:, :H] * a[:, 2 * H:3 * H]      #   + σ(i)·tanh(g)
    return (s[:, 3 * H:] * np.tanh(c_t), c_t)


@lru_cache(maxsize=16)
def _step_scale(H: int, dtype) -> np.ndarray:
    scale = _sigmoid_scale(4, H, (0, 1, 3), dtype)
    scale.flags.writeable = False
    return scale
