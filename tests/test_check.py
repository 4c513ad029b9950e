"""`charlm check` and `bench --typos`: the Bayes window against brute-force enumeration, the library's
results, the command line (JSON, --fix, stdin, <UNK>, refusals, errors), the corruptions and the AUROC."""

import json

import numpy as np
import pytest

from charlm import bidirectional as bd
from charlm import check, model, ngram, typos
from charlm.mixture import Mixture
from charlm.inference import network_log_probs
from charlm.score import mixed_sequences
from charlm.vocab import EOS_ID, Vocab
from conftest import TINY, invoke, ok, one_line_error, write_names

VOCAB = Vocab(("<EOS>", "<UNK>", "a", "b", "c", "d"))


def tiny(cell="gru", reset=False, bidirectional=False, seed=2):
    arch = model.Arch(cell, len(VOCAB), 3, 2, "tanh", reset, bidirectional)
    params = model.init_params(arch, np.random.default_rng(seed), "float64")
    for k in params:
        params[k] *= 1.5                                   # sharper distributions than at the start
    return arch, params


def brute_force(params, arch, ids, mix=None):
    """P(c | the rest of the line) by enumeration: log P(line with c at t, <EOS>) for every c, normalised."""
    n, V = len(ids), arch.vocab_size
    out = np.empty((n, V))
    for t in range(n):
        for c in range(V):
            q = np.append(ids, EOS_ID)
            q[t] = c
            out[t, c] = mixed_sequences(mix, [q], network_log_probs(params, arch, [q]))[0].sum()
        out[t] -= np.logaddexp.reduce(out[t])
    return out


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("reset", [False, True])
@pytest.mark.parametrize("with_ngram", [False, True])
def test_the_bayes_window_over_the_whole_line_equals_brute_force_enumeration(cell, reset, with_ngram):
    arch, params = tiny(cell, reset)
    mix = None
    if with_ngram:
        corpus = np.random.default_rng(0).integers(0, len(VOCAB), 300)
        mix = Mixture(ngram.fit(corpus, len(VOCAB), 3, reset), 0.7)
    ids = VOCAB.encode("abdca").astype(np.intp)
    expected = brute_force(params, arch, ids, mix)
    got = check.bayes_log_probs(params, arch, ids, len(ids) + 1, mix, max_batch=11)   # several batches of positions
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    short = check.bayes_log_probs(params, arch, ids, 1, mix)
    assert not np.allclose(short[:3], expected[:3])          # a window of 1 reads less: a different number
    left, _ = check.left_log_probs(params, arch, ids)
    np.testing.assert_allclose(check.bayes_log_probs(params, arch, ids, 0)[:, :], left[:len(ids)], atol=1e-12)


def test_check_lines_reports_every_character_flags_and_suggests():
    arch, params = tiny(bidirectional=True)
    lines = ["abca", "", "aé"]
    results = check.check_lines(params, arch, VOCAB, lines, threshold=0.3, top=2)
    assert [r.text for r in results] == lines
    assert [len(r.chars) for r in results] == [4, 0, 2]
    logp = bd.log_probs(params, arch, [VOCAB.encode("abca").astype(np.intp)])[0]
    for c in results[0].chars:
        assert c.prob == pytest.approx(np.exp(logp[c.index, VOCAB.encode(c.char)[0]]))
        assert c.flagged == (c.prob < 0.3)
        assert len(c.suggestions) == 2 and all(s not in ("<EOS>", "<UNK>") for s, _ in c.suggestions)
        assert c.suggestions[0][1] >= c.suggestions[1][1]
    unknown = results[2].chars[1]
    assert unknown.char == "é" and unknown.unknown and 0 < unknown.prob < 1      # scored as <UNK>, reported
    d = results[0].to_json()
    assert list(d) == ["text", "chars"]
    assert list(d["chars"][0]) == ["index", "char", "prob", "bits", "flagged", "suggestions"]
    assert d["chars"][1]["bits"] == pytest.approx(-np.log2(d["chars"][1]["prob"]))


def test_fixed_replaces_each_flagged_character_by_its_best_other_suggestion():
    r = check.LineCheck("cat", [check.CharCheck(0, "c", 0.9, False, [("c", 0.9)]),
                                check.CharCheck(1, "a", 0.001, True, [("a", 0.5), ("o", 0.4)]),
                                check.CharCheck(2, "t", 0.001, True, [("p", 0.6)])])
    assert r.fixed() == "cop"


def test_corruptions_are_labelled_where_they_are():
    rng = np.random.default_rng(0)
    lines = ["abcdefgh" * 4] * 20
    chars = list("abcdefghxyz")
    sub = typos.corrupt(lines, "substitution", 0.2, chars, np.random.default_rng(1))
    for line, new, lab, orig in zip(lines, sub.lines, sub.labels, sub.originals):
        assert len(new) == len(line) and len(lab) == len(new)
        changed = [i for i in range(len(line)) if line[i] != new[i]]
        assert changed == list(np.flatnonzero(lab)) == sorted(orig)
        assert all(line[i] == orig[i] for i in orig)
    ins = typos.corrupt(lines, "insertion", 0.2, chars, np.random.default_rng(1))
    for line, new, lab in zip(lines, ins.lines, ins.labels):
        assert len(new) == len(line) + lab.sum()
        assert "".join(ch for ch, l in zip(new, lab) if not l) == line       # drop the marked ones: the original
    dele = typos.corrupt(lines, "deletion", 0.2, chars, np.random.default_rng(1))
    total = sum(len(x) for x in lines) - sum(len(x) for x in dele.lines)
    assert total == sum(int(l.sum()) for l in dele.labels) > 0                  # one marked character per deletion
    assert rng is not None


def test_auroc():
    assert typos.auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert typos.auroc(np.array([1.0, 1.0, 1.0]), np.array([0, 1, 0])) == pytest.approx(0.5)   # ties count half
    assert typos.auroc(np.array([3.0, 2.0, 1.0]), np.array([1, 0, 0])) == 1.0


# ---------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("check")
    corpus = write_names(d / "names.txt")
    ok(invoke("train", corpus, *TINY, "-c", d / "ltr.npz"))
    ok(invoke("train", corpus, *TINY, "--bidirectional", "-c", d / "bi.npz"))
    return d, corpus


@pytest.mark.parametrize("which", ["bi", "ltr"])
def test_check_json_is_one_object_per_line_with_one_entry_per_character(models, which):
    d, _ = models
    r = ok(invoke("check", "anna", "bxb", "zoë", "-c", d / f"{which}.npz", "--json", "--top", "2", "--window", "3"))
    objs = [json.loads(line) for line in r.stdout.splitlines()]
    assert [o["text"] for o in objs] == ["anna", "bxb", "zoë"]
    for o in objs:
        assert [c["index"] for c in o["chars"]] == list(range(len(o["text"])))
        assert "".join(c["char"] for c in o["chars"]) == o["text"]
        for c in o["chars"]:
            assert 0 <= c["prob"] <= 1 and len(c["suggestions"]) == 2
            assert c["flagged"] == (c["prob"] < check.THRESHOLD)


def test_check_human_output_marks_flagged_characters_and_fix_prints_the_corrected_lines(models):
    d, _ = models
    r = ok(invoke("check", "anna", "zzzz", "-c", d / "bi.npz", "--threshold", "0.5"))
    lines = r.stdout.splitlines()
    assert "anna" in lines and "zzzz" in lines
    marker = lines[lines.index("zzzz") + 1]
    assert set(marker.strip()) == {"^"}
    assert "column 1: 'z'" in r.stdout and "expected" in r.stdout
    assert "characters flagged" in r.stderr
    fixed = ok(invoke("check", "-", "-c", d / "bi.npz", "--fix", "--threshold", "1.0", input="zzzz\nanna\n"))
    out = fixed.stdout.splitlines()
    assert len(out) == 2 and all(len(x) == 4 for x in out) and out[0] != "zzzz"


def test_sample_and_score_refuse_a_bidirectional_model_pointing_to_check(models):
    d, _ = models
    for cmd in (("sample",), ("score", "anna")):
        r = invoke(*cmd, "-c", d / "bi.npz")
        one_line_error(r, "bidirectional", "charlm check")


def test_check_errors_are_one_line(models, tmp_path):
    d, _ = models
    one_line_error(invoke("check", "-c", d / "bi.npz"), "nothing to check")
    one_line_error(invoke("check", "a", "-c", d / "bi.npz", "--threshold", "2"), "--threshold")
    one_line_error(invoke("check", "a", "-c", d / "bi.npz", "--top", "0"), "--top")
    one_line_error(invoke("check", "a", "-c", tmp_path / "missing.npz"), "missing.npz")
    one_line_error(invoke("check", "--file", tmp_path / "none.txt", "-c", d / "bi.npz"), "none.txt")


def test_bench_typos_prints_the_figures_of_each_detector(models, tmp_path):
    d, corpus = models
    r = ok(invoke("bench", "--typos", "--data", corpus, "--bi", d / "bi.npz", "-c", d / "ltr.npz",
                  "--max-chars", "80", "--window", "2", "--json"))
    result = json.loads(r.stdout)
    assert set(result["kinds"]) == {"substitution", "insertion", "deletion"}
    sub = result["kinds"]["substitution"]
    assert set(sub) == {"bidirectional", "bidirectional-net", "bayes", "bayes-net", "left"}   # each with its n-grams, and without
    for f in sub.values():
        assert 0 <= f["auroc"] <= 1 and 0 <= f["top1"] <= f["top3"] <= 1 and f["errors"] > 0
    assert sub["bidirectional"]["auroc"] != sub["bidirectional-net"]["auroc"]
    for name in ("bidirectional", "bayes"):                     # the two flag rules' sweeps, to choose a default
        assert [row[0] for row in sub[name]["ratio_sweep"]] == list(typos.RATIO_SWEEP)
        assert all(0 <= x <= 1 for row in sub[name]["ratio_sweep"] for x in row[1:])
    assert "ratio_sweep" not in sub["left"]
    one_line_error(invoke("bench", "--typos", "--data", corpus, "--bi", d / "ltr.npz"), "not bidirectional")


def test_ratio_sweep_flags_a_character_whose_best_alternative_is_that_many_times_as_likely():
    V = 5
    p = np.array([[0.0, 0.0, 0.90, 0.05, 0.05],      # the character (2) is the likeliest: never flagged
                  [0.0, 0.0, 0.02, 0.64, 0.34],      # 0.64 / 0.02 = 32 times as likely
                  [0.5, 0.4, 0.01, 0.05, 0.04]])     # <EOS> and <UNK> are no alternatives: 0.05 / 0.01 = 5
    logp = np.log(np.maximum(p, 1e-300))
    rows = typos.ratio_sweep([logp], [np.array([2, 2, 2])], np.array([0, 1, 1]), (3, 10, 30, 100))
    assert [r[0] for r in rows] == [3, 10, 30, 100]
    assert rows[0][1:3] == (1.0, 1.0)                 # ratio 3: both errors flagged, nothing else
    assert rows[1][1:3] == (1.0, 0.5)                 # ratio 10: only the 32-times one
    assert rows[2][1:3] == (1.0, 0.5) and rows[3][2] == 0.0
    assert V == p.shape[1]


def test_a_bidirectional_model_is_checked_with_its_ngrams_unless_network_only(models):
    d, _ = models
    with_grams = json.loads(ok(invoke("check", "anna", "-c", d / "bi.npz", "--json")).stdout)
    alone = json.loads(ok(invoke("check", "anna", "-c", d / "bi.npz", "--json", "--network-only")).stdout)
    probs = lambda o: [c["prob"] for c in o["chars"]]
    assert probs(with_grams) != probs(alone)
    r = ok(invoke("check", "anna", "-c", d / "bi.npz"))
    assert "with its three 7-grams" in r.stderr
