"""The softmax head's loss: log-softmax, and the cross-entropy of the targets with its gradient.

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
