"""Scoring batches of sentences in worker processes (`charlm.score_workers`).

* The same numbers as one process, in the sentences' order, with and without the n-gram.
* The batches really are read elsewhere (this process reads none of them).
* A worker that dies, a worker's error message, a worker that cannot start: reported, and the
  remaining batches are read here; no worker is left behind.
* The pipe format refuses pickles; the auto rule; the CLI option.
"""

import io
import json
import os
import sys

import numpy as np
import pytest

from charlm import inference, ngram
from charlm.workers import score as score_workers
from charlm.mixture import Mixture
from charlm.inference import token_flops
from charlm.model import Arch, param_shapes
from charlm.score import score_sentences
from charlm.vocab import Vocab

pytestmark = pytest.mark.skipif(os.name != "posix", reason="worker processes need a POSIX system")

VOCAB = Vocab(("<EOS>", "<UNK>", " ", "a", "b", "c", "é"))


def make_model(cell="lstm", layers=2, H=8, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    arch = Arch(cell, len(VOCAB), H, layers)
    params = {k: (rng.standard_normal(s) * 0.7).astype(dtype) for k, s in param_shapes(arch).items()}
    return params, arch


def sentences(n=300, seed=1):
    rng = np.random.default_rng(seed)
    alphabet = np.array(list(" abcéxy"))           # x, y: unknown characters
    return ["".join(rng.choice(alphabet, size=int(rng.integers(0, 40)))) for _ in range(n)]


def log_probs(results):
    return np.array([r.log_prob for r in results]), [r.token_log_probs for r in results]


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_workers_give_the_numbers_of_one_process_in_the_sentences_order(cell):
    params, arch = make_model(cell)
    lines = sentences()
    failures = []
    one = score_sentences(params, arch, VOCAB, lines, batch_size=16, keep_tokens=True, workers=1)
    two = score_sentences(params, arch, VOCAB, lines, batch_size=16, keep_tokens=True, workers=2,
                          on_failure=failures.append)
    assert failures == []
    (a, ta), (b, tb) = log_probs(one), log_probs(two)
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-10)
    for x, y in zip(ta, tb):
        np.testing.assert_allclose(y, x, rtol=0, atol=1e-10)
    assert [r.text for r in two] == lines and [r.num_unk for r in two] == [r.num_unk for r in one]
    assert len(set(np.round(a, 6))) > 250           # the sentences differ: a mix-up of rows would show


def test_workers_with_the_ngram_give_the_numbers_of_one_process():
    params, arch = make_model("gru")
    lines = sentences(200, seed=2)
    mix = Mixture(ngram.fit(VOCAB.encode("\n".join(sentences(300, seed=3))), len(VOCAB), 4, False), 0.6)
    one = score_sentences(params, arch, VOCAB, lines, batch_size=32, mix=mix, workers=1)
    two = score_sentences(params, arch, VOCAB, lines, batch_size=32, mix=mix, workers=2)
    plain = score_sentences(params, arch, VOCAB, lines, batch_size=32, workers=2)
    np.testing.assert_allclose(log_probs(two)[0], log_probs(one)[0], rtol=0, atol=1e-10)
    assert not np.allclose(log_probs(two)[0], log_probs(plain)[0])   # the n-gram was used


def test_the_batches_are_read_by_the_workers_not_here(monkeypatch):
    params, arch = make_model("lstm")
    calls = []
    real = inference.network_log_probs
    monkeypatch.setattr(inference, "network_log_probs", lambda *a, **k: calls.append(1) or real(*a, **k))
    score_sentences(params, arch, VOCAB, sentences(100), batch_size=10, workers=2)
    assert calls == []
    score_sentences(params, arch, VOCAB, sentences(100), batch_size=10, workers=1)
    assert len(calls) == 10                          # (the control: one process reads all ten batches itself)


class DyingPool(score_workers.ScoreWorkers):
    """A pool whose first worker is killed as soon as it has started."""

    started: list = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        DyingPool.started.append(self)
        self.procs[0].kill()
        self.procs[0].wait()


def test_a_dead_worker_is_reported_and_its_batches_are_read_here(monkeypatch):
    params, arch = make_model("gru")
    lines = sentences(200)
    monkeypatch.setattr(score_workers, "ScoreWorkers", DyingPool)
    failures = []
    got = score_sentences(params, arch, VOCAB, lines, batch_size=8, workers=2, on_failure=failures.append)
    want = score_sentences(params, arch, VOCAB, lines, batch_size=8, workers=1)
    np.testing.assert_allclose(log_probs(got)[0], log_probs(want)[0], rtol=0, atol=1e-10)
    assert len(failures) == 1 and "scoring worker exited" in failures[0], failures
    pool = DyingPool.started[-1]
    assert pool.procs == []                          # closed: every worker ended and reaped


def test_a_workers_error_message_reaches_the_caller():
    params, arch = make_model("lstm")
    bad = [np.array([3, 99, 0])]                     # id 99 is outside the vocabulary
    with score_workers.ScoreWorkers(params, arch, 1) as pool:
        procs = list(pool.procs)
        with pytest.raises(score_workers.WorkerError, match="IndexError"):
            list(pool.run([bad], [0]))
        assert list(pool.run([[np.array([3, 4, 0])]], [0]))[0][0] == 0   # and it goes on serving
    assert all(p.returncode is not None for p in procs)


def test_a_worker_that_cannot_start_is_reported_and_this_process_reads(monkeypatch):
    params, arch = make_model("rnn")
    lines = sentences(60)
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    failures = []
    got = score_sentences(params, arch, VOCAB, lines, batch_size=8, workers=2, on_failure=failures.append)
    want = score_sentences(params, arch, VOCAB, lines, batch_size=8, workers=1)
    np.testing.assert_array_equal(log_probs(got)[0], log_probs(want)[0])
    assert len(failures) == 1 and "nonexistent" in failures[0]


def test_the_pipe_format_refuses_pickles_and_cut_arrays():
    frame = io.BytesIO()
    np.lib.format.write_array(frame, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="numbers"):
        score_workers._read_array(io.BytesIO(frame.getvalue()))
    frame = io.BytesIO()
    score_workers._send_array(frame, np.arange(10.0))
    assert score_workers._read_array(io.BytesIO(frame.getvalue())).tolist() == list(np.arange(10.0))
    with pytest.raises(EOFError):
        score_workers._read_array(io.BytesIO(frame.getvalue()[:-8]))
    with pytest.raises(ValueError):                  # end of input before an array: how a worker learns to exit
        score_workers._read_array(io.BytesIO(b""))


def test_auto_uses_two_workers_on_two_cores_for_enough_work():
    arch = Arch("lstm", 65, 256, 2)
    enough = int(score_workers.MIN_WORK / token_flops(arch)) + 1
    assert 100_000 < enough < 150_000                # the documented figure (docs/performance.md): about 125,000 characters
    assert score_workers.auto_workers(arch, enough, 40, cores=2, posix=True) == 2
    assert score_workers.auto_workers(arch, enough - 2, 40, cores=2, posix=True) == 1
    assert score_workers.auto_workers(arch, enough, 1, cores=2, posix=True) == 1      # one batch
    assert score_workers.auto_workers(arch, enough, 40, cores=1, posix=True) == 1
    assert score_workers.auto_workers(arch, enough, 40, cores=8, posix=True) == 2     # MAX_AUTO_WORKERS
    assert score_workers.auto_workers(arch, enough, 40, cores=2, posix=False) == 1
    small = Arch("gru", 65, 64, 1)
    assert score_workers.auto_workers(small, 1_000_000, 40, cores=2, posix=True) == 1


def test_cli_workers_give_the_same_json_and_bad_values_are_one_line(tmp_path, trained, no_env_checkpoint):
    from conftest import invoke, ok, one_line_error

    _, _, ck = trained
    lines = tmp_path / "lines.txt"
    lines.write_text("\n".join(s.replace("é", "e") for s in sentences(120, seed=4)) + "\n", encoding="utf-8")
    outs = {}
    for w in ("1", "2"):
        r = ok(invoke("score", "-c", ck, "--file", lines, "--json", "--batch-size", "16", "--workers", w))
        outs[w] = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(outs["1"]) == 120 and [o["text"] for o in outs["2"]] == [o["text"] for o in outs["1"]]
    np.testing.assert_allclose([o["log_prob"] for o in outs["2"]], [o["log_prob"] for o in outs["1"]], rtol=1e-6)
    one_line_error(invoke("score", "-c", ck, "--file", lines, "--workers", "0"), "--workers must be at least 1")


def test_cli_says_in_one_warning_line_when_a_worker_fails(tmp_path, trained, no_env_checkpoint, monkeypatch):
    from conftest import invoke, ok

    _, _, ck = trained
    lines = tmp_path / "lines.txt"
    lines.write_text("\n".join(s.replace("é", "e") for s in sentences(80, seed=5)) + "\n", encoding="utf-8")
    monkeypatch.setattr(score_workers, "ScoreWorkers", DyingPool)
    r = ok(invoke("score", "-c", ck, "--file", lines, "--json", "--batch-size", "8", "--workers", "2"))
    assert len(r.stdout.splitlines()) == 80
    warnings = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("warning: scoring workers: a scoring worker exited"), r.stderr
    assert "--workers 1" in warnings[0]
