"""Train/validation split and batches for stateful truncated BPTT.

The corpus is one id array in which every line ends with `<EOS>`.  A stream
starts with the input `<EOS>` (as a sentence does), so the prediction
targets are the ids themselves and the inputs are the ids shifted right by
one: `inputs = [<EOS>] + ids[:-1]`, `targets = ids`.

Validation: ten held-out stretches spread through the corpus (`split`),
so that the model trains on every part of the text, its end included, and
validation samples all of it.

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


VAL_BLOCKS = 10          # held-out stretches, one in the middle of each tenth of the corpus
MIN_BLOCK_TOKENS = 256   # fewer, longer stretches when the held-out share is small
ALIGN_WINDOW = 1000      # how far back a stretch's edge may move to the start of a line


def val_blocks(ids: np.ndarray, val_fraction: float, blocks: int = VAL_BLOCKS) -> list[tuple[int, int]]:
    """Where the validation stretches lie: [(start, end), ...] in order, not overlapping.

    `val_fraction` of the tokens, as up to `blocks` equal stretches, one
    centred in each equal part of the corpus, so that validation samples the
    whole text and training reads every part of it (its end too).  Each
    edge moves back to the start of a line when one is within
    ALIGN_WINDOW tokens, so lines stay whole.  At least one token is held
    out and at least one is left for training.
    """
    N = len(ids)
    if val_fraction <= 0 or N < 4:
        return []
    n_val = min(max(1, int(round(N * val_fraction))), N - 1)
    k = max(1, min(blocks, n_val // MIN_BLOCK_TOKENS))
    edges = []
    for j in range(k):
        length = n_val * (j + 1) // k - n_val * j // k
        start = min(max(0, (2 * j + 1) * N // (2 * k) - length // 2), N - length)
        edges.append((start, start + length))
    aligned = [(_line_start(ids, a), _line_start(ids, b)) for a, b in edges]
    ok = all(a < b for a, b in aligned) and all(b <= a2 for (_, b), (a2, _) in zip(aligned, aligned[1:]))
    if ok and sum(b - a for a, b in aligned) < N:
        return aligned
    return edges


def _line_start(ids: np.ndarray, i: int) -> int:
    """i moved back to just after the nearest <EOS> before it (within ALIGN_WINDOW), else i."""
    if i <= 0 or i >= len(ids) or ids[i - 1] == EOS_ID:
        return i
    window = ids[max(0, i - ALIGN_WINDOW):i]
    hits = np.flatnonzero(window == EOS_ID)
    return i if len(hits) == 0 else i - len(window) + int(hits[-1]) + 1


def split(ids: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(training ids, validation ids): the stretches of `val_blocks` held out, the rest joined in order.

    The validation stretches are copied out and the training parts are
    moved to the front of `ids` in place, so the split costs the held-out
    share of memory, not a second copy of the corpus.  `ids` is consumed.
    """
    edges = val_blocks(ids, val_fraction)
    if not edges:
        return ids, ids[:0]
    val = np.concatenate([ids[a:b] for a, b in edges])
    filled, previous_end = 0, 0
    for a, b in edges + [(len(ids), len(ids))]:
        n = a - previous_end
        if n and filled != previous_end:
            ids[filled:filled + n] = ids[previous_end:a]
        filled += n
        previous_end = b
    return ids[:filled], val


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
