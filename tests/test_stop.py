"""Stop texts (charlm.stops, `sample --stop`): each sample ends at its first stop text, which it keeps."""

import numpy as np
import pytest

from charlm import model
from charlm.errors import CharlmError
from charlm.model import Arch
from charlm.sample import generate
from charlm.stops import Matcher, Stops, parse
from charlm.vocab import EOS_ID, Vocab

from conftest import invoke, ok, one_line_error

VOCAB = Vocab(("<EOS>", "<UNK>", " ", "a", "b", "c"))


def test_parse_reads_the_escapes():
    assert parse(r"\n\n") == "\n\n"
    assert parse(r"a\tb") == "a\tb"
    assert parse(r"x\\n") == "x\\n"          # an escaped backslash, then n
    assert parse(r"\q") == r"\q"              # not an escape: kept as written
    assert parse("é.") == "é."
    with pytest.raises(CharlmError, match="--stop needs a text"):
        parse("")


def test_stops_find_a_text_across_tokens():
    s = Stops(["ab", "\n\n"])
    tail, hit = s.grow("", "a")
    assert not hit
    tail, hit = s.grow(tail, "b")
    assert hit
    tail, hit = s.grow("x", "\n")
    assert not hit and s.grow(tail, "\n")[1]
    assert len(s.grow("abcdefgh", "i")[0]) == 2   # only the tail that can still match is kept


def run(num, stop=None, stop_at_eos=False, length=60, seed=0):
    arch = Arch("gru", len(VOCAB), 8, 1, reset_at_eos=stop_at_eos)
    params = model.init_params(arch, np.random.default_rng(1), "float64")
    texts, logps = [""] * num, np.zeros(num)
    matcher = Matcher(stop, VOCAB, num) if stop else None
    for ids, active, lp in generate(params, arch, np.random.default_rng(seed), num, length, 1.0,
                                    stop_at_eos=stop_at_eos, stop=matcher):
        for n in np.flatnonzero(active):
            logps[n] += lp[n]
            if not (stop_at_eos and ids[n] == EOS_ID):
                texts[n] += VOCAB.decode([ids[n]])
    return texts, logps


@pytest.mark.parametrize("stop_at_eos", [False, True])
def test_each_sample_is_the_unstopped_sample_cut_after_its_first_stop_text(stop_at_eos):
    free, _ = run(12, stop_at_eos=stop_at_eos)
    cut, _ = run(12, Stops(["ab", "c c"]), stop_at_eos=stop_at_eos)
    ended = 0
    for f, c in zip(free, cut):
        ends = [i + len(t) for t in ("ab", "c c") if (i := f.find(t)) >= 0]
        expected = f[:min(ends)] if ends else f
        assert c == expected
        ended += bool(ends)
    assert ended >= (1 if stop_at_eos else 3)   # the stop texts did end samples (the draws do not depend on which have stopped)


def test_log_prob_counts_the_stop_text():
    _, free = run(6)
    texts, stopped = run(6, Stops(["a"]))
    for t, lp_stop, lp_free in zip(texts, stopped, free):
        assert t.endswith("a") or len(t) == 60
        assert lp_stop >= lp_free - 1e-12       # fewer tokens: a log-probability closer to 0


def test_cli_stop_each_of_num_samples_stops_on_its_own(trained):
    _, _, ck = trained
    r = ok(invoke("sample", "-c", ck, "--num", "5", "--seed", "3", "--no-stop-at-eos", "--length", "100",
                  "--stop", "a", "--stop", "o", "--show-logprob"))
    samples = [s for s in r.stdout.split("\n\n") if s.strip()]
    assert len(samples) == 5
    for s in samples:
        s = s.rstrip("\n")
        assert s.endswith(("a", "o"))
        assert "a" not in s[:-1] and "o" not in s[:-1]
    assert len(set(samples)) > 1


def test_cli_stop_with_stop_at_eos_and_with_beam(trained):
    _, _, ck = trained
    r = ok(invoke("sample", "-c", ck, "--num", "8", "--seed", "0", "--stop", "n"))     # names: items, <EOS> ends too
    lines = r.stdout.splitlines()
    assert len(lines) == 8 and all("n" not in line[:-1] for line in lines)
    assert any(line.endswith("n") for line in lines)
    r = ok(invoke("sample", "-c", ck, "--beam", "5", "--num", "5", "--stop", "a"))
    lines = r.stdout.splitlines()
    assert len(lines) == 5 and all("a" not in line[:-1] for line in lines)


def test_cli_stop_empty_is_one_line_error(trained):
    _, _, ck = trained
    one_line_error(invoke("sample", "-c", ck, "--stop", ""), "--stop needs a text")
