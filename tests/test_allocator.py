"""allocator.keep_freed_memory: a training step reuses freed memory instead of faulting fresh pages in.

Each measurement runs in a fresh interpreter (the setting is process-wide,
and the CLI tests in this process may have made it already) and counts
page faults, not time.
"""

import platform
import subprocess
import sys

import pytest

from charlm.allocator import keep_freed_memory

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
