"""The vanilla RNN, one step at a time (the equation of the course notes):

    a<t> = g(W_aa a<t-1> + W_ax x<t> + b_a)        g = tanh or relu

Shapes: N batch, D input (V, the one-hot vocabulary, in layer 0; H above),
H hidden.  Parameters p: W_aa (H, H), W_ax (H, D), b_a (H,).
"""

from __future__ import annotations

from charlm.reference.ops import ACTIVATION, ACTIVATION_GRAD, linear_backward, linear_forward

KEYS = ("W_aa", "W_ax", "b_a")


def rnn_step_forward(x, a_prev, p, activation="tanh"):
    """One step.  x (N, D), a_prev (N, H) -> a_next (N, H), cache."""
    z = linear_forward(a_prev, x, p["W_aa"], p["W_ax"], p["b_a"])   # W_aa a<t-1> + W_ax x<t> + b_a
    a_next = ACTIVATION[activation](z)                               # g(z)
    return a_next, (x, a_prev, a_next, p, activation)


def rnn_step_backward(da_next, cache):
    """Backward through one step, given da_next = dL/da<t> (N, H).

    Returns dx (N, D), da_prev (N, H) and the parameter gradients
    {W_aa, W_ax, b_a} (each the shape of its parameter).
    """
    x, a_prev, a_next, p, activation = cache
    dz = da_next * ACTIVATION_GRAD[activation](a_next)     # tanh' = 1 − a², relu' = [a > 0]
    da_prev, dx, dW_aa, dW_ax, db_a = linear_backward(dz, a_prev, x, p["W_aa"], p["W_ax"])
    return dx, da_prev, {"W_aa": dW_aa, "W_ax": dW_ax, "b_a": db_a}
