"""Validation: the held-out loss that picks the best weights, and the n-gram's share fitted on it.

The measure is `score --document`'s (nats per token, `<EOS>` included),
read in pieces so that it costs seconds on any corpus; with the n-gram, the
interpolation λ·P_net + (1 − λ)·P_ngram with λ fitted on the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from charlm import mixture, ngram
from charlm.config import Config
from charlm.dataset import Corpus
from charlm.score import read_in_pieces

VAL_MAX_TOKENS = 1_000_000  # validation reads at most this many held-out tokens (the first ones)


@dataclass
class Validation:
    nats: float                 # per token: the model as `score` uses it (with the n-gram, if any)
    net_nats: float             # per token: the network alone
    mix_weight: float | None    # the network's share λ fitted on this validation (None: no n-gram)


def evaluate(params, arch, val_ids: np.ndarray, p_ngram: np.ndarray | None = None) -> Validation:
    """Validation loss in nats per token: the `score --document` measure.

    Read as 16+ pieces side by side with 256 tokens of burn-in each (see
    `read_in_pieces`, without its joint check), over at most the first VAL_MAX_TOKENS
    held-out tokens, so validating costs seconds on any corpus.  With the
    n-gram's probabilities of those tokens (`p_ngram`), the network's share
    in the interpolation is fitted to them and the interpolation is measured.
    """
    ids = val_ids[:VAL_MAX_TOKENS]
    pieces = max(16, len(ids) // 16384)          # at least 16, at most ~16k tokens each
    pieces = min(pieces, max(1, len(ids) // 1024))  # and no piece shorter than 1024 tokens
    logp = np.zeros(len(ids))

    def keep(pos, lp):
        logp[pos] = lp
        return lp

    read_in_pieces(params, arch, ids, pieces, burn_in=256, adjust=keep)
    net = -float(logp.mean())
    if p_ngram is None:
        return Validation(net, net, None)
    weight = mixture.fit_weight(np.exp(logp), p_ngram)
    return Validation(-float(mixture.log_prob(weight, logp, p_ngram).mean()), net, weight)


def fit_ngram(cfg: Config, arch, corpus: Corpus) -> tuple[ngram.NGram, np.ndarray]:
    """The n-gram to save, and the probabilities of the validation tokens to fit its share on.

    Validation needs an n-gram that has not seen the validation split: one
    counted on the training split.  Once the share is fitted, the n-gram
    that goes into the checkpoint also counts the held-out split, if the
    two together are within ngram.MAX_TOKENS (more counts, better estimates
    for small corpora).
    """
    V, reset = len(corpus.vocab), arch.reset_at_eos
    held_out = ngram.fit(corpus.train_ids, V, cfg.ngram, reset)
    p_ngram = ngram.probs(held_out, corpus.val_ids[:VAL_MAX_TOKENS])
    if len(corpus.train_ids) + len(corpus.val_ids) > ngram.MAX_TOKENS:
        return held_out, p_ngram
    return ngram.fit(np.concatenate([corpus.train_ids, corpus.val_ids]), V, cfg.ngram, reset), p_ngram
