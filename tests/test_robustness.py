"""Robustness guarantees that need no model quality: huge lines, and nothing read can run code."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from charlm import checkpoint

PACKAGE = Path(__file__).resolve().parents[1] / "charlm"


def test_a_single_50_MB_line_without_newline_trains(tmp_path):
    rng = np.random.default_rng(0)
    letters = np.frombuffer(b"abcdefghij klmnop", dtype=np.uint8)
    corpus = tmp_path / "one_line.txt"
    corpus.write_bytes(rng.choice(letters, size=50 * 2**20 + 7).tobytes())  # ≥ 50 MB, no newline at all
    out = tmp_path / "m.npz"
    r = subprocess.run([sys.executable, "-m", "charlm", "train", str(corpus), "--steps", "2", "--hidden-size", "4",
                        "--num-layers", "1", "--batch-size", "2", "--seq-len", "8", "-c", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    ck = checkpoint.load(str(out))
    assert ck.meta["corpus"]["num_lines"] == 1
    assert ck.meta["corpus"]["num_tokens"] == 50 * 2**20 + 7 + 1  # every character, then one <EOS>
    assert ck.meta["steps"] == 2


def source_files():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 10
    return [(str(f.relative_to(PACKAGE)), f.read_text(encoding="utf-8")) for f in files]


def test_nothing_read_can_run_code():
    """No pickle, no unsafe YAML, no eval/exec anywhere in the package; every np.load refuses pickles."""
    for name, text in source_files():
        assert "allow_pickle=True" not in text, name
        assert not re.search(r"\bimport pickle\b|\bpickle\.load", text), name
        assert not re.search(r"yaml\.(load|unsafe_load|full_load)\(", text), name
        assert not re.search(r"(?<![\w.])(eval|exec)\(", text), name
        for line in text.splitlines():
            if "np.load(" in line:
                assert "allow_pickle=False" in line, (name, line)
