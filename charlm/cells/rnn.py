"""The vanilla RNN: forward and backward over a whole sequence, and one step for generation (see `charlm.cells`)."""

from __future__ import annotations

import numpy as np

from charlm.allocator import aligned_empty
from charlm.cells.common import _initial_gradient, _matmul_with_previous


# ----------------------------------------------------------------------------
# Vanilla RNN:  h<t> = act(W_ih x<t> + W_hh h<t-1> + b)
# ----------------------------------------------------------------------------

def rnn_forward(gx, state0, W_hh, activation="tanh", keep=None):
    """Vanilla RNN over T steps; `activation` is "tanh" or "relu"."""
    T, B, H = gx.shape
    WT = np.ascontiguousarray(W_hh.T)
    hs = aligned_empty((T, B, H), gx.dtype)
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
    da = aligned_empty(hs.shape, hs.dtype)
    if activation == "tanh":
        np.subtract(1.0, np.multiply(hs, hs, out=da), out=da)
    else:
        np.greater(hs, 0, out=da)
    (dh_next,) = _initial_gradient(dstate_final, 1, (B, H), hs.dtype)
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
