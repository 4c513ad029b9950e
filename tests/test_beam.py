"""Beam search (charlm.beam, `sample --beam`): greedy at K = 1, never below greedy, log P as `score` gives it,
and the exact K best on a model small enough to enumerate every text."""

import itertools
import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from charlm import beam, inference, model, ngram
from charlm.mixture import Mixture
from charlm.model import Arch
from charlm.sample import generate
from charlm.score import score_sentences
from charlm.stops import Stops
from charlm.vocab import EOS_ID, Vocab

from conftest import invoke, ok, one_line_error

VOCAB = Vocab(("<EOS>", "<UNK>", "a", "b"))


def tiny(seed, cell="gru", scale=3.0, V=4, reset=True):
    """A float64 model with sharp (far from uniform) predictions."""
    arch = Arch(cell, V, 6, 2, reset_at_eos=reset)
    params = model.init_params(arch, np.random.default_rng(seed), "float64")
    params["head.weight"] *= scale
    params["head.bias"] += np.random.default_rng(seed + 1).normal(0, 1, V)
    return arch, params


def tiny_mix(seed, arch, V=4):
    ids = np.random.default_rng(seed).integers(0, V, 300)
    return Mixture(ngram.fit(ids, V, 3, arch.reset_at_eos), 0.6)


def greedy(params, arch, length, mix=None, prime=None, stop_at_eos=True):
    ids, logp = [], 0.0
    for tok, active, lp in generate(params, arch, np.random.default_rng(0), 1, length, 0.0, prime=prime,
                                    stop_at_eos=stop_at_eos, mix=mix):
        if not active[0]:
            break
        ids.append(int(tok[0]))
        logp += float(lp[0])
    return tuple(ids), logp


def log_prob(params, arch, seq, mix=None):
    """log P of the generated tokens `seq` after <EOS>, read all at once by model.forward (the oracle)."""
    x = np.array([EOS_ID] + list(seq[:-1]), dtype=np.intp)[:, None]
    logits, _, _ = model.forward(params, arch, x, model.zero_state(arch, 1, np.float64))
    lp = model.log_softmax(logits[:, 0].astype(np.float64))[np.arange(len(seq)), list(seq)]
    if mix is not None:
        flat = np.array(seq, dtype=np.intp)
        lp = np.log(mix.weight * np.exp(lp) + (1 - mix.weight) * ngram.probs(mix.ngram, flat))
    return float(lp.sum())


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("with_mix", [False, True])
def test_beam_1_is_greedy(cell, with_mix):
    for seed in range(4):
        arch, params = tiny(seed, cell)
        mix = tiny_mix(seed, arch) if with_mix else None
        for penalty in (0.0, 0.6, 2.0):
            (h,) = beam.search(params, arch, 1, 12, mix=mix, length_penalty=penalty)
            ids, lp = greedy(params, arch, 12, mix)
            assert h.ids == ids
            assert h.log_prob == pytest.approx(lp, abs=1e-9)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(2, 9), length=st.integers(1, 10), with_mix=st.booleans())
def test_the_best_beam_is_never_below_greedy(seed, k, length, with_mix):
    arch, params = tiny(seed, "gru", scale=1.5)
    mix = tiny_mix(seed, arch) if with_mix else None
    best = beam.search(params, arch, k, length, mix=mix, length_penalty=0.0)
    _, lp = greedy(params, arch, length, mix)
    assert best[0].log_prob >= lp - 1e-9
    assert [h.log_prob for h in best] == sorted((h.log_prob for h in best), reverse=True)   # A = 0: by log P


@pytest.mark.parametrize("with_mix", [False, True])
def test_each_log_prob_is_the_oracles_and_scores(with_mix):
    arch, params = tiny(3, "lstm")
    mix = tiny_mix(3, arch) if with_mix else None
    hyps = beam.search(params, arch, 6, 8, mix=mix)
    assert len(hyps) == 6
    for h in hyps:
        assert h.log_prob == pytest.approx(log_prob(params, arch, h.ids, mix), abs=1e-9)
        if h.finished:   # an item: `score` reads its text and then <EOS>
            assert h.ids[-1] == EOS_ID
            (s,) = score_sentences(params, arch, VOCAB, [VOCAB.decode(h.ids[:-1])], mix=mix)
            assert s.log_prob == pytest.approx(h.log_prob, abs=1e-9)


def all_texts(V, length):
    """Every candidate the search can end with: finished items (≤ length tokens, <EOS> last) and the cut ones."""
    chars = range(1, V)   # <UNK> and the characters
    done = [tuple(s) + (EOS_ID,) for n in range(length) for s in itertools.product(chars, repeat=n)]
    cut = [tuple(s) for s in itertools.product(chars, repeat=length)]
    return done, cut


@pytest.mark.parametrize("penalty", [0.0, 0.6, 1.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_k_best_equal_an_exhaustive_enumeration(penalty, seed):
    arch, params = tiny(seed, "gru")
    L = 3
    done, cut = all_texts(4, L)
    everything = [(s, log_prob(params, arch, s)) for s in done + cut]
    K = len(everything)              # 13 items and 27 cut texts: a beam that holds them all is exact
    found = beam.search(params, arch, K, L, length_penalty=penalty)
    rank = sorted(everything, key=lambda e: -e[1] / len(e[0]) ** penalty)
    assert [h.ids for h in found] == [s for s, _ in rank]
    assert [h.log_prob for h in found] == pytest.approx([lp for _, lp in rank], abs=1e-9)
    assert all(h.finished == (h.ids[-1] == EOS_ID) for h in found)
    items = beam.search(params, arch, K, L, length_penalty=penalty)[:5]    # --num 5: the five best
    assert [h.ids for h in items] == [s for s, _ in rank[:5]]


def test_the_candidates_advance_as_one_batch(monkeypatch):
    """One inference.step call per generated position, however many candidates (K rows, plus the greedy row)."""
    arch, params = tiny(0)
    calls = []
    real = inference.step
    monkeypatch.setattr(inference, "step", lambda p, a, ids, *rest: calls.append(len(ids)) or real(p, a, ids, *rest))
    beam.search(params, arch, 8, 10, stop_at_eos=False)
    assert len(calls) == 9                       # positions 2..10 (the first comes from reading the prime)
    assert max(calls) == 9 and calls[-1] == 9    # 8 candidates + the greedy row


def test_prose_runs_to_the_length_and_finishes_at_stop_texts():
    arch, params = tiny(5, reset=False)
    hyps = beam.search(params, arch, 4, 9, stop_at_eos=False)
    assert all(len(h.ids) == 9 and not h.finished for h in hyps)
    stops = Stops(["ab"])
    for h in beam.search(params, arch, 4, 9, stop_at_eos=False, stops=stops, vocab=VOCAB):
        text = VOCAB.decode(h.ids)
        assert h.finished == text.endswith("ab")
        assert "ab" not in text[:-1]             # a sample ends at its first stop text
    with pytest.raises(ValueError):
        beam.search(params, arch, 2, 3, stops=stops)


def test_prime_is_read_first():
    arch, params = tiny(7, reset=False)
    prime = np.array([2, 3, 2], dtype=np.intp)
    (h,) = beam.search(params, arch, 1, 6, prime=prime, stop_at_eos=False)
    assert h.ids == greedy(params, arch, 6, prime=prime, stop_at_eos=False)[0]
    whole = log_prob(params, arch, tuple(prime) + h.ids)
    assert h.log_prob == pytest.approx(whole - log_prob(params, arch, tuple(prime)), abs=1e-9)


# ---------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------

def test_cli_beam_prints_the_best_most_probable_first_and_score_agrees(trained):
    _, _, ck = trained
    r = ok(invoke("sample", "-c", ck, "--beam", "6", "--num", "3", "--show-logprob", "--length-penalty", "0"))
    texts = r.stdout.splitlines()
    assert len(texts) == 3 and len(set(texts)) == 3
    logps = [float(line.split("log P = ")[1].split()[0]) for line in r.stderr.splitlines() if "log P" in line]
    assert logps == sorted(logps, reverse=True) and len(logps) == 3
    for text, lp in zip(texts, logps):
        s = json.loads(ok(invoke("score", "-c", ck, text, "--json")).stdout)
        assert s["log_prob"] == pytest.approx(lp, abs=2e-4)    # (printed to 4 decimals; float32 weights)
    greedy_text = ok(invoke("sample", "-c", ck, "--greedy")).stdout
    assert ok(invoke("sample", "-c", ck, "--beam", "1")).stdout == greedy_text


@pytest.mark.parametrize("args, needle", [
    (["--beam", "0"], "--beam must be from 1 to"),
    (["--beam", "5000"], "--beam must be from 1 to"),
    (["--beam", "2", "--num", "3"], "--num 3 is more than"),
    (["--beam", "2", "--temperature", "0.5"], "--temperature"),
    (["--beam", "2", "--top-k", "3"], "--top-k"),
    (["--beam", "2", "--greedy"], "--greedy"),
    (["--length-penalty", "1"], "give --beam"),
    (["--beam", "2", "--length-penalty", "-1"], "--length-penalty"),
])
def test_cli_beam_bad_input_is_one_line(trained, args, needle):
    _, _, ck = trained
    one_line_error(invoke("sample", "-c", ck, *args), needle)
