"""Checkpoints written by earlier versions still load, score and sample as they did (tests/data/README.md)."""

import json
import shutil
from pathlib import Path

import pytest

from charlm import checkpoint as ckpt_io
from conftest import invoke, ok

DATA = Path(__file__).resolve().parent / "data"
CELLS = ["rnn", "gru", "lstm"]


@pytest.mark.parametrize("cell", CELLS)
def test_a_0_1_0_checkpoint_loads(cell):
    ck = ckpt_io.load(str(DATA / f"v0.1.0-{cell}.npz"))
    assert ck.config.cell == cell and ck.arch.num_layers == 2 and ck.arch.hidden_size == 8
    assert ck.resumable and ck.ngram is not None and ck.ngram.order == 3


@pytest.mark.parametrize("cell", CELLS)
def test_it_scores_as_0_1_0_did(cell):
    then = [json.loads(line) for line in (DATA / f"v0.1.0-{cell}.scores.jsonl").read_text().splitlines()]
    r = ok(invoke("score", "-c", DATA / f"v0.1.0-{cell}.npz", "anna", "otto", "zq x", "--json"))
    now = [json.loads(line) for line in r.stdout.splitlines()]
    assert [s["text"] for s in now] == [s["text"] for s in then]
    for a, b in zip(now, then):
        assert a["log_prob"] == pytest.approx(b["log_prob"], rel=1e-6, abs=1e-9)
        assert (a["num_tokens"], a["num_unk"]) == (b["num_tokens"], b["num_unk"])


@pytest.mark.parametrize("cell", CELLS)
def test_it_samples_as_0_1_0_did(cell):
    r = ok(invoke("sample", "-c", DATA / f"v0.1.0-{cell}.npz", "--seed", "3", "--num", "3"))
    assert r.stdout == (DATA / f"v0.1.0-{cell}.samples.txt").read_text()


def test_its_run_can_be_resumed(tmp_path):
    ck = tmp_path / "m.npz"
    shutil.copy(DATA / "v0.1.0-gru.npz", ck)
    ok(invoke("train", DATA / "v0.1.0-names.txt", "--resume", "--steps", "34", "-c", ck))
    assert ckpt_io.load(str(ck)).train_state["step"] == 34
