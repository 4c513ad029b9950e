"""The GRU, one step at a time, in charlm's form (Cho et al. 2014):

    r = σ(W_ra a<t-1> + W_rx x<t> + b_r)              reset gate
    z = σ(W_za a<t-1> + W_zx x<t> + b_z)              update gate
    n = tanh(W_na (r * a<t-1>) + W_nx x<t> + b_n)     candidate
    a<t> = (1 − z) * n + z * a<t-1>

The reset gate multiplies a<t-1> *before* the matmul W_na (PyTorch's
nn.GRU applies it after: r * (W_na a<t-1> + b_na), other numbers).  In
the course notes' GRU, Γ_r = r, c̃<t> = n and Γ_u = 1 − z.

Shapes: N batch, D input, H hidden.  Parameters p: W_ra, W_za, W_na
(H, H); W_rx, W_zx, W_nx (H, D); b_r, b_z, b_n (H,).
"""

from __future__ import annotations

import numpy as np

from charlm.reference.ops import linear_backward, linear_forward, sigmoid, sigmoid_grad, tanh_grad

GATES = ("r", "z", "n")
KEYS = tuple(k for g in GATES for k in (f"W_{g}a", f"W_{g}x", f"b_{g}"))


def gru_step_forward(x, a_prev, p):
    """One step.  x (N, D), a_prev (N, H) -> a_next (N, H), cache."""
    r = sigmoid(linear_forward(a_prev, x, p["W_ra"], p["W_rx"], p["b_r"]))
    z = sigmoid(linear_forward(a_prev, x, p["W_za"], p["W_zx"], p["b_z"]))
    ra = r * a_prev                                                  # reset before the matmul
    n = np.tanh(linear_forward(ra, x, p["W_na"], p["W_nx"], p["b_n"]))
    a_next = (1.0 - z) * n + z * a_prev
    return a_next, (x, a_prev, r, z, ra, n, p)


def gru_step_backward(da_next, cache):
    """Backward through one step, given da_next = dL/da<t> (N, H).

    Returns dx (N, D), da_prev (N, H) and the gradients of every parameter
    (same keys as p).
    """
    x, a_prev, r, z, ra, n, p = cache
    # a<t> = (1 − z) * n + z * a<t-1>
    dn = da_next * (1.0 - z)
    dz = da_next * (a_prev - n)
    da_prev = da_next * z
    # n = tanh(W_na (r * a<t-1>) + W_nx x<t> + b_n)
    dn_pre = dn * tanh_grad(n)
    dra, dx, dW_na, dW_nx, db_n = linear_backward(dn_pre, ra, x, p["W_na"], p["W_nx"])
    dr = dra * a_prev
    da_prev += dra * r
    # r and z: σ of their own affine maps
    dr_pre = dr * sigmoid_grad(r)
    dz_pre = dz * sigmoid_grad(z)
    da_r, dx_r, dW_ra, dW_rx, db_r = linear_backward(dr_pre, a_prev, x, p["W_ra"], p["W_rx"])
    da_z, dx_z, dW_za, dW_zx, db_z = linear_backward(dz_pre, a_prev, x, p["W_za"], p["W_zx"])
    da_prev += da_r + da_z
    dx += dx_r + dx_z
    grads = {"W_ra": dW_ra, "W_rx": dW_rx, "b_r": db_r,
             "W_za": dW_za, "W_zx": dW_zx, "b_z": db_z,
             "W_na": dW_na, "W_nx": dW_nx, "b_n": db_n}
    return dx, da_prev, grads
