"""The recurrent cells, as pure functions over a whole sequence.

Shapes use one vocabulary: T time steps, B batch, H hidden size, G gates.
Arrays are time-major: `gx[t]` is the (B, G*H) input of step t.

Each cell is three functions:

    forward(gx, state0, W_hh)          -> hs (T, B, H), final state, cache
    backward(dhs, dstate_final, cache) -> dgx (T, B, G*H), dstate0, dW_hh
    step(gx_t, state, W_hhT)           -> state          (inference, one step; W_hhT = W_hhᵀ)

`gx = W_ih x + b` is the input projection of every step, computed by the
caller for the whole sequence at once (it does not depend on the recurrence),
and `dgx` is the gradient with respect to it, from which the caller gets
dW_ih, db and the gradient of the input.  Backward uses only the cache.

How the time loops are kept cheap (the equations are unchanged):
- inside the GRU and LSTM loops the arrays are feature-major, (T, F, B):
  a step's gates are one contiguous (G·H, B) matrix and the recurrent
  product is computed as written, W_hh (G·H × H) · h (H × B) — at batch
  32 BLAS does that about 1.5× faster here than h (B × H) · W_hhᵀ.  One
  transposing copy at each end keeps the interface time- and batch-major;
- per step, one recurrent matmul (two for the GRU, whose reset gate sits
  before its matmul) into a preallocated buffer, then in-place ufuncs;
- σ(x) = ½·tanh(x/2) + ½, with the ½ folded into the weights and inputs,
  so one tanh call activates all the gates of a step;
- everything in backward that does not depend on the recurrence (the local
  derivatives of the gates) is computed for all T steps at once before the
  loop, and dW_hh is one matmul over all steps after it.

A state is a tuple: `(h,)` for rnn and gru, `(h, c)` for lstm.

For inference the GRU and LSTM forwards also take everything feature-major
(`feature_major=True`: gx (T, G·H, B), which they overwrite, states (H, B),
keep (T, 1, B)) and return hs (T, H, B) and the final state the same way,
without a cache: a stack of layers then needs no layout copies at all.

`keep` (optional, (T, B, 1) of 0/1) resets the state: at a step where
keep[t] is 0 the previous state of that row is taken as zero (a new
sequence starts there; its gradient stops there too).
"""

from __future__ import annotations

import numpy as np

CELLS = ("rnn", "gru", "lstm")
ACTIVATIONS = ("tanh", "relu")
NUM_GATES = {"rnn": 1, "gru": 3, "lstm": 4}


def sigmoid(x: np.ndarray) -> np.ndarray:
    """σ(x) = ½·tanh(x/2) + ½: one transcendental, and never overflows."""
    return 0.5 * np.tanh(0.5 * x) + 0.5


def _matmul_with_previous(da: np.ndarray, h0: np.ndarray, hs: np.ndarray) -> np.ndarray:
    """Σ_t da[t]ᵀ h<t-1> without building the shifted copy of hs: two matmuls."""
    out = da[0].T @ h0
    if len(hs) > 1:
        out += _matmul_over_time(da[1:], hs[:-1])
    return out


def _matmul_over_time(da: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Σ_t da[t]ᵀ x[t] as one matmul: (T, B, K), (T, B, N) -> (K, N)."""
    return da.reshape(-1, da.shape[-1]).T @ x.reshape(-1, x.shape[-1])


def _sigmoid_scale(G: int, H: int, sigmoid_blocks, dtype) -> np.ndarray:
    """(G·H,) factors: ½ on the blocks that go through σ, 1 on the others."""
    s = np.ones(G * H, dtype=dtype)
    for k in sigmoid_blocks:
        s[k * H:(k + 1) * H] = 0.5
    return s


def _feature_major(x: np.ndarray, halved: tuple = ()) -> np.ndarray:
    """(T, B, F) -> a new contiguous (T, F, B) array, with the feature rows [a, b) of each (a, b) in `halved` times ½.

    The transposing copy first, then the halving in place on contiguous row
    blocks: half the time of multiplying while transposing.
    """
    out = np.empty((x.shape[0], x.shape[2], x.shape[1]), dtype=x.dtype)
    out[...] = x.transpose(0, 2, 1)
    return _halve_rows(out, halved)


def _halve_rows(x: np.ndarray, halved: tuple) -> np.ndarray:
    """x (T, F, B) with its feature rows [a, b) of each (a, b) in `halved` times ½, in place."""
    for a, b in halved:
        x[:, a:b] *= x.dtype.type(0.5)
    return x


def _loop_layout(gx, state0, keep, feature_major: bool, sigma_rows: tuple):
    """What a GRU/LSTM time loop reads: the gates (T, G, B) with their σ rows halved, keep (T, 1, B), states (H, B).

    From the time- and batch-major interface, these are new arrays; already
    feature-major (inference), gx itself is halved in place and used.
    """
    if feature_major:
        return _halve_rows(gx, sigma_rows), keep, tuple(state0)
    return (_feature_major(gx, halved=sigma_rows), None if keep is None else np.swapaxes(keep, 1, 2),
            tuple(_batch_major(s) for s in state0))


def _batch_major(x: np.ndarray) -> np.ndarray:
    """(T, F, B) or (F, B) -> a new contiguous (T, B, F) or (B, F) array."""
    return np.ascontiguousarray(np.swapaxes(x, -1, -2))


def _half_affine(x: np.ndarray) -> None:
    """x <- ½·x + ½ in place (turns tanh(a/2) into σ(a))."""
    x *= 0.5
    x += 0.5


# ----------------------------------------------------------------------------
# Vanilla RNN:  h<t> = act(W_ih x<t> + W_hh h<t-1> + b)
# ----------------------------------------------------------------------------

def rnn_forward(gx, state0, W_hh, activation="tanh", keep=None):
    """Vanilla RNN over T steps; `activation` is "tanh" or "relu"."""
    T, B, H = gx.shape
    WT = np.ascontiguousarray(W_hh.T)
    hs = np.empty((T, B, H), dtype=gx.dtype)
    h = state0[0]
    for t in range(T):
        if keep is not None:
            h = h * keep[t]                    # a new sequence starts from zero
        a = np.dot(h, WT, out=hs[t])           # W_hh h<t-1>
        a += gx[t]                             # + W_ih x<t> + b
        if activation == "tanh":
            h = np.tanh(a, out=a)
        else:
            h = np.maximum(a, 0, out=a)
    return hs, (h,), (hs, state0[0], W_hh, activation, keep)


def rnn_backward(dhs, dstate_final, cache):
    hs, h0, W_hh, activation, keep = cache
    T, B, H = hs.shape
    # local derivative of the activation, for all steps: tanh' = 1 - h², relu' = [h > 0]
    da = (1.0 - hs * hs) if activation == "tanh" else (hs > 0).astype(hs.dtype)
    dh_next = np.zeros((B, H), dtype=hs.dtype) if dstate_final is None else dstate_final[0].copy()
    for t in reversed(range(T)):
        dh_next += dhs[t]                      # dh<t> = dL/dh<t> + from step t+1
        da[t] *= dh_next                       # da<t> = dh<t> · act'
        np.matmul(da[t], W_hh, out=dh_next)    # to h<t-1>: W_hhᵀ da<t>
        if keep is not None:
            dh_next *= keep[t]
    dW_hh = _matmul_with_previous(da if keep is None else da * keep, h0, hs)
    return da, (dh_next,), dW_hh


def rnn_step(gx_t, state, W_hhT, activation="tanh"):
    """One step for inference; W_hhT is W_hhᵀ (H, H), contiguous."""
    a = np.dot(state[0], W_hhT)
    a += gx_t
    return (np.tanh(a, out=a) if activation == "tanh" else np.maximum(a, 0, out=a),)


# ----------------------------------------------------------------------------
# LSTM, gate blocks in order i, f, g, o:
#   [i f g o] = W_ih x<t> + W_hh h<t-1> + b
#   c<t> = σ(f)·c<t-1> + σ(i)·tanh(g)
#   h<t> = σ(o)·tanh(c<t>)
# ----------------------------------------------------------------------------

def lstm_forward(gx, state0, W_hh, activation=None, keep=None, feature_major=False):
    H = W_hh.shape[1]
    # (T, G, B): pre-activations (σ rows i, f, o halved), then the activated gates
    gates, keep_fm, (h0, c0) = _loop_layout(gx, state0, keep, feature_major, ((0, 2 * H), (3 * H, 4 * H)))
    T, G, B = gates.shape
    scale = _sigmoid_scale(4, H, (0, 1, 3), gx.dtype)   # σ on i, f, o
    W = W_hh * scale[:, None]                            # (G, H), σ rows halved
    g4 = gates.reshape(T, 4, H, B)
    cs = np.empty((T, H, B), dtype=gx.dtype)
    tcs = np.empty((T, H, B), dtype=gx.dtype)     # tanh(c<t>)
    hs = np.empty((T, H, B), dtype=gx.dtype)
    buf = np.empty((G, B), dtype=gx.dtype)
    tmp = np.empty((H, B), dtype=gx.dtype)
    h, c = h0, c0
    for t in range(T):
        if keep is not None:
            h, c = h * keep_fm[t], c * keep_fm[t]  # a new sequence starts from zero
        a = gates[t]
        a += np.matmul(W, h, out=buf)             # pre-activations (σ blocks halved)
        np.tanh(a, out=a)                         # tanh(g); tanh(x/2) for i, f, o
        i, f, g, o = g4[t, 0], g4[t, 1], g4[t, 2], g4[t, 3]
        _half_affine(g4[t, :2])                   # σ(i), σ(f)
        _half_affine(o)                           # σ(o)
        c_t = np.multiply(f, c, out=cs[t])        # c = σ(f)·c<t-1>
        c_t += np.multiply(i, g, out=tmp)         #   + σ(i)·tanh(g)
        tc = np.tanh(c_t, out=tcs[t])
        h = np.multiply(o, tc, out=hs[t])         # h = σ(o)·tanh(c)
        c = c_t
    if feature_major:
        return hs, (h, c), None
    hs_out = _batch_major(hs)
    return hs_out, (_batch_major(h), _batch_major(c)), (gates, cs, tcs, hs, hs_out, state0, (h0, c0), W_hh, keep)


def lstm_backward(dhs, dstate_final, cache):
    gates, cs, tcs, hs, hs_out, (h0, _), (h0_fm, c0_fm), W_hh, keep = cache
    T, H, B = hs.shape
    g4 = gates.reshape(T, 4, H, B)
    da = np.empty_like(gates)
    da4 = da.reshape(T, 4, H, B)
    WT = np.ascontiguousarray(W_hh.T)                                # (H, G)
    dhs = _feature_major(dhs)
    keep_fm = None if keep is None else np.swapaxes(keep, 1, 2)
    if dstate_final is None:
        dh = np.zeros((H, B), dtype=hs.dtype)
        dc = np.zeros((H, B), dtype=hs.dtype)
    else:
        dh, dc = (_batch_major(d) for d in dstate_final)
    tmp = np.empty((H, B), dtype=hs.dtype)
    # Each step's arrays are small and stay in cache, so the local derivatives
    # are computed here, step by step, with in-place ufuncs.
    for t in reversed(range(T)):
        i, f, g, o = g4[t, 0], g4[t, 1], g4[t, 2], g4[t, 3]
        tc = tcs[t]
        c_prev = cs[t - 1] if t > 0 else c0_fm
        if keep is not None:
            c_prev = c_prev * keep_fm[t]
        da_i, da_f, da_g, da_o = da4[t, 0], da4[t, 1], da4[t, 2], da4[t, 3]
        dh += dhs[t]                                                  # dh<t>
        # dc<t> = dc from step t+1 + dh·σ(o)·(1 - tanh²(c))
        np.multiply(tc, tc, out=tmp); np.subtract(1.0, tmp, out=tmp); tmp *= o; tmp *= dh
        dc += tmp
        # da_o = dh·tanh(c)·σ(o)(1 - σ(o))
        np.subtract(1.0, o, out=da_o); da_o *= o; da_o *= tc; da_o *= dh
        # da_i = dc·tanh(g)·σ(i)(1 - σ(i))
        np.subtract(1.0, i, out=da_i); da_i *= i; da_i *= g; da_i *= dc
        # da_f = dc·c<t-1>·σ(f)(1 - σ(f))
        np.subtract(1.0, f, out=da_f); da_f *= f; da_f *= c_prev; da_f *= dc
        # da_g = dc·σ(i)·(1 - tanh²(g))
        np.multiply(g, g, out=da_g); np.subtract(1.0, da_g, out=da_g); da_g *= i; da_g *= dc
        dc *= f                                                       # to c<t-1>: σ(f)·dc
        np.matmul(WT, da[t], out=dh)                                  # to h<t-1>: W_hhᵀ da<t>
        if keep is not None:
            dh *= keep_fm[t]
            dc *= keep_fm[t]
    da = _batch_major(da)
    dW_hh = _matmul_with_previous(da if keep is None else da * keep, h0, hs_out)
    return da, (_batch_major(dh), _batch_major(dc)), dW_hh


def lstm_step(gx_t, state, W_hhT, activation=None):
    """One step for inference; W_hhT is W_hhᵀ (H, 4H), contiguous."""
    h, c = state
    H = h.shape[-1]
    a = np.dot(h, W_hhT)
    a += gx_t
    a[:, 2 * H:3 * H] *= 2.0                 # so that one tanh(a/2) call serves all gates:
    a *= 0.5
    np.tanh(a, out=a)                        # tanh(g) = tanh(2g/2); tanh(x/2) for i, f, o
    g = a[:, 2 * H:3 * H].copy()
    a += 1.0
    a *= 0.5                                 # σ(x) = ½·tanh(x/2) + ½ (the g block is unused)
    c = a[:, H:2 * H] * c + a[:, :H] * g
    return (a[:, 3 * H:] * np.tanh(c), c)


# ----------------------------------------------------------------------------
# GRU (Cho et al. 2014: the reset gate applies to h<t-1> *before* the matmul;
# PyTorch's nn.GRU applies it after), gate blocks in order r, z, n:
#   r = σ(W_ir x + W_hr h<t-1> + b_r)
#   z = σ(W_iz x + W_hz h<t-1> + b_z)
#   n = tanh(W_in x + W_hn (r·h<t-1>) + b_n)
#   h<t> = (1 - z)·n + z·h<t-1>
# ----------------------------------------------------------------------------

def gru_forward(gx, state0, W_hh, activation=None, keep=None, feature_major=False):
    H = W_hh.shape[1]
    gates, keep_fm, (h0,) = _loop_layout(gx, state0, keep, feature_major, ((0, 2 * H),))  # (T, G, B): [σ(r) σ(z) n]
    T, G, B = gates.shape
    W_rz = W_hh[: 2 * H] * 0.5                              # σ via tanh(x/2)
    W_n = np.ascontiguousarray(W_hh[2 * H:])
    rhs = np.empty((T, H, B), dtype=gx.dtype)              # r·h<t-1>
    hs = np.empty((T, H, B), dtype=gx.dtype)
    buf = np.empty((2 * H, B), dtype=gx.dtype)
    bufn = np.empty((H, B), dtype=gx.dtype)
    h = h0
    for t in range(T):
        if keep is not None:
            h = h * keep_fm[t]                             # a new sequence starts from zero
        rz = gates[t, : 2 * H]
        rz += np.matmul(W_rz, h, out=buf)
        np.tanh(rz, out=rz)
        _half_affine(rz)                                   # σ(r), σ(z)
        r, z, n = rz[:H], rz[H:], gates[t, 2 * H:]
        rh = np.multiply(r, h, out=rhs[t])
        n += np.matmul(W_n, rh, out=bufn)
        np.tanh(n, out=n)
        h_t = np.subtract(h, n, out=hs[t])                 # h = n + z·(h<t-1> - n)
        h_t *= z
        h_t += n
        h = h_t
    if feature_major:
        return hs, (h,), None
    hs_out = _batch_major(hs)
    return hs_out, (_batch_major(h),), (gates, rhs, hs, hs_out, state0[0], h0, W_hh, keep)


def gru_backward(dhs, dstate_final, cache):
    gates, rhs, hs, hs_out, h0, h0_fm, W_hh, keep = cache
    T, H, B = hs.shape
    W_rzT = np.ascontiguousarray(W_hh[: 2 * H].T)          # (H, 2H)
    W_nT = np.ascontiguousarray(W_hh[2 * H:].T)
    da = np.empty_like(gates)
    dhs = _feature_major(dhs)
    keep_fm = None if keep is None else np.swapaxes(keep, 1, 2)
    dh = np.zeros((H, B), dtype=hs.dtype) if dstate_final is None else _batch_major(dstate_final[0])
    drh = np.empty((H, B), dtype=hs.dtype)
    tmp = np.empty((H, B), dtype=hs.dtype)
    for t in reversed(range(T)):
        r, z, n = gates[t, :H], gates[t, H:2 * H], gates[t, 2 * H:]
        h_prev = hs[t - 1] if t > 0 else h0_fm
        if keep is not None:
            h_prev = h_prev * keep_fm[t]
        da_r, da_z, da_n = da[t, :H], da[t, H:2 * H], da[t, 2 * H:]
        dh += dhs[t]                                                  # dh<t>
        # da_n = dh·(1 - z)·(1 - n²)
        np.multiply(n, n, out=da_n); np.subtract(1.0, da_n, out=da_n)
        np.subtract(1.0, z, out=tmp); da_n *= tmp; da_n *= dh
        # da_z = dh·(h<t-1> - n)·z(1 - z)
        np.subtract(h_prev, n, out=da_z); da_z *= z; da_z *= tmp; da_z *= dh
        np.matmul(W_nT, da_n, out=drh)                                # d(r·h<t-1>) = W_hnᵀ da_n
        # da_r = d(r·h)·h<t-1>·r(1 - r)
        np.subtract(1.0, r, out=da_r); da_r *= r; da_r *= h_prev; da_r *= drh
        dh *= z                                                       # to h<t-1>: z·dh
        dh += np.multiply(drh, r, out=tmp)                            #   + r·d(r·h)
        dh += np.matmul(W_rzT, da[t, : 2 * H], out=tmp)               #   + W_hrzᵀ [da_r da_z]
        if keep is not None:
            dh *= keep_fm[t]
    da = _batch_major(da)
    da_rz = da[:, :, : 2 * H] if keep is None else da[:, :, : 2 * H] * keep
    dW_hh = np.concatenate((
        _matmul_with_previous(da_rz, h0, hs_out),
        _matmul_over_time(da[:, :, 2 * H:], _batch_major(rhs)),
    ))
    return da, (_batch_major(dh),), dW_hh


def gru_step(gx_t, state, W_hhT, activation=None):
    """One step for inference; W_hhT is W_hhᵀ (H, 3H), contiguous."""
    (h,) = state
    H = h.shape[-1]
    rz = sigmoid(gx_t[:, : 2 * H] + np.dot(h, W_hhT[:, : 2 * H]))
    r, z = rz[:, :H], rz[:, H:]
    n = np.tanh(gx_t[:, 2 * H:] + np.dot(r * h, W_hhT[:, 2 * H:]))
    return (n + z * (h - n),)


FORWARD = {"rnn": rnn_forward, "gru": gru_forward, "lstm": lstm_forward}
BACKWARD = {"rnn": rnn_backward, "gru": gru_backward, "lstm": lstm_backward}
STEP = {"rnn": rnn_step, "gru": gru_step, "lstm": lstm_step}


def zero_state(cell: str, batch: int, hidden: int, dtype) -> tuple:
    """The zero initial state of one layer."""
    n = 2 if cell == "lstm" else 1
    return tuple(np.zeros((batch, hidden), dtype=dtype) for _ in range(n))
