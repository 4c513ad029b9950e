"""A character n-gram: interpolated modified Kneser–Ney (Chen & Goodman 1998).

    P_k(w | h) = (max(c_k(h w) − D_k(c_k(h w)), 0) + γ_k(h) · P_{k−1}(w | h')) / c_k(h)
    γ_k(h)     = Σ_w D_k(c_k(h w))        (the mass the discounts set aside)
    P_0(w)     = 1 / V

h is the k−1 tokens before w, h' is h without its oldest token, and
c_k(h) = Σ_w c_k(h w).  The highest order N counts n-grams; a lower order
counts continuations (how many different tokens come before h w), except
n-grams whose history starts at a line start, which keep their raw counts.
Three discounts per order (for counts 1, 2 and 3+) come from the counts of
counts:  Y = n1 / (n1 + 2 n2),  D_c = c − (c + 1) · Y · n_{c+1} / n_c.

A history is what came before a token in its stream, the `<EOS>` the
stream starts with included.  For models that reset their state at `<EOS>`
(one item per line) a history also starts at the last `<EOS>`.  A history
shorter than k−1 tokens has no order-k estimate (the lower orders decide).

Tables are sorted integer keys: the gram h w is Σ_j h_j · V^j · V + w with
h_1 the newest token, so dropping the oldest token of a gram is `key mod V^k`
and the grams of one history are contiguous.  Everything is vectorised over
positions; nothing loops over the vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from charlm.errors import CheckpointError
from charlm.vocab import EOS_ID

MAX_TOKENS = 1_000_000   # tokens counted at most (the last ones of the training split)
MIN_DISCOUNT = 0.01      # so that every context leaves some mass to the lower orders
KEY_LIMIT = 2 ** 62      # keys are int64: V^order must stay below this


def max_order(vocab_size: int) -> int:
    """The highest order whose keys fit in int64 for this vocabulary."""
    k = 1
    while vocab_size ** (k + 1) < KEY_LIMIT:
        k += 1
    return k


@dataclass(frozen=True)
class Contexts:
    """Per order: the distinct histories, where their grams start, their totals and discounted mass."""

    keys: np.ndarray    # sorted history keys
    first: np.ndarray   # index of each history's first gram (one more entry: the end)
    total: np.ndarray   # c_k(h)
    gamma: np.ndarray   # γ_k(h)


@dataclass(frozen=True)
class NGram:
    vocab_size: int
    reset_at_eos: bool
    keys: tuple          # per order k = 1..N: sorted int64 gram keys
    counts: tuple        # per order: int64 (continuation) counts, ≥ 1
    discounts: np.ndarray   # (N, 4): D_k(c) for c = 0, 1, 2, 3+
    contexts: tuple      # per order: Contexts

    @property
    def order(self) -> int:
        return len(self.keys)


def discounts(counts: np.ndarray) -> np.ndarray:
    """[0, D1, D2, D3+] from the counts of counts (0.75 each when too few grams to tell)."""
    n1, n2, n3, n4 = (np.count_nonzero(counts == c) for c in (1, 2, 3, 4))
    if n1 == 0 or n2 == 0 or n3 == 0:
        return np.array([0.0, 0.75, 0.75, 0.75])
    y = n1 / (n1 + 2.0 * n2)
    d = np.array([1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3 if n4 else 1.5])
    return np.concatenate([[0.0], np.clip(d, MIN_DISCOUNT, [1.0, 2.0, 3.0])])


def from_tables(vocab_size: int, reset_at_eos: bool, keys, counts) -> NGram:
    """The model from its count tables (fitted, or read from a checkpoint): derives the rest."""
    keys = tuple(np.asarray(k, dtype=np.int64) for k in keys)
    counts = tuple(np.asarray(c, dtype=np.int64) for c in counts)
    D = np.array([discounts(c) for c in counts]).reshape(len(counts), 4)
    contexts = []
    for k, (g, c) in enumerate(zip(keys, counts), start=1):
        h = g // vocab_size
        hk, first = np.unique(h, return_index=True)
        if len(g):
            total = np.add.reduceat(c, first).astype(np.float64)
            gamma = np.add.reduceat(D[k - 1][np.minimum(c, 3)], first)
        else:
            total = gamma = np.zeros(0)
        contexts.append(Contexts(hk, np.append(first, len(g)), total, gamma))
    return NGram(vocab_size, reset_at_eos, keys, counts, D, tuple(contexts))


def histories(ids: np.ndarray, pos: np.ndarray, start: np.ndarray | int, width: int, reset_at_eos: bool):
    """The `width` tokens before each position (newest first) and how many of them are history.

    `start[i]` is where position i's stream starts (an `<EOS>` is read just
    before it).  Returns (tokens (width, n) int64, length (n,)): tokens[j−1]
    is the token j before the position (0 = `<EOS>` before the start), and
    length ≤ width counts the history's tokens, its first `<EOS>` included.
    """
    pos = np.asarray(pos, dtype=np.int64)
    start = np.broadcast_to(np.asarray(start, dtype=np.int64), pos.shape)
    tokens = np.zeros((width, len(pos)), dtype=np.asarray(ids).dtype)
    length = np.minimum(pos - start + 1, width)
    for j in range(1, width + 1):
        idx = pos - j
        inside = idx >= start
        tokens[j - 1] = np.where(inside, ids[np.maximum(idx, 0)], EOS_ID)
        if reset_at_eos:  # the history starts at the newest <EOS>
            length = np.where(inside & (tokens[j - 1] == EOS_ID) & (length > j), j, length)
    return tokens, length


def _history_keys(tokens: np.ndarray, V: int, order: int):
    """Yield the history key of every order k = 1..order (k−1 newest tokens)."""
    key = np.zeros(tokens.shape[1], dtype=np.int64)
    for k in range(1, order + 1):
        if k >= 2:
            key = key + tokens[k - 2].astype(np.int64) * V ** (k - 2)
        yield key


def fit(ids: np.ndarray, vocab_size: int, order: int, reset_at_eos: bool) -> NGram:
    """Count the last MAX_TOKENS tokens of one stream `ids` (lower order if keys would overflow)."""
    V = vocab_size
    order = max(1, min(order, max_order(V)))
    ids = np.asarray(ids[-MAX_TOKENS:])
    tokens, length = histories(ids, np.arange(len(ids)), 0, order - 1, reset_at_eos)
    keys, counts = [None] * order, [None] * order
    line_starts = {}  # order k: the grams whose history is a whole line so far (reset only), with raw counts
    for k, h in enumerate(_history_keys(tokens, V, order), start=1):
        at = length >= k - 1 if k == order else length == k - 1
        if k == order or (reset_at_eos and k >= 2):
            g, c = np.unique(h[at] * V + ids[at], return_counts=True)
            if k == order:
                keys[-1], counts[-1] = g, c
            else:
                line_starts[k] = (g, c)
    del tokens
    for k in range(order - 1, 0, -1):  # continuations: distinct tokens before each k-gram
        g, c = np.unique(keys[k] % V ** k, return_counts=True)
        if k in line_starts:
            bg, bc = line_starts[k]
            g, c = np.concatenate([g, bg]), np.concatenate([c, bc])
            sort = np.argsort(g, kind="stable")
            g, c = g[sort], c[sort]
        keys[k - 1], counts[k - 1] = g, c
    return from_tables(V, reset_at_eos, keys, counts)


def estimate(ng: NGram, tokens: np.ndarray, length: np.ndarray, targets: np.ndarray | None = None) -> np.ndarray:
    """P(target | history) (n,), or with no targets the whole distribution (n, V).

    `tokens`, `length` as `histories` returns them (width ≥ order − 1).
    """
    V, n = ng.vocab_size, len(length)
    full = targets is None
    p = np.full((n, V) if full else n, 1.0 / V)
    for k, h in enumerate(_history_keys(tokens, V, ng.order), start=1):
        ctx, D, g_keys = ng.contexts[k - 1], ng.discounts[k - 1], ng.keys[k - 1]
        if len(ctx.keys) == 0:
            break  # no grams of this order (nor above)
        i = np.minimum(np.searchsorted(ctx.keys, h), len(ctx.keys) - 1)
        seen = (ctx.keys[i] == h) & (length >= k - 1)
        if not full:
            g = h * V + targets
            j = np.minimum(np.searchsorted(g_keys, g), len(g_keys) - 1)
            c = np.where(g_keys[j] == g, ng.counts[k - 1][j], 0)
            p_k = (np.maximum(c - D[np.minimum(c, 3)], 0.0) + ctx.gamma[i] * p) / ctx.total[i]
            p = np.where(seen, p_k, p)
            continue
        rows = np.flatnonzero(seen)
        i = i[rows]
        p[rows] *= (ctx.gamma[i] / ctx.total[i])[:, None]
        lo, hi = ctx.first[i], ctx.first[i + 1]
        size = hi - lo
        row = np.repeat(rows, size)
        gram = np.repeat(lo - np.cumsum(size) + size, size) + np.arange(size.sum())
        c = ng.counts[k - 1][gram]
        p[row, g_keys[gram] % V] += (c - D[np.minimum(c, 3)]) / np.repeat(ctx.total[i], size)
    return p


def probs(ng: NGram, ids: np.ndarray, pos: np.ndarray | None = None, start: np.ndarray | int = 0) -> np.ndarray:
    """P(ids[i] | the history before i) at positions `pos` (default: all) of the stream `ids`."""
    pos = np.arange(len(ids)) if pos is None else np.asarray(pos, dtype=np.int64)
    tokens, length = histories(ids, pos, start, ng.order - 1, ng.reset_at_eos)
    return estimate(ng, tokens, length, np.asarray(ids)[pos].astype(np.int64))


def next_distribution(ng: NGram, ids: np.ndarray, pos: np.ndarray, start: np.ndarray | int = 0) -> np.ndarray:
    """P(· | the history before position pos) for each pos: (n, V)."""
    tokens, length = histories(ids, pos, start, ng.order - 1, ng.reset_at_eos)
    return estimate(ng, tokens, length)


def to_arrays(ng: NGram) -> dict[str, np.ndarray]:
    arrays = {}
    for k, (g, c) in enumerate(zip(ng.keys, ng.counts), start=1):
        arrays[f"ngram.{k}.keys"] = g
        arrays[f"ngram.{k}.counts"] = c.astype(np.uint32 if c.max(initial=0) < 2 ** 32 else np.int64)
    return arrays


def from_arrays(arrays, vocab_size: int, reset_at_eos: bool) -> NGram | None:
    """The n-gram stored in a checkpoint's arrays (None if it has none), validated."""
    order = 0
    while f"ngram.{order + 1}.keys" in arrays:
        order += 1
    if order == 0:
        return None
    if order > max_order(vocab_size):
        raise CheckpointError(f"the n-gram's order {order} is too high for {vocab_size} tokens")
    keys, counts = [], []
    for k in range(1, order + 1):
        g, c = arrays.get(f"ngram.{k}.keys"), arrays.get(f"ngram.{k}.counts")
        if c is None:
            raise CheckpointError(f"missing key 'ngram.{k}.counts'")
        if g.dtype != np.int64 or g.ndim != 1 or c.dtype.kind not in "iu" or c.shape != g.shape:
            raise CheckpointError(f"malformed n-gram table of order {k}")
        if len(g) and (g[0] < 0 or g[-1] >= vocab_size ** k or np.any(g[1:] <= g[:-1]) or c.min() < 1):
            raise CheckpointError(f"the n-gram table of order {k} is not sorted, out of range or has counts below 1")
        keys.append(g)
        counts.append(c)
    return from_tables(vocab_size, reset_at_eos, keys, counts)
