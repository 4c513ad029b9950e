"""What the test modules share: running the CLI in-process, asserting its outcomes, and small corpora.

Import the helpers with `from conftest import ...`; the fixtures are found by pytest."""

import random
import subprocess

import numpy as np
import pytest
from typer.testing import CliRunner

from charlm import model
from charlm.cli import app

runner = CliRunner()

TINY = ["--steps", "20", "--hidden-size", "16", "--num-layers", "1", "--batch-size", "4", "--seq-len", "8",
        "--eval-every", "10"]
TINY2 = ["--steps", "2", "--hidden-size", "4", "--num-layers", "1", "--batch-size", "2", "--seq-len", "4"]

NAMES = ["anna", "bob", "carla", "dave", "eve", "frank", "gina", "hal", "ida", "jon", "kim", "lea", "max",
         "nora", "otto", "paul", "quinn", "rosa", "sam", "tina"]


def invoke(*args, input=None, env=None):
    return runner.invoke(app, [str(a) for a in args], input=input, env=env)


def ok(r):
    """Assert success; on failure show everything."""
    assert r.exit_code == 0, f"exit {r.exit_code}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}\nexc: {r.exception!r}"
    assert r.exception is None, repr(r.exception)
    assert "Traceback" not in r.output
    return r


def one_line_error(r, *needles, code=1):
    """Assert a failure reported as exactly one 'error:' line on stderr, nothing on stdout."""
    detail = f"exit {r.exit_code}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}\nexc: {r.exception!r}"
    assert r.exit_code == code, detail
    assert r.exception is None or isinstance(r.exception, SystemExit), detail
    assert "Traceback" not in r.output, detail
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, detail
    assert lines[0].startswith("error:"), detail
    assert r.stdout == "", detail
    for needle in needles:
        assert needle.lower() in lines[0].lower(), detail
    return lines[0]


def write_names(path, n=300, seed=0):
    rng = random.Random(seed)
    path.write_text("\n".join(rng.choice(NAMES) for _ in range(n)) + "\n", encoding="utf-8")
    return path


def step_inputs(cell, B=10, T=7, V=20, H=16, L=2, reset=False, seed=1):
    """A float64 model and one training step's inputs: (arch, params, x, y, carried states, dropout masks)."""
    arch = model.Arch(cell, V, H, L, reset_at_eos=reset)
    rng = np.random.default_rng(seed)
    params = model.init_params(arch, rng, "float64")
    x = rng.integers(0, V, (T, B)).astype(np.uint8)
    y = rng.integers(0, V, (T, B)).astype(np.uint8)
    if reset:
        x[3, ::2] = 0                                             # <EOS> inputs: the state restarts there
        x[0, 1] = 0
    S = 2 if cell == "lstm" else 1
    carry = [tuple(rng.standard_normal((B, H)) for _ in range(S)) for _ in range(L)]
    masks = model.dropout_masks(arch, T, B, 0.3, rng, np.dtype("float64"))
    return arch, params, x, y, carry, masks


def step_difference(ref, got) -> float:
    """The largest difference between two training steps' (loss, grads, final states): the loss's and each
    gradient's relative to its scale (at least 1), the states' absolute."""
    assert sorted(ref[1]) == sorted(got[1])
    d = abs(ref[0] - got[0]) / abs(ref[0])
    for k in ref[1]:
        assert got[1][k].shape == ref[1][k].shape, k
        d = max(d, np.abs(got[1][k] - ref[1][k]).max() / max(1.0, np.abs(ref[1][k]).max()))
    for la, lb in zip(ref[2], got[2], strict=True):
        for a, b in zip(la, lb, strict=True):
            assert b.shape == a.shape
            d = max(d, np.abs(b - a).max())
    return d


def trained_arrays(path) -> dict:
    """A checkpoint's weights, optimizer state and carried states (what fixes a run's bits)."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files if k.startswith(("layers.", "head.", "optim.", "carry."))}


def exits(proc, timeout: float = 10) -> bool:
    """Whether a worker process exits within `timeout` seconds."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


@pytest.fixture
def no_env_checkpoint(monkeypatch):
    """No CHARLM_CHECKPOINT or CHARLM_DEBUG from the developer's shell."""
    monkeypatch.delenv("CHARLM_CHECKPOINT", raising=False)
    monkeypatch.delenv("CHARLM_DEBUG", raising=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained once per module for read-only tests: (directory, corpus, checkpoint)."""
    d = tmp_path_factory.mktemp("trained")
    corpus = write_names(d / "names.txt")
    ck = d / "model.npz"
    ok(invoke("train", corpus, *TINY, "-c", ck))
    return d, corpus, ck


@pytest.fixture
def corpus(tmp_path):
    return write_names(tmp_path / "names.txt")
