"""The network interpolated with the n-gram: the fitted share, and scoring, sampling and training with it."""

import math

import numpy as np
import pytest

from charlm import inference, mixture, model, ngram
from charlm.mixture import Mixture
from charlm.model import Arch, init_params, param_shapes
from charlm.sample import generate
from charlm.score import document_log_prob, explain, score_sentences
from charlm.vocab import EOS_ID, Vocab

VOCAB = Vocab(("<EOS>", "<UNK>", " ", "a", "b", "c"))
V = len(VOCAB)


def make(cell="gru", reset=False, seed=0):
    rng = np.random.default_rng(seed)
    arch = Arch(cell, V, 6, 2, reset_at_eos=reset)
    params = {k: rng.standard_normal(s) * 0.7 for k, s in param_shapes(arch).items()}
    text = "abc ab cab\nba c\naab cc\n" * 20
    ng = ngram.fit(VOCAB.encode(text), V, 4, reset)
    return params, arch, ng


def net_log_probs(params, arch, ids):
    """The network stepped by hand over one stream, from the zero state and input <EOS>."""
    state = model.zero_state(arch, 1, np.float64)
    x, out = EOS_ID, []
    for y in ids:
        logits, state = inference.step(params, arch, np.array([x]), state)
        out.append(model.log_softmax(logits[0].astype(np.float64)))
        x = y
    return np.array(out)


def test_the_fitted_share_maximises_the_held_out_likelihood():
    rng = np.random.default_rng(0)
    a, b = rng.random(500), rng.random(500) ** 3
    lam = mixture.fit_weight(a, b)
    grid = np.linspace(0, 1, 2001)
    ll = [np.log(g * a + (1 - g) * b).sum() for g in grid]
    assert abs(lam - grid[int(np.argmax(ll))]) < 1e-3
    assert mixture.fit_weight(a, a * 1e-6) > 0.999      # a useless n-gram gets (almost) no share
    assert mixture.fit_weight(a * 1e-6, a) < 0.001      # and a useless network none either


def test_log_prob_is_the_log_of_the_interpolation():
    logp = np.log([0.2, 0.5, 1e-30])
    p = np.array([0.4, 0.1, 0.3])
    np.testing.assert_allclose(mixture.log_prob(0.7, logp, p), np.log(0.7 * np.exp(logp) + 0.3 * p))
    np.testing.assert_array_equal(mixture.log_prob(1.0, logp, p), logp)
    np.testing.assert_allclose(mixture.log_prob(0.0, logp, p), np.log(p))


@pytest.mark.parametrize("reset", [False, True])
def test_sentences_are_scored_with_the_interpolation_and_batching_changes_nothing(reset):
    params, arch, ng = make(reset=reset)
    mix = Mixture(ng, 0.6)
    sentences = ["abc", "", "ca b\nab", "bbbbbbbbbb", "c"]
    batched = score_sentences(params, arch, VOCAB, sentences, batch_size=3, keep_tokens=True, mix=mix)
    for s, r in zip(sentences, batched):
        ids = np.append(VOCAB.encode(s), EOS_ID)
        net = net_log_probs(params, Arch(arch.cell, V, 6, 2, reset_at_eos=arch.reset_at_eos), ids)
        if reset:  # the network's state restarts after an <EOS> inside the sentence too
            net = np.concatenate([net_log_probs(params, arch, part) for part in np.split(ids, np.flatnonzero(ids == EOS_ID)[:-1] + 1)])
        expected = np.log(0.6 * np.exp(net[np.arange(len(ids)), ids]) + 0.4 * ngram.probs(ng, ids))
        np.testing.assert_allclose(r.token_log_probs, expected, atol=1e-10)
        alone = score_sentences(params, arch, VOCAB, [s], mix=mix)[0]
        assert r.log_prob == pytest.approx(alone.log_prob, abs=1e-10)
    plain = score_sentences(params, arch, VOCAB, sentences)
    assert all(abs(a.log_prob - b.log_prob) > 1e-6 for a, b in zip(plain, batched))


def test_a_document_read_in_pieces_gives_the_in_order_number_with_the_interpolation(monkeypatch):
    from charlm import score

    arch = Arch("gru", V, 8, 2)
    params = init_params(arch, np.random.default_rng(1), "float64")
    params["layers.0.weight_hh"] *= 0.5
    params["layers.1.weight_hh"] *= 0.5
    ids = np.random.default_rng(2).integers(0, V, size=2 * score.PIECE_TOKENS + 99).astype(np.uint8)
    mix = Mixture(ngram.fit(ids[:3000], V, 5, False), 0.7)
    pieces, n = document_log_prob(params, arch, ids, mix=mix)
    in_order, _ = document_log_prob(params, arch, ids, exact=True, mix=mix)
    assert n == len(ids) and abs(pieces - in_order) < 1e-9 * abs(in_order)
    net = net_log_probs(params, arch, ids)[np.arange(len(ids)), ids]
    expected = np.log(0.7 * np.exp(net) + 0.3 * ngram.probs(mix.ngram, ids)).sum()
    assert in_order == pytest.approx(expected, rel=1e-10)


def test_explain_shows_the_interpolated_surprisal():
    params, arch, ng = make()
    plain = explain(params, arch, VOCAB, "ab c")
    mixed = explain(params, arch, VOCAB, "ab c", mix=Mixture(ng, 0.5))
    ids = np.append(VOCAB.encode("ab c"), EOS_ID)
    net = np.exp(net_log_probs(params, arch, ids)[np.arange(len(ids)), ids])
    np.testing.assert_allclose(mixed.bits, -np.log2(0.5 * net + 0.5 * ngram.probs(ng, ids)), atol=1e-10)
    assert not np.allclose(plain.bits, mixed.bits)


def test_greedy_sampling_follows_the_interpolation():
    params, arch, ng = make()
    rng = np.random.default_rng(0)
    steps = list(generate(params, arch, rng, num=2, length=12, temperature=0.0, stop_at_eos=False,
                          mix=Mixture(ng, 0.0), prime=VOCAB.encode("ab")))
    ids = np.array([s[0] for s in steps])
    stream = list(VOCAB.encode("ab"))
    for t in range(12):  # with the n-gram alone, greedy follows the n-gram's argmax
        dist = ngram.next_distribution(ng, np.array(stream + [0]), np.array([len(stream)]))[0]
        assert ids[t].tolist() == [int(np.argmax(dist))] * 2
        np.testing.assert_allclose(steps[t][2], np.log(dist.max()), atol=1e-12)
        stream.append(int(np.argmax(dist)))


def test_sampling_draws_from_the_interpolation():
    """With λ = 0.3, the first character's frequencies match 0.3·P_net + 0.7·P_ngram."""
    params, arch, ng = make()
    n = 20_000
    steps = generate(params, arch, np.random.default_rng(5), num=n, length=1, mix=Mixture(ng, 0.3))
    ids = next(steps)[0]
    net = np.exp(net_log_probs(params, arch, np.array([0]))[0])
    p = 0.3 * net + 0.7 * ngram.next_distribution(ng, np.array([0]), np.array([0]))[0]
    freq = np.bincount(ids, minlength=V) / n
    assert np.abs(freq - p).max() < 4 * math.sqrt(0.25 / n)


def test_training_fits_the_share_on_validation_and_saves_the_ngram(tmp_path):
    from charlm import checkpoint
    from charlm.config import Config
    from charlm.dataset import load_corpus
    from charlm.train import train
    from charlm.validation import VAL_MAX_TOKENS, evaluate

    path = tmp_path / "items.txt"
    rng = np.random.default_rng(0)
    path.write_text("".join("".join(rng.choice(list("abcab"), size=rng.integers(2, 7))) + "\n" for _ in range(400)))
    cfg = Config(hidden_size=8, num_layers=1, batch_size=4, seq_len=16, steps=30, eval_every=10).validate()
    data = load_corpus(str(path), cfg)
    ck, _ = train(cfg, data)
    assert ck.ngram is not None and ck.ngram.order == 7 and ck.ngram.reset_at_eos
    hist = ck.train_state["history"]
    assert [h["step"] for h in hist] == [10, 20, 30]
    best = min(hist, key=lambda h: h["val_bpc"])
    assert ck.mix_weights["best"] == best["mix_weight"] and ck.mix_weights["last"] == hist[-1]["mix_weight"]
    # the saved validation is the interpolation with an n-gram counted on the training split,
    # measured as `score --document` measures it
    n_tokens = len(data.vocab)
    p = ngram.probs(ngram.fit(data.train_ids, n_tokens, 7, True), data.val_ids[:VAL_MAX_TOKENS])
    v = evaluate(ck.best_params, ck.arch, data.val_ids, p)
    assert v.nats == ck.train_state["best_val"] and v.mix_weight == ck.mix_weights["best"]
    assert v.nats < v.net_nats
    # the saved n-gram counts the held-out split too
    both = ngram.fit(np.concatenate([data.train_ids, data.val_ids]), n_tokens, 7, True)
    for a, b in zip(ck.ngram.keys + ck.ngram.counts, both.keys + both.counts):
        np.testing.assert_array_equal(a, b)
    # through the file and back
    checkpoint.save(ck, str(tmp_path / "m.npz"))
    back = checkpoint.load(str(tmp_path / "m.npz"))
    assert back.mixture("best").weight == ck.mix_weights["best"]
    np.testing.assert_array_equal(ngram.probs(back.ngram, data.val_ids), ngram.probs(ck.ngram, data.val_ids))
    # --ngram 0: the network alone
    off = Config(**{**cfg.to_dict(), "ngram": 0}).validate()
    ck0, _ = train(off, load_corpus(str(path), off))
    assert ck0.ngram is None and ck0.mixture("best") is None and "mix_weight" not in str(ck0.meta)


def test_log_prob_of_zero_probabilities_is_minus_infinity_without_a_warning():
    """λ = 0 or an n-gram probability of 0 take the log of 0: −inf where the mixture gives 0, and no RuntimeWarning."""
    import warnings

    logp = np.array([[np.log(0.5), np.log(0.5), -np.inf]])
    p = np.array([[0.0, 0.25, 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mixed = mixture.log_prob(0.5, logp, p)
        alone = mixture.log_prob(0.0, np.log(np.array([0.5, 0.5])), np.array([0.0, 1.0]))
        empty = mixture.log_prob(0.5, np.zeros((0, 3)), np.zeros((0, 3)))
    np.testing.assert_allclose(mixed[0, :2], np.log([0.25, 0.375]))
    assert mixed[0, 2] == -np.inf
    assert alone[0] == -np.inf and alone[1] == 0.0
    assert empty.shape == (0, 3)
