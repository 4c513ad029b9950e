"""The n-gram's part of the mixture during generation, step by step, cached by the contexts it has counted.

Sampling with a `Mixture` needs at every step, for each row's history h,

    log((1 − λ) · P_ngram(· | h))          (`mixture.ngram_term`)

P_ngram(· | h) depends on h only through which of its contexts (its last
0, 1, …, N − 1 tokens) the n-gram has counted (`ngram.seen_contexts`), so
histories that share their seen contexts share the distribution.
Generation revisits them all the time: the low orders at nearly every
step, the high ones whenever the text repeats itself.  `Histories` keeps
each row's history, and in dicts

- each context key it has looked up, with its answer (the lookups of a
  step are then mostly dict lookups; for `nested` tables, the lookups stop
  at the first order the history was not seen at);
- each seen context's discounted counts as a dense row of V (for V up to
  DENSE_TOKENS), so that a distribution is one multiply-add per order;
- each distribution's term, keyed by the seen contexts.

The arithmetic is `ngram.estimate`'s, operation for operation (adding a
dense row adds 0 to the tokens the context has no gram for): the numbers
are bit for bit those of computing every step afresh (`cache=False`).
"""

from __future__ import annotations

import numpy as np

from charlm import mixture, ngram
from charlm.mixture import Mixture
from charlm.vocab import EOS_ID

CACHE_BYTES = 32 * 2 ** 20   # each dict takes at most about this much memory (then it starts over)
ROWS = 16                    # up to this many rows are looked up one by one; more go through `ngram.estimate` at once
DENSE_TOKENS = 1024          # up to this vocabulary size a context's counts are kept as a dense row


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
        self.hits = self.misses = 0
        if self.one_by_one:
            self.base, self.powers = ng.ctx_base.tolist(), ng.powers[:, 0].tolist()
            self.nested = ng.nested
            self.known: dict[int, int] = {}            # offset context key -> its index in ctx_keys, or −1
            self.dense: dict[int, np.ndarray] = {}     # context index -> its discounted counts (V,)
            self.terms_of: dict[tuple, np.ndarray] = {}
            self.max_entries = max(1, CACHE_BYTES // (8 * ng.vocab_size))

    def terms(self) -> np.ndarray:
        """log((1 − λ)·P_ngram(· | each row's history)): (num, V) float64."""
        if not self.one_by_one:
            return mixture.ngram_term(self.mix.weight, ngram.estimate(self.ng, self.tokens, self.length))
        return np.stack([self._term(h) for h in self.rows]) if self.num > 1 else self._term(self.rows[0])[None]

    def extend(self, ids: np.ndarray) -> None:
        """Each row's history one token later, after reading `ids` (num,)."""
        if not self.one_by_one:
            self.tokens, self.length = ngram.extend(self.ng, self.tokens, self.length, ids)
            return
        reset, width = self.ng.reset_at_eos, self.width   # a history starts at its newest <EOS>, if reset
        self.rows = [((tok,) if reset and tok == EOS_ID else (tok,) + h)[:width]
                     for tok, h in zip(ids.tolist(), self.rows)]

    def _term(self, history: tuple) -> np.ndarray:
        key = self._contexts(history)
        term = self.terms_of.get(key)
        if term is not None:
            self.hits += 1
            return term
        self.misses += 1
        if len(self.terms_of) >= self.max_entries:
            self.terms_of.clear()
        term = self.terms_of[key] = mixture.ngram_term(self.mix.weight, self._distribution(key))
        return term

    def _contexts(self, history: tuple) -> tuple:
        """`ngram.seen_contexts(history)`, order by order from the lowest, with the answers kept."""
        keys, known, base, powers = self.ng.ctx_keys, self.known, self.base, self.powers
        if len(known) >= self.max_entries:
            known.clear()
        seen, key = [], 0
        for k in range(len(history) + 1):
            if k:
                key += history[k - 1] * powers[k - 1]  # Σ_j token_j · V^(j−1)
            x = key + base[k]
            i = known.get(x)
            if i is None:
                i = min(int(keys.searchsorted(x)), len(keys) - 1)
                i = known[x] = i if keys[i] == x else -1
            seen.append(i)
            if i < 0 and self.nested:
                break
        return tuple(seen) + (-1,) * (self.ng.order - len(seen))

    def _distribution(self, contexts: tuple) -> np.ndarray:
        """`ngram.seen_distribution(contexts)`, adding each order's grams as a dense row."""
        ng = self.ng
        V = ng.vocab_size
        if V > DENSE_TOKENS:
            return ngram.seen_distribution(ng, contexts)
        scales, floor = ngram.backoff_scales(ng, contexts)
        p = np.zeros(V)
        for c, scale in zip(contexts, scales):
            if scale is not None:
                p += scale * self._dense(c)
        p += floor
        return p

    def _dense(self, c: int) -> np.ndarray:
        row = self.dense.get(c)
        if row is None:
            if len(self.dense) >= self.max_entries:
                self.dense.clear()
            lo, hi = self.ng.ctx_first[c], self.ng.ctx_first[c + 1]
            row = self.dense[c] = np.zeros(self.ng.vocab_size)
            row[self.ng.gram_token[lo:hi]] = self.ng.gram_mass[lo:hi]
        return row
