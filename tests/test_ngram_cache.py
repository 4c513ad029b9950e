"""The n-gram's terms during generation, cached by seen contexts: bit for bit those computed afresh at every step."""

import numpy as np
import pytest

from charlm import mixture, ngram, ngram_cache
from charlm.mixture import Mixture
from charlm.model import Arch, param_shapes
from charlm.sample import generate
from charlm.vocab import EOS_ID

V = 7  # <EOS>, <UNK>, and five characters 2..6


def text(seed=0, n=3000):
    """A stream that repeats itself, as text does: words from a small lexicon, <EOS> now and then."""
    rng = np.random.default_rng(seed)
    words = [rng.integers(2, V, size=rng.integers(1, 5)) for _ in range(12)]
    out = []
    while len(out) < n:
        out.extend(words[rng.integers(len(words))].tolist())
        out.append(EOS_ID if rng.random() < 0.2 else 2)
    return np.array(out[:n])


def network(reset, seed=0):
    rng = np.random.default_rng(seed)
    arch = Arch("lstm", V, 8, 2, reset_at_eos=reset)
    return {k: rng.standard_normal(s) * 0.8 for k, s in param_shapes(arch).items()}, arch


def sample(mix, reset, num, cache, **kw):
    params, arch = network(reset)
    steps = list(generate(params, arch, np.random.default_rng(3), num, 400, stop_at_eos=False, mix=mix,
                          prime=text(9, 5), ngram_cache=cache, **kw))
    return np.array([s[0] for s in steps]), np.array([s[2] for s in steps])


@pytest.mark.parametrize("reset", [False, True])
@pytest.mark.parametrize("num", [1, 3, ngram_cache.ROWS + 1])
@pytest.mark.parametrize("kw", [{}, {"temperature": 0.6, "top_k": 4}, {"temperature": 0.0}])
def test_sampling_with_the_cache_gives_the_same_samples_bit_for_bit(reset, num, kw):
    mix = Mixture(ngram.fit(text(), V, 5, reset), 0.4)
    ids, logp = sample(mix, reset, num, True, **kw)
    plain_ids, plain_logp = sample(mix, reset, num, False, **kw)
    np.testing.assert_array_equal(ids, plain_ids)
    np.testing.assert_array_equal(logp, plain_logp)
    other_ids, _ = sample(Mixture(mix.ngram, 0.9), reset, num, True, **kw)   # the n-gram's share shows
    assert kw.get("temperature") == 0.0 or not np.array_equal(ids, other_ids)


@pytest.mark.parametrize("reset", [False, True])
@pytest.mark.parametrize("order", [1, 2, 6])
def test_the_terms_are_the_mixture_s_with_every_history_and_the_cache_is_used(reset, order):
    ng = ngram.fit(text(), V, order, reset)
    mix = Mixture(ng, 0.3)
    stream = text(4, 600)
    cached = ngram_cache.Histories(mix, stream[:3], 1)
    cached.max_entries = 50                                     # the cache also starts over on the way
    width = ng.order - 1
    for t in range(3, len(stream)):
        tokens, length = ngram.histories(stream, np.array([t]), 0, width, reset)
        expected = mixture.ngram_term(0.3, ngram.estimate(ng, tokens, length))   # the batched estimate
        np.testing.assert_array_equal(cached.terms(), expected)
        cached.extend(stream[t:t + 1])
    assert cached.hits > len(stream) // 2 and cached.misses > 0


@pytest.mark.parametrize("reset", [False, True])
def test_contexts_looked_up_order_by_order_are_the_n_gram_s(reset):
    ng = ngram.fit(text(), V, 6, reset)
    assert ng.nested
    cached = ngram_cache.Histories(Mixture(ng, 0.5), text(6, 3), 1)
    stream = text(6, 400)
    for t in range(5, len(stream)):
        history = tuple(stream[t - 5:t][::-1].tolist())
        assert cached._contexts(history) == ngram.seen_contexts(ng, history)
    assert len(cached.known) > 10


def test_tables_that_are_not_nested_are_looked_up_at_every_order():
    """A hand-made table whose order-3 context "2 3" has no order-2 context "3": every order is looked up."""
    keys = [np.array([2, 3, 4]), np.array([2 * V + 4, 4 * V + 2]), np.array([(2 * V + 3) * V + 5])]
    counts = [np.array([3, 2, 1]), np.array([1, 2]), np.array([4])]
    ng = ngram.from_tables(V, False, keys, counts)
    assert not ng.nested
    history = (3, 2)                                     # newest first: the context "2 3"
    plain = ngram.seen_contexts(ng, history)
    assert plain[1] == -1 and plain[2] >= 0
    cached = ngram_cache.Histories(Mixture(ng, 0.5), np.array([2, 3]), 1)
    assert cached._contexts(history) == plain
    expected = ngram.estimate(ng, np.array([[3], [2]]), np.array([2]))
    np.testing.assert_array_equal(cached.terms(), mixture.ngram_term(0.5, expected))
    np.testing.assert_array_equal(ngram.seen_distribution(ng, plain), expected[0])


def test_the_network_alone_when_its_share_is_one():
    mix = Mixture(ngram.fit(text(), V, 4, False), 1.0)
    ids, logp = sample(mix, False, 2, True)
    plain_ids, plain_logp = sample(None, False, 2, True)
    np.testing.assert_array_equal(ids, plain_ids)
    np.testing.assert_array_equal(logp, plain_logp)
