"""Validation: the held-out loss that picks the best weights, and the n-gram's share fitted on it
(for a bidirectional model: the weights of its combination with three n-grams, `fit_combination`).

The measure is `score --document`'s (nats per token, `<EOS>` included),
read in pieces so that it costs seconds on any corpus; with the n-gram, the
interpolation λ·P_net + (1 − λ)·P_ngram with λ fitted on the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from charlm import bidirectional, combine, mixture, ngram
from charlm.combine import Combination
from charlm.config import Config
from charlm.dataset import Corpus
from charlm.score import read_in_pieces

VAL_MAX_TOKENS = 1_000_000  # validation reads at most this many held-out tokens (the first ones)
VAL_BURN_IN = 256           # tokens each piece reads before it is measured


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
    logp = np.zeros(len(ids))

    def keep(pos, lp):
        logp[pos] = lp
        return lp

    read_in_pieces(params, arch, ids, val_pieces(len(ids)), burn_in=VAL_BURN_IN, adjust=keep)
    return measured(logp, p_ngram)


def val_pieces(n: int) -> int:
    """How many pieces `evaluate` reads n held-out tokens in: at least 16, at most ~16k tokens each, none under 1024."""
    return min(max(16, n // 16384), max(1, n // 1024))


def measured(logp: np.ndarray, p_ngram: np.ndarray | None) -> Validation:
    """The validation measure from the network's log-probabilities of the held-out tokens (and the n-gram's
    probabilities of them: the network's share is fitted and the interpolation measured)."""
    net = -float(logp.mean())
    if p_ngram is None:
        return Validation(net, net, None)
    weight = mixture.fit_weight(np.exp(logp), p_ngram)
    return Validation(-float(mixture.log_prob(weight, logp, p_ngram).mean()), net, weight)


def evaluate_bidirectional(params, arch, val_ids: np.ndarray, seq_len: int) -> Validation:
    """A bidirectional model's validation loss: windows of `seq_len`, as in training (`bidirectional.evaluate`),
    the network alone (its n-grams are fitted once training is over, `fit_combination`)."""
    nats = bidirectional.evaluate(params, arch, val_ids, seq_len, VAL_MAX_TOKENS)
    return Validation(nats, nats, None)


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


def fit_combination(cfg: Config, arch, corpus: Corpus, weight_sets: dict) -> tuple[Combination, dict, dict]:
    """A bidirectional model's forward, backward and two-sided n-grams and the experts' weights (charlm.combine).

    The n-grams are counted on the training split; for each set of network
    weights ({"last": params, "best": params}) the weights w are fitted on the
    lines of the validation split (at most combine.FIT_TOKENS characters),
    read as `check` reads a line.  Returns the combination of the "best" set,
    every set's w, and the figures on those lines (bits per character, <EOS>
    not counted): {"combine_val_bpc": combined, "combine_net_val_bpc": the network alone}.
    """
    grams_of = combine.fit_ngrams(corpus.train_ids, len(corpus.vocab), cfg.ngram, arch.reset_at_eos)
    lines = combine.held_out_lines(corpus.val_ids)
    y = np.concatenate(lines)
    grams = np.concatenate([combine.ngram_features(*grams_of, q) for q in lines])
    fitted, figures = {}, {}
    for which, params in weight_sets.items():
        net = np.concatenate(bidirectional.log_probs(params, arch, lines))
        F = np.concatenate([net[..., None], grams], axis=-1)
        fitted[which] = combine.fit_weights(F, y)
        if which == "best":
            figures = {"combine_val_bpc": float(combine.objective(fitted[which], F, y)[0] / np.log(2.0)),
                       "combine_net_val_bpc": -float(net[np.arange(len(y)), y].mean()) / np.log(2.0)}
    return Combination(*grams_of, fitted["best"]), fitted, figures


def baselines(train_ids: np.ndarray, val_ids: np.ndarray, vocab_size: int, order: int,
              reset_at_eos: bool) -> dict[str, float]:
    """What a model should beat: bits per token on validation of this n-gram counted on the training split.

    {"unigram": bits, "N-gram": bits}: the order-1 and the order-`order`
    model (lowered where keys would overflow), counted on the last
    ngram.MAX_TOKENS training tokens and read over the first ngram.MAX_TOKENS
    validation tokens as one stream that starts after an `<EOS>`, `<EOS>`
    included: the measure and the n-gram of validation, so the N-gram row is
    the n-gram alone that training reports.  Empty without validation.
    """
    if len(train_ids) == 0 or len(val_ids) == 0:
        return {}
    val = val_ids[:ngram.MAX_TOKENS]
    rows = {}
    for k in sorted({1, order}):
        ng = ngram.fit(train_ids, vocab_size, k, reset_at_eos)
        rows["unigram" if ng.order == 1 else f"{ng.order}-gram"] = -float(np.log2(ngram.probs(ng, val)).mean())
    return rows
