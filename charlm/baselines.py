"""Simple baselines on the same split, so users know whether their loss is good.

- unigram: P(w) = (count(w) + 1) / (N + V), add-one smoothed;
- n-gram: interpolated Witten–Bell over character histories of up to n−1
  tokens (padded with <EOS> at the start, as the model's input starts):

      P_n(w | h) = (c(h, w) + T(h) · P_{n-1}(w | h')) / (c(h) + T(h))

  where h' drops the oldest token of h and T(h) is the number of distinct
  tokens seen after h (P_n = P_{n-1} for a history never seen).

Both report bits per token on (at most the first million) validation ids,
`<EOS>` included, the same measure as validation, and count at most the
last million training tokens (bounded time and memory on any corpus). Counting is vectorised (np.unique on integer
keys of the histories).
"""

from __future__ import annotations


import numpy as np

MAX_TRAIN = 1_000_000  # training tokens counted, at most (the last ones, nearest the validation split)
MAX_VAL = 1_000_000    # validation tokens scored, at most (the first ones, as validation does)


def unigram_bits(train: np.ndarray, val: np.ndarray, V: int) -> float:
    train, val = train[-MAX_TRAIN:], val[:MAX_VAL]
    counts = np.bincount(train, minlength=V).astype(np.float64)
    p = (counts + 1.0) / (counts.sum() + V)
    return float(-np.log2(p[val]).mean())


def _history_keys(ids: np.ndarray, k: int, V: int) -> np.ndarray:
    """An integer key of the k tokens before each position (<EOS> = 0 before the start)."""
    key = np.zeros(len(ids), dtype=np.int64)
    for j in range(k, 0, -1):  # oldest first
        prev = np.zeros(len(ids), dtype=np.int64)
        prev[j:] = ids[:-j] if j < len(ids) else 0
        key = key * V + prev
    return key


def _lookup(sorted_keys: np.ndarray, counts: np.ndarray, queries: np.ndarray) -> np.ndarray:
    pos = np.searchsorted(sorted_keys, queries)
    pos = np.minimum(pos, len(sorted_keys) - 1)
    return np.where(sorted_keys[pos] == queries, counts[pos], 0).astype(np.float64)


def ngram_bits(train: np.ndarray, val: np.ndarray, V: int, order: int = 5) -> float:
    """Bits per token of an interpolated Witten–Bell n-gram (order lowered if keys would overflow)."""
    while order > 1 and V ** order >= 2 ** 62:
        order -= 1
    train = train[-MAX_TRAIN:].astype(np.int64)
    val = val[:MAX_VAL].astype(np.int64)
    counts = np.bincount(train, minlength=V).astype(np.float64)
    p = ((counts + 1.0) / (counts.sum() + V))[val]
    for n in range(2, order + 1):
        k = n - 1
        h_train = _history_keys(train, k, V)
        full_train = h_train * V + train
        full_keys, full_counts = np.unique(full_train, return_counts=True)
        h_keys, h_counts = np.unique(h_train, return_counts=True)
        types_keys, types_counts = np.unique(full_keys // V, return_counts=True)
        h_val = _history_keys(val, k, V)
        c_hw = _lookup(full_keys, full_counts, h_val * V + val)
        c_h = _lookup(h_keys, h_counts, h_val)
        t_h = _lookup(types_keys, types_counts, h_val)
        seen = c_h > 0
        p = np.where(seen, (c_hw + t_h * p) / np.maximum(c_h + t_h, 1.0), p)
    return float(-np.log2(p).mean())


def baselines(train: np.ndarray, val: np.ndarray, V: int, order: int = 5) -> dict[str, float]:
    """{"unigram": bits, "5-gram": bits} on the validation ids (empty dict without validation)."""
    if len(val) == 0 or len(train) == 0:
        return {}
    return {"unigram": unigram_bits(train, val, V), f"{order}-gram": ngram_bits(train, val, V, order)}
