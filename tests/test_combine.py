"""The bidirectional network combined with a forward and a backward n-gram (charlm.combine): the fitting
objective's gradient and Hessian against finite differences (with negative controls), the combined
probabilities against brute-force products of the experts, the backward n-gram against counts of the
reversed text, the checkpoint keys, and training end to end."""

import numpy as np
import pytest

from charlm import bidirectional as bd
from charlm import check, checkpoint, combine, model, ngram
from charlm.config import Config
from charlm.dataset import load_corpus
from charlm.describe import describe
from charlm.errors import CheckpointError
from charlm.train import train
from charlm.vocab import EOS_ID

V = 6


def experts(n=40, K=4, seed=0):
    """Random features shaped like the real ones (log-probabilities of K distributions) and targets."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, V, K)) * 2
    F = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    y = rng.integers(0, V, n)
    return F, y


def test_objective_gradient_and_hessian_match_finite_differences_in_float64():
    F, y = experts()
    w = np.array([0.8, 0.3, -0.2, 0.5])
    J, grad, hess = combine.objective(w, F, y)
    eps = 1e-6
    num_grad = np.array([(combine.objective(w + eps * e, F, y)[0] - combine.objective(w - eps * e, F, y)[0]) / (2 * eps)
                         for e in np.eye(4)])
    num_hess = np.array([(combine.objective(w + eps * e, F, y)[1] - combine.objective(w - eps * e, F, y)[1]) / (2 * eps)
                         for e in np.eye(4)])

    def rel(a, b):
        return np.abs(a - b).max() / max(np.abs(a).max(), np.abs(b).max())

    assert rel(grad, num_grad) < 1e-7 and rel(hess, num_hess) < 1e-6
    # negative controls: the gradient without the expectation term, and the Hessian without its outer product
    wrong_grad = -F[np.arange(len(y)), y].mean(axis=0)
    p = np.exp(np.log(np.exp(F @ w).sum(axis=1, keepdims=True)) * -1 + F @ w)
    wrong_hess = np.einsum("nv,nvk,nvj->kj", p, F, F) / len(y)
    assert rel(wrong_grad, num_grad) > 1e-2 and rel(wrong_hess, num_hess) > 1e-2
    assert np.all(np.linalg.eigvalsh(hess) > -1e-12)                      # convex


def test_fit_weights_reaches_the_optimum_and_beats_the_network_alone():
    F, y = experts(n=200)
    hint = np.where(np.random.default_rng(2).random(len(y)) < 0.6, y, (y + 1) % V)   # right 60 % of the time
    F[..., 1] = np.log(np.where(np.arange(V)[None] == hint[:, None], 0.6, 0.4 / (V - 1)))   # an informative expert
    w = combine.fit_weights(F, y)
    J, grad, _ = combine.objective(w, F, y)
    assert np.abs(grad).max() < 1e-6
    assert J < combine.objective(np.array([1.0, 0, 0, 0]), F, y)[0] - 0.1
    rng = np.random.default_rng(1)
    assert all(J <= combine.objective(w + rng.normal(size=4) * 0.1, F, y)[0] for _ in range(20))


def grams(reset=False, order=3):
    corpus = np.random.default_rng(0).integers(0, V, 400)
    corpus[::9] = EOS_ID
    return corpus, combine.fit_ngrams(corpus, V, order, reset)


def line_conditional(ng, q_of, n):
    """P(c | the whole line) of one n-gram by enumeration: P(every token of the candidate line, then <EOS>)."""
    out = np.empty((n, V))
    for t in range(n):
        score = np.array([np.log(ngram.probs(ng, np.append(q_of(t, c), EOS_ID))).sum() for c in range(V)])
        out[t] = np.exp(score - np.logaddexp.reduce(score))
    return out


def substituted(line, t, c):
    q = np.array(line).copy()
    q[t] = c
    return q


@pytest.mark.parametrize("reset", [False, True])
def test_the_ngram_experts_are_each_ngrams_conditional_given_the_whole_line_by_brute_force(reset):
    corpus, (fwd, bwd, two) = grams(reset)
    direct = ngram.fit(corpus[::-1].copy(), V, 3, reset)              # the backward n-gram: the reversed text's
    line = np.array([2, 3, 4, 5, 2], dtype=np.intp)
    got = np.exp(combine.ngram_features(fwd, bwd, two, line))        # (n, V, 4)
    np.testing.assert_allclose(got[..., 0], line_conditional(fwd, lambda t, c: substituted(line, t, c), 5), rtol=1e-10)
    np.testing.assert_allclose(got[..., 1], line_conditional(direct, lambda t, c: substituted(line, t, c)[::-1], 5),
                               rtol=1e-10)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-12)      # each expert is a distribution
    assert not np.allclose(got[..., 0], got[..., 1])                   # the two directions are two experts


def two_sided_by_hand(line, t, width):
    """l1, r1, l2, r2, … of position t of a line alone, the <EOS> on each side its last token; and its length."""
    toks, j = [], 1
    while len(toks) < width:
        for i in (t - j, t + j):
            if len(toks) == width:
                break
            if i < -1 or i > len(line):                # past the <EOS> of that side: the history ends
                return toks, len(toks)
            toks.append(EOS_ID if i in (-1, len(line)) else int(line[i]))
        j += 1
    return toks, len(toks)


def lines_of(stream):
    return [list(x) for x in np.split(stream, np.flatnonzero(stream == EOS_ID)) for x in [x[x != EOS_ID]] if len(x)]


def test_the_two_sided_ngram_counts_both_sides_nearest_first_by_brute_force():
    corpus = np.random.default_rng(3).integers(2, V, 300)
    corpus[::7] = EOS_ID
    two = combine.fit_two_sided(corpus, V, 4)                          # history l1, r1, l2
    top, cut = {}, {}
    for line in lines_of(corpus):
        for t, c in enumerate(line):
            h, n = two_sided_by_hand(np.array(line), t, 3)
            key = sum(tok * V ** j for j, tok in enumerate(h[:n])) * V + c
            (top if n == 3 else cut)[key] = (top if n == 3 else cut).get(key, 0) + 1
    assert two.keys[3].tolist() == sorted(top) and two.counts[3].tolist() == [top[k] for k in sorted(top)]
    order3 = dict(zip(two.keys[2].tolist(), two.counts[2].tolist()))
    assert cut and all(order3[k] == v for k, v in cut.items())        # cut histories: raw counts
    # the features read the same histories: P_two of each candidate at a position, against estimate by hand
    line = np.array([2, 3, 4, 5], dtype=np.int64)
    fwd, bwd = combine.fit_ngrams(corpus, V, 4, False)[:2]
    got = np.exp(combine.ngram_features(fwd, bwd, two, line)[..., 3])
    for t in range(len(line)):
        h, n = two_sided_by_hand(line, t, 3)
        tokens = np.array(h + [0] * (3 - len(h)))[:, None].repeat(V, axis=1)
        want = ngram.estimate(two, tokens, np.full(V, n), np.arange(V))
        np.testing.assert_allclose(got[t], want, rtol=1e-12)


def test_combined_probabilities_equal_the_normalised_product_of_the_experts_by_brute_force():
    corpus, (fwd, bwd, two) = grams()
    arch = model.Arch("gru", V, 3, 1, "tanh", False, True)
    params = model.init_params(arch, np.random.default_rng(2), "float64")
    w = np.array([0.7, 0.4, 0.5, -0.6, 0.3])
    comb = combine.Combination(fwd, bwd, two, w)
    line = np.array([2, 3, 4, 2, 5], dtype=np.intp)
    net = bd.log_probs(params, arch, [line])[0]
    got = check.conditionals(params, arch, [line], mix=comb)[0]
    p_f = line_conditional(fwd, lambda t, c: substituted(line, t, c), len(line))
    p_b = line_conditional(bwd, lambda t, c: substituted(line, t, c)[::-1], len(line))
    uni = np.array([ngram.probs(fwd, np.array([c]), np.array([0]))[0] for c in range(V)])   # no history but <EOS>...
    uni_none = combine.unigram(fwd)
    assert np.isclose(uni_none.sum(), 1.0) and not np.allclose(uni, uni_none)                # ...is not the unigram
    for t in range(len(line)):
        score = np.empty(V)
        for c in range(V):
            h, k = two_sided_by_hand(substituted(line, t, c), t, 2)
            p_t = ngram.estimate(two, np.array(h + [0] * (2 - len(h)))[:, None], np.array([k]), np.array([c]))[0]
            score[c] = (w[0] * net[t, c] + w[1] * np.log(p_f[t, c]) + w[2] * np.log(p_b[t, c])
                        + w[3] * np.log(uni_none[c]) + w[4] * np.log(p_t))
        np.testing.assert_allclose(got[t], score - np.logaddexp.reduce(score), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(check.conditionals(params, arch, [line])[0], net)   # without it: the network


# ---------------------------------------------------------------------------
# training and the checkpoint
# ---------------------------------------------------------------------------

TEXT = ("the cat sat on the mat.\nwe ate a pie at tea.\na bird in the hand\n"
        "is worth two in the bush!\n\nzebras graze; quietly.\nthe hat is on the bat.\n") * 2


@pytest.fixture(scope="module")
def combined():
    cfg = Config(cell="gru", hidden_size=8, num_layers=1, seq_len=8, batch_size=4, steps=12, lr=5e-3,
                 warmup_steps=2, val_fraction=0.2, eval_every=4, save_every=0, seed=3, bidirectional=True,
                 ngram=3).validate()
    ck, ended = train(cfg, load_corpus(TEXT.encode(), cfg, name="c.txt"))
    assert ended == "done"
    return ck


def test_training_fits_the_combination_and_the_checkpoint_keeps_it(combined, tmp_path):
    ck = combined
    assert set(ck.combine_weights) == {"last", "best"} and ck.ngram.order == ck.backward_ngram.order == 3
    assert ck.two_sided_ngram.order == 3 and ck.combine_weights["best"].shape == (5,)
    assert ck.meta["combine_val_bpc"] <= ck.meta["combine_net_val_bpc"] + 1e-9   # w = (1, 0, 0, 0) is a candidate
    path = str(tmp_path / "bi.npz")
    checkpoint.save(ck, path)
    loaded = checkpoint.load(path)
    for which in ("last", "best"):
        np.testing.assert_array_equal(loaded.combine_weights[which], ck.combine_weights[which])
    assert [k.tolist() for k in loaded.backward_ngram.keys] == [k.tolist() for k in ck.backward_ngram.keys]
    assert isinstance(loaded.mixture("best"), combine.Combination)
    arrays = checkpoint.to_arrays(ck)
    assert {"backward.ngram.1.keys", "backward.ngram.3.counts", "two_sided.ngram.3.keys", "combine.last",
            "combine.best"} <= set(arrays)
    assert "mix.weight" not in arrays
    shown = describe(loaded, path)["ngram"]                      # what `charlm info --json` shows of it
    assert shown["order"] == 3 and shown["network_share"] == {}
    assert shown["combination"]["best"] == pytest.approx(list(ck.combine_weights["best"]))


@pytest.mark.parametrize("damage,needle", [
    (lambda a: a.__setitem__("combine.best", np.array([1.0, np.nan, 0, 0, 0])), "NaN"),
    (lambda a: a.__setitem__("combine.best", np.zeros(3)), "combine.best"),
    (lambda a: a.__setitem__("backward.ngram.2.keys", a["backward.ngram.2.keys"][::-1].copy()), "not sorted"),
    (lambda a: a.__setitem__("combine.extra", np.zeros(4)), "combine.extra"),
])
def test_damaged_combination_members_are_refused(combined, damage, needle):
    arrays = checkpoint.to_arrays(combined)
    damage(arrays)
    with pytest.raises(CheckpointError, match=needle):
        checkpoint.from_arrays(arrays)


def test_a_left_to_right_checkpoint_refuses_combination_members(combined):
    cfg = Config(hidden_size=4, num_layers=1, seq_len=4, batch_size=2, steps=2, ngram=3, eval_every=0).validate()
    ck, _ = train(cfg, load_corpus(TEXT.encode(), cfg, name="c.txt"))
    arrays = checkpoint.to_arrays(ck)
    arrays["combine.best"] = np.zeros(5)
    with pytest.raises(CheckpointError, match="combine.best"):
        checkpoint.from_arrays(arrays)


@pytest.mark.parametrize("reset", [False, True])
@pytest.mark.parametrize("order", [1, 2, 4])
def test_the_ngram_conditional_given_the_whole_line_equals_brute_force_enumeration(reset, order):
    corpus = np.random.default_rng(0).integers(0, V, 500)
    corpus[::9] = EOS_ID
    ng = ngram.fit(corpus, V, order, reset)
    for line in ([2, 3, 4, 5, 2, 3, 1], [4], [2, 5]):
        line = np.array(line)
        got = combine.ngram_conditional(ng, line)
        for t in range(len(line)):
            score = np.empty(V)
            for c in range(V):                              # log P(the line with c at t, then <EOS>)
                q = np.append(line, EOS_ID)
                q[t] = c
                score[c] = np.log(ngram.probs(ng, q)).sum()
            np.testing.assert_allclose(got[t], np.exp(score - np.logaddexp.reduce(score)), rtol=1e-10, atol=1e-14)
    if order > 1:                                           # negative control: the left side alone is another number
        left = ngram.next_distribution(ng, np.append(line, EOS_ID), np.arange(len(line)))
        assert not np.allclose(got, left)
