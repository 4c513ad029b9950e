"""The GRU: forward and backward over a whole sequence, and one step for generation (see `charlm.cells`)."""

from __future__ import annotations

import numpy as np

from charlm.allocator import aligned_empty
from charlm.cells.common import _batch_major_inputs, _half_affine, _halve_rows, _initial_gradient, sigmoid


# ----------------------------------------------------------------------------
# GRU (Cho et al. 2014: the reset gate applies to h<t-1> *before* the matmul;
# PyTorch's nn.GRU applies it after), gate blocks in order r, z, n,
# W = [W_hh | W_u] = [[W_hrz, W_urz], [W_hn, W_un]]:
#   [r z] = σ(W_rz [h<t-1>; u<t>])
#   n = tanh(W_n [r·h<t-1>; u<t>])
#   h<t> = (1 - z)·n + z·h<t-1>
# ----------------------------------------------------------------------------

def gru_forward(xh, W, state0, keep=None, gx=None, cache=True, xs=None):
    """The GRU over T steps; see "The gated cells" above for xh, W, gx, keep and xs."""
    H = W.shape[0] // 3
    T, K, B = xh.shape[0] - 1, xh.shape[1], xh.shape[2]
    W_rz = W[: 2 * H] * 0.5                                # σ via tanh(x/2)
    W_n = W[2 * H:]                                        # [W_hn | W_un]
    rxu = aligned_empty((T, K, B), W.dtype)                # [r·h<t-1>; u<t>]
    rxu[:, H:] = xh[:T, H:]
    xs = _batch_major_inputs(xh, H, xs) if cache else None
    rxs = None                                             # [r·h<t-1>; u<t>], batch-major
    if cache:
        rxs = aligned_empty((T, B, K), W.dtype)
        rxs[:, :, H:] = xs[:T, :, H:]
    if gx is not None:
        _halve_rows(gx, ((0, 2 * H),))
    gates = gx if gx is not None or not cache else aligned_empty((T, 3 * H, B), W.dtype)  # [σ(r) σ(z) n]
    hs = xh[1:, :H] if keep is None else aligned_empty((T, H, B), W.dtype)
    buf = aligned_empty((3 * H, B), W.dtype)
    (h,) = state0
    for t in range(T):
        if keep is not None:                               # a new sequence starts from zero
            h = np.multiply(h, keep[t], out=xh[t, :H])
        elif t == 0:
            xh[0, :H] = h
        if xs is not None:
            np.copyto(xs[t, :, :H], xh[t, :H].T)          # h<t-1>, batch-major
        a = gates[t] if gates is not None else buf
        rz, n = a[: 2 * H], a[2 * H:]
        if gx is None:
            np.matmul(W_rz, xh[t], out=rz)
        else:
            rz += np.matmul(W_rz, xh[t], out=buf[: 2 * H])
        np.tanh(rz, out=rz)
        _half_affine(rz)                                   # σ(r), σ(z)
        r, z = rz[:H], rz[H:]
        np.multiply(r, h, out=rxu[t, :H])                  # r·h<t-1>
        if rxs is not None:
            np.copyto(rxs[t, :, :H], rxu[t, :H].T)
        if gx is None:
            np.matmul(W_n, rxu[t], out=n)                  # W_hn (r·h<t-1>) + W_un u<t>
        else:
            n += np.matmul(W_n, rxu[t], out=buf[2 * H:])
        np.tanh(n, out=n)
        h_t = np.subtract(h, n, out=hs[t])                 # h = n + z·(h<t-1> - n)
        h_t *= z
        h_t += n
        h = h_t
    if not cache:
        return hs, (h,), None
    np.copyto(xs[T, :, :H], h.T)
    return hs, (h,), (xh, xs, gates, rxs, W, keep)


def gru_backward(dhs, dstate_final, cache):
    """BPTT through `gru_forward`: da (T, B, 3H) batch-major, (dh<0>,), dW (3H, K)."""
    xh, xs, gates, rxs, W, keep = cache
    T, H, B = dhs.shape
    W_rzT = np.ascontiguousarray(W[: 2 * H, :H].T)         # (H, 2H)
    W_hnT = np.ascontiguousarray(W[2 * H:, :H].T)
    da = aligned_empty((T, B, 3 * H), W.dtype)                    # batch-major, for the dW matmuls
    da_t = aligned_empty((3 * H, B), W.dtype)                     # one step's, feature-major (as in lstm_backward)
    da_r, da_z, da_n = da_t[:H], da_t[H:2 * H], da_t[2 * H:]
    (dh,) = _initial_gradient(dstate_final, 1, (H, B), W.dtype)
    drh = aligned_empty((H, B), W.dtype)
    tmp = aligned_empty((H, B), W.dtype)
    for t in reversed(range(T)):
        r, z, n = gates[t, :H], gates[t, H:2 * H], gates[t, 2 * H:]
        h_prev = xh[t, :H]                                            # (already reset where keep is 0)
        dh += dhs[t]                                                  # dh<t>
        np.subtract(1.0, z, out=tmp); tmp *= dh                       # dh·(1 - z)
        # da_n = dh·(1 - z)·(1 - n²)
        np.multiply(n, n, out=da_n); np.subtract(1.0, da_n, out=da_n); da_n *= tmp
        # da_z = dh·(h<t-1> - n)·z(1 - z)
        np.subtract(h_prev, n, out=da_z); da_z *= z; da_z *= tmp
        np.matmul(W_hnT, da_n, out=drh)                               # d(r·h<t-1>) = W_hnᵀ da_n
        np.multiply(drh, r, out=drh)                                  # r·d(r·h<t-1>)
        # da_r = d(r·h)·h<t-1>·r(1 - r)
        np.subtract(1.0, r, out=da_r); da_r *= h_prev; da_r *= drh
        dh *= z                                                       # to h<t-1>: z·dh
        dh += drh                                                     #   + r·d(r·h)
        dh += np.matmul(W_rzT, da_t[: 2 * H], out=tmp)                #   + W_hrzᵀ [da_r da_z]
        np.copyto(da[t], da_t.T)
        if keep is not None:
            dh *= keep[t]
    da2 = da.reshape(T * B, -1)       # a 2-D view: BLAS reads its column blocks in place
    dW = np.empty_like(W)
    np.matmul(da2[:, : 2 * H].T, xs[:T].reshape(T * B, -1), out=dW[: 2 * H])   # Σ da_rz [h; u]ᵀ
    np.matmul(da2[:, 2 * H:].T, rxs.reshape(T * B, -1), out=dW[2 * H:])         # Σ da_n [r·h; u]ᵀ
    return da, (dh,), dW


def gru_step(gx_t, state, W_hhT, activation=None):
    """One step for inference; W_hhT is W_hhᵀ (H, 3H), contiguous."""
    (h,) = state
    H = h.shape[-1]
    rz = sigmoid(gx_t[:, : 2 * H] + np.dot(h, W_hhT[:, : 2 * H]))
    r, z = rz[:, :H], rz[:, H:]
    n = np.tanh(gx_t[:, 2 * H:] + np.dot(r * h, W_hhT[:, 2 * H:]))
    return (n + z * (h - n),)
