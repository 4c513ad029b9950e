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
from functools import cached_property

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
class NGram:
    """The count tables (what a checkpoint stores) and, derived from them, one lookup table of all orders.

    In the lookup tables an order-k key is offset by the number of keys of
    the orders below it (Σ_{j<k} V^j for grams, Σ_{j<k} V^(j−1) for
    histories), so that one sorted array serves every order and one
    `searchsorted` finds a history at all orders at once.
    """

    vocab_size: int
    reset_at_eos: bool
    keys: tuple             # per order k = 1..N: sorted int64 gram keys h·V + w
    counts: tuple           # per order: int64 (continuation) counts, ≥ 1
    discounts: np.ndarray   # (N, 4): D_k(c) for c = 0, 1, 2, 3+
    gram_base: np.ndarray   # (N,): offset of each order's gram keys in gram_keys
    gram_keys: np.ndarray   # all orders' gram keys, offset
    gram_mass: np.ndarray   # max(c − D_k(c), 0) of each gram
    gram_token: np.ndarray  # w, the token each gram predicts
    ctx_base: np.ndarray    # (N,): offset of each order's history keys in ctx_keys
    ctx_keys: np.ndarray    # all orders' history keys, offset
    ctx_first: np.ndarray   # index in gram_keys of each history's first gram (one more entry: the end)
    ctx_total: np.ndarray   # c_k(h)
    ctx_gamma: np.ndarray   # γ_k(h)
    powers: np.ndarray      # (N − 1, 1): V^(j−1), the weight of the j-th newest history token in a key
    min_length: np.ndarray  # (N, 1): k − 1, the history an order-k estimate needs

    @property
    def order(self) -> int:
        return len(self.keys)

    @cached_property
    def nested(self) -> bool:
        """Whether every counted context without its oldest token is a counted context too (true of `fit`'s tables:
        a lower order counts the continuations of the one above)."""
        k = np.searchsorted(self.ctx_base, self.ctx_keys, side="right") - 1   # each context's length in tokens
        long = k >= 1
        h, below = self.ctx_keys[long] - self.ctx_base[k[long]], k[long] - 1
        suffix = h % np.power(self.vocab_size, below, dtype=np.int64) + self.ctx_base[below]
        return bool(np.isin(suffix, self.ctx_keys).all())


def discounts(counts: np.ndarray) -> np.ndarray:
    """[0, D1, D2, D3+] from the counts of counts (0.75 each when too few grams to tell)."""
    n1, n2, n3, n4 = (np.count_nonzero(counts == c) for c in (1, 2, 3, 4))
    if n1 == 0 or n2 == 0 or n3 == 0:
        return np.array([0.0, 0.75, 0.75, 0.75])
    y = n1 / (n1 + 2.0 * n2)
    d = np.array([1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3 if n4 else 1.5])
    return np.concatenate([[0.0], np.clip(d, MIN_DISCOUNT, [1.0, 2.0, 3.0])])


def from_tables(vocab_size: int, reset_at_eos: bool, keys, counts) -> NGram:
    """The model from its count tables of orders 1..N ≥ 1 (fitted, or read from a checkpoint): derives the rest."""
    V = vocab_size
    keys = tuple(np.asarray(k, dtype=np.int64) for k in keys)
    counts = tuple(np.asarray(c, dtype=np.int64) for c in counts)
    N = len(keys)
    D = np.array([discounts(c) for c in counts]).reshape(N, 4)
    gram_base = np.array([sum(V ** j for j in range(1, k + 1)) for k in range(N)], dtype=np.int64)  # order k+1
    ctx_base = np.array([sum(V ** j for j in range(k)) for k in range(N)], dtype=np.int64)
    gram_keys = np.concatenate([g + b for g, b in zip(keys, gram_base)])
    gram_count = np.concatenate(counts)
    gram_D = np.concatenate([D[k][np.minimum(c, 3)] for k, c in enumerate(counts)])
    order_of = np.repeat(np.arange(N), [len(g) for g in keys])
    history = np.concatenate([g // V for g in keys]) + ctx_base[order_of]
    ctx_keys, first = np.unique(history, return_index=True)   # history keys are sorted: grams are
    if len(gram_keys):
        total = np.add.reduceat(gram_count, first).astype(np.float64)
        gamma = np.add.reduceat(gram_D, first)
    else:
        total = gamma = np.zeros(0)
    gram_token = np.concatenate([g % V for g in keys])
    return NGram(V, reset_at_eos, keys, counts, D, gram_base, gram_keys,
                 np.maximum(gram_count - gram_D, 0.0), gram_token, ctx_base, ctx_keys,
                 np.append(first, len(gram_keys)), total, gamma,
                 np.power(V, np.arange(max(N - 1, 0)), dtype=np.int64)[:, None], np.arange(N)[:, None])


def histories(ids: np.ndarray, pos: np.ndarray, start: np.ndarray | int, width: int, reset_at_eos: bool):
    """The `width` tokens before each position (newest first) and how many of them are history.

    `start[i]` is where position i's stream starts (an `<EOS>` is read just
    before it).  Returns (tokens (width, n), of the ids' dtype, and length (n,)): tokens[j−1]
    is the token j before the position (0 = `<EOS>` before the start), and
    length ≤ width counts the history's tokens, its first `<EOS>` included.
    """
    pos = np.asarray(pos, dtype=np.int64)
    start = np.broadcast_to(np.asarray(start, dtype=np.int64), pos.shape)
    ids = np.asarray(ids)
    if len(ids) == 0:  # nothing before any position but the start
        ids = np.zeros(1, dtype=ids.dtype)
    tokens = np.zeros((width, len(pos)), dtype=ids.dtype)
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
    return fit_histories(tokens, length, ids, V, order, reset_at_eos)


def fit_histories(tokens: np.ndarray, length: np.ndarray, ids: np.ndarray, vocab_size: int, order: int,
                  reset_at_eos: bool) -> NGram:
    """Count the grams of targets `ids` (n,) after the histories `tokens` (order − 1, n), newest first, of which
    `length` (n,) are history (as `histories` returns them).  With `reset_at_eos`, a history cut short
    (length < order − 1) keeps raw counts at its order: nothing longer can start with it."""
    V = vocab_size
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


def _search(table: np.ndarray, queries: np.ndarray, order: np.ndarray | None) -> np.ndarray:
    """Where `queries` would go in the sorted `table` (clipped to its last index).

    With `order` (an argsort of the queries) the queries are searched in
    increasing order, which NumPy's binary search turns into short searches
    that start where the last one ended: several times faster for many queries.
    """
    if order is None:
        return np.minimum(table.searchsorted(queries), len(table) - 1)
    flat = queries.reshape(-1)
    where = np.empty(flat.size, dtype=np.intp)
    where[order] = table.searchsorted(flat[order])
    return np.minimum(where, len(table) - 1).reshape(queries.shape)


SORT_QUERIES = 4096  # from this many queries on, search them in sorted order


def estimate(ng: NGram, tokens: np.ndarray, length: np.ndarray, targets: np.ndarray | None = None) -> np.ndarray:
    """P(target | history) (n,), or with no targets the whole distribution (n, V).

    `tokens`, `length` as `histories` returns them (width ≥ order − 1).
    The recursion P_k = a_k·P_{k−1} + d_k (a_k = γ_k/c_k(h), d_k the
    discounted counts over c_k(h); a_k = 1, d_k = 0 where the order-k
    history is unseen or too long) unrolls to

        P_N = (Π_k a_k)/V + Σ_k (Π_{j>k} a_j)·d_k

    which is computed for all orders at once.
    """
    V, N, n = ng.vocab_size, ng.order, len(length)
    if len(ng.gram_keys) == 0:  # nothing counted
        return np.full((n, V) if targets is None else n, 1.0 / V)
    if targets is None and n == 1:
        return _one_distribution(ng, tokens[:, 0], int(length[0]))[None]
    h = np.zeros((N, n), dtype=np.int64)           # history keys of every order: Σ_j token_j · V^(j−1)
    if N > 1:
        (tokens[:N - 1] * ng.powers).cumsum(axis=0, out=h[1:])
    q = h + ng.ctx_base[:, None]
    order = q.reshape(-1).argsort() if q.size >= SORT_QUERIES else None
    i = _search(ng.ctx_keys, q, order)
    seen = (ng.ctx_keys[i] == q) & (length >= ng.min_length)   # order k needs k−1 tokens of history
    total = np.where(seen, ng.ctx_total[i], 1.0)
    a = np.where(seen, ng.ctx_gamma[i] / total, 1.0)
    after = np.ones((N, n))                       # Π_{j>k} a_j
    after[:-1] = a[:0:-1].cumprod(axis=0)[::-1]
    base = after[0] * a[0] / V                    # (Π_k a_k)/V
    if targets is not None:
        g = h * V + targets + ng.gram_base[:, None]
        j = _search(ng.gram_keys, g, order)      # the grams of one history are one run of keys: nearly sorted too
        mass = np.where(seen & (ng.gram_keys[j] == g), ng.gram_mass[j], 0.0)
        return base + (after * mass / total).sum(axis=0)
    k, r = np.nonzero(seen)                       # (order, position) pairs with a history
    c = i[k, r]
    lo = ng.ctx_first[c]
    size = ng.ctx_first[c + 1] - lo               # the grams of each history are ctx_first[c] … +size
    gram = (lo - size.cumsum() + size).repeat(size)
    gram += np.arange(len(gram))
    weight = (after[k, r] / total[k, r]).repeat(size) * ng.gram_mass[gram]
    where = (r * V).repeat(size) + ng.gram_token[gram]
    p = np.bincount(where, weights=weight, minlength=n * V).reshape(n, V)
    p += base[:, None]
    return p


def _one_distribution(ng: NGram, tokens: np.ndarray, length: int) -> np.ndarray:
    """`estimate` of one history's whole distribution (V,), with the same arithmetic in the same order.

    Sampling asks for one history per step, where the vectorised form's
    forty array operations on arrays of a few elements cost more than the
    work: here the per-order coefficients are Python floats, and each seen
    order adds its grams to the distribution directly.
    """
    N = ng.order
    return seen_distribution(ng, seen_contexts(ng, tokens[:min(length, N - 1)].tolist()))


def seen_contexts(ng: NGram, history) -> tuple:
    """Where each order's context of one history is in the lookup table: (N,) indices into ctx_keys, −1 if unseen.

    `history` is the history's tokens, newest first (its length ≤ order − 1:
    order k + 1 needs k of them).  The distribution depends on the history
    through this tuple alone (`seen_distribution`).
    """
    N = ng.order
    q, key = [int(ng.ctx_base[0])], 0                  # history keys of every order, offset (as in `estimate`)
    for k, (token, power) in enumerate(zip(history[:N - 1], ng.powers[:, 0].tolist()), start=1):
        key += token * power                           # Σ_j token_j · V^(j−1)
        q.append(key + int(ng.ctx_base[k]))
    at = np.minimum(ng.ctx_keys.searchsorted(q), len(ng.ctx_keys) - 1).tolist()
    found = ng.ctx_keys[at].tolist()
    return tuple(i if f == x else -1 for x, i, f in zip(q, at, found)) + (-1,) * (N - len(q))


def backoff_scales(ng: NGram, contexts: tuple) -> tuple[list, float]:
    """For a history whose contexts are `contexts` (`seen_contexts`): the factor of each seen order's gram masses
    (None for an order not seen) and the uniform floor, so that P = Σ_k scale_k · mass_k + floor: `estimate`'s
    arithmetic, written for one history."""
    N = ng.order
    seen = [c >= 0 for c in contexts]
    total = [float(ng.ctx_total[c]) if s else 0.0 for c, s in zip(contexts, seen)]
    a = [float(ng.ctx_gamma[c]) / total[k] if seen[k] else 1.0 for k, c in enumerate(contexts)]
    after = [1.0] * N                                  # Π_{j>k} a_j
    for k in range(N - 2, -1, -1):
        after[k] = after[k + 1] * a[k + 1]
    scales = [after[k] / total[k] if seen[k] else None for k in range(N)]
    return scales, after[0] * a[0] / ng.vocab_size     # (Π_k a_k)/V


def seen_distribution(ng: NGram, contexts: tuple) -> np.ndarray:
    """The distribution (V,) of a history whose contexts are `contexts` (`seen_contexts`): `estimate`'s arithmetic."""
    scales, floor = backoff_scales(ng, contexts)
    p = np.zeros(ng.vocab_size)
    for c, scale in zip(contexts, scales):
        if scale is not None:
            lo, hi = ng.ctx_first[c], ng.ctx_first[c + 1]
            p[ng.gram_token[lo:hi]] += scale * ng.gram_mass[lo:hi]
    p += floor
    return p


CHUNK = 65_536  # positions estimated at once (the work arrays are about 80 bytes × order per position)


def probs(ng: NGram, ids: np.ndarray, pos: np.ndarray | None = None, start: np.ndarray | int = 0) -> np.ndarray:
    """P(ids[i] | the history before i) at positions `pos` (default: all) of the stream `ids`."""
    pos = np.arange(len(ids)) if pos is None else np.asarray(pos, dtype=np.int64)
    start = np.broadcast_to(np.asarray(start, dtype=np.int64), pos.shape)
    targets = np.asarray(ids)[pos].astype(np.int64)
    out = np.empty(len(pos))
    for a in range(0, len(pos), CHUNK):
        tokens, length = histories(ids, pos[a:a + CHUNK], start[a:a + CHUNK], ng.order - 1, ng.reset_at_eos)
        out[a:a + CHUNK] = estimate(ng, tokens, length, targets[a:a + CHUNK])
    return out


def next_distribution(ng: NGram, ids: np.ndarray, pos: np.ndarray, start: np.ndarray | int = 0) -> np.ndarray:
    """P(· | the history before position pos) for each pos: (n, V)."""
    tokens, length = histories(ids, pos, start, ng.order - 1, ng.reset_at_eos)
    return estimate(ng, tokens, length)


def extend(ng: NGram, tokens: np.ndarray, length: np.ndarray, ids: np.ndarray):
    """The histories (as `histories` returns them) one token later, after reading `ids` (n,)."""
    tokens = np.concatenate([np.asarray(ids, dtype=tokens.dtype)[None], tokens[:-1]])
    length = np.minimum(length + 1, len(tokens))
    if ng.reset_at_eos:  # a history starts at its newest <EOS>
        length = np.where(ids == EOS_ID, 1, length)
    return tokens, length


PREFIX = "ngram."            # a checkpoint's keys of the n-gram; a bidirectional model's backward one: "backward.ngram."


def to_arrays(ng: NGram, prefix: str = PREFIX) -> dict[str, np.ndarray]:
    arrays = {}
    for k, (g, c) in enumerate(zip(ng.keys, ng.counts), start=1):
        arrays[f"{prefix}{k}.keys"] = g
        arrays[f"{prefix}{k}.counts"] = c.astype(np.uint32)   # counts ≤ MAX_TOKENS
    return arrays


def layout(names, vocab_size: int, max_order_: int, prefix: str = PREFIX) -> dict:
    """(name: (dtype, shape)) of the tables under `prefix` present in `names`, orders 1, 2, … ≤ max_order_."""
    specs, k = {}, 1
    while k <= min(max_order_, max_order(vocab_size)) and f"{prefix}{k}.keys" in names:
        size = (range(min(vocab_size ** k, MAX_TOKENS) + 1),)   # each order counts at most MAX_TOKENS grams
        specs.update({f"{prefix}{k}.keys": ("int64", size), f"{prefix}{k}.counts": ("int", size)})
        k += 1
    return specs


def from_arrays(arrays, vocab_size: int, reset_at_eos: bool, prefix: str = PREFIX) -> NGram | None:
    """The n-gram stored in a checkpoint's arrays (None if it has none), validated."""
    order = 0
    while f"{prefix}{order + 1}.keys" in arrays:
        order += 1
    if order == 0:
        return None
    if order > max_order(vocab_size):
        raise CheckpointError(f"the n-gram's order {order} is too high for {vocab_size} tokens")
    keys, counts = [], []
    for k in range(1, order + 1):
        g, c = arrays.get(f"{prefix}{k}.keys"), arrays.get(f"{prefix}{k}.counts")
        if c is None:
            raise CheckpointError(f"missing key '{prefix}{k}.counts'")
        if g.dtype != np.int64 or g.ndim != 1 or c.dtype.kind not in "iu" or c.shape != g.shape:
            raise CheckpointError(f"malformed n-gram table of order {k}")
        if len(g) and (g[0] < 0 or g[-1] >= vocab_size ** k or np.any(g[1:] <= g[:-1])
                       or c.min() < 1 or c.max() > MAX_TOKENS):
            raise CheckpointError(f"the n-gram table of order {k} is not sorted, out of range or has counts "
                                  f"outside 1..{MAX_TOKENS:,}")
        keys.append(g)
        counts.append(c)
    return from_tables(vocab_size, reset_at_eos, keys, counts)
