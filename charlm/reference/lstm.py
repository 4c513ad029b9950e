"""The LSTM, one step at a time, with charlm's gate order i, f, g, o:

    i = σ(W_ia a<t-1> + W_ix x<t> + b_i)        input gate
    f = σ(W_fa a<t-1> + W_fx x<t> + b_f)        forget gate (b_f starts at 1)
    g = tanh(W_ga a<t-1> + W_gx x<t> + b_g)     candidate
    o = σ(W_oa a<t-1> + W_ox x<t> + b_o)        output gate
    c<t> = f * c<t-1> + i * g
    a<t> = o * tanh(c<t>)

In the course notes' LSTM, Γ_u = i, Γ_f = f, c̃<t> = g and Γ_o = o.

Shapes: N batch, D input, H hidden.  Parameters p, for each gate k in
i, f, g, o: W_ka (H, H), W_kx (H, D), b_k (H,).
"""

from __future__ import annotations

import numpy as np

from charlm.reference.ops import linear_backward, linear_forward, sigmoid, sigmoid_grad, tanh_grad

GATES = ("i", "f", "g", "o")
KEYS = tuple(k for g in GATES for k in (f"W_{g}a", f"W_{g}x", f"b_{g}"))


def gate_forward(k, x, a_prev, p):
    """The pre-activation of gate k: W_ka a<t-1> + W_kx x<t> + b_k, (N, H)."""
    return linear_forward(a_prev, x, p[f"W_{k}a"], p[f"W_{k}x"], p[f"b_{k}"])


def lstm_step_forward(x, a_prev, c_prev, p):
    """One step.  x (N, D), a_prev and c_prev (N, H) -> a_next, c_next (N, H), cache."""
    i = sigmoid(gate_forward("i", x, a_prev, p))
    f = sigmoid(gate_forward("f", x, a_prev, p))
    g = np.tanh(gate_forward("g", x, a_prev, p))
    o = sigmoid(gate_forward("o", x, a_prev, p))
    c_next = f * c_prev + i * g
    tc = np.tanh(c_next)
    a_next = o * tc
    return a_next, c_next, (x, a_prev, c_prev, i, f, g, o, tc, p)


def lstm_step_backward(da_next, dc_next, cache):
    """Backward through one step, given da_next = dL/da<t> and dc_next = dL/dc<t> (N, H) from later steps.

    Returns dx (N, D), da_prev (N, H), dc_prev (N, H) and the gradients of
    every parameter (same keys as p).
    """
    x, a_prev, c_prev, i, f, g, o, tc, p = cache
    # a<t> = o * tanh(c<t>)
    do = da_next * tc
    dc = dc_next + da_next * o * tanh_grad(tc)
    # c<t> = f * c<t-1> + i * g
    df = dc * c_prev
    di = dc * g
    dg = dc * i
    dc_prev = dc * f
    # each gate's pre-activation: σ' for i, f, o; tanh' for g
    dpre = {"i": di * sigmoid_grad(i), "f": df * sigmoid_grad(f),
            "g": dg * tanh_grad(g), "o": do * sigmoid_grad(o)}
    da_prev = np.zeros_like(a_prev)
    dx = np.zeros_like(x)
    grads = {}
    for k in GATES:
        da_k, dx_k, grads[f"W_{k}a"], grads[f"W_{k}x"], grads[f"b_{k}"] = linear_backward(
            dpre[k], a_prev, x, p[f"W_{k}a"], p[f"W_{k}x"])
        da_prev += da_k
        dx += dx_k
    return dx, da_prev, dc_prev, grads
