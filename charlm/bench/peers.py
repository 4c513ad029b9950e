"""The PyTorch peers: the same models trained and sampled in PyTorch, run as separate scripts.

The scripts ship inside the package (`peers/torch_train.py`,
`peers/torch_sample.py`) and run under any Python that can import torch
(`--peer-python`); `--peer` and `--sample-peer` put other scripts in their
place.  A peer reports its speed as a JSON line with "chars_per_s" or a
line ending in "= N chars/s" / holding "chars/s N".
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from charlm.errors import CharlmError

PEER_DIR = Path(__file__).with_name("peers")
TRAIN_PEER = PEER_DIR / "torch_train.py"     # trains a configuration for --seconds, prints its chars/s
SAMPLE_PEER = PEER_DIR / "torch_sample.py"   # samples --length characters at batch 1, prints its chars/s


@dataclass(frozen=True)
class Peers:
    """The peer scripts and the Python that runs them (None: they do not run, and `status` says why)."""

    training: str | None
    sampling: str | None
    python: str | None
    status: str = ""     # why the peers will not run, or "" when they will


def _last_line(text: str, limit: int = 160) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return (lines[-1][:limit] if lines else "")


def run_peer(python: str, script: str, args: list[str], timeout: float = 600) -> tuple[float | None, str]:
    """(chars/s reported by a peer script (its RESULT line or JSON), "") or (None, why it gave none)."""
    try:
        proc = subprocess.run([python, script, *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:g} s"
    except OSError as e:
        return None, f"could not start {python}: {e.strerror}"
    for line in reversed(proc.stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return float(json.loads(line)["chars_per_s"]), ""
            except (ValueError, KeyError, TypeError):
                continue
        m = re.search(r"=\s*([0-9.]+)\s*chars/s", line) or re.search(r"chars/s\s+([0-9.]+)", line)
        if m:
            return float(m.group(1)), ""
    why = f"exit code {proc.returncode}" if proc.returncode else "no chars/s in its output"
    last = _last_line(proc.stderr)
    return None, f"{why}: {last}" if last else why


def torch_missing(python: str) -> str:
    """Why `python` cannot run the peers ("" if it imports torch)."""
    try:
        proc = subprocess.run([python, "-c", "import torch"], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return f"{python} took over 120 s to import torch"
    except OSError as e:
        return f"cannot run {python}: {e.strerror}"
    if proc.returncode == 0:
        return ""
    return f"{python} cannot import torch ({_last_line(proc.stderr) or f'exit code {proc.returncode}'})"


def resolve_peers(peer: str | None, sample_peer: str | None, peer_python: str | None) -> Peers:
    """The peers to run: the scripts given, else the shipped ones, and the Python to run them.

    Scripts or a Python named explicitly must exist (a CharlmError if not).
    A Python that cannot import torch is no error: the peers then do not
    run, and the status says why.
    """
    for option, path in (("--peer", peer), ("--sample-peer", sample_peer)):
        if path is not None and not os.path.isfile(path):
            what = "is a directory, not a script" if os.path.isdir(path) else "not found"
            raise CharlmError(f"{option} {path}: {what}")
    if peer_python is not None and shutil.which(peer_python) is None:
        what = "not found" if not os.path.exists(peer_python) else "not an executable program"
        raise CharlmError(f"--peer-python {peer_python}: {what}")
    peer = peer or str(TRAIN_PEER)
    sample_peer = sample_peer or str(SAMPLE_PEER)
    missing = torch_missing(peer_python or sys.executable)
    if missing:
        hint = "" if peer_python else '; install torch (pip install "charlm[torch]") or give --peer-python'
        return Peers(peer, sample_peer, None, f"PyTorch peers not run: {missing}{hint}")
    return Peers(peer, sample_peer, peer_python or sys.executable)


def train_args(data_file: str, cell: str, H: int, L: int, B: int, T: int, seconds: float) -> list[str]:
    """The training peer's arguments for one benchmark row (3 warm-up steps, no evaluation)."""
    return ["--data", data_file, "--cell", cell, "--hidden", str(H), "--layers", str(L), "--batch", str(B),
            "--seq-len", str(T), "--seconds", str(seconds), "--warmup", "3", "--eval-chars", "0"]


def sample_args(cell: str, H: int, L: int, V: int, length: int = 3000) -> list[str]:
    """The sampling peer's arguments: random weights of that shape, `length` characters at batch 1."""
    return ["--cell", cell, "--hidden", str(H), "--layers", str(L), "--vocab", str(V), "--length", str(length)]
