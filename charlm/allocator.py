"""Keep freed memory in the process, so that each training step reuses the last step's buffers.

A training step allocates and frees the same few dozen arrays every time
(at LSTM 2×256, batch 32 × 64: the gates, the cell states, the gradients
and their layout copies, 2–8 MB each).  glibc's malloc serves blocks that
large with fresh pages from the kernel and, depending on what else the
process has freed, hands them back, so steps keep paying for them again:
each page fault is a kernel entry and a zeroed 4 KB page.  Measured per
training step (`train`, LSTM / GRU 2×256): about 1,900 / 3,300 faults and
9 / 12 ms of system time in steps of about 170 / 135 ms, down to about
200 faults and 1 ms with this setting.  A bare loop over
`model.loss_and_grads` fared worse, 9,000 faults and 35–45 ms a step.

`keep_freed_memory` asks malloc (`mallopt`, the same settings as the
environment variables MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_) to
serve blocks up to 64 MiB from its heap and not to give the heap back
while less than 1 GiB of it is free.  Larger blocks (a big corpus's text
and id array) are still mapped and returned on free, so peak memory does
not grow with them.  It changes where memory comes from, never a result.

Where the C library has no `mallopt` (macOS, Windows) it does nothing.

`aligned_empty` and `aligned_zeros` are np.empty and np.zeros for the
arrays of the time loops, starting on a 64-byte boundary (see there).
"""

from __future__ import annotations

import ctypes
import math

import numpy as np

M_TRIM_THRESHOLD = -1   # mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 64 << 20   # blocks up to this size come from the heap (a step's largest is 52 MB at LSTM 2×512, 64 × 100)
TRIM_THRESHOLD = 1 << 30    # the heap is given back only when this much of it is free

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Set malloc's thresholds once per process; True where the C library took them."""
    global _applied
    if _applied is None:
        _applied = _mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and _mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    return _applied


def _mallopt(param: int, value: int) -> bool:
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):   # no C library handle, or no mallopt in it
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt(param, value) == 1


ALIGNMENT = 64   # bytes: a cache line, and the width of an AVX-512 register
MIN_ALIGNED_BYTES = 16 << 10   # smaller arrays are not worth aligning (see aligned_empty)


def aligned_empty(shape, dtype) -> np.ndarray:
    """np.empty, starting on a 64-byte boundary.

    malloc aligns to 16 bytes, so NumPy's arrays usually start in the middle
    of a cache line, and so does every per-step slice of a (T, …) array whose
    step size is a multiple of 64 bytes.  A vectorised ufunc loop over such
    an array then reads and writes registers that straddle two cache lines.
    Measured here on the in-cache (256 × 32) float32 arrays of one time step:
    a product of two arrays into a third takes about 3.5–4.4 µs misaligned
    against 1.8–2.4 µs aligned, and the elementwise part of an LSTM layer's
    step about 99 against 83 µs.  A view into a slightly larger buffer fixes
    that; nothing else changes.  Arrays under 16 KB are left as np.empty
    makes them: at that size a ufunc's fixed cost dominates, and the aligned
    allocation's own (about 4 µs against 0.5) would not pay (a batch-1 RNN
    of min-char-rnn's size allocates a few per step of about 0.5 ms).
    """
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < MIN_ALIGNED_BYTES:
        return np.empty(shape, dtype)
    raw = np.empty(nbytes + ALIGNMENT, dtype=np.uint8)
    start = -raw.__array_interface__["data"][0] % ALIGNMENT   # (faster than .ctypes.data)
    return np.ndarray(shape, dtype, buffer=raw, offset=start)


def aligned_zeros(shape, dtype) -> np.ndarray:
    """np.zeros, starting on a 64-byte boundary (see `aligned_empty`)."""
    out = aligned_empty(shape, dtype)
    out.fill(0)
    return out
