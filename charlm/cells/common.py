"""What the cells' time loops share: σ through tanh, layout swaps, gradient matmuls over time."""

from __future__ import annotations

import numpy as np

from charlm.allocator import aligned_empty, aligned_zeros


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


def _halve_rows(x: np.ndarray, halved: tuple) -> np.ndarray:
    """x (T, F, B) with its feature rows [a, b) of each (a, b) in `halved` times ½, in place."""
    for a, b in halved:
        x[:, a:b] *= x.dtype.type(0.5)
    return x


SWAP_ROWS = 256   # swap_layout moves a feature-major array this many feature rows at a time


def swap_layout(x: np.ndarray) -> np.ndarray:
    """(…, B, F) <-> (…, F, B): a new contiguous array with the last two axes swapped (batch- to feature-major and back).

    From feature-major, the rows go over in blocks of `SWAP_ROWS`: a block of
    one step, 256 × 32 floats, is read while it sits in the L1 cache (at
    batch 32 that moves the 4H = 1024 gate rows in about 3.7 ms instead of
    4.3, the 2H + 1 = 513 rows of [h; u] in 1.1 ms instead of 1.6).
    """
    F = x.shape[-2]
    out = aligned_empty(x.shape[:-2] + (x.shape[-1], F), x.dtype)
    if F <= SWAP_ROWS or x.shape[-1] >= F:
        np.copyto(out, np.swapaxes(x, -1, -2))
        return out
    for a in range(0, F, SWAP_ROWS):
        np.copyto(out[..., a:a + SWAP_ROWS], np.swapaxes(x[..., a:a + SWAP_ROWS, :], -1, -2))
    return out


def _initial_gradient(dstate_final, n: int, shape, dtype) -> list:
    """The n gradients flowing into the last state, as fresh aligned arrays (zeros where none is given)."""
    out = [aligned_zeros(shape, dtype) for _ in range(n)]
    if dstate_final is not None:
        for o, d in zip(out, dstate_final):
            o += d
    return out


def _batch_major_inputs(xh: np.ndarray, H: int, xs: np.ndarray | None) -> np.ndarray:
    """xs as given, or built from xh's u rows (the forward fills in the h rows)."""
    if xs is None:
        T1, K, B = xh.shape
        xs = aligned_empty((T1, B, K), xh.dtype)
        np.copyto(xs[:-1, :, H:], np.swapaxes(xh[:-1, H:], 1, 2))
    return xs


def _half_affine(x: np.ndarray) -> None:
    """x <- ½·x + ½ in place (turns tanh(a/2) into σ(a))."""
    x *= 0.5
    x += 0.5
