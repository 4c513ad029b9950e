"""`charlm bench --engine torch`'s rows: measured figures with their comparisons (never asserted speeds)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason='needs the torch extra: pip install "charlm[torch]"')

from charlm.torch_engine import bench  # noqa: E402


def test_rows_are_measured_side_by_side():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 20, size=20_000).astype(np.uint8)
    figures = bench.measure(ids, 20, [("gru", 8, 1, 4, 8, "adam")], 0.3, 1, lambda msg: None)
    labels = [f.label for f in figures]
    assert labels[0] == "train gru 1×8, batch 4×8, torch engine, CPU"
    assert figures[0].charlm > 0 and figures[0].peer > 0 and figures[0].peer_name == "NumPy engine"
    ddp = figures[1]
    assert "2 processes (DDP)" in ddp.label
    assert ddp.peer and ddp.peer > 0, ddp.note            # 1 process, measured
    assert ddp.charlm > 0, ddp.note                       # 2 processes under torchrun (a time budget: the ranks agree)
    if not torch.cuda.is_available():
        assert figures[-1].note == "not measured: no CUDA device" and figures[-1].charlm == 0.0
