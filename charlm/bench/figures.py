"""A row of the benchmark's table, and measuring charlm and its peer in turns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass
class Figure:
    label: str
    charlm: float
    peer: float | None = None
    peer_name: str = ""
    unit: str = "chars/s"
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return self.charlm / self.peer if self.peer else None



def alternate(ours: Callable[[], float], peer: Callable[[], float | None] | None, repeats: int):
    """Measure `ours()` and `peer()` (or None) `repeats` times, taking turns.

    Returns (median of ours, median of the peer's or None, the ratio of
    each pair in which both measured).
    """
    pairs, alone = [], []
    for _ in range(repeats):
        a = ours()
        p = peer() if peer is not None else None
        if p:
            pairs.append((a, p))
        else:
            alone.append(a)
    mine = [a for a, _ in pairs] + alone
    theirs = [p for _, p in pairs]
    return (float(np.median(mine)), float(np.median(theirs)) if theirs else None, [a / p for a, p in pairs])
