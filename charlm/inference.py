"""The network's log-probabilities: reading token sequences without training.

    log P(y<t> | y<1..t-1>) = log softmax(head(h_top<t>))[y<t>]

`infer` is `model.forward` without the cache (inference keeps no
intermediate values), `step` reads one token per call for generation, and
`network_log_probs` reads whole batches of sequences of different lengths
in stretches of time.  Scoring, sampling and the scoring workers all read
the network through this module.
"""

from __future__ import annotations

import numpy as np

from charlm import cells, model
from charlm.model import Arch
from charlm.vocab import EOS_ID

SENTENCE_TOKENS = 16_384  # at most this many tokens per forward call when scoring sentences (a batch of 256
#                           sentences of up to 64 tokens in one call; a longer one is read in stretches)


def infer(params, arch: Arch, x: np.ndarray, state):
    """The forward pass for inference: logits (T, V, B) and the final state of every layer.

    The same equations as `forward`, but the GRU and LSTM stacks stay
    feature-major up to the head (head.weight · h<t> per step) and keep no
    cache.  The vanilla RNN uses `forward`.
    """
    if arch.cell == "rnn":
        logits, final, _ = model.forward(params, arch, x, state)
        return np.swapaxes(logits, 1, 2), final
    top, _, final, _ = model.gated_forward(params, arch, x, state, cache=False)
    logits = np.matmul(params["head.weight"], top)
    logits += params["head.bias"][:, None]
    return logits, final


def step_weights(params) -> dict:
    """The weights inference steps read, laid out for them: transposed and contiguous.

    Computed once per generation (not once per character).  Also
    "input_rows": layer 0's rows W_ihᵀ + b, which a token id looks up
    (the same sums as adding b after the lookup), and "layers": each
    layer's (W_ihᵀ, b, W_hhᵀ).
    """
    w = {}
    for name, p in params.items():
        w[name] = np.ascontiguousarray(p.T) if p.ndim == 2 else p
    w["input_rows"] = w["layers.0.weight_ih"] + w["layers.0.bias"]
    w["layers"] = [(w[f"layers.{l}.weight_ih"], w[f"layers.{l}.bias"], w[f"layers.{l}.weight_hh"])
                   for l in range(sum(1 for n in params if n.endswith(".weight_hh") and n.startswith("layers.")))]
    return w


def step(params, arch: Arch, ids: np.ndarray, state, weights: dict | None = None):
    """One time step for a batch of token ids (B,): (logits (B, V), new state).

    `weights` is `step_weights(params)`, if the caller has it already.
    """
    w = weights if weights is not None else step_weights(params)
    step_cell = cells.STEP[arch.cell]
    if arch.reset_at_eos:  # a row whose input is <EOS> starts a new sequence from the zero state
        keep = (ids != EOS_ID)[:, None].astype(w["head.weight"].dtype)
        state = [tuple(s * keep for s in layer) for layer in state]
    inp = ids
    new_state = []
    for l, (W_ihT, b, W_hhT) in enumerate(w["layers"]):
        if l == 0:
            gx = w["input_rows"][inp]                         # a column lookup for token ids, b included
        else:
            gx = np.dot(inp, W_ihT)
            gx += b
        s = step_cell(gx, state[l], W_hhT, arch.activation)
        new_state.append(s)
        inp = s[0]
    logits = np.dot(inp, w["head.weight"])
    logits += w["head.bias"]
    return logits, new_state


def token_flops(arch: Arch) -> float:
    """Matmul FLOPs of reading one token (forward only; the one-hot input of layer 0 is a lookup and costs nothing)."""
    G, H = arch.gates, arch.hidden_size
    return float(sum(2 * G * H * ((0 if l == 0 else H) + H) for l in range(arch.num_layers)) + 2 * H * arch.vocab_size)


def token_log_probs(params, arch: Arch, inputs: np.ndarray, targets: np.ndarray, state=None):
    """log P(target | history) at every position of (T, B) inputs/targets.

    Returns (T, B) log-probabilities (float64) and the final state.
    """
    T, B = inputs.shape
    dtype = params["head.weight"].dtype
    if state is None:
        state = model.zero_state(arch, B, dtype)
    logits, final = infer(params, arch, inputs, state)       # (T, V, B)
    logp = model.log_softmax(logits.astype(np.float64), axis=1)
    return np.take_along_axis(logp, targets[:, None, :], axis=1)[:, 0], final


def network_log_probs(params, arch: Arch, seqs: list[np.ndarray], max_tokens: int | None = None) -> list[np.ndarray]:
    """The network's log P of every token of each id sequence, each read from input <EOS> and the zero state.

    `seqs` are side by side in one batch, longest first, padded and masked,
    and read in stretches (`read_in_stretches`); the numbers are those of
    reading each sequence in one piece.
    """
    if len(seqs) == 0:
        return []
    state = model.zero_state(arch, len(seqs), params["head.weight"].dtype)
    return read_in_stretches(seqs, state, lambda x, y, st: token_log_probs(params, arch, x, y, st), max_tokens)


def read_in_stretches(seqs: list[np.ndarray], state, log_probs, max_tokens: int | None = None) -> list[np.ndarray]:
    """The log P of every token of each sequence, read side by side in stretches of time, the state carried.

    `log_probs(inputs, targets, state) -> (logp (T, n) float64, final state)`
    reads one stretch of the n sequences not yet finished (a prefix of
    `seqs`, which are longest first; `state` holds a row per sequence, and
    the finished ones leave it).  A stretch is max(1, max_tokens // n) steps,
    as `_read_in_order` reads a document, so one call reads at most
    max(max_tokens, len(seqs)) tokens (default SENTENCE_TOKENS) however long
    a sequence is, and a long one does not make the short ones beside it pay
    for its length.
    """
    if max_tokens is None:
        max_tokens = SENTENCE_TOKENS
    lengths = np.array([len(q) for q in seqs], dtype=np.int64)
    if np.any(lengths[1:] > lengths[:-1]) or lengths[-1] < 1:
        raise ValueError("network_log_probs needs non-empty sequences, longest first")
    out = [np.empty(int(n)) for n in lengths]
    T = int(lengths[0])
    s = 0
    while s < T:
        active = int(np.count_nonzero(lengths > s))
        e = min(T, s + max(1, max_tokens // active))
        state = [tuple(x[:active] for x in layer) for layer in state]   # the finished ones leave the batch
        targets = np.full((e - s, active), EOS_ID, dtype=np.intp)
        first = np.full(active, EOS_ID, dtype=np.intp)
        for b in range(active):
            seg = seqs[b][s:e]
            targets[:len(seg), b] = seg
            if s:
                first[b] = seqs[b][s - 1]
        inputs = np.vstack([first[None], targets[:-1]])
        logp, state = log_probs(inputs, targets, state)
        for b in range(active):
            n = int(min(e, lengths[b])) - s
            out[b][s:s + n] = logp[:n, b]
        s = e
    return out
