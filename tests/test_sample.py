"""Sampling: greedy decoding, the sampling distribution, its numerical safety, and generate()."""

import math

import numpy as np
import pytest

from charlm import inference, model
from charlm.model import Arch, param_shapes
from charlm.sample import choose, distribution, draw, generate
from charlm.vocab import EOS_ID


def softmax(z):
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max())
    return e / e.sum()


def chi2_sf(x: float, k: int) -> float:
    """P(χ²_k > x), by the Wilson–Hilferty cube-root normal approximation."""
    if x <= 0:
        return 1.0
    z = ((x / k) ** (1.0 / 3.0) - (1.0 - 2.0 / (9.0 * k))) / math.sqrt(2.0 / (9.0 * k))
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def test_chi2_sf_approximation_is_sane():
    # known quantiles: χ²_5 at 11.07 -> 0.05; χ²_10 at 23.21 -> 0.01; χ²_3 at 16.27 -> 0.001
    assert chi2_sf(11.0705, 5) == pytest.approx(0.05, abs=0.003)
    assert chi2_sf(23.2093, 10) == pytest.approx(0.01, abs=0.001)
    assert chi2_sf(16.2662, 3) == pytest.approx(0.001, abs=0.0005)


def check_frequencies(ids, p, n_draws):
    """Chi-square goodness of fit, and every frequency within 5 standard errors."""
    counts = np.bincount(ids, minlength=len(p)).astype(np.float64)
    assert counts.sum() == n_draws
    assert np.all(counts[p == 0] == 0), "a token with probability 0 was drawn"
    support = p > 0
    expected = n_draws * p[support]
    stat = float(((counts[support] - expected) ** 2 / expected).sum())
    dof = int(support.sum()) - 1
    if dof > 0:
        assert chi2_sf(stat, dof) > 1e-3, (stat, dof, counts, expected)
    freq = counts / n_draws
    se = np.sqrt(p * (1 - p) / n_draws)
    assert np.all(np.abs(freq - p) <= 5 * se + 1e-12), (freq, p)


LOGITS = np.array([2.0, 1.0, 0.5, -1.0, 0.0, 3.0, -2.5, 1.5])
N_DRAWS = 20_000


@pytest.mark.parametrize("T", [0.5, 1.0, 2.0])
def test_choose_follows_softmax_of_logits_over_temperature(T):
    rng = np.random.default_rng(1234)
    batch = np.tile(LOGITS, (N_DRAWS, 1))
    ids = choose(batch, rng, temperature=T)
    assert ids.shape == (N_DRAWS,)
    p = softmax(LOGITS / T)
    np.testing.assert_allclose(distribution(LOGITS[None], T)[0], p, rtol=1e-12)
    check_frequencies(ids, p, N_DRAWS)


def test_chi_square_check_has_teeth():
    """Negative control: draws at T = 1 do not pass as draws at T = 2."""
    rng = np.random.default_rng(1234)
    ids = choose(np.tile(LOGITS, (N_DRAWS, 1)), rng, temperature=1.0)
    with pytest.raises(AssertionError):
        check_frequencies(ids, softmax(LOGITS / 2.0), N_DRAWS)


def test_one_row_at_a_time_follows_the_same_distribution():
    """Sampling one sequence takes draw()'s binary search: its draws follow softmax(logits / T) too."""
    rng = np.random.default_rng(77)
    ids = np.array([choose(LOGITS[None], rng, temperature=0.7)[0] for _ in range(N_DRAWS)])
    check_frequencies(ids, softmax(LOGITS / 0.7), N_DRAWS)


def test_draw_is_the_same_one_row_at_a_time_and_as_a_batch():
    """One uniform number per row, in row order: a batch draws what its rows drawn one by one would."""
    weights = np.random.default_rng(3).random((200, 9)) ** 4
    weights[:, [0, 4, 8]] = 0.0                      # tokens that may never be drawn, the first and last included
    weights[7] = 0.0
    weights[7, 8] = 2.5                              # a row with all its weight on the last token
    batch = draw(weights, np.random.default_rng(11))
    rng = np.random.default_rng(11)
    one_by_one = np.array([draw(w[None], rng)[0] for w in weights])
    np.testing.assert_array_equal(batch, one_by_one)
    assert not np.isin(batch, [0, 4]).any() and batch[7] == 8
    assert set(batch.tolist()) == {1, 2, 3, 5, 6, 7, 8}   # every other token is drawn somewhere


def test_draw_is_proportional_to_unnormalised_weights():
    w = np.array([0.0, 3.0, 1.0, 0.0, 6.0])
    rng = np.random.default_rng(5)
    check_frequencies(draw(np.tile(w, (N_DRAWS, 1)), rng), w / w.sum(), N_DRAWS)


def test_choose_with_top_k_and_top_p_follows_the_restricted_distribution():
    rng = np.random.default_rng(99)
    batch = np.tile(LOGITS, (N_DRAWS, 1))
    p = softmax(LOGITS)
    # top-3: the three largest logits (3.0, 2.0, 1.5), renormalised
    top3 = np.zeros_like(p)
    keep = np.argsort(-LOGITS)[:3]
    top3[keep] = p[keep] / p[keep].sum()
    check_frequencies(choose(batch, rng, 1.0, top_k=3), top3, N_DRAWS)
    # top-p 0.8: the smallest prefix of the sorted probabilities whose mass reaches 0.8
    order = np.argsort(-p)
    cum = np.cumsum(p[order])
    n_keep = int(np.searchsorted(cum, 0.8) + 1)
    nucleus = np.zeros_like(p)
    nucleus[order[:n_keep]] = p[order[:n_keep]] / p[order[:n_keep]].sum()
    check_frequencies(choose(batch, rng, 1.0, top_p=0.8), nucleus, N_DRAWS)


def test_top_k_keeps_exactly_k_tokens():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((50, 12)) * 2
    for k in (1, 2, 5, 11, 12):
        probs = distribution(logits, 1.0, top_k=k)
        assert np.all(np.count_nonzero(probs, axis=1) == k)
        for row, lg in zip(probs, logits):
            kept = set(np.flatnonzero(row))
            assert kept == set(np.argsort(-lg)[:k])
            np.testing.assert_allclose(row[list(kept)], softmax(lg[list(kept)]), rtol=1e-12)
    assert np.array_equal(distribution(logits, 1.0, top_k=0), distribution(logits, 1.0))


def test_top_p_keeps_the_smallest_set_reaching_p():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((40, 9)) * 1.5
    for row_logits in logits:
        p = softmax(row_logits)
        order = np.argsort(-p)
        cum = np.cumsum(p[order])
        for j in range(len(p) - 1):
            # a p strictly between two cumulative sums: exactly j + 1 tokens are needed
            top_p = (cum[j - 1] + cum[j]) / 2 if j else cum[0] / 2
            probs = distribution(row_logits[None], 1.0, top_p=top_p)[0]
            assert set(np.flatnonzero(probs)) == set(order[: j + 1]), (j, top_p)
            assert probs.sum() == pytest.approx(1.0, abs=1e-12)
    # top_p = 1 keeps everything
    assert np.all(distribution(logits, 1.0, top_p=1.0) > 0)


@pytest.mark.parametrize("T", [1e-300, 1e-12, 1e-3, 1.0, 1e6, 1e300])
@pytest.mark.parametrize("top_k,top_p", [(0, 1.0), (1, 1.0), (3, 1.0), (0, 0.5), (0, 1e-9), (4, 0.9)])
def test_distribution_is_numerically_safe(T, top_k, top_p):
    rng = np.random.default_rng(5)
    logits = np.concatenate([
        rng.standard_normal((4, 8)) * 3,
        np.array([[1e300, -1e300, 0, 5, -5, 1e-300, 2, 2]]),
        np.array([[3, 3, 3, 3, 3, 3, 3, 3]]),                 # all tied
        np.array([[-1e4, -1e4 + 1, -2e4, 0, 1e4, -1e4, 7, 8]]),
    ])
    as_float32 = np.clip(logits, -3e38, 3e38).astype(np.float32)  # finite float32 logits
    for lg in (logits, as_float32):
        with np.errstate(over="raise", invalid="raise", divide="raise"):  # no hidden NaN-making operations
            probs = distribution(lg, T, top_k, top_p)
            ids = choose(lg, np.random.default_rng(0), T, top_k, top_p)
        assert probs.shape == lg.shape
        assert not np.any(np.isnan(probs))
        assert np.all(probs >= 0)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
        assert np.all((0 <= ids) & (ids < lg.shape[1]))
        assert np.all(probs[np.arange(len(ids)), ids] > 0)  # only possible tokens are drawn
        if top_k:  # rows without ties at the k-th largest logit keep at most k tokens
            distinct = [0, 1, 2, 3, 6]
            assert np.all(np.count_nonzero(probs[distinct], axis=1) <= top_k)


def test_extreme_temperatures_approach_argmax_and_uniform():
    logits = np.array([[0.1, 0.3, 0.2, -5.0]])
    cold = distribution(logits, 1e-300)
    assert cold.tolist() == [[0.0, 1.0, 0.0, 0.0]]
    hot = distribution(logits, 1e300)
    np.testing.assert_allclose(hot, 0.25, rtol=1e-12)
    greedy = distribution(logits, 0.0)
    assert greedy.tolist() == [[0.0, 1.0, 0.0, 0.0]]
    assert choose(logits, np.random.default_rng(0), 0.0).tolist() == [1]


# ---------------------------------------------------------------------------
# generate
# ---------------------------------------------------------------------------

def make_model(cell="gru", V=6, H=8, seed=0, eos_bias=0.0):
    rng = np.random.default_rng(seed)
    arch = Arch(cell, V, H, 2)
    params = {k: rng.standard_normal(s) * 0.8 for k, s in param_shapes(arch).items()}
    params["head.bias"][EOS_ID] += eos_bias
    return params, arch


def run(params, arch, seed, **kw):
    steps = list(generate(params, arch, np.random.default_rng(seed), **kw))
    ids = np.array([s[0] for s in steps])
    active = np.array([s[1] for s in steps])
    logp = np.array([s[2] for s in steps])
    return ids, active, logp


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_greedy_is_argmax_stepping(cell):
    params, arch = make_model(cell, eos_bias=-50.0)  # never ends early
    prime = np.array([3, 2, 4])
    ids, active, logp = run(params, arch, 0, num=3, length=15, temperature=0.0, prime=prime)
    assert ids.shape == (15, 3) and active.all()
    # by hand: read <EOS>, then the prime, then feed back the argmax
    state = model.zero_state(arch, 1, np.float64)
    for tok in [EOS_ID, *prime]:
        logits, state = inference.step(params, arch, np.array([tok]), state)
    expected, expected_logp = [], []
    for _ in range(15):
        nxt = int(np.argmax(logits[0]))
        expected.append(nxt)
        expected_logp.append(np.log(softmax(logits[0]))[nxt])
        logits, state = inference.step(params, arch, np.array([nxt]), state)
    for row in range(3):
        assert ids[:, row].tolist() == expected
        np.testing.assert_allclose(logp[:, row], expected_logp, atol=1e-10)
    # deterministic, whatever the seed
    again, _, _ = run(params, arch, 99, num=3, length=15, temperature=0.0, prime=prime)
    assert np.array_equal(ids, again)


def test_the_prime_is_read_first():
    params, arch = make_model("lstm")
    with_prime, _, lp1 = run(params, arch, 0, num=1, length=1, temperature=0.0, prime=np.array([5, 5, 1]))
    without, _, lp2 = run(params, arch, 0, num=1, length=1, temperature=0.0)
    state = model.zero_state(arch, 1, np.float64)
    for tok in [EOS_ID, 5, 5, 1]:
        logits, state = inference.step(params, arch, np.array([tok]), state)
    assert with_prime[0, 0] == np.argmax(logits[0])
    assert lp1[0, 0] == pytest.approx(np.log(softmax(logits[0]))[with_prime[0, 0]], abs=1e-10)
    logits0, _ = inference.step(params, arch, np.array([EOS_ID]), model.zero_state(arch, 1, np.float64))
    assert without[0, 0] == np.argmax(logits0[0])
    assert not np.isclose(lp1[0, 0], lp2[0, 0])


def test_same_seed_same_samples_other_seed_other_samples():
    params, arch = make_model("gru", eos_bias=-50.0)
    a, _, _ = run(params, arch, 7, num=4, length=40, temperature=1.0, top_k=4, top_p=0.95)
    b, _, _ = run(params, arch, 7, num=4, length=40, temperature=1.0, top_k=4, top_p=0.95)
    c, _, _ = run(params, arch, 8, num=4, length=40, temperature=1.0, top_k=4, top_p=0.95)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    # side-by-side samples differ from one another
    assert len({tuple(a[:, n]) for n in range(4)}) > 1


def test_stop_at_eos_ends_each_row_at_its_eos():
    params, arch = make_model("lstm", V=5, eos_bias=1.5)
    num = 16
    ids, active, logp = run(params, arch, 3, num=num, length=200, temperature=1.0)
    ends = []
    for n in range(num):
        eos_steps = [t for t in range(len(ids)) if active[t, n] and ids[t, n] == EOS_ID]
        assert eos_steps, "every row should have ended (EOS is likely)"
        end = eos_steps[0]
        ends.append(end)
        assert active[: end + 1, n].all()          # active up to and including its <EOS>
        assert not active[end + 1:, n].any()       # and never again after it
        assert EOS_ID not in ids[:end, n].tolist()
    assert len(ids) == max(ends) + 1  # the generator stops once every row has ended
    assert len(set(ends)) > 1         # rows end independently
    assert np.all(logp <= 0) and np.all(np.isfinite(logp))


def test_without_stop_at_eos_runs_the_full_length():
    params, arch = make_model("rnn", V=5, eos_bias=2.0)
    ids, active, _ = run(params, arch, 3, num=3, length=30, temperature=1.0, stop_at_eos=False)
    assert ids.shape == (30, 3) and active.all()
    assert EOS_ID in ids  # EOS was produced, and generation went on


@pytest.mark.parametrize("stop_at_eos", [True, False])
def test_generate_texts_is_generate_decoded(stop_at_eos):
    """generate_texts: the same tokens as generate, as text; the ending <EOS> counted and scored, not written."""
    from charlm.sample import generate_texts
    from charlm.vocab import Vocab

    params, arch = make_model("lstm", V=5, eos_bias=1.5)
    vocab = Vocab(("<EOS>", "<UNK>", "a", "b", "c"))
    ids, active, logp = run(params, arch, 3, num=6, length=40, temperature=1.0, stop_at_eos=stop_at_eos)
    shown = [[] for _ in range(6)]
    texts = generate_texts(params, arch, vocab, np.random.default_rng(3), num=6, length=40, temperature=1.0,
                           stop_at_eos=stop_at_eos, on_text=lambda n, ch: shown[n].append(ch))
    assert len(texts) == 6
    for n, t in enumerate(texts):
        mine = ids[active[:, n], n]
        assert t.tokens == len(mine)
        assert t.logprob == pytest.approx(float(logp[active[:, n], n].sum()), abs=1e-12)
        written = mine[:-1] if stop_at_eos and mine[-1] == EOS_ID else mine
        assert t.text == vocab.decode(written) == "".join(shown[n])
        assert ("\n" in t.text) == (EOS_ID in written)    # an <EOS> inside a sample is a newline
    if stop_at_eos:
        assert not any("\n" in t.text for t in texts)
    else:
        assert any("\n" in t.text for t in texts)
