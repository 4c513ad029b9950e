"""Train/validation split and batches for stateful truncated BPTT.

The corpus is one id array in which every line ends with `<EOS>`.  A stream
starts with the input `<EOS>` (as a sentence does), so the prediction
targets are the ids themselves and the inputs are the ids shifted right by
one: `inputs = [<EOS>] + ids[:-1]`, `targets = ids`.

Training batches: the N predictions of the training split are cut into B
contiguous stretches (one per batch row), each walked T steps at a time,
so the hidden state at the end of one chunk is the right initial state of
the next (the state is carried; gradients are not: truncated BPTT).  Each
epoch starts at a random offset in [0, T) so chunk boundaries move; the
state is reset to zero at the start of an epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from charlm.vocab import EOS_ID


def split(ids: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """First (1 - f) of the characters for training, the last f for validation."""
    if val_fraction <= 0 or len(ids) < 4:
        return ids, ids[:0]
    n_val = max(1, int(round(len(ids) * val_fraction)))
    n_val = min(n_val, len(ids) - 1)  # never leave the training split empty
    return ids[: len(ids) - n_val], ids[len(ids) - n_val:]


def inputs_targets(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (previous tokens, starting with <EOS>) and targets of a stream."""
    inputs = np.empty_like(ids)
    inputs[0] = EOS_ID
    inputs[1:] = ids[:-1]
    return inputs, ids


@dataclass(frozen=True)
class BatchPlan:
    """How one epoch of the training split is cut into (T, B) chunks."""

    num_predictions: int  # N
    batch_size: int       # B
    seq_len: int          # T
    offset: int           # where this epoch starts

    @property
    def row_length(self) -> int:
        return (self.num_predictions - self.offset) // self.batch_size

    @property
    def steps(self) -> int:
        return self.row_length // self.seq_len

    def positions(self, k: int) -> np.ndarray:
        """Indices (T, B) into the stream of chunk k of this epoch."""
        starts = self.offset + np.arange(self.batch_size) * self.row_length + k * self.seq_len
        return starts[None, :] + np.arange(self.seq_len)[:, None]


def fit_batch(num_predictions: int, batch_size: int, seq_len: int) -> tuple[int, int]:
    """The largest (B, T) ≤ the requested ones that give at least one chunk.

    A corpus smaller than one batch gets fewer rows first, then shorter
    sequences.  (Random epoch offsets need T more predictions, so an epoch
    fits whatever offset is drawn.)
    """
    B, T = batch_size, seq_len
    if num_predictions >= B * T + T:
        return B, T
    B = max(1, (num_predictions - T) // T) if num_predictions > 2 * T else 1
    if num_predictions < B * T + T:
        T = max(1, num_predictions // 2)
    return B, T


def epoch_plan(num_predictions: int, batch_size: int, seq_len: int, rng: np.random.Generator) -> BatchPlan:
    """The plan of a new epoch, starting at a random offset in [0, T)."""
    offset = int(rng.integers(0, seq_len)) if num_predictions >= batch_size * seq_len + seq_len else 0
    return BatchPlan(num_predictions, batch_size, seq_len, offset)


def chunk(ids: np.ndarray, plan: BatchPlan, k: int):
    """The (T, B) inputs and targets of chunk k, as intp arrays.

    Read straight from the id array (no shifted copy of the corpus): the
    target at position p is ids[p], its input ids[p-1], or <EOS> at p = 0.
    """
    pos = plan.positions(k)
    targets = ids[pos].astype(np.intp)
    inputs = ids[np.maximum(pos - 1, 0)].astype(np.intp)
    inputs[pos == 0] = EOS_ID
    return inputs, targets
