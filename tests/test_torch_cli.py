"""`charlm score --engine torch` (one process and two ranks) and the torch engine's command-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason='needs the torch extra: pip install "charlm[torch]"')

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["anna", "bob", "carla", "dave", "eve", "frank", "gina", "hal", "ida", "jon", "kim", "lea"]


def run(args, cwd, launcher=()):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    env.pop("CHARLM_CHECKPOINT", None)
    return subprocess.run([sys.executable, *launcher, "-m", "charlm", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("torchcli")
    (d / "c.txt").write_text("\n".join(NAMES * 25) + "\n")
    lines = [NAMES[i % len(NAMES)] * (1 + i % 4) + "é" * (i % 3) for i in range(37)]   # lengths vary, <UNK> too
    (d / "s.txt").write_text("\n".join(lines) + "\n")
    r = run(["train", "c.txt", "--steps", "15", "--hidden-size", "12", "--num-layers", "2", "--cell", "gru",
             "--batch-size", "4", "--seq-len", "8", "--ngram", "3", "-c", "m.npz"], d)
    assert r.returncode == 0, r.stderr
    return d


def records(stdout):
    return [json.loads(line) for line in stdout.splitlines()]


def test_score_on_torch_matches_numpy_in_input_order(trained):
    a = run(["score", "--file", "s.txt", "--json", "-c", "m.npz", "--batch-size", "8"], trained)
    b = run(["score", "--file", "s.txt", "--json", "-c", "m.npz", "--batch-size", "8", "--engine", "torch",
             "--device", "cpu"], trained)
    assert a.returncode == 0 and b.returncode == 0, b.stderr
    ra, rb = records(a.stdout), records(b.stdout)
    assert len(ra) == len(rb) == 37
    for x, y in zip(ra, rb):
        assert x["text"] == y["text"] and x["num_tokens"] == y["num_tokens"] and x["num_unk"] == y["num_unk"]
        assert abs(x["log_prob"] - y["log_prob"]) < 1e-4 * max(1.0, abs(x["log_prob"]))
    # two ranks share the batches; rank 0 alone prints, in input order
    c = run(["score", "--file", "s.txt", "--json", "-c", "m.npz", "--batch-size", "8", "--engine", "torch"],
            trained, launcher=("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"))
    assert c.returncode == 0, c.stderr[-2000:]
    rc = records(c.stdout)
    assert [r["text"] for r in rc] == [r["text"] for r in ra]
    for x, y in zip(rb, rc):
        assert abs(x["log_prob"] - y["log_prob"]) < 1e-9 * max(1.0, abs(x["log_prob"]))


def test_torch_engine_errors_are_one_line(trained):
    for args, needle in ((["score", "anna", "--engine", "torch", "--document", "--file", "s.txt"], "--document"),
                         (["score", "anna", "--engine", "torch", "--device", "tpu"], "--device must be"),
                         (["score", "anna", "--device", "cpu"], "--device applies to --engine torch")):
        r = run([*args, "-c", "m.npz"], trained)
        assert r.returncode == 1 and r.stdout == ""
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], r.stderr
    if not torch.cuda.is_available():
        r = run(["score", "anna", "--engine", "torch", "--device", "cuda", "-c", "m.npz"], trained)
        assert r.returncode == 1 and "no CUDA device" in r.stderr and "Traceback" not in r.stderr


def test_train_on_torch_from_the_command_line_resumes(trained):
    common = ["train", "c.txt", "--hidden-size", "8", "--num-layers", "1", "--cell", "rnn", "--activation", "relu",
              "--batch-size", "4", "--seq-len", "8", "--engine", "torch", "-c", "r.npz"]
    r = run([*common, "--steps", "6"], trained)
    assert r.returncode == 0, r.stderr
    r = run([*common, "--steps", "10", "--resume"], trained)
    assert r.returncode == 0, r.stderr
    from charlm import checkpoint

    assert checkpoint.load(str(trained / "r.npz")).train_state["step"] == 10
    r = run(["info", "r.npz"], trained)
    assert r.returncode == 0, r.stderr


def test_fine_tuning_on_torch_starts_from_the_base_and_records_it(trained):
    """`train --init-from` on the torch engine: the base's weights at step 0, a fresh optimizer, meta.init_from."""
    from charlm import checkpoint as ckpt_io

    (trained / "new.txt").write_text("\n".join(n[::-1] for n in NAMES * 20) + "\n")
    r = run(["train", "new.txt", "--engine", "torch", "--init-from", "m.npz", "--steps", "3", "--eval-every", "0",
             "-c", "ft.npz"], trained)
    assert r.returncode == 0, r.stderr
    base, tuned = ckpt_io.load(str(trained / "m.npz")), ckpt_io.load(str(trained / "ft.npz"))
    assert tuned.meta["init_from"]["path"] == "m.npz" and tuned.train_state["step"] == 3
    assert tuned.arch == base.arch and tuned.vocab.tokens == base.vocab.tokens
    moved = max(float(abs(tuned.params[k] - base.params[k]).max()) for k in base.params)
    assert 0 < moved < 0.05    # three warm-up steps of Adam (each at most lr) away from the base, not a fresh start
