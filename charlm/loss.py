"""The softmax head: its logits, their log-softmax, and the cross-entropy of the targets with its gradient.

    logits<t> = head.weight · h<t> + head.bias

    loss = −Σ_t log softmax(logits<t>)[y<t>] / N,    ∂loss/∂logits<t> = (softmax(logits<t>) − onehot(y<t>)) / N

over the N counted positions (a mask leaves some out).
"""

from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """log softmax over `axis` (the last by default), stable (log-sum-exp)."""
    m = np.maximum.reduce(logits, axis=axis, keepdims=True)   # max and sum as the ufuncs themselves: their
    z = logits - m                                             # wrappers cost µs a sampling step
    return z - np.log(np.add.reduce(np.exp(z), axis=axis, keepdims=True))


def cross_entropy(logits: np.ndarray, targets: np.ndarray, mask: np.ndarray | None = None,
                  denominator: float | None = None):
    """Mean cross-entropy of `targets` under `logits`, and its gradient.

    logits (T, B, V), targets (T, B) ids, mask (T, B) of 0/1 (None = all).
    Returns (loss in nats per counted token, dlogits, number of tokens).
    `denominator` replaces the number of tokens the sum is divided by: a
    share of a batch (`charlm.workers.train`) divides by the whole batch's count.
    """
    logp = log_softmax(logits)
    picked = np.take_along_axis(logp, targets[..., None].astype(np.intp), axis=-1)[..., 0]
    if mask is None:
        count = targets.size
        n = count if denominator is None else denominator
        loss = -float(picked.sum(dtype=np.float64)) / n
        scale = 1.0 / n
    else:
        count = float(mask.sum())
        n = max(count, 1.0) if denominator is None else denominator
        loss = -float((picked * mask).sum(dtype=np.float64)) / n
        scale = mask[..., None] / n
    dlogits = np.exp(logp).reshape(-1, logits.shape[-1])           # softmax
    dlogits[np.arange(dlogits.shape[0]), targets.reshape(-1)] -= 1.0  # softmax - onehot(y)
    dlogits = dlogits.reshape(logits.shape)
    dlogits *= np.asarray(scale, dtype=logits.dtype)
    return loss, dlogits, count


def head(params, h: np.ndarray) -> np.ndarray:
    """logits = head.weight · h + head.bias, for h of shape (..., In)."""
    logits = h.reshape(-1, h.shape[-1]) @ params["head.weight"].T
    logits += params["head.bias"]
    return logits.reshape(*h.shape[:-1], -1)


def head_backward(params, dlogits: np.ndarray, h: np.ndarray) -> tuple[dict, np.ndarray]:
    """The head's gradients {head.weight, head.bias} and the gradient of its input h (..., In), from dlogits (..., V)."""
    dlogits2 = dlogits.reshape(-1, dlogits.shape[-1])
    grads = {"head.weight": dlogits2.T @ h.reshape(-1, h.shape[-1]), "head.bias": dlogits2.sum(axis=0)}
    return grads, (dlogits2 @ params["head.weight"]).reshape(h.shape)
