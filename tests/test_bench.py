"""The benchmark harness's own pieces (the speeds it prints are not asserted anywhere)."""

import os
import stat
import sys
import tempfile

import pytest
from typer.testing import CliRunner

from charlm.workers import train as step_workers
from charlm.bench import measure, peers, workload
from charlm.bench.measure import flops_per_char, names_novelty
from charlm.cli.bench_report import render
from charlm.bench.figures import alternate
from charlm.bench.run import run_bench
from charlm.cli import app
from charlm.errors import CharlmError


def test_flops_per_char_matches_the_issue_estimate():
    # "the LSTM 2 × 256 step above needs about 5 MFLOP per character"
    assert 4.5e6 < flops_per_char("lstm", 256, 2, 65) < 5.5e6
    assert flops_per_char("gru", 256, 2, 65) < flops_per_char("lstm", 256, 2, 65)


def test_names_novelty_counts_samples_not_in_the_corpus():
    new, bpc = names_novelty(1.0, num=30)
    assert 0.0 <= new <= 1.0
    assert 0.0 < bpc < 10.0


def test_alternate_takes_turns_and_reports_medians_and_pair_ratios():
    calls = []
    ours = iter([10.0, 30.0, 20.0])
    theirs = iter([5.0, None, 8.0])      # the peer's second run failed: that turn has no pair

    def a():
        calls.append("ours")
        return next(ours)

    def p():
        calls.append("peer")
        return next(theirs)

    mine, peer, ratios = alternate(a, p, 3)
    assert calls == ["ours", "peer"] * 3
    assert mine == 20.0 and peer == 6.5
    assert ratios == [2.0, 2.5]
    assert alternate(lambda: 4.0, None, 2) == (4.0, None, [])


# ---------------------------------------------------------------------------
# run_bench: what it checks before measuring, its temporary file, its peers,
# its sizes.  The measurements themselves are replaced by stubs here.
# ---------------------------------------------------------------------------

TORCH_MISSING = peers.torch_missing   # the real one (fixtures below replace it)
MEASUREMENTS = ("matmul_rate", "train_speed", "minchar_speed", "sample_speed", "score_speed", "names_novelty")


def one_line_error(r, *needles):
    """A failure reported as exactly one 'error:' line on stderr (no exception escaped)."""
    detail = f"exit {r.exit_code}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}\nexc: {r.exception!r}"
    assert r.exit_code == 1, detail
    assert r.exception is None or isinstance(r.exception, SystemExit), detail
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), detail
    for needle in needles:
        assert needle.lower() in lines[0].lower(), detail
    return lines[0]


def bench_cli(*args):
    return CliRunner().invoke(app, ["bench", *[str(a) for a in args]])


@pytest.fixture
def no_measuring(monkeypatch):
    """Any measurement fails the test: the inputs must be refused before the first one."""
    def refuse(*args, **kwargs):
        raise AssertionError("a measurement ran before the inputs were checked")

    for name in MEASUREMENTS:
        monkeypatch.setattr(measure, name, refuse)


@pytest.fixture
def stubbed(monkeypatch, tmp_path):
    """Instant measurements (recording the scoring sizes asked for), a Python without torch, a private temp dir."""
    calls = {"score": []}

    def score_speed(text, cell, H, L, num_sentences=10_000, with_ngram=False, doc_chars=1_000_000):
        calls["score"].append((num_sentences, doc_chars, with_ngram))
        return 1000.0, 0.5, doc_chars, num_sentences, calls.get("score_workers", 1)

    monkeypatch.setattr(measure, "matmul_rate", lambda *a, **k: 100.0)
    monkeypatch.setattr(measure, "train_speed", lambda *a, **k: 1000.0)
    monkeypatch.setattr(measure, "minchar_speed", lambda *a, **k: 500.0)
    monkeypatch.setattr(measure, "sample_speed", lambda *a, **k: 300.0)
    monkeypatch.setattr(measure, "score_speed", score_speed)
    monkeypatch.setattr(measure, "names_novelty", lambda *a, **k: (0.5, 2.0))
    monkeypatch.setattr(peers, "torch_missing", lambda python: "no torch here")   # the peers do not run
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return calls, tmp


def write_script(path, body):
    path.write_text(body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.mark.parametrize("content,needles", [
    (None, ["not found"]),
    (b"ok text\n\xff\xfe not utf-8\n", ["not UTF-8", "0xff"]),
    (b"", ["too short", "0 characters", "at least 2,347"]),
    (b"hello\n", ["too short", "6 characters", "at least 2,347"]),
])
def test_bad_data_is_refused_in_one_line_before_measuring(tmp_path, no_measuring, content, needles):
    path = tmp_path / "data.txt"
    if content is not None:
        path.write_bytes(content)
    line = one_line_error(bench_cli("--quick", "--seconds", "1", "--data", path), *needles)
    assert str(path) in line


def test_the_minimum_text_is_exactly_what_the_largest_batch_needs():
    from charlm.data import fit_batch

    for configs in (workload.TRAIN_CONFIGS, workload.TRAIN_CONFIGS[:1]):
        need, _ = workload.min_chars([*configs, workload.MINCHAR])
        for cell, H, L, B, T, opt in [*configs, workload.MINCHAR]:   # the trainer keeps every labelled batch
            assert fit_batch(int(0.9 * need), B, T) == (B, T)
        workload.check_text("a\n" * (need // 2) + "a" * (need % 2), "x", [*configs, workload.MINCHAR])
        with pytest.raises(CharlmError, match=f"at least {need:,}"):
            workload.check_text("a" * (need - 1), "x", [*configs, workload.MINCHAR])
    assert workload.min_chars([*workload.TRAIN_CONFIGS, workload.MINCHAR])[0] == 7_223   # 64×100 + 100 in 90 %
    with pytest.raises(CharlmError, match="no line with text"):
        workload.check_text("\n" * 10_000, "x", workload.TRAIN_CONFIGS)


def test_scoring_cycles_a_short_text_to_the_sizes_it_reports():
    scs, doc_s, doc_n, lines, workers = measure.score_speed("ab\ncd\n\nefg\n", "rnn", 4, 1, num_sentences=50,
                                                          doc_chars=5000)
    assert (doc_n, lines) == (5000, 50)
    assert scs > 0 and doc_s > 0
    assert workers == 1                              # too little to read for `score`'s auto workers


def test_scoring_reads_with_the_workers_score_would_use(monkeypatch):
    from charlm import score
    from charlm.workers import score as score_workers

    asked, used = [], []
    monkeypatch.setattr(score_workers, "auto_workers", lambda *a: asked.append(a) or 2)
    real = score.score_sentences
    monkeypatch.setattr(score, "score_sentences", lambda *a, **k: used.append(k["workers"]) or real(*a, **k))
    *_, workers = measure.score_speed("ab\ncd\n\nefg\n", "rnn", 4, 1, num_sentences=600, doc_chars=5000)
    assert workers == 2 and used == [2]
    arch, tokens, batches, _ = asked[0]
    assert (arch.cell, tokens, batches) == ("rnn", sum(len(x) + 1 for x in ["ab", "cd", "efg"] * 200), 3)


@pytest.mark.parametrize("workers", [2, 1])
def test_scoring_rows_say_when_worker_processes_read_the_batches(stubbed, workers):
    calls, _ = stubbed
    calls["score_workers"] = workers
    result = run_bench(1.0, quick=True)
    row = next(f for f in result["figures"] if f["label"].startswith("score --file"))
    assert ("2 worker processes" in row["note"]) == (workers == 2)


def test_the_temporary_text_file_is_made_only_for_a_peer_and_always_removed(stubbed, tmp_path, monkeypatch):
    _, tmp = stubbed
    run_bench(1.0, quick=True)                      # no peer: no file needed
    assert list(tmp.iterdir()) == []

    seen = tmp_path / "seen.txt"
    peer = write_script(tmp_path / "peer.py", (
        "import os, sys\n"
        "data = sys.argv[sys.argv.index('--data') + 1]\n"
        f"open({str(seen)!r}, 'a').write(data + ' ' + str(os.path.getsize(data)) + '\\n')\n"
        "print('RESULT lstm: chars/s 1234')\n"))
    sample_peer = write_script(tmp_path / "sample_peer.py", "print('RESULT sample: 3000 chars = 777 chars/s')\n")
    monkeypatch.setattr(peers, "torch_missing", lambda python: "")   # as if this Python imported torch
    result = run_bench(1.0, peer=peer, sample_peer=sample_peer, quick=True)
    assert result["figures"][0]["peer"] == 1234.0 and result["figures"][2]["peer"] == 777.0
    data_file, size = seen.read_text().split()
    assert int(size) > 1_000_000 and os.path.dirname(data_file) == str(tmp)   # the peer read the synthetic text
    assert list(tmp.iterdir()) == []                      # and it is gone

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(measure, "train_speed", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_bench(1.0, peer=peer, sample_peer=sample_peer, quick=True)
    assert list(tmp.iterdir()) == []


@pytest.mark.parametrize("option,needle", [("--peer", "--peer"), ("--sample-peer", "--sample-peer"),
                                           ("--peer-python", "--peer-python")])
def test_an_explicit_peer_or_python_that_does_not_exist_is_an_error(tmp_path, no_measuring, option, needle):
    missing = tmp_path / "nonexistent"
    one_line_error(bench_cli("--quick", "--seconds", "1", option, missing), needle, str(missing), "not found")


def test_why_the_peer_figures_are_missing_is_reported(stubbed, tmp_path, monkeypatch):
    no_torch = write_script(tmp_path / "python", (
        "#!/bin/sh\necho \"ModuleNotFoundError: No module named 'torch'\" >&2\nexit 1\n"))
    peer = write_script(tmp_path / "peer.py", "print('never run')\n")
    monkeypatch.setattr(peers, "torch_missing", TORCH_MISSING)      # the real question, asked of no_torch
    result = run_bench(1.0, peer=peer, sample_peer=peer, peer_python=no_torch, quick=True)
    status = result["peers"]["status"]
    assert "cannot import torch" in status and "No module named 'torch'" in status and no_torch in status
    assert status in str(render(result).caption)

    broken = write_script(tmp_path / "broken.py", (
        "import sys\nprint('Traceback ...', file=sys.stderr)\n"
        "print(\"ModuleNotFoundError: No module named 'torch'\", file=sys.stderr)\nsys.exit(1)\n"))
    monkeypatch.setattr(peers, "torch_missing", lambda python: "")
    result = run_bench(1.0, peer=broken, sample_peer=broken, peer_python=sys.executable, quick=True)
    assert result["peers"]["status"] == "ran"
    train, sample = result["figures"][0], result["figures"][2]
    assert train["peer"] is None and sample["peer"] is None
    for figure in (train, sample):
        assert "PyTorch peer failed" in figure["note"] and "exit code 1" in figure["note"]
        assert "No module named 'torch'" in figure["note"]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_seconds_must_be_finite_and_is_named(no_measuring, value):
    one_line_error(bench_cli("--quick", "--seconds", value), "--seconds")
    with pytest.raises(CharlmError, match="--seconds"):
        run_bench(float(value), quick=True)


def test_quick_scores_less_and_says_so_while_the_full_bench_keeps_the_readme_sizes(stubbed):
    calls, _ = stubbed
    quick = run_bench(1.0, quick=True)
    (sentences, doc_chars, with_ngram), = calls["score"]   # once, without the 7-gram
    assert not with_ngram and sentences <= 1_000 and doc_chars <= 300_000
    assert (quick["quick"], quick["score_sentences"], quick["score_document_chars"]) == (True, sentences, doc_chars)
    labels = [f["label"] for f in quick["figures"]]
    assert f"score --file, {sentences:,} lines, lstm 2×256" in labels
    assert f"score --document, {doc_chars:,} chars, lstm 2×256" in labels
    assert not any("7-gram" in label for label in labels)
    assert f"{doc_chars:,} character document" in str(render(quick).caption)
    from charlm.score import MAX_PIECES, PIECE_TOKENS

    assert workload.score_sizes(True, 1.0) == (1_000, MAX_PIECES * PIECE_TOKENS)   # read in as many pieces as 1 M
    assert workload.score_sizes(True, 8.0) == (8_000, 400_000)          # scaled with --seconds, capped at the full sizes
    assert workload.score_sizes(True, 1e6) == (10_000, 1_000_000)

    calls["score"].clear()
    full = run_bench(1.0)
    assert calls["score"] == [(10_000, 1_000_000, False), (10_000, 1_000_000, True)]
    labels = [f["label"] for f in full["figures"]]
    assert "score --file, 10,000 lines, lstm 2×256 + 7-gram" in labels
    assert "score --document, 1,000,000 chars, lstm 2×256 + 7-gram" in labels
    assert "sample lstm 2×256 + 7-gram, batch 1" in labels
    assert len([label for label in labels if label.startswith("train ")]) == len(workload.TRAIN_CONFIGS) + 1


@pytest.mark.parametrize("workers", [2, 1])
def test_training_rows_say_when_worker_processes_share_the_batch(stubbed, monkeypatch, workers):
    asked = []

    def auto_workers(arch, B, itemsize, cores):
        asked.append((arch.cell, arch.hidden_size, arch.num_layers, B, itemsize))
        return workers

    monkeypatch.setattr(step_workers, "auto_workers", auto_workers)
    result = run_bench(1.0, quick=True)
    note = result["figures"][0]["note"]
    assert result["figures"][0]["label"].startswith("train lstm 2×256")
    assert asked[0] == ("lstm", 256, 2, 32, 4)     # what `train` asks for that model
    assert ("2 worker processes" in note) == (workers == 2)
    minchar = next(f for f in result["figures"] if "batch 1×25" in f["label"])
    assert "worker" not in minchar["note"]
