"""Fixtures shared by the command-line test modules (test_cli, test_edges, test_checkpoint_cli_json)."""

import pytest

from test_cli import TINY, invoke, ok, write_names


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
