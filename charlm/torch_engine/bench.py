"""The rows `charlm bench --engine torch` adds: the torch engine beside the NumPy engine, DDP, a GPU.

- training chars/s of the torch engine on this CPU beside the NumPy
  engine, for the bench's training configurations (measured in turns, in
  the same run: the ratio is what to read);
- the torch engine on 2 processes (torchrun, gloo on 127.0.0.1) beside 1,
  LSTM 2×256 at batch 32×64 (the 2 processes split the batch: 16 rows each);
- where PyTorch sees a CUDA device: chars/s on it for the LSTM 2×256 at
  batch 32×64 and 256×128, and for an LSTM 3×1024 at 256×128, beside the
  NumPy engine's chars/s on this CPU for the LSTM 2×256 at 32×64.

Each figure is the mean speed of the steps after the first WARMUP, start-up
and validation excluded (as `charlm.bench.train_speed`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import torch

from charlm.bench.measure import train_speed
from charlm.torch_engine import is_leader, trainer
from charlm.bench.figures import Figure, alternate

WARMUP = 3
DDP_CONFIG = ("lstm", 256, 2, 32, 64, "adam")
GPU_CONFIGS = [("lstm", 256, 2, 32, 64, "adam"), ("lstm", 256, 2, 256, 128, "adam"),
               ("lstm", 1024, 3, 256, 128, "adam")]


def torch_train_speed(ids: np.ndarray, V: int, cell, H, L, B, T, optimizer, seconds: float,
                      device: str = "cpu") -> float:
    """The torch engine's trainer (torch_engine.train.train) in chars/s, warm-up steps excluded."""
    return train_speed(ids, V, cell, H, L, B, T, optimizer, seconds, WARMUP, trainer=trainer("torch", device))


def ddp_speed(ids_path: str, V: int, processes: int, seconds: float) -> tuple[float | None, str]:
    """chars/s of the torch engine on `processes` CPU processes (torchrun), from this module run as a worker."""
    cmd = [sys.executable]
    if processes > 1:
        cmd += ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
    cmd += ["-m", "charlm.torch_engine.bench", ids_path, str(V), str(seconds)]
    threads = max(1, (os.cpu_count() or 1) // processes)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=max(300.0, 10 * seconds), env=env)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, str(e)[:160]
    for line in r.stdout.splitlines():
        if line.startswith("{"):
            return float(json.loads(line)["chars_per_second"]), ""
    return None, (r.stderr.strip().splitlines() or ["no output"])[-1][:160]


def measure(train_ids: np.ndarray, V: int, configs, seconds: float, repeats: int, progress) -> list:
    """The torch engine's figures (see the module docstring)."""
    figures = []
    for cell, H, L, B, T, opt in configs:
        label = f"train {cell} {L}×{H}, batch {B}×{T}, torch engine, CPU"

        def ours(cell=cell, H=H, L=L, B=B, T=T, opt=opt, label=label):
            progress(label)
            return torch_train_speed(train_ids, V, cell, H, L, B, T, opt, seconds)

        def numpy(cell=cell, H=H, L=L, B=B, T=T, opt=opt, label=label):
            progress(label.replace("torch engine", "NumPy engine"))
            return train_speed(train_ids, V, cell, H, L, B, T, opt, seconds)

        cps, nps, ratios = alternate(ours, numpy, repeats)
        note = f"{torch.get_num_threads()} threads"
        if cell == "gru":
            note += "; the seed-form GRU is a loop over time steps"
        figures.append(Figure(label, cps, nps, "NumPy engine", note=note))
    import tempfile

    with tempfile.TemporaryDirectory(prefix="charlm-bench-") as d:
        path = os.path.join(d, "ids.npy")
        np.save(path, train_ids, allow_pickle=False)
        progress("train lstm 2×256, batch 32×64, torch engine: 1 process")
        one, why1 = ddp_speed(path, V, 1, seconds)
        progress("train lstm 2×256, batch 32×64, torch engine: 2 processes (DDP, gloo)")
        two, why2 = ddp_speed(path, V, 2, seconds)
    note = "; ".join(w for w in (why1, why2) if w) or "16 rows per process; both share this machine's cores"
    if two is not None:
        figures.append(Figure("train lstm 2×256, batch 32×64, torch engine, 2 processes (DDP)", two, one,
                              "1 process", note=note))
    else:
        figures.append(Figure("train lstm 2×256, batch 32×64, torch engine, 2 processes (DDP)", 0.0, one,
                              "1 process", note=f"not measured: {note}"))
    if not torch.cuda.is_available():
        figures.append(Figure("train on a GPU (torch engine)", 0.0, None, note="not measured: no CUDA device"))
        return figures
    name = torch.cuda.get_device_name(0)
    cell, H, L, B, T, opt = GPU_CONFIGS[0]
    progress("train lstm 2×256, batch 32×64, NumPy engine (for the GPU rows)")
    base = train_speed(train_ids, V, cell, H, L, B, T, opt, seconds)
    for cell, H, L, B, T, opt in GPU_CONFIGS:
        label = f"train {cell} {L}×{H}, batch {B}×{T}, torch engine, {name}"
        progress(label)
        cps = torch_train_speed(train_ids, V, cell, H, L, B, T, opt, seconds, device="cuda")
        figures.append(Figure(label, cps, base, "NumPy lstm 2×256, 32×64, CPU"))
    return figures


def _worker(ids_path: str, V: int, seconds: float) -> None:
    """One process of `ddp_speed` (under torchrun, every rank): train DDP_CONFIG, rank 0 prints chars/s."""
    ids = np.load(ids_path, allow_pickle=False)
    cps = torch_train_speed(ids, V, *DDP_CONFIG, seconds)
    if is_leader():
        print(json.dumps({"chars_per_second": cps}))


if __name__ == "__main__":   # python -m charlm.torch_engine.bench IDS.npy V SECONDS (see ddp_speed)
    _worker(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))
