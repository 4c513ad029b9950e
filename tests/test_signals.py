"""Signals and crashes, through the real console script in a subprocess.

* SIGINT / SIGTERM during `train` save a resumable checkpoint and exit 130 / 143.
* A run interrupted (SIGINT, or SIGKILL after a periodic save) and resumed
  gives bit-identical weights, optimizer moments and carried state to the
  same run done in one go.
* SIGKILL at random moments never leaves a partial checkpoint: what is on
  disk is either absent or exactly one of the states the run saved.
* A second SIGINT quits at once and leaves the last good checkpoint alone.
"""

from __future__ import annotations

import os
import random
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from charlm import checkpoint as ckpt_io

NAMES = ["anna", "bob", "carla", "dave", "eve", "frank", "gina", "hal", "ida", "jon", "kim", "lea", "max",
         "nora", "otto", "paul", "quinn", "rosa", "sam", "tina"]

TINY = ["--hidden-size", "8", "--num-layers", "1", "--batch-size", "4", "--seq-len", "8"]
COMPARED = ("layers.", "head.", "optim.", "carry.", "best.")

# One BLAS thread: with several processes on two cores, OpenBLAS's spinning threads can make a step
# 10-100x slower (a 256x256 QR took 1 s instead of 6 ms); results do not depend on it.
ENV = {k: v for k, v in os.environ.items() if k not in ("CHARLM_CHECKPOINT", "CHARLM_DEBUG")}
ENV.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def write_corpus(path, n=3000, seed=0):
    rng = random.Random(seed)
    path.write_text("\n".join(rng.choice(NAMES) for _ in range(n)) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path / "names.txt")


_started: list = []


@pytest.fixture(autouse=True)
def _no_stray_processes():
    """Whatever a test does, no charlm process it started outlives it."""
    yield
    while _started:
        proc = _started.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class Run:
    """`python -m charlm ARGS` in `cwd`, stdout and stderr going to files (no pipe can fill up)."""

    def __init__(self, cwd, *args):
        self.cwd = cwd
        n = len(list(cwd.glob("run*.err")))
        self.out_path = cwd / f"run{n}.out"
        self.err_path = cwd / f"run{n}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "charlm", *map(str, args)], cwd=cwd,
                                         stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=ENV)
        _started.append(self.proc)

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(encoding="utf-8", errors="replace")

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(encoding="utf-8", errors="replace")

    def wait(self, timeout=60) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"charlm did not finish in {timeout} s; stderr:\n{self.stderr}")

    def kill(self, sig):
        self.proc.send_signal(sig)

    def wait_until(self, cond, what, timeout=60):
        """Poll until cond() holds; fail if the process ends first."""
        deadline = time.monotonic() + timeout
        while not cond():
            if self.proc.poll() is not None:
                if cond():
                    return
                raise AssertionError(f"charlm exited ({self.proc.returncode}) before {what}; stderr:\n{self.stderr}")
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"timed out waiting for {what}; stderr:\n{self.stderr}")
            time.sleep(0.005)


def run_ok(cwd, *args) -> Run:
    r = Run(cwd, *args)
    rc = r.wait()
    assert rc == 0, r.stderr
    return r


def flat(text: str) -> str:
    return " ".join(text.split())


def arrays_of(path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files if k.startswith(COMPARED)}


def assert_same_arrays(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    assert any(k.startswith("layers.") for k in a) and any(k.startswith("optim.") for k in a)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert np.array_equal(a[k], b[k]), f"{k} differs"


def assert_same_train_state(a, b):
    """Everything that steers the rest of the run (not the wall clock)."""
    sa, sb = a.train_state, b.train_state
    for key in ("step", "epoch", "chunk", "offset", "chars_seen", "skipped_steps", "rng", "best_step",
                "best_val", "last_loss", "last_val"):
        assert sa[key] == sb[key], key
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    assert strip(sa["history"]) == strip(sb["history"])


# ---------------------------------------------------------------------------
# (a), (b): SIGINT and SIGTERM during train
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("sig, code, name, ckname", [(signal.SIGINT, 130, "Ctrl-C", "ck.npz"),
                                                     (signal.SIGTERM, 143, "SIGTERM", "my ck.npz")])
def test_signal_during_train_saves_and_says_how_to_resume(corpus, tmp_path, sig, code, name, ckname):
    ck = tmp_path / ckname
    r = Run(tmp_path, "train", corpus.name, "--steps", "100000", *TINY, "--save-every", "5", "--eval-every", "0",
            "-c", ck.name)
    r.wait_until(ck.exists, "the first periodic checkpoint")
    r.kill(sig)
    rc = r.wait()
    err = r.stderr
    assert rc == code, err
    assert "Traceback" not in err
    assert name in err
    assert f"charlm train {corpus.name} --resume -c {shlex.quote(ck.name)}" in flat(err)   # pasteable into a shell
    c = ckpt_io.load(str(ck))
    assert c.resumable
    step = c.train_state["step"]
    assert 5 <= step < 100000
    assert c.meta["steps"] == step
    assert f"at step {step}" in flat(err)
    assert r.stdout == ""
    # and the run resumes from there
    r2 = run_ok(tmp_path, "train", corpus.name, "--steps", str(step + 3), *TINY, "--save-every", "5",
                "--eval-every", "0", "-c", ck.name, "--resume")
    assert f"resuming at step {step}" in flat(r2.stderr)
    assert ckpt_io.load(str(ck)).train_state["step"] == step + 3


# ---------------------------------------------------------------------------
# (c) exact resume
# ---------------------------------------------------------------------------

N = 600
EXACT = ["--steps", str(N), *TINY, "--save-every", "5", "--eval-every", "50", "--seed", "3"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The run of N steps in one go."""
    d = tmp_path_factory.mktemp("reference")
    corpus = write_corpus(d / "names.txt")
    run_ok(d, "train", corpus.name, *EXACT, "-c", "ref.npz")
    return d / "ref.npz"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_and_resumed_run_is_bit_identical(reference, corpus, tmp_path, sig):
    ck = tmp_path / "ck.npz"
    for attempt in range(3):
        ck.unlink(missing_ok=True)
        r = Run(tmp_path, "train", corpus.name, *EXACT, "-c", ck.name)
        r.wait_until(ck.exists, "the first periodic checkpoint")
        if sig == signal.SIGKILL:
            # let another periodic save happen, then kill without warning
            first = ckpt_io.load(str(ck)).train_state["step"]
            r.wait_until(lambda: ckpt_io.load(str(ck)).train_state["step"] > first, "a second periodic save")
        r.kill(sig)
        rc = r.wait()
        if rc != 0:
            break
        # the run had finished all N steps before the signal arrived: nothing was interrupted; again
    assert rc == (130 if sig == signal.SIGINT else -signal.SIGKILL), r.stderr
    mid = ckpt_io.load(str(ck))
    stopped = mid.train_state["step"]
    assert 0 < stopped < N
    if sig == signal.SIGKILL:
        assert stopped % 5 == 0  # a periodic save
    r2 = run_ok(tmp_path, "train", corpus.name, *EXACT, "-c", ck.name, "--resume")
    assert f"resuming at step {stopped}" in flat(r2.stderr)
    ref = ckpt_io.load(str(reference))
    got = ckpt_io.load(str(ck))
    assert got.train_state["step"] == ref.train_state["step"] == N
    assert_same_arrays(arrays_of(ck), arrays_of(reference))
    assert_same_train_state(got, ref)


# ---------------------------------------------------------------------------
# (d) crash safety: SIGKILL at random moments
# ---------------------------------------------------------------------------

CRASH = ["--steps", "100000", *TINY, "--eval-every", "25", "--seed", "1"]


REFERENCE_SCRIPT = """
import sys
import numpy as np
from charlm import checkpoint as ckpt_io
from charlm.config import build_config
from charlm.dataset import load_corpus
from charlm.train import train

corpus, out, steps = sys.argv[1], sys.argv[2], {int(s) for s in sys.argv[3:]}
cfg = build_config(None, dict(steps=100000, hidden_size=8, num_layers=1, batch_size=4, seq_len=8,
                              eval_every=25, seed=1, save_every=1))
captured = {}

def save(c):
    s = c.train_state["step"]
    if s in steps:
        for k, v in ckpt_io.to_arrays(c).items():
            if k.startswith(%r):
                captured[f"{s}/{k}"] = np.array(v, copy=True)

train(cfg, load_corpus(corpus, cfg), save=save, should_stop=lambda: f"{max(steps)}/head.bias" in captured)
np.savez(out, **captured)
""" % (COMPARED,)


def reference_states(corpus, steps: set, tmp_path) -> dict:
    """The arrays the run saves at each of `steps` (same options as CRASH, saving every step), from the
    library in a subprocess with the same environment as the killed runs."""
    out = tmp_path / "reference_states.npz"
    subprocess.run([sys.executable, "-c", REFERENCE_SCRIPT, str(corpus), str(out), *map(str, sorted(steps))],
                   check=True, env=ENV, cwd=tmp_path)
    states: dict = {s: {} for s in steps}
    with np.load(out, allow_pickle=False) as z:
        for key in z.files:
            s, name = key.split("/", 1)
            states[int(s)][name] = z[key]
    return states


def test_sigkill_never_leaves_a_partial_checkpoint(corpus, tmp_path):
    rng = random.Random(20240607)
    paths = {1: tmp_path / "every1.npz", 2: tmp_path / "every2.npz"}
    seen = []  # (save_every, step, arrays)
    absent = 0
    for i in range(24):
        every = 1 if i % 2 == 0 else 2
        ck = paths[every]
        r = Run(tmp_path, "train", corpus.name, *CRASH, "--save-every", every, "-c", ck.name)
        time.sleep(rng.uniform(0.1, 1.2))
        r.kill(signal.SIGKILL)
        r.wait()
        if not ck.exists():
            absent += 1
            continue
        c = ckpt_io.load(str(ck))  # never partial: it loads and validates
        step = c.train_state["step"]
        assert step >= 1
        assert step % every == 0, (every, step)
        assert c.meta["steps"] == step
        assert c.optim_state["step"] == step
        assert c.resumable and c.carry is not None
        seen.append((every, step, arrays_of(ck)))
        # nothing else half-written sits at the checkpoint's path: only temporary files beside it
        for p in tmp_path.iterdir():
            if p.name.startswith(".") and p.name.endswith(".tmp"):
                assert p.name.startswith((".every1.npz.", ".every2.npz."))
    assert len(seen) >= 10, f"only {len(seen)} of 24 runs had saved anything"
    # each checkpoint found is exactly the state the run had at that step
    ref = reference_states(corpus, {step for _, step, _ in seen}, tmp_path)
    for every, step, arrays in seen:
        assert_same_arrays(arrays, ref[step])


# ---------------------------------------------------------------------------
# a second SIGINT quits at once
# ---------------------------------------------------------------------------

SLOW = ["--hidden-size", "128", "--num-layers", "1", "--batch-size", "32", "--seq-len", "128", "--eval-every", "0",
        "--val-fraction", "0"]


def test_second_sigint_quits_at_once_and_keeps_the_last_checkpoint(corpus, tmp_path):
    ck = tmp_path / "ck.npz"
    run_ok(tmp_path, "train", corpus.name, "--steps", "1", *SLOW, "-c", ck.name)
    before = ck.read_bytes()
    quit_at_once = 0
    for attempt in range(3):
        # slow steps and no periodic save: nothing should write the checkpoint before the loop stops
        r = Run(tmp_path, "train", corpus.name, "--steps", "100000", "--save-every", "100000", *SLOW,
                "-c", ck.name, "--resume")
        r.wait_until(lambda: "resuming at step" in flat(r.stderr), "training to start")
        r.kill(signal.SIGINT)
        r.wait_until(lambda: "Ctrl-C" in r.stderr, "the first Ctrl-C to be acknowledged")
        r.kill(signal.SIGINT)
        rc = r.wait()
        err = r.stderr
        assert rc == 130, err
        assert "Traceback" not in err
        c = ckpt_io.load(str(ck))  # whatever happened, the checkpoint on disk is whole
        if "Saved a resumable checkpoint" not in err:
            # quit at once: the checkpoint is byte for byte the last good one
            assert ck.read_bytes() == before
            quit_at_once += 1
            break
        # the loop had already stopped and saved before the second Ctrl-C arrived; start over from it
        assert c.resumable
        before = ck.read_bytes()
    assert quit_at_once == 1


# ---------------------------------------------------------------------------
# Ctrl-C outside training
# ---------------------------------------------------------------------------

def test_sigint_during_sample_exits_130_without_traceback(reference, tmp_path):
    r = Run(tmp_path, "sample", "-c", reference, "--length", "100000000", "--no-stop-at-eos", "--seed", "1")
    r.wait_until(lambda: r.out_path.stat().st_size > 0, "the first sampled characters")
    r.kill(signal.SIGINT)
    rc = r.wait()
    assert rc == 130, r.stderr
    assert "Traceback" not in r.stderr
    assert "interrupted" in r.stderr


# ---------------------------------------------------------------------------
# worker processes (--workers): Ctrl-C saves as without them; no worker outlives the run
# ---------------------------------------------------------------------------

def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def gone(pids, timeout=20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(os.path.exists(f"/proc/{p}") and "Z" not in _state(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


def _state(pid) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


WORKERS = ["--hidden-size", "32", "--num-layers", "2", "--batch-size", "8", "--seq-len", "16", "--workers", "2"]


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="lists processes through /proc")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_workers_end_with_the_run(corpus, tmp_path, sig):
    ck = tmp_path / "ck.npz"
    r = Run(tmp_path, "train", corpus.name, "--steps", "100000", *WORKERS, "--save-every", "5", "--eval-every", "0",
            "-c", ck.name)
    r.wait_until(ck.exists, "the first periodic checkpoint")
    workers = children(r.proc.pid)
    assert len(workers) == 2, r.stderr
    assert "shared by 2 worker processes" in flat(r.stderr)
    r.kill(sig)
    rc = r.wait()
    assert gone(workers), "a worker process outlived the run"
    if sig == signal.SIGINT:
        assert rc == 130, r.stderr
        assert "Traceback" not in r.stderr
        assert ckpt_io.load(str(ck)).resumable
