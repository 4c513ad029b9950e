"""Training steps shared by worker processes (charlm.workers.train).

* The shared step's loss, gradients and final states equal one process's
  (float64, to round-off), for every cell, with resets, dropout masks and
  uneven shares of the batch.
* A worker that fails or is killed, or that cannot start, ends in a
  fallback to this process (the run goes on), never in a hang or a
  traceback; no worker outlives its engine.
* How many workers `auto` chooses, from cores, rows and weight size.
* Through the CLI: the same seed twice gives bit-identical checkpoints, a
  resumed run continues exactly, and the start line says the batch is shared.
"""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
from typer.testing import CliRunner

from charlm import checkpoint as ckpt_io
from charlm import model
from charlm.workers import process
from charlm.workers import train as step_workers
from charlm.workers import units
from charlm.cli import app
from charlm.config import Config
from conftest import exits, step_difference, step_inputs, trained_arrays


def assert_same_step(ref, got, tol=1e-12):
    assert step_difference(ref, got) <= tol


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("reset", [False, True])
def test_shared_step_equals_one_process(cell, reset):
    arch, params, x, y, carry, masks = step_inputs(cell, reset=reset)
    failures = []
    with step_workers.StepComputer(arch, "float64", 10, 7, 3, on_failure=failures.append) as engine:
        assert engine.count == 3 and not failures
        for m in (None, masks):
            ref = model.loss_and_grads(params, arch, x, y, carry, masks=m)
            got = engine.loss_and_grads(params, arch, x, y, carry, m)
            assert_same_step(ref, got)
        # the weights are read afresh at every step
        params2 = {k: v * 0.9 for k, v in params.items()}
        assert_same_step(model.loss_and_grads(params2, arch, x, y, carry), engine.loss_and_grads(params2, arch, x, y, carry))
    assert not failures


def test_a_broken_share_changes_the_result():
    """Negative control: the comparison above would see a share computed on the wrong rows."""
    arch, params, x, y, carry, _ = step_inputs("gru")
    with step_workers.StepComputer(arch, "float64", 10, 7, 2) as engine:
        engine.workers.rows = [(0, 5), (4, 9)]     # worker 1 told to read rows 4..8 instead of 5..9
        got = engine.loss_and_grads(params, arch, x, y, carry)
    ref = model.loss_and_grads(params, arch, x, y, carry)
    assert abs(got[0] - ref[0]) > 1e-6


def test_split_rows_covers_the_batch_in_near_equal_shares():
    for B in range(1, 40):
        for P in range(1, B + 1):
            rows = step_workers.split_rows(B, P)
            assert len(rows) == P and rows[0][0] == 0 and rows[-1][1] == B
            assert all(a[1] == b[0] for a, b in zip(rows, rows[1:]))
            sizes = [b - a for a, b in rows]
            assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


def test_auto_workers(monkeypatch):
    monkeypatch.setattr(units, "ORDERED_STORES", False)      # the batch-row rule (the LSTM's split by units: below)
    gru256 = model.Arch("gru", 65, 256, 2)
    lstm256 = model.Arch("lstm", 65, 256, 2)
    lstm512 = model.Arch("lstm", 65, 512, 2)
    rnn256 = model.Arch("rnn", 65, 256, 1)
    assert step_workers.auto_workers(gru256, 32, 4, cores=2) == 2
    assert step_workers.auto_workers(rnn256, 32, 4, cores=2) == 2
    assert step_workers.auto_workers(gru256, 32, 4, cores=1) == 1
    assert step_workers.auto_workers(gru256, 64, 4, cores=8) == 2           # at most MAX_AUTO_WORKERS
    assert step_workers.auto_workers(gru256, 32, 4, cores=2, posix=False) == 1
    assert step_workers.auto_workers(rnn256, 15, 4, cores=2) == 1           # fewer than MIN_ROWS rows each
    assert step_workers.auto_workers(gru256, 16, 4, cores=2) == 1           # 1.6 MB of weights for 8 rows each
    assert step_workers.auto_workers(lstm256, 32, 4, cores=2) == 2          # 2.1 MB for 16 rows each
    assert step_workers.auto_workers(lstm512, 64, 4, cores=2) == 2          # 8.4 MB for 32 rows each
    assert step_workers.auto_workers(lstm512, 32, 4, cores=2) == 1          # ... for 16 rows each
    gru512, gru768 = model.Arch("gru", 65, 512, 2), model.Arch("gru", 65, 768, 2)
    assert step_workers.auto_workers(gru512, 32, 4, cores=2) == 2           # 6.3 MB for 16 rows each
    assert step_workers.auto_workers(gru512, 16, 4, cores=2) == 1           # ... for 8 rows each
    assert step_workers.auto_workers(gru768, 64, 4, cores=2) == 2           # 14 MB for 32 rows each
    assert step_workers.auto_workers(gru768, 32, 4, cores=2) == 1           # ... for 16 rows each
    assert step_workers.auto_workers(gru512, 32, 8, cores=2) == 1           # float64 doubles the weights
    for arch in (lstm256, lstm512, model.Arch("gru", 300, 128, 3), model.Arch("rnn", 65, 1024, 1)):
        assert not units.split_by_units(arch, 32, 2)
        for B in (1, 8, 16, 32, 64, 128):
            for cores in (1, 2, 3, 4, 8):
                p = step_workers.auto_workers(arch, B, 4, cores)
                assert 1 <= p <= min(max(1, cores), step_workers.MAX_AUTO_WORKERS)
                if p > 1:   # each worker has the rows the rule asks for
                    rows, weights = B // p, step_workers.step_weight_bytes(arch, 4)
                    assert rows >= step_workers.MIN_ROWS
                    assert weights <= step_workers.MAX_WEIGHT_BYTES_PER_ROW * rows or (
                        rows >= step_workers.WIDE_ROWS and weights <= step_workers.MAX_WEIGHT_BYTES_PER_WIDE_ROW * rows)


def test_usable_cores_follows_the_blas_thread_variables(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    assert process.usable_cores() == 1
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "junk")
    assert process.usable_cores() >= 1


def test_a_killed_worker_falls_back_to_this_process():
    arch, params, x, y, carry, masks = step_inputs("lstm")
    failures = []
    engine = step_workers.StepComputer(arch, "float64", 10, 7, 2, on_failure=failures.append)
    procs = list(engine.workers.procs)
    engine.loss_and_grads(params, arch, x, y, carry, masks)
    procs[1].kill()
    procs[1].wait()
    got = engine.loss_and_grads(params, arch, x, y, carry, masks)       # the same step, computed here
    assert_same_step(model.loss_and_grads(params, arch, x, y, carry, masks=masks), got)
    assert len(failures) == 1 and "exited with code" in failures[0]
    assert engine.workers is None and engine.count == 1
    assert all(exits(p) for p in procs)                                 # the other worker was ended too
    engine.close()                                                      # closing twice is harmless


def test_a_worker_error_is_reported_with_its_message():
    arch, params, x, y, carry, _ = step_inputs("gru")
    y = y.copy()
    y[0, 9] = 200                                          # not a token of a 20-token vocabulary: worker 1 fails
    workers = step_workers.TrainWorkers(arch, "float64", 10, 7, 2)
    try:
        with pytest.raises(process.WorkerError, match="IndexError"):
            workers.loss_and_grads(params, x, y, carry)
    finally:
        procs = list(workers.procs)
        workers.close()
    assert all(exits(p) for p in procs)


def open_fds() -> int | None:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None


def test_a_worker_that_cannot_start_falls_back(monkeypatch):
    arch, params, x, y, carry, _ = step_inputs("rnn")
    monkeypatch.setattr(process, "_BOOT", "import sys; sys.exit(3)")
    failures = []
    fds = open_fds()
    with step_workers.StepComputer(arch, "float64", 10, 7, 3, on_failure=failures.append) as engine:
        assert engine.count == 1
        assert_same_step(model.loss_and_grads(params, arch, x, y, carry), engine.loss_and_grads(params, arch, x, y, carry))
    assert len(failures) == 1 and "exited with code 3" in failures[0]
    assert open_fds() == fds                       # no pipe or shared-memory descriptor left behind


def test_a_missing_interpreter_falls_back(monkeypatch):
    arch, *_ = step_inputs("rnn")
    monkeypatch.setattr(process.sys, "executable", os.path.join(os.sep, "nonexistent", "python"))
    failures = []
    with step_workers.StepComputer(arch, "float64", 10, 7, 2, on_failure=failures.append) as engine:
        assert engine.count == 1
    assert len(failures) == 1


def test_workers_end_when_the_engine_closes():
    arch, *_ = step_inputs("gru")
    fds = open_fds()
    engine = step_workers.StepComputer(arch, "float32", 10, 7, 3)
    procs = list(engine.workers.procs)
    assert all(p.poll() is None for p in procs)
    engine.close()
    assert all(p.returncode == 0 for p in procs)   # each exited at the end of its input, none was killed
    assert open_fds() == fds


def test_workers_option_is_validated():
    assert Config(workers="auto").validate().workers is None
    with pytest.raises(Exception, match="--workers must be at least 1"):
        Config(workers=0).validate()


# ---------------------------------------------------------------------------
# Through the CLI
# ---------------------------------------------------------------------------

NAMES = ["anna", "bob", "carla", "dave", "eve", "frank", "gina", "hal", "ida", "jon", "kim", "lea"]
SMALL = ["--hidden-size", "16", "--num-layers", "2", "--batch-size", "6", "--seq-len", "8", "--eval-every", "0",
         "--ngram", "0", "--cell", "lstm"]


@pytest.fixture
def corpus(tmp_path):
    rng = random.Random(0)
    path = tmp_path / "names.txt"
    path.write_text("\n".join(rng.choice(NAMES) for _ in range(800)) + "\n", encoding="utf-8")
    return path


def train(tmp_path, corpus, *args):
    result = CliRunner().invoke(app, ["train", str(corpus), *SMALL, *args])
    assert result.exit_code == 0, result.output
    return result


def test_same_seed_with_workers_is_bit_identical_and_resumes_exactly(tmp_path, corpus):
    a, b, c = (str(tmp_path / n) for n in ("a.npz", "b.npz", "c.npz"))
    # (a schedule and dropout that do not depend on the budget, so that 6 + 6 steps is 12 steps)
    fixed = ["--workers", "2", "--schedule", "constant", "--dropout", "0.1", "--char-dropout", "0.1"]
    result = train(tmp_path, corpus, "--steps", "12", *fixed, "-c", a)
    assert "shared by 2 worker processes" in " ".join(result.output.split())
    train(tmp_path, corpus, "--steps", "12", *fixed, "-c", b)
    train(tmp_path, corpus, "--steps", "6", *fixed, "-c", c)
    train(tmp_path, corpus, "--steps", "12", *fixed, "-c", c, "--resume")
    wa, wb, wc = trained_arrays(a), trained_arrays(b), trained_arrays(c)
    assert any(k.startswith("carry.") for k in wa)
    for k in wa:
        assert np.array_equal(wa[k], wb[k]), k
        assert np.array_equal(wa[k], wc[k]), k
    assert ckpt_io.load(a).meta["workers"] == 2
    info = CliRunner().invoke(app, ["info", a, "--json"])
    assert info.exit_code == 0 and json.loads(info.stdout)["workers"] == 2
    info = CliRunner().invoke(app, ["info", a], env={"COLUMNS": "400"})
    assert "each batch shared by 2 worker processes" in " ".join(info.stdout.split())


def test_workers_and_one_process_train_the_same_model(tmp_path, corpus):
    """The same run with and without workers: the same numbers but for the order of float additions."""
    a, b = str(tmp_path / "a.npz"), str(tmp_path / "b.npz")
    train(tmp_path, corpus, "--steps", "8", "--workers", "3", "--dtype", "float64", "--dropout", "0.2", "-c", a)
    train(tmp_path, corpus, "--steps", "8", "--workers", "1", "--dtype", "float64", "--dropout", "0.2", "-c", b)
    wa, wb = trained_arrays(a), trained_arrays(b)
    assert ckpt_io.load(a).meta["workers"] == 3 and ckpt_io.load(b).meta["workers"] == 1
    for k in wa:
        np.testing.assert_allclose(wa[k], wb[k], rtol=1e-9, atol=1e-12, err_msg=k)


def test_one_process_line_without_workers(tmp_path, corpus):
    result = train(tmp_path, corpus, "--steps", "2", "--workers", "1", "-c", str(tmp_path / "m.npz"))
    assert "worker" not in result.output


def test_workers_that_cannot_start_are_a_warning_and_training_goes_on(tmp_path, corpus, monkeypatch):
    monkeypatch.setattr(process, "_BOOT", "import sys; sys.exit(3)")
    path = tmp_path / "m.npz"
    result = train(tmp_path, corpus, "--steps", "3", "--workers", "2", "-c", str(path))
    out = " ".join(result.output.split())
    assert "warning: training workers: a worker process exited with code 3; this process computes the steps instead" in out
    assert "shared by" not in out
    assert ckpt_io.load(str(path)).meta["workers"] == 1


@pytest.mark.parametrize("cores, workers, threads", [(2, 2, "1"), (8, 2, "4"), (2, 3, "1")])
def test_each_worker_blas_gets_its_share_of_the_cores(monkeypatch, tmp_path, cores, workers, threads):
    out = tmp_path / "threads.txt"
    monkeypatch.setattr(process, "usable_cores", lambda: cores)
    monkeypatch.setattr(process, "_BOOT", f"import os, sys; open({str(out)!r}, 'a').write("
                                           "os.environ['OPENBLAS_NUM_THREADS'] + ' '); sys.exit(3)")
    arch, *_ = step_inputs("rnn")
    with step_workers.StepComputer(arch, "float64", 10, 7, workers) as engine:
        assert engine.count == 1                   # (these workers only report and exit)
    seen = out.read_text().split()
    assert seen and set(seen) == {threads}
