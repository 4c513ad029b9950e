"""The network interpolated with the n-gram:

    P(w | h) = λ · P_net(w | h) + (1 − λ) · P_ngram(w | h)

Both are distributions over the same tokens, so the mixture is one too.
λ (the network's share) is fitted on the validation split by EM, which
climbs the (concave) held-out log-likelihood:

    λ ← mean over tokens of  λ·P_net / (λ·P_net + (1 − λ)·P_ngram)

The network learns what it can from long contexts; the n-gram remembers
exact strings it has counted.  On small corpora and after the network
starts to overfit, each covers what the other misses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from charlm.ngram import NGram


@dataclass(frozen=True)
class Mixture:
    ngram: NGram
    weight: float   # λ, the network's share


def fit_weight(p_net: np.ndarray, p_ngram: np.ndarray, iterations: int = 200, tol: float = 1e-7) -> float:
    """The λ in [0, 1] that maximises Σ log(λ·p_net + (1 − λ)·p_ngram)."""
    p_net = np.asarray(p_net, dtype=np.float64)
    p_ngram = np.asarray(p_ngram, dtype=np.float64)
    lam = 0.5
    for _ in range(iterations):
        mixed = lam * p_net + (1.0 - lam) * p_ngram
        new = float(np.mean(lam * p_net / np.maximum(mixed, 1e-300)))
        if abs(new - lam) < tol:
            return new
        lam = new
    return lam


def log_prob(weight: float, logp_net: np.ndarray, p_ngram: np.ndarray) -> np.ndarray:
    """log(λ·P_net + (1 − λ)·P_ngram) from the network's log-probabilities (any shape)."""
    logp_net = np.asarray(logp_net, dtype=np.float64)
    if weight >= 1.0:
        return logp_net
    return combine(log_share(weight), logp_net, ngram_term(weight, p_ngram))


def ngram_term(weight: float, p_ngram: np.ndarray) -> np.ndarray:
    """log((1 − λ)·P_ngram): the n-gram's part of `log_prob`, which does not depend on the network."""
    with np.errstate(divide="ignore"):
        return np.log1p(-weight) + np.log(p_ngram)


def log_share(weight: float) -> np.float64:
    """log λ (−inf for λ = 0)."""
    with np.errstate(divide="ignore"):
        return np.log(np.float64(weight))


def combine(log_weight: np.float64, logp_net: np.ndarray, term: np.ndarray) -> np.ndarray:
    """`log_prob` from log λ (`log_share`), the network's float64 log-probabilities and the n-gram's `ngram_term`."""
    return np.logaddexp(log_weight + logp_net, term)
