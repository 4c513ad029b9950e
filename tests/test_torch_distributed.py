"""Many processes (gloo on 127.0.0.1): DDP gives one process's weights; a dead rank is a clean error, not a hang.

Two ranks of a tiny model on the CPU; each process runs `python -m charlm`.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason='needs the torch extra: pip install "charlm[torch]"')

from charlm import checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TEXT = ("the cat sat on the mat.\nwe ate a pie at tea.\na bird in the hand\n"
        "is worth two in the bush!\nzebras graze; quietly.\n") * 12
ARGS = ["--hidden-size", "12", "--num-layers", "2", "--batch-size", "4", "--seq-len", "8", "--cell", "lstm",
        "--dropout", "0.1", "--char-dropout", "0.05", "--ngram", "3", "--eval-every", "10", "--seed", "2"]


def env(**extra):
    e = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", CHARLM_DIST_TIMEOUT="60")
    e.pop("CHARLM_CHECKPOINT", None)
    e.update(extra)
    return e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_give_the_weights_of_one_process(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text(TEXT)
    one, two = tmp_path / "one.npz", tmp_path / "two.npz"
    common = ["train", str(corpus), *ARGS, "--steps", "20", "--save-every", "0", "--engine", "torch"]
    r = subprocess.run([sys.executable, "-m", "charlm", *common, "-c", str(one)], env=env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        "-m", "charlm", *common, "-c", str(two)], env=env(), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = checkpoint.load(str(one)), checkpoint.load(str(two))
    assert a.train_state["step"] == b.train_state["step"] == 20
    assert b.meta["workers"] == 2 and a.meta["workers"] == 1
    for k in a.params:
        assert np.max(np.abs(a.params[k] - b.params[k])) < 1e-5, k
    for la, lb in zip(a.carry, b.carry):          # the carried rows of both ranks, gathered in order
        for x, y in zip(la, lb):
            assert x.shape == y.shape == (4, 12) and np.max(np.abs(x - y)) < 1e-5
    assert abs(a.train_state["last_val"] - b.train_state["last_val"]) < 1e-5
    # negative control: a different seed moves the weights by far more than that
    other = tmp_path / "other.npz"
    r = subprocess.run([sys.executable, "-m", "charlm", *common[:-2], "--seed", "5", "--engine", "torch",
                        "-c", str(other)], env=env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    c = checkpoint.load(str(other))
    assert max(np.max(np.abs(a.params[k] - c.params[k])) for k in a.params) > 1e-3


def test_a_batch_that_does_not_split_evenly_is_refused(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text(TEXT)
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "charlm", "train", str(corpus), *ARGS, "--batch-size", "5",
                               "--steps", "3", "--engine", "torch", "-c", str(tmp_path / "x.npz")],
                              env=env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)),
                              stderr=subprocess.PIPE, text=True) for r in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 1
        assert "multiple of 2" in err and "Traceback" not in err


def test_a_dead_rank_ends_the_others_with_one_line(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text(TEXT)
    ck = tmp_path / "run.npz"
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "charlm", "train", str(corpus), *ARGS, "--steps", "100000",
                               "--save-every", "5", "--engine", "torch", "-c", str(ck)],
                              env=env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for r in range(2)]
    try:
        deadline = time.monotonic() + 240
        while not ck.exists() and time.monotonic() < deadline and procs[0].poll() is None:
            time.sleep(0.5)
        assert ck.exists(), "no checkpoint was written"
        procs[1].send_signal(signal.SIGKILL)            # rank 1 dies without a word
        t0 = time.monotonic()
        _, err = procs[0].communicate(timeout=150)      # rank 0 must not hang
        waited = time.monotonic() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert procs[0].returncode == 1
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "another process of the distributed run failed or left" in lines[0], err[-2000:]
    assert "Traceback" not in err
    assert waited < 120
    assert checkpoint.load(str(ck)).resumable          # the last checkpoint is intact
