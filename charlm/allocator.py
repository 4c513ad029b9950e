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
"""

from __future__ import annotations

import ctypes

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
