"""The Kneser–Ney n-gram against a direct transcription of its formula, and its checkpoint tables."""

import math
from collections import Counter, defaultdict

import numpy as np
import pytest

from charlm import ngram, validation
from charlm.errors import CheckpointError
from charlm.vocab import EOS_ID

V = 6  # <EOS>, <UNK>, and four characters 2..5


def corpus(seed=0, n=600, eos_every=7):
    rng = np.random.default_rng(seed)
    ids = rng.choice([2, 3, 4, 5], size=n, p=[0.4, 0.3, 0.2, 0.1])
    ids[rng.random(n) < 1 / eos_every] = EOS_ID
    return ids


class ReferenceKN:
    """Interpolated modified Kneser–Ney written out with dictionaries and strings of ids.

    A history is the tuple of ids before a token, oldest first, starting with
    the <EOS> read before the stream (and, with reset, at the last <EOS>).
    """

    def __init__(self, ids, order, reset):
        self.n, self.reset = order, reset
        hists = [self.history(ids, i) for i in range(len(ids))]
        counts = [None] * (order + 1)
        counts[order] = Counter(h[-(order - 1):] + (w,) if order > 1 else (w,)
                                for h, w in zip(hists, ids) if len(h) >= order - 1)
        for k in range(order - 1, 0, -1):
            cont = Counter(g[1:] for g in counts[k + 1])
            if reset and k >= 2:  # grams that start at a line start keep their raw counts
                for h, w in zip(hists, ids):
                    if len(h) == k - 1:
                        cont[h + (w,)] += 1
            counts[k] = cont
        self.counts = counts
        self.D = [None] + [self.discounts(counts[k]) for k in range(1, order + 1)]
        self.ctx = [None] * (order + 1)
        for k in range(1, order + 1):
            tot, gam = defaultdict(int), defaultdict(float)
            for g, c in counts[k].items():
                tot[g[:-1]] += c
                gam[g[:-1]] += self.D[k][min(c, 3)]
            self.ctx[k] = {h: (tot[h], gam[h]) for h in tot}

    def history(self, ids, i):
        h = [EOS_ID]
        for j in range(i):
            h.append(int(ids[j]))
            if self.reset and ids[j] == EOS_ID:
                h = [EOS_ID]
        return tuple(h)

    @staticmethod
    def discounts(counts):
        n = Counter(counts.values())
        if not (n[1] and n[2] and n[3]):
            return [0.0, 0.75, 0.75, 0.75]
        y = n[1] / (n[1] + 2 * n[2])
        d = [1 - 2 * y * n[2] / n[1], 2 - 3 * y * n[3] / n[2], 3 - 4 * y * n[4] / n[3] if n[4] else 1.5]
        return [0.0] + [min(max(x, ngram.MIN_DISCOUNT), hi) for x, hi in zip(d, (1, 2, 3))]

    def prob(self, hist, w):
        p = 1.0 / V
        for k in range(1, self.n + 1):
            if len(hist) < k - 1:
                break
            h = hist[len(hist) - (k - 1):] if k > 1 else ()
            if h not in self.ctx[k]:
                break
            tot, gam = self.ctx[k][h]
            c = self.counts[k].get(h + (w,), 0)
            p = (max(c - self.D[k][min(c, 3)], 0.0) + gam * p) / tot
        return p


@pytest.mark.parametrize("reset", [False, True])
@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_probabilities_follow_the_kneser_ney_formula(order, reset):
    train, test = corpus(0), corpus(1, n=200)
    ng = ngram.fit(train, V, order, reset)
    ref = ReferenceKN(list(train), order, reset)
    expected = [ref.prob(ref.history(test, i), int(w)) for i, w in enumerate(test)]
    np.testing.assert_allclose(ngram.probs(ng, test), expected, rtol=1e-12)


@pytest.mark.parametrize("reset", [False, True])
def test_each_distribution_sums_to_one_and_agrees_with_the_targets(reset):
    train, test = corpus(0), corpus(2, n=300)
    ng = ngram.fit(train, V, 4, reset)
    dist = ngram.next_distribution(ng, test, np.arange(len(test)))
    assert dist.shape == (len(test), V)
    np.testing.assert_allclose(dist.sum(axis=1), 1.0, atol=1e-12)
    assert dist.min() > 0  # every token keeps some probability (the discounts are at least MIN_DISCOUNT)
    np.testing.assert_allclose(dist[np.arange(len(test)), test], ngram.probs(ng, test), rtol=1e-12)


def test_with_reset_a_line_does_not_see_the_line_before():
    train = corpus(0)
    for reset, same in ((True, True), (False, False)):
        ng = ngram.fit(train, V, 4, reset)
        a = ngram.probs(ng, np.array([2, 3, EOS_ID, 4, 4, 5]))[3:]
        b = ngram.probs(ng, np.array([5, 5, EOS_ID, 4, 4, 5]))[3:]
        assert np.array_equal(a, b) == same


def test_a_stream_start_is_where_its_history_begins():
    ng = ngram.fit(corpus(0), V, 4, False)
    two = np.array([2, 3, 4, 5, 3, 4, 2, 2])
    p = ngram.probs(ng, two, np.arange(8), start=np.array([0] * 4 + [4] * 4))
    np.testing.assert_array_equal(p[:4], ngram.probs(ng, two[:4]))
    np.testing.assert_array_equal(p[4:], ngram.probs(ng, two[4:]))


def test_the_order_is_capped_where_keys_would_overflow():
    assert ngram.max_order(66) >= 7
    assert 30_000 ** ngram.max_order(30_000) < 2 ** 62 <= 30_000 ** (ngram.max_order(30_000) + 1)
    ng = ngram.fit(np.array([2, 3, 4, 2, 3, 4]), 30_000, 7, False)
    assert ng.order == ngram.max_order(30_000) < 7


def test_counting_is_limited_to_the_last_tokens(monkeypatch):
    monkeypatch.setattr(ngram, "MAX_TOKENS", 100)
    ids = corpus(0, n=1000)
    a, b = ngram.fit(ids, V, 3, False), ngram.fit(ids[-100:], V, 3, False)
    for x, y in zip(a.keys + a.counts, b.keys + b.counts):
        np.testing.assert_array_equal(x, y)


def test_tables_round_trip_through_arrays():
    ng = ngram.fit(corpus(0), V, 5, True)
    back = ngram.from_arrays(ngram.to_arrays(ng), V, True)
    test = corpus(3, n=100)
    np.testing.assert_array_equal(ngram.probs(back, test), ngram.probs(ng, test))
    assert ngram.from_arrays({}, V, True) is None


@pytest.mark.parametrize("damage", ["unsorted", "out of range", "zero count", "huge count", "no counts", "float keys",
                                    "too high"])
def test_damaged_tables_are_refused(damage):
    arrays = ngram.to_arrays(ngram.fit(corpus(0), V, 3, False))
    keys = arrays["ngram.2.keys"]
    if damage == "unsorted":
        arrays["ngram.2.keys"] = keys[::-1].copy()
    elif damage == "out of range":
        arrays["ngram.2.keys"] = np.append(keys, V ** 2)
        arrays["ngram.2.counts"] = np.append(arrays["ngram.2.counts"], 1)
    elif damage == "zero count":
        arrays["ngram.2.counts"] = arrays["ngram.2.counts"] * 0
    elif damage == "huge count":  # would wrap to a negative int64
        arrays["ngram.2.counts"] = arrays["ngram.2.counts"].astype(np.uint64) + np.uint64(2 ** 63)
    elif damage == "no counts":
        del arrays["ngram.2.counts"]
    elif damage == "float keys":
        arrays["ngram.2.keys"] = keys.astype(np.float64)
    else:
        for k in range(4, 30):
            arrays[f"ngram.{k}.keys"] = np.zeros(0, dtype=np.int64)
            arrays[f"ngram.{k}.counts"] = np.zeros(0, dtype=np.uint32)
    with pytest.raises(CheckpointError):
        ngram.from_arrays(arrays, V, False)


def test_discounts_stay_between_the_floor_and_the_count():
    rng = np.random.default_rng(0)
    for _ in range(50):
        counts = rng.integers(1, 6, size=rng.integers(1, 40))
        d = ngram.discounts(counts)
        assert d[0] == 0 and all(ngram.MIN_DISCOUNT <= d[c] <= c for c in (1, 2, 3))
    assert math.isclose(ngram.discounts(np.array([1, 1, 2]))[1], 0.75)


def test_nothing_counted_is_the_uniform_distribution():
    ng = ngram.fit(np.zeros(0, dtype=np.uint8), V, 5, False)
    np.testing.assert_array_equal(ngram.probs(ng, np.array([2, 3, 0])), 1.0 / V)
    np.testing.assert_array_equal(ngram.next_distribution(ng, np.array([2, 3]), np.array([0, 1])), 1.0 / V)


def test_searching_in_sorted_order_finds_the_same(monkeypatch):
    ng = ngram.fit(corpus(0, n=3000), V, 6, True)
    test = corpus(4, n=2000)
    monkeypatch.setattr(ngram, "SORT_QUERIES", 10 ** 9)
    plain, dist = ngram.probs(ng, test), ngram.next_distribution(ng, test, np.arange(50))
    monkeypatch.setattr(ngram, "SORT_QUERIES", 1)
    np.testing.assert_array_equal(ngram.probs(ng, test), plain)
    np.testing.assert_array_equal(ngram.next_distribution(ng, test, np.arange(50)), dist)


@pytest.mark.parametrize("reset", [False, True])
@pytest.mark.parametrize("order", [1, 2, 4, 7])
def test_one_history_at_a_time_is_the_same_distribution(order, reset):
    """Sampling asks for one history per step (a path of its own): bit for bit the batched result, every history length."""
    ng = ngram.fit(corpus(0, n=3000), V, order, reset)
    test = corpus(5, n=120)
    tokens, length = ngram.histories(test, np.arange(len(test)), 0, max(order - 1, 0), reset)
    batched = ngram.estimate(ng, tokens, length)
    one = np.concatenate([ngram.estimate(ng, tokens[:, j:j + 1], length[j:j + 1]) for j in range(len(test))])
    assert len(set(length.tolist())) == max(order - 1, 1)            # histories of every length, short ones included
    np.testing.assert_array_equal(one, batched)
    ref = ReferenceKN(list(corpus(0, n=3000)), order, reset)
    j = len(test) - 1
    np.testing.assert_allclose(one[j], [ref.prob(ref.history(test, j), w) for w in range(V)], rtol=1e-12)


# ---------------------------------------------------------------------------
# the baselines printed after training: this n-gram at orders 1 and N
# ---------------------------------------------------------------------------

def reference_bits(train, val, order, reset):
    ref = ReferenceKN(list(train), order, reset)
    return -np.mean([math.log2(ref.prob(ref.history(val, i), int(w))) for i, w in enumerate(val)])


@pytest.mark.parametrize("reset", [False, True])
def test_baselines_are_this_ngram_at_order_one_and_the_models_order(reset):
    train, val = corpus(0), corpus(1, n=200)
    b = validation.baselines(train, val, V, 3, reset)
    assert list(b) == ["unigram", "3-gram"]
    assert math.isclose(b["unigram"], reference_bits(train, val, 1, reset), rel_tol=1e-12)
    assert math.isclose(b["3-gram"], reference_bits(train, val, 3, reset), rel_tol=1e-12)
    assert list(validation.baselines(train, val, V, 1, reset)) == ["unigram"]


def test_the_unigram_baseline_by_hand():
    """Order 1: P(w) = (max(c(w) − D, 0) + γ/V) / N, γ = Σ_w D; too few counts to tell: D = 0.75."""
    train, val, v = np.array([2, 2, 3, 0]), np.array([2, 4]), 5
    gamma = 3 * 0.75                       # three tokens seen
    p2 = (2 - 0.75 + gamma / v) / 4
    p4 = (0 + gamma / v) / 4               # never seen: the mass set aside, spread evenly
    assert math.isclose(validation.baselines(train, val, v, 1, False)["unigram"], -(math.log2(p2) + math.log2(p4)) / 2)


def test_the_ngram_baseline_beats_the_unigram_on_structured_text_and_needs_both_splits():
    rng = np.random.default_rng(0)
    words = [np.array(w) for w in ([2, 3, 4, 0], [5, 6, 0], [7, 3, 8, 9, 0])]
    ids = np.concatenate([words[i] for i in rng.integers(0, 3, 3000)])
    train, val = ids[:-500], ids[-500:]
    b = validation.baselines(train, val, 10, 5, False)
    assert b["5-gram"] < 0.5 * b["unigram"]
    assert validation.baselines(train, val[:0], 10, 5, False) == {}
    assert validation.baselines(train[:0], val, 10, 5, False) == {}


def test_the_baseline_names_the_order_it_could_count():
    big = 70_000                           # 70,000^4 overflows int64 keys: at most 3-grams
    assert ngram.max_order(big) == 3
    assert list(validation.baselines(np.array([2, 3, 2, 3]), np.array([2, 3]), big, 7, False)) == ["unigram", "3-gram"]
