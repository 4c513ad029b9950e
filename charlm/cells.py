"""The recurrent cells, as pure functions over a whole sequence.

Shapes use one vocabulary: T time steps, B batch, H hidden size, G gates.
Arrays are time-major: `gx[t]` is the (B, G*H) input of step t.

Each cell is three functions:

    forward(gx, state0, W_hh)          -> hs (T, B, H), final state, cache
    backward(dhs, dstate_final, cache) -> dgx (T, B, G*H), dstate0, dW_hh
    step(gx_t, state, W_hh)            -> state          (inference, one step)

`gx = W_ih x + b` is the input projection of every step, computed by the
caller for the whole sequence at once (it does not depend on the recurrence),
and `dgx` is the gradient with respect to it, from which the caller gets
dW_ih, db and the gradient of the input.  Backward uses only the cache.
The weight gradient dW_hh is one matmul over all time steps after the loop.

A state is a tuple: `(h,)` for rnn and gru, `(h, c)` for lstm.
"""

from __future__ import annotations

import numpy as np

CELLS = ("rnn", "gru", "lstm")
ACTIVATIONS = ("tanh", "relu")
NUM_GATES = {"rnn": 1, "gru": 3, "lstm": 4}


def sigmoid(x: np.ndarray) -> np.ndarray:
    """σ(x) = ½·tanh(x/2) + ½: one transcendental, and never overflows."""
    return 0.5 * np.tanh(0.5 * x) + 0.5


def _previous(state0_h: np.ndarray, hs: np.ndarray) -> np.ndarray:
    """h<t-1> for every t: the initial state followed by hs[:-1]."""
    return np.concatenate((state0_h[None], hs[:-1]), axis=0)


def _matmul_over_time(da: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Σ_t da[t]ᵀ x[t] as one matmul: (T, B, K), (T, B, N) -> (K, N)."""
    return da.reshape(-1, da.shape[-1]).T @ x.reshape(-1, x.shape[-1])


# ----------------------------------------------------------------------------
# Vanilla RNN:  h<t> = act(W_ih x<t> + W_hh h<t-1> + b)
# ----------------------------------------------------------------------------

def rnn_forward(gx, state0, W_hh, activation="tanh"):
    """Vanilla RNN over T steps; `activation` is "tanh" or "relu"."""
    T, B, H = gx.shape
    hs = np.empty((T, B, H), dtype=gx.dtype)
    (h,) = state0
    for t in range(T):
        a = gx[t] + h @ W_hh.T
        h = np.tanh(a) if activation == "tanh" else np.maximum(a, 0)
        hs[t] = h
    return hs, (h,), (hs, state0[0], W_hh, activation)


def rnn_backward(dhs, dstate_final, cache):
    hs, h0, W_hh, activation = cache
    T, B, H = hs.shape
    da = np.empty_like(hs)
    dh_next = np.zeros((B, H), dtype=hs.dtype) if dstate_final is None else dstate_final[0]
    for t in reversed(range(T)):
        dh = dhs[t] + dh_next
        # tanh' = 1 - h², relu' = [h > 0]
        da[t] = dh * (1.0 - hs[t] * hs[t]) if activation == "tanh" else dh * (hs[t] > 0)
        dh_next = da[t] @ W_hh
    dW_hh = _matmul_over_time(da, _previous(h0, hs))
    return da, (dh_next,), dW_hh


def rnn_step(gx_t, state, W_hh, activation="tanh"):
    a = gx_t + state[0] @ W_hh.T
    return (np.tanh(a) if activation == "tanh" else np.maximum(a, 0),)


# ----------------------------------------------------------------------------
# LSTM, gate blocks in order i, f, g, o:
#   [i f g o] = W_ih x<t> + W_hh h<t-1> + b
#   c<t> = σ(f)·c<t-1> + σ(i)·tanh(g)
#   h<t> = σ(o)·tanh(c<t>)
# ----------------------------------------------------------------------------

def _lstm_gates(a, H):
    """Activate the (B, 4H) pre-activations in place: σ on i, f, o; tanh on g."""
    a[:, : 2 * H] = sigmoid(a[:, : 2 * H])
    a[:, 2 * H: 3 * H] = np.tanh(a[:, 2 * H: 3 * H])
    a[:, 3 * H:] = sigmoid(a[:, 3 * H:])
    return a


def lstm_forward(gx, state0, W_hh, activation=None):
    T, B, G = gx.shape
    H = G // 4
    gates = np.empty((T, B, G), dtype=gx.dtype)  # activated i, f, g, o
    cs = np.empty((T, B, H), dtype=gx.dtype)
    tcs = np.empty((T, B, H), dtype=gx.dtype)     # tanh(c)
    hs = np.empty((T, B, H), dtype=gx.dtype)
    h, c = state0
    for t in range(T):
        g = _lstm_gates(gx[t] + h @ W_hh.T, H)
        i, f, gg, o = g[:, :H], g[:, H:2 * H], g[:, 2 * H:3 * H], g[:, 3 * H:]
        c = f * c + i * gg
        tc = np.tanh(c)
        h = o * tc
        gates[t], cs[t], tcs[t], hs[t] = g, c, tc, h
    return hs, (h, c), (gates, cs, tcs, hs, state0, W_hh)


def lstm_backward(dhs, dstate_final, cache):
    gates, cs, tcs, hs, (h0, c0), W_hh = cache
    T, B, H = hs.shape
    da = np.empty_like(gates)
    if dstate_final is None:
        dh_next = np.zeros((B, H), dtype=hs.dtype)
        dc_next = np.zeros((B, H), dtype=hs.dtype)
    else:
        dh_next, dc_next = dstate_final
    for t in reversed(range(T)):
        g = gates[t]
        i, f, gg, o = g[:, :H], g[:, H:2 * H], g[:, 2 * H:3 * H], g[:, 3 * H:]
        c_prev = cs[t - 1] if t > 0 else c0
        dh = dhs[t] + dh_next
        do = dh * tcs[t]
        dc = dc_next + dh * o * (1.0 - tcs[t] * tcs[t])
        da[t, :, :H] = dc * gg * i * (1.0 - i)              # through σ(i)
        da[t, :, H:2 * H] = dc * c_prev * f * (1.0 - f)     # through σ(f)
        da[t, :, 2 * H:3 * H] = dc * i * (1.0 - gg * gg)    # through tanh(g)
        da[t, :, 3 * H:] = do * o * (1.0 - o)               # through σ(o)
        dc_next = dc * f
        dh_next = da[t] @ W_hh
    dW_hh = _matmul_over_time(da, _previous(h0, hs))
    return da, (dh_next, dc_next), dW_hh


def lstm_step(gx_t, state, W_hh, activation=None):
    h, c = state
    H = h.shape[-1]
    g = _lstm_gates(gx_t + h @ W_hh.T, H)
    c = g[:, H:2 * H] * c + g[:, :H] * g[:, 2 * H:3 * H]
    return (g[:, 3 * H:] * np.tanh(c), c)


# ----------------------------------------------------------------------------
# GRU (Cho et al. 2014: the reset gate applies to h<t-1> *before* the matmul;
# PyTorch's nn.GRU applies it after), gate blocks in order r, z, n:
#   r = σ(W_ir x + W_hr h<t-1> + b_r)
#   z = σ(W_iz x + W_hz h<t-1> + b_z)
#   n = tanh(W_in x + W_hn (r·h<t-1>) + b_n)
#   h<t> = (1 - z)·n + z·h<t-1>
# ----------------------------------------------------------------------------

def gru_forward(gx, state0, W_hh, activation=None):
    T, B, G = gx.shape
    H = G // 3
    W_hrz, W_hn = W_hh[: 2 * H], W_hh[2 * H:]
    rz = np.empty((T, B, 2 * H), dtype=gx.dtype)
    ns = np.empty((T, B, H), dtype=gx.dtype)
    rhs = np.empty((T, B, H), dtype=gx.dtype)   # r·h<t-1>
    hs = np.empty((T, B, H), dtype=gx.dtype)
    (h,) = state0
    for t in range(T):
        rz[t] = sigmoid(gx[t, :, : 2 * H] + h @ W_hrz.T)
        r, z = rz[t, :, :H], rz[t, :, H:]
        rhs[t] = r * h
        ns[t] = np.tanh(gx[t, :, 2 * H:] + rhs[t] @ W_hn.T)
        h = (1.0 - z) * ns[t] + z * h
        hs[t] = h
    return hs, (h,), (rz, ns, rhs, hs, state0[0], W_hh)


def gru_backward(dhs, dstate_final, cache):
    rz, ns, rhs, hs, h0, W_hh = cache
    T, B, H = hs.shape
    W_hrz, W_hn = W_hh[: 2 * H], W_hh[2 * H:]
    da = np.empty((T, B, 3 * H), dtype=hs.dtype)
    dh_next = np.zeros((B, H), dtype=hs.dtype) if dstate_final is None else dstate_final[0]
    for t in reversed(range(T)):
        r, z, n = rz[t, :, :H], rz[t, :, H:], ns[t]
        h_prev = hs[t - 1] if t > 0 else h0
        dh = dhs[t] + dh_next
        dn = dh * (1.0 - z)
        dz = dh * (h_prev - n)
        dan = dn * (1.0 - n * n)                    # through tanh(n)
        drh = dan @ W_hn                            # d(r·h<t-1>)
        da[t, :, :H] = drh * h_prev * r * (1.0 - r)  # through σ(r)
        da[t, :, H:2 * H] = dz * z * (1.0 - z)      # through σ(z)
        da[t, :, 2 * H:] = dan
        dh_next = dh * z + drh * r + da[t, :, : 2 * H] @ W_hrz
    dW_hh = np.concatenate((
        _matmul_over_time(da[:, :, : 2 * H], _previous(h0, hs)),
        _matmul_over_time(da[:, :, 2 * H:], rhs),
    ))
    return da, (dh_next,), dW_hh


def gru_step(gx_t, state, W_hh, activation=None):
    (h,) = state
    H = h.shape[-1]
    rz = sigmoid(gx_t[:, : 2 * H] + h @ W_hh[: 2 * H].T)
    r, z = rz[:, :H], rz[:, H:]
    n = np.tanh(gx_t[:, 2 * H:] + (r * h) @ W_hh[2 * H:].T)
    return ((1.0 - z) * n + z * h,)


FORWARD = {"rnn": rnn_forward, "gru": gru_forward, "lstm": lstm_forward}
BACKWARD = {"rnn": rnn_backward, "gru": gru_backward, "lstm": lstm_backward}
STEP = {"rnn": rnn_step, "gru": gru_step, "lstm": lstm_step}


def zero_state(cell: str, batch: int, hidden: int, dtype) -> tuple:
    """The zero initial state of one layer."""
    n = 2 if cell == "lstm" else 1
    return tuple(np.zeros((batch, hidden), dtype=dtype) for _ in range(n))
