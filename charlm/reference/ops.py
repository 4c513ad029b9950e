"""The pieces every cell is built from: the affine map of a gate, σ, and the activations.

Shapes: N batch, D input, H hidden.  Arrays are batch-major: a row is one
example, so the course notes' column form W_aa a<t-1> is written
a_prev @ W_aa.T here (the same numbers, one row per example).
"""

from __future__ import annotations

import numpy as np


def linear_forward(a_prev, x, W_a, W_x, b):
    """z = W_a a<t-1> + W_x x<t> + b: the pre-activation of one gate.

    a_prev (N, H), x (N, D), W_a (H, H), W_x (H, D), b (H,) -> z (N, H).
    """
    return a_prev @ W_a.T + x @ W_x.T + b


def linear_backward(dz, a_prev, x, W_a, W_x):
    """The gradients of `linear_forward`, given dz = dL/dz (N, H).

    Returns da_prev (N, H), dx (N, D), dW_a (H, H), dW_x (H, D), db (H,).
    """
    da_prev = dz @ W_a          # W_aᵀ dz, one row per example
    dx = dz @ W_x
    dW_a = dz.T @ a_prev        # Σ over the batch of dz a<t-1>ᵀ
    dW_x = dz.T @ x
    db = dz.sum(axis=0)
    return da_prev, dx, dW_a, dW_x, db


def sigmoid(z):
    """σ(z) = 1 / (1 + e^(−z)), written so that it never overflows."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def sigmoid_grad(s):
    """σ'(z) from s = σ(z): s·(1 − s)."""
    return s * (1.0 - s)


def tanh_grad(t):
    """tanh'(z) from t = tanh(z): 1 − t²."""
    return 1.0 - t * t


def relu(z):
    return np.maximum(z, 0.0)


def relu_grad(r):
    """relu'(z) from r = relu(z): 1 where z > 0, else 0."""
    return (r > 0).astype(r.dtype)


ACTIVATION = {"tanh": np.tanh, "relu": relu}
ACTIVATION_GRAD = {"tanh": tanh_grad, "relu": relu_grad}   # from the activation's output
