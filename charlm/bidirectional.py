"""The bidirectional model: a forward and a backward stack, one softmax over both.

For a sequence x<1> … x<n> (a line, or a window of the stream):

    a_f<t> = stack_f(<EOS>, x<1>, …, x<t-1>)        reads left to right
    a_b<t> = stack_b(<EOS>, x<n>, …, x<t+1>)        reads right to left
    ŷ<t>   = softmax(W_y [a_f<t>; a_b<t>] + b_y)     W_y (V, 2H)

so position t sees everything but x<t> itself, and ŷ<t> is
P(x<t> | x<1..t-1>, x<t+1..n>).  Each stack is exactly one of charlm's
stacks (`model.stack_forward` / `model.stack_backward`, any cell, any
depth); the forward stack's weights have the unidirectional keys
`layers.{l}.*`, the backward stack's `backward.layers.{l}.*`
(`model.param_shapes`).  Both stacks start from the zero state: sequences
are independent (no state is carried between batches).

Sequences of different lengths share a batch, padded at the end: the
backward stack reads each column from its own last character
(`reading_order`), and its outputs are put back in the forward order with
the same index (it is its own inverse).

Shapes: T time, B batch, H hidden, V vocabulary; ids (T, B).
"""

from __future__ import annotations

import numpy as np

from charlm import model
from charlm.errors import CharlmError
from charlm.model import BACKWARD_PREFIX, Arch
from charlm.vocab import EOS_ID


def stack_params(params: dict, prefix: str) -> dict:
    """The weights of one stack under the unidirectional keys (`layers.{l}.*`): a view, no copy."""
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix + "layers.")}


def reading_order(T: int, B: int, lengths=None) -> np.ndarray:
    """(T, B) index: row t of a column of length n holds n-1-t for t < n, t for the padding.

    `np.take_along_axis(seq, idx, 0)` turns each column's first n entries
    around and leaves its padding in place; applied twice it is the identity.
    """
    t = np.arange(T)[:, None]
    n = np.full(B, T) if lengths is None else np.asarray(lengths)
    return np.where(t < n[None, :], n[None, :] - 1 - t, t)


def shifted(seq: np.ndarray) -> np.ndarray:
    """<EOS>, seq[0], …, seq[T-2]: what a stack reads to predict each position of `seq`."""
    x = np.empty_like(seq)
    x[0] = EOS_ID
    x[1:] = seq[:-1]
    return x


def forward(params, arch: Arch, seq: np.ndarray, masks=None, lengths=None):
    """Logits (T, B, V) of every position of `seq` (T, B), given the rest of its column, and a cache.

    `seq` is what the stacks read (the targets, or the targets with
    character dropout).  `masks` (optional): 2L dropout masks (T, H, B),
    the forward stack's then the backward stack's (`model.dropout_masks`).
    `lengths` (B,): each column's length, when columns are padded.
    """
    T, B = seq.shape
    L = arch.num_layers
    dtype = params["head.weight"].dtype
    idx = reading_order(T, B, lengths)
    x_f = shifted(seq)
    x_b = shifted(np.take_along_axis(seq, idx, axis=0))
    m_f, m_b = (None, None) if masks is None else (masks[:L], masks[L:])
    top_f, _, cache_f = model.stack_forward(params, arch, x_f, model.zero_state(arch, B, dtype), m_f)
    top_b, _, cache_b = model.stack_forward(stack_params(params, BACKWARD_PREFIX), arch, x_b,
                                            model.zero_state(arch, B, dtype), m_b)
    top = np.concatenate((top_f, np.take_along_axis(top_b, idx[..., None], axis=0)), axis=-1)   # [a_f; a_b]
    return model.head(params, top), (top, idx, cache_f, cache_b)


def backward(params, arch: Arch, dlogits: np.ndarray, cache) -> dict:
    """The gradient of every parameter (the keys of `params`), from dlogits (T, B, V)."""
    top, idx, cache_f, cache_b = cache
    H = arch.hidden_size
    grads, dtop = model.head_backward(params, dlogits, top)
    model.stack_backward(params, arch, np.ascontiguousarray(dtop[..., :H]), cache_f, grads=grads)
    dtop_b = np.take_along_axis(dtop[..., H:], idx[..., None], axis=0)     # back to the backward stack's order
    grads_b, _ = model.stack_backward(stack_params(params, BACKWARD_PREFIX), arch, dtop_b, cache_b)
    grads.update({BACKWARD_PREFIX + k: g for k, g in grads_b.items()})
    return grads


def loss_and_grads(params, arch: Arch, seq, targets, mask=None, masks=None):
    """Mean cross-entropy of `targets` (T, B) over the unmasked positions, and every parameter's gradient."""
    logits, cache = forward(params, arch, seq, masks)
    loss, dlogits, _ = model.cross_entropy(logits, targets, mask)
    return loss, backward(params, arch, dlogits, cache)


# ----------------------------------------------------------------------------
# Training windows
# ----------------------------------------------------------------------------

def window_mask(ids: np.ndarray, pos: np.ndarray, dtype) -> np.ndarray:
    """(T, B) of 0/1 for a list of items: 1 at the characters of the lines that lie whole in their window.

    With the state reset at <EOS> each line is then read as its own
    sequence from both sides, as `check` reads a line; a line cut by the
    window's edge, and the <EOS> targets, are not counted.
    """
    y = ids[pos]
    T = len(pos)
    eos = y == EOS_ID
    starts = np.vstack([(pos[:1] == 0) | (ids[np.maximum(pos[:1] - 1, 0)] == EOS_ID), eos[:-1]])
    first = np.where(starts.any(axis=0), starts.argmax(axis=0), T)             # the first line start
    last = np.where(eos.any(axis=0), T - 1 - eos[::-1].argmax(axis=0), -1)      # the last line end
    t = np.arange(T)[:, None]
    return ((t >= first) & (t <= last) & ~eos).astype(dtype)


def window_batch(ids: np.ndarray, pos: np.ndarray, reset: bool, dtype):
    """The targets (T, B) of the windows at `pos` (T, B) of the stream, and their loss mask (None: all count)."""
    y = ids[pos].astype(np.intp)
    return y, (window_mask(ids, pos, dtype) if reset else None)


def train_step(params, arch: Arch, ids, pos, dropout: float, char_dropout: float, rng, dtype):
    """One step's (loss, grads) on the windows at `pos`, with dropout and character dropout drawn from `rng`."""
    T, B = pos.shape
    y, mask = window_batch(ids, pos, arch.reset_at_eos, dtype)
    masks = model.dropout_masks(arch, T, B, dropout, rng, dtype)
    seq = model.drop_characters(y, char_dropout, rng)
    return loss_and_grads(params, arch, seq, y, mask, masks)


def evaluate(params, arch: Arch, ids: np.ndarray, seq_len: int, max_tokens: int, batch: int = 64) -> float:
    """Validation loss in nats per counted token: consecutive windows of `seq_len`, as in training.

    Over at most the first `max_tokens` held-out tokens; the tail shorter than a window is left out
    (a single short window if that is all there is).
    """
    ids = ids[:max_tokens]
    T = min(seq_len, len(ids))
    starts = np.arange(0, len(ids) - T + 1, T)
    total = count = 0.0
    dtype = params["head.weight"].dtype
    for s in range(0, len(starts), batch):
        pos = starts[None, s:s + batch] + np.arange(T)[:, None]
        y, mask = window_batch(ids, pos, arch.reset_at_eos, dtype)
        logits, _ = forward(params, arch, y)
        logp = model.log_softmax(logits.astype(np.float64))
        picked = np.take_along_axis(logp, y[..., None], axis=-1)[..., 0]
        weight = np.ones_like(picked) if mask is None else mask
        total -= float((picked * weight).sum())
        count += float(weight.sum())
    return total / max(count, 1.0)


# ----------------------------------------------------------------------------
# Inference
# ----------------------------------------------------------------------------

def log_probs(params, arch: Arch, seqs: list[np.ndarray], max_tokens: int = 16384) -> list[np.ndarray]:
    """log P(· | the rest of the sequence) at every position of each id sequence: a (n, V) float64 array each.

    Sequences are read side by side, sorted by length, at most about
    `max_tokens` padded positions per forward call.
    """
    out: list[np.ndarray | None] = [None] * len(seqs)
    V = arch.vocab_size
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    s = 0
    while s < len(order):
        T = max(1, len(seqs[order[s]]))
        group = order[s:s + max(1, max_tokens // T)]
        s += len(group)
        lengths = np.array([len(seqs[i]) for i in group])
        seq = np.full((T, len(group)), EOS_ID, dtype=np.intp)
        for b, i in enumerate(group):
            seq[:lengths[b], b] = seqs[i]
        logits, _ = forward(params, arch, seq, lengths=lengths)
        logp = model.log_softmax(logits.astype(np.float64))
        for b, i in enumerate(group):
            out[i] = logp[:lengths[b], b] if lengths[b] else np.zeros((0, V))
    return out  # type: ignore[return-value]


REFUSALS = {
    "sample": "so it cannot generate text left to right",
    "score": "so they are not factors of a sentence's likelihood",
}


def refuse(arch: Arch, command: str) -> None:
    """CharlmError for a command that needs a left-to-right model (`sample`, `score`)."""
    if arch.bidirectional:
        raise CharlmError(f"this checkpoint is bidirectional: each of its probabilities is conditioned on both sides, "
                          f"{REFUSALS[command]}; use `charlm check` with it")
