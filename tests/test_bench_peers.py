"""The PyTorch peers: shipped inside the package, found there by default, run and read."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from charlm.bench import peers
from charlm.bench.peers import run_peer

REPO = Path(__file__).resolve().parents[1]


def test_run_peer_reads_a_result_line_or_json(tmp_path):
    text_peer = tmp_path / "peer_text.py"
    text_peer.write_text('print("warming up")\nprint("RESULT torch sample lstm: 5000 chars in 3.2s = 1562 chars/s")\n')
    json_peer = tmp_path / "peer_json.py"
    json_peer.write_text('import json\nprint("# header")\nprint(json.dumps({"chars_per_s": 40000.5}))\n')
    broken = tmp_path / "broken.py"
    broken.write_text("raise SystemExit(3)\n")
    assert run_peer(sys.executable, str(text_peer), []) == (1562.0, "")
    assert run_peer(sys.executable, str(json_peer), []) == (40000.5, "")
    assert run_peer(sys.executable, str(broken), []) == (None, "exit code 3")


def test_the_default_peers_are_the_scripts_shipped_in_the_package(monkeypatch):
    monkeypatch.setattr(peers, "torch_missing", lambda python: "")
    found = peers.resolve_peers(None, None, None)
    package = Path(peers.__file__).parent
    assert Path(found.training) == package / "peers" / "torch_train.py" and Path(found.training).is_file()
    assert Path(found.sampling) == package / "peers" / "torch_sample.py" and Path(found.sampling).is_file()
    assert (found.python, found.status) == (sys.executable, "")
    given = peers.resolve_peers(__file__, __file__, sys.executable)      # --peer, --sample-peer override
    assert (given.training, given.sampling) == (__file__, __file__)


def test_without_torch_the_peers_do_not_run_and_the_status_says_how_to_get_it(monkeypatch):
    monkeypatch.setattr(peers, "torch_missing", lambda python: f"{python} cannot import torch (no module)")
    found = peers.resolve_peers(None, None, None)
    assert found.python is None
    assert "cannot import torch" in found.status and 'pip install "charlm[torch]"' in found.status
    assert "--peer-python" in found.status


def test_the_packaged_files_are_declared_as_package_data():
    """`pip install .` installs what the bench reads at run time (pyproject's package-data)."""
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert '"charlm.bench" = ["names.txt", "peers/*.py"]' in text
    package = Path(peers.__file__).parent
    assert sorted(p.name for p in (package / "peers").glob("*.py")) == ["torch_sample.py", "torch_train.py"]


def test_the_shipped_names_are_the_quickstart_corpus():
    from charlm.bench.measure import NAMES

    assert NAMES.read_bytes() == (REPO / "corpora" / "names.txt").read_bytes()


def test_the_library_bench_imports_nothing_of_the_cli():
    code = ("import sys, charlm.bench, charlm.bench.run, charlm.bench.measure; "
            "print([m for m in sys.modules if m == 'charlm.cli' or m.startswith('charlm.cli.')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=REPO).stdout
    assert out.strip() == "[]"


@pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                    reason='the PyTorch peers need torch: pip install "charlm[torch]"')
def test_the_shipped_peers_run_and_report_their_speed(tmp_path):
    data = tmp_path / "text.txt"
    data.write_text("the quick brown fox jumps over the lazy dog.\n" * 20, encoding="utf-8")
    cps, why = run_peer(sys.executable, str(peers.TRAIN_PEER),
                        peers.train_args(str(data), "gru", 8, 1, 2, 5, 0.2), timeout=300)
    assert why == "" and cps > 0
    cps, why = run_peer(sys.executable, str(peers.SAMPLE_PEER), peers.sample_args("lstm", 8, 1, 5, length=50),
                        timeout=300)
    assert why == "" and cps > 0
