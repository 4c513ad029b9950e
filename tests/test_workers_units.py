"""An LSTM step split by hidden units over worker processes (charlm.workers.units).

* The split step's loss, gradients and final states equal one process's
  (float64, to round-off): 1–3 layers, resets at <EOS>, dropout masks, two
  and three workers with uneven shares of the units, step after step.
* Negative control: a split that leaves one unit to no worker is caught by
  the same comparison (run in threads of this process, which can be patched).
* A killed worker ends in the fallback to this process, not in a hang of the
  other one at its barrier.
* Which steps are split by units, and that `auto` picks it for the LSTM.
* Through the CLI: the same seed twice gives bit-identical checkpoints, a
  resumed run continues exactly, and the model equals one process's.
"""

from __future__ import annotations

import mmap
import sys
import threading

import numpy as np
import pytest
from typer.testing import CliRunner

from charlm import checkpoint as ckpt_io
from charlm import model
from charlm.cli import app
from charlm.workers import train as step_workers
from charlm.workers import units
from conftest import exits, step_difference, step_inputs, trained_arrays

pytestmark = pytest.mark.skipif(not units.ORDERED_STORES or sys.platform == "win32",
                                reason="the split by units runs on x86-64 POSIX systems only")


def setup(H=64, L=2, reset=False):
    return step_inputs("lstm", H=H, L=L, reset=reset)


@pytest.mark.parametrize("workers, H", [(2, 64), (3, 100)])
@pytest.mark.parametrize("L", [1, 2, 3])
@pytest.mark.parametrize("reset", [False, True])
def test_split_step_equals_one_process(workers, H, L, reset):
    arch, params, x, y, carry, masks = setup(H=H, L=L, reset=reset)
    failures = []
    with step_workers.StepComputer(arch, "float64", 10, 7, workers, on_failure=failures.append) as engine:
        assert engine.count == workers and engine.workers.split == "units"
        for m in (None, masks, None):                             # the barriers' counts carry over from step to step
            ref = model.loss_and_grads(params, arch, x, y, carry, masks=m)
            assert step_difference(ref, engine.loss_and_grads(params, arch, x, y, carry, m)) < 1e-12
        params2 = {k: v * 0.9 for k, v in params.items()}        # the weights are read afresh at every step
        assert step_difference(model.loss_and_grads(params2, arch, x, y, carry),
                               engine.loss_and_grads(params2, arch, x, y, carry)) < 1e-12
    assert not failures


def in_threads(arch, params, x, y, carry, masks, workers=2):
    """The split step of `workers` threads of this process (the code the workers run, patchable here)."""
    B, T = x.shape[1], x.shape[0]
    spec = {"arch": vars(arch), "dtype": "float64", "seq_len": T, "rows": step_workers.split_rows(B, workers),
            "denominator": B * T, "split": "units", "batch": B, "workers": workers}
    table, size = step_workers.layout(spec)
    buf = mmap.mmap(-1, size)
    v = step_workers.views(table, buf)
    for k, p in params.items():
        np.copyto(v[f"param:{k}"], p)
    units.put(v, x, y, carry, masks)
    errors = []

    def work(p):
        try:
            units.step(v, spec, p, units.Barrier(v["flags"], p), masks is not None)
        except Exception as e:                                    # pragma: no cover (reported below)
            errors.append(e)
            units.abort(v, workers)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)                                   # the spinning threads hand the GIL over quickly
    try:
        threads = [threading.Thread(target=work, args=(p,)) for p in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors
    return units.take(v, arch, workers)


def test_threads_run_the_same_split():
    arch, params, x, y, carry, masks = setup(H=64, L=2, reset=True)
    ref = model.loss_and_grads(params, arch, x, y, carry, masks=masks)
    assert step_difference(ref, in_threads(arch, params, x, y, carry, masks)) < 1e-12


def test_a_unit_left_to_no_worker_changes_the_result(monkeypatch):
    """Negative control: the comparison above would see a split that skips a unit."""
    arch, params, x, y, carry, masks = setup(H=64, L=2)
    even = units.shares

    def skipping(n, parts):
        if n != arch.hidden_size:
            return even(n, parts)
        return [slice(0, n // 2), slice(n // 2 + 1, n)]          # unit n/2 is nobody's
    monkeypatch.setattr(units, "shares", skipping)
    ref = model.loss_and_grads(params, arch, x, y, carry, masks=masks)
    assert step_difference(ref, in_threads(arch, params, x, y, carry, masks)) > 1e-6


def test_shares_and_gate_rows():
    for n in range(1, 50):
        for parts in range(1, 6):
            s = units.shares(n, parts)
            assert s[0].start == 0 and s[-1].stop == n and all(a.stop == b.start for a, b in zip(s, s[1:]))
            assert max(x.stop - x.start for x in s) - min(x.stop - x.start for x in s) <= 1
    R = units.gate_rows(8, slice(2, 4))
    assert R.tolist() == [2, 3, 10, 11, 18, 19, 26, 27]          # units 2, 3 of the i, f, g, o blocks


def test_a_barrier_waits_for_the_others_and_stops_when_told():
    flags = np.zeros((3, 8), dtype=np.int64)                      # two workers and the abort row
    flags[1, 0] = 2                                               # worker 1 has passed two barriers
    barrier = units.Barrier(flags, 0)
    barrier()
    barrier()                                                     # both return at once
    assert flags[0, 0] == 2
    units.abort({"flags": flags}, 2)
    with pytest.raises(units.WorkerError, match="failed"):
        barrier()                                                 # worker 1 never reaches a third


def test_a_killed_worker_falls_back_without_a_hang():
    arch, params, x, y, carry, masks = setup(H=64)
    failures = []
    engine = step_workers.StepComputer(arch, "float64", 10, 7, 2, on_failure=failures.append)
    assert engine.workers.split == "units"
    procs = list(engine.workers.procs)
    engine.loss_and_grads(params, arch, x, y, carry, masks)
    procs[1].kill()                                               # worker 0 then waits for it at its first barrier
    procs[1].wait()
    got = engine.loss_and_grads(params, arch, x, y, carry, masks)  # the same step, computed here
    assert step_difference(model.loss_and_grads(params, arch, x, y, carry, masks=masks), got) < 1e-12
    assert len(failures) == 1 and "exited with code" in failures[0]
    assert engine.workers is None and engine.count == 1
    assert all(exits(p) for p in procs)                           # the waiting worker was told to stop, and exited


def test_which_steps_are_split_by_units(monkeypatch):
    lstm = model.Arch("lstm", 65, 256, 2)
    assert units.split_by_units(lstm, 32, 2)
    assert step_workers.auto_workers(lstm, 32, 4, cores=2) == 2
    assert step_workers.auto_workers(model.Arch("lstm", 65, 512, 2), 64, 4, cores=2) == 2
    assert step_workers.auto_workers(lstm, 32, 4, cores=1) == 1
    assert not units.split_by_units(lstm, 32, 1)
    assert not units.split_by_units(model.Arch("gru", 65, 256, 2), 32, 2)             # GRU and RNN: by rows
    assert not units.split_by_units(model.Arch("lstm", 65, 48, 2), 32, 2)             # too few units each
    assert not units.split_by_units(model.Arch("lstm", 65, 256, 2, bidirectional=True), 32, 2)
    assert not units.split_by_units(model.Arch("lstm", 5000, 256, 2), 32, 2)          # layer 0 looks its columns up
    monkeypatch.setattr(units, "ORDERED_STORES", False)
    assert not units.split_by_units(lstm, 32, 2)


# ---------------------------------------------------------------------------
# Through the CLI
# ---------------------------------------------------------------------------

TEXT = "the quick brown fox jumps over the lazy dog\nhow vexingly quick daft zebras jump\n" * 40
SMALL = ["--hidden-size", "64", "--num-layers", "2", "--batch-size", "6", "--seq-len", "8", "--eval-every", "0",
         "--ngram", "0", "--cell", "lstm", "--schedule", "constant", "--dropout", "0.1"]


def train(corpus, *args):
    result = CliRunner().invoke(app, ["train", str(corpus), *SMALL, *args])
    assert result.exit_code == 0, result.output
    return result


def test_split_runs_are_reproducible_resume_exactly_and_equal_one_process(tmp_path):
    corpus = tmp_path / "text.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    a, b, c = (str(tmp_path / n) for n in ("a.npz", "b.npz", "c.npz"))
    result = train(corpus, "--steps", "10", "--workers", "2", "-c", a)
    assert "shared by 2 worker processes" in " ".join(result.output.split())
    train(corpus, "--steps", "10", "--workers", "2", "-c", b)
    train(corpus, "--steps", "5", "--workers", "2", "-c", c)
    train(corpus, "--steps", "10", "--workers", "2", "-c", c, "--resume")
    wa, wb, wc = trained_arrays(a), trained_arrays(b), trained_arrays(c)
    for k in wa:
        assert np.array_equal(wa[k], wb[k]), k
        assert np.array_equal(wa[k], wc[k]), k
    assert ckpt_io.load(a).meta["workers"] == 2
    e, f = str(tmp_path / "e.npz"), str(tmp_path / "f.npz")
    train(corpus, "--steps", "6", "--workers", "2", "--dtype", "float64", "-c", e)
    train(corpus, "--steps", "6", "--workers", "1", "--dtype", "float64", "-c", f)
    we, wf = trained_arrays(e), trained_arrays(f)
    for k in we:
        np.testing.assert_allclose(we[k], wf[k], rtol=1e-9, atol=1e-12, err_msg=k)
