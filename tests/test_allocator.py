"""allocator: a training step reuses freed memory instead of faulting fresh pages in; the loops' arrays are aligned.

Each page-fault measurement runs in a fresh interpreter (the setting is process-wide,
and the CLI tests in this process may have made it already) and counts
page faults, not time.
"""

import platform
import subprocess
import sys

import numpy as np
import pytest

from charlm import model
from charlm.allocator import ALIGNMENT, MIN_ALIGNED_BYTES, aligned_empty, aligned_zeros, keep_freed_memory

GLIBC = platform.libc_ver()[0] == "glibc"

STEPS = """
import resource, sys
import numpy as np
from charlm import model
from charlm.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
arch = model.Arch("lstm", 65, 32, 2)
rng = np.random.default_rng(0)
params = model.init_params(arch, rng, "float32")
x, y = rng.integers(0, 65, (2, 64, 32))
state = model.zero_state(arch, 32, np.float32)
for _ in range(2):
    model.loss_and_grads(params, arch, x, y, state)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    model.loss_and_grads(params, arch, x, y, state)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 3)
"""


def faults_per_step(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def test_it_takes_effect_where_the_c_library_is_glibc():
    assert keep_freed_memory() is GLIBC
    assert keep_freed_memory() is GLIBC          # once per process; asking again changes nothing


@pytest.mark.skipif(not GLIBC, reason="mallopt's thresholds are glibc's")
def test_training_steps_stop_faulting_pages_in():
    # LSTM 2×32, batch 32 × 64: its 0.1–2 MB buffers come back as fresh pages every step by default
    assert faults_per_step("default") > 500
    assert faults_per_step("keep") < 50


@pytest.mark.parametrize("shape", [(), 1, 7, (3, 5), (4096,), (64, 256, 32), (3, 1000, 7), (0, 4), (2, 0, 3)])
@pytest.mark.parametrize("dtype", ["float32", "float64", "uint8"])
def test_aligned_arrays_start_on_a_cache_line_and_behave_like_numpys(shape, dtype):
    for _ in range(5):                                   # several allocations: malloc's offsets vary
        a = aligned_empty(shape, dtype)
        z = aligned_zeros(shape, dtype)
        expected_shape = (shape,) if isinstance(shape, int) else shape
        for arr in (a, z):
            assert arr.shape == expected_shape and arr.dtype == np.dtype(dtype)
            assert arr.flags.c_contiguous and arr.flags.writeable
            if arr.nbytes >= MIN_ALIGNED_BYTES:          # (smaller ones are np.empty's)
                assert arr.ctypes.data % ALIGNMENT == 0
        assert not z.any()
        a[...] = 3                                       # a view that owns nothing else: writing it touches only it
        assert (a == 3).all() and not z.any()


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_the_time_loops_arrays_are_aligned(cell):
    """Every per-step slice of the cached arrays starts on a 64-byte boundary (a step is a multiple of 64 bytes)."""
    arch = model.Arch(cell, 65, 32, 2)
    rng = np.random.default_rng(0)
    params = model.init_params(arch, rng, "float32")
    x = rng.integers(0, 65, (8, 16))
    *_, caches = model.gated_forward(params, arch, x, model.zero_state(arch, 16, np.float32))
    for _, cache in caches:
        arrays = [a for a in cache if isinstance(a, np.ndarray) and a.ndim == 3]
        assert len(arrays) >= 4                          # xh or xs, the gates and (lstm: cs, tanh(cs); gru: xh, [r·h; u])
        for a in arrays:
            assert a.ctypes.data % ALIGNMENT == 0 and a[1].ctypes.data % ALIGNMENT == 0
