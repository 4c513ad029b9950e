"""The n-gram's part of the mixture during generation, step by step, cached by the contexts it has counted.

Sampling with a `Mixture` needs at every step, for each row's history h,

    log((1 − λ) · P_ngram(· | h))          (`mixture.ngram_term`)

P_ngram(· | h) depends on h only through which of its contexts (its last
0, 1, …, N − 1 tokens) the n-gram has counted (`ngram.seen_contexts`), so
histories that share their seen contexts share the distribution.
Generation revisits them all the time: the low orders at nearly every
step, the high ones whenever the text repeats itself.  `Histories` keeps
each row's history and the terms in a dict keyed by the seen contexts,
computed once per key with `ngram`'s own arithmetic (`seen_distribution`,
the arithmetic of `ngram.estimate`): the numbers are bit for bit those of
computing every step afresh (`cache=False`).
"""

from __future__ import annotations

import numpy as np

from charlm import mixture, ngram
from charlm.mixture import Mixture
from charlm.vocab import EOS_ID

CACHE_BYTES = 32 * 2 ** 20   # the cached terms take at most this much memory (then the cache starts over)
ROWS = 16                    # up to this many rows are looked up one by one; more go through `ngram.estimate` at once


class Histories:
    """The n-gram histories of `num` rows that start after the same prime, and their mixture terms (num, V)."""

    def __init__(self, mix: Mixture, prime_ids: np.ndarray, num: int, cache: bool = True):
        ng = mix.ngram
        self.mix, self.ng, self.num = mix, ng, num
        self.width = ng.order - 1
        tokens, length = ngram.histories(prime_ids, np.array([len(prime_ids)]), 0, self.width, ng.reset_at_eos)
        self.tokens, self.length = tokens.repeat(num, axis=1), length.repeat(num)
        self.one_by_one = cache and num <= ROWS and len(ng.gram_keys) > 0
        first = tuple(tokens[:int(length[0]), 0].tolist())   # newest first, as long as the history
        self.rows = [first] * num
        self.terms_of: dict[tuple, np.ndarray] = {}
        self.max_entries = max(1, CACHE_BYTES // (8 * ng.vocab_size))
        self.known: dict[int, int] = {}     # the contexts searched for in the n-gram's table: their index or −1
        self.max_known = CACHE_BYTES // 128
        self.hits = self.misses = 0

    def terms(self) -> np.ndarray:
        """log((1 − λ)·P_ngram(· | each row's history)): (num, V) float64."""
        if not self.one_by_one:
            return mixture.ngram_term(self.mix.weight, ngram.estimate(self.ng, self.tokens, self.length))
        return np.stack([self._term(h) for h in self.rows]) if self.num > 1 else self._term(self.rows[0])[None]

    def _term(self, history: tuple) -> np.ndarray:
        if len(self.known) >= self.max_known:
            self.known.clear()
        key = ngram.seen_contexts(self.ng, history, self.known)
        term = self.terms_of.get(key)
        if term is not None:
            self.hits += 1
            return term
        self.misses += 1
        if len(self.terms_of) >= self.max_entries:
            self.terms_of.clear()
        term = self.terms_of[key] = mixture.ngram_term(self.mix.weight, ngram.seen_distribution(self.ng, key))
        return term

    def extend(self, ids: np.ndarray) -> None:
        """Each row's history one token later, after reading `ids` (num,)."""
        if not self.one_by_one:
            self.tokens, self.length = ngram.extend(self.ng, self.tokens, self.length, ids)
            return
        reset, width = self.ng.reset_at_eos, self.width   # a history starts at its newest <EOS>, if reset
        self.rows = [((tok,) if reset and tok == EOS_ID else (tok,) + h)[:width]
                     for tok, h in zip(ids.tolist(), self.rows)]
