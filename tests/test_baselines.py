"""The baselines printed after training: add-one unigram and interpolated Witten–Bell n-gram."""

import math
from collections import Counter

import numpy as np

from charlm.baselines import baselines, ngram_bits, unigram_bits


def test_unigram_matches_add_one_by_hand():
    train = np.array([2, 2, 3, 0])
    val = np.array([2, 4])
    V = 5
    p2 = (2 + 1) / (4 + 5)
    p4 = (0 + 1) / (4 + 5)
    assert math.isclose(unigram_bits(train, val, V), -(math.log2(p2) + math.log2(p4)) / 2)


def test_bigram_witten_bell_by_hand():
    """Order 2: P(w|h) = (c(h,w) + T(h)·P_uni(w)) / (c(h) + T(h)), history padded with <EOS> = 0."""
    train = np.array([2, 3, 2, 3, 2, 4, 0])
    val = np.array([2, 3, 4])
    V = 5
    uni = Counter(train.tolist())
    p_uni = lambda w: (uni[w] + 1) / (len(train) + V)
    hist = [0] + train[:-1].tolist()
    pairs = Counter(zip(hist, train.tolist()))
    c_h = Counter(hist)
    types = Counter(h for (h, _w) in pairs)
    expected = 0.0
    for h, w in zip([0, 2, 3], val.tolist()):
        if c_h[h]:
            p = (pairs[(h, w)] + types[h] * p_uni(w)) / (c_h[h] + types[h])
        else:
            p = p_uni(w)
        expected -= math.log2(p)
    assert math.isclose(ngram_bits(train, val, V, order=2), expected / 3)


def test_ngram_beats_unigram_on_structured_text():
    rng = np.random.default_rng(0)
    words = [np.array(w) for w in ([2, 3, 4, 0], [5, 6, 0], [7, 3, 8, 9, 0])]
    ids = np.concatenate([words[i] for i in rng.integers(0, 3, 3000)])
    train, val = ids[:-500], ids[-500:]
    b = baselines(train, val, 10)
    assert b["5-gram"] < 0.5 * b["unigram"]
    assert baselines(train, val[:0], 10) == {}
