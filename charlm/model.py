"""The stacked language model: parameters, forward over time, loss, BPTT.

Parameters are a flat dict with dotted keys (the same keys the checkpoint,
the gradients and the optimizer state use):

    layers.{l}.weight_ih   (G·H, In)   In = V for layer 0, H above
    layers.{l}.weight_hh   (G·H, H)
    layers.{l}.bias        (G·H,)
    head.weight            (V, H)
    head.bias              (V,)

A bidirectional model (`Arch.bidirectional`, see `charlm.bidirectional`)
adds a second stack of the same shapes under `backward.layers.{l}.*`, and
its head reads both top states: head.weight (V, 2H).

The input of layer 0 at step t is the one-hot vector of the previous token;
layer l > 0 reads the hidden states of layer l-1 (after dropout, in
training).  logits<t> = head.weight · h_top<t> + head.bias, and the loss is
the mean cross-entropy of the targets over the (unmasked) positions.

The GRU and LSTM layers run in the concatenated form a<t> = W [h<t-1>; u<t>]
(`layer_input` builds W and u from the parameters: for layer 0 u<t> is the
one-hot vector itself, W = [W_hh | W_ih + b]; above, u<t> = [x<t>; 1] and
W = [W_hh | W_ih | b]), feature-major (see `charlm.cells`).  Where that
does not pay (`concatenated`: layer 0 with a large vocabulary, any layer at
batch 1) the layer gets gx = W_ih x + b, computed before its loop (a column
lookup `W_ih[:, x]` in layer 0).  The vanilla RNN always does that
(`input_projection`) and runs batch-major.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from charlm import cells
from charlm.allocator import aligned_empty
from charlm.cells import NUM_GATES
from charlm.loss import cross_entropy, head, head_backward, log_softmax  # noqa: F401  (log_softmax: model.log_softmax for readers of logits)
from charlm.vocab import EOS_ID, UNK_ID


@dataclass(frozen=True)
class Arch:
    """What the parameter shapes depend on."""

    cell: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    activation: str = "tanh"
    reset_at_eos: bool = False  # each line its own sequence: the state restarts from zero after <EOS>
    bidirectional: bool = False  # a second stack reads right to left (charlm.bidirectional)

    @property
    def gates(self) -> int:
        return NUM_GATES[self.cell]


BACKWARD_PREFIX = "backward."   # the keys of a bidirectional model's right-to-left stack start with this


def param_shapes(arch: Arch) -> dict[str, tuple[int, ...]]:
    """Every parameter's key and shape: the one place the checkpoint's weight keys come from."""
    V, H, G = arch.vocab_size, arch.hidden_size, arch.gates
    shapes = {}
    for prefix in ("", BACKWARD_PREFIX) if arch.bidirectional else ("",):
        for l in range(arch.num_layers):
            shapes[f"{prefix}layers.{l}.weight_ih"] = (G * H, V if l == 0 else H)
            shapes[f"{prefix}layers.{l}.weight_hh"] = (G * H, H)
            shapes[f"{prefix}layers.{l}.bias"] = (G * H,)
    shapes["head.weight"] = (V, 2 * H if arch.bidirectional else H)
    shapes["head.bias"] = (V,)
    return shapes


def init_params(arch: Arch, rng: np.random.Generator, dtype="float32") -> dict[str, np.ndarray]:
    """Initial weights that train fast.

    Layer 0 reads one-hot vectors, so a column of its W_ih is the token's
    embedding and its entries are the pre-activations themselves: U(±1).
    Upper layers' W_ih ~ U(±1/√H) (×√2 for relu).  Each gate block of the
    recurrent weights is a random orthogonal matrix (×0.5 for relu RNNs, to
    start below the exploding regime).  Biases are zero except the LSTM
    forget gate (1).  The head is U(±1/√In), In = H (2H bidirectional):
    small logits, so the initial loss is close to ln V.  A bidirectional
    model's backward stack is drawn the same way, after the forward one.
    """
    H, G = arch.hidden_size, arch.gates
    relu_gain = np.sqrt(2.0) if arch.cell == "rnn" and arch.activation == "relu" else 1.0
    params = {}
    for key, shape in param_shapes(arch).items():
        name = key.removeprefix(BACKWARD_PREFIX)
        if name == "layers.0.weight_ih":
            w = rng.uniform(-1.0, 1.0, size=shape)
        elif name.endswith("weight_ih"):
            scale = relu_gain / np.sqrt(shape[1])
            w = rng.uniform(-scale, scale, size=shape)
        elif name.endswith("weight_hh"):
            w = np.concatenate([_orthogonal(H, rng) for _ in range(G)], axis=0)
            if arch.cell == "rnn" and arch.activation == "relu":
                w *= 0.5
        elif name == "head.weight":
            w = rng.uniform(-1.0 / np.sqrt(shape[1]), 1.0 / np.sqrt(shape[1]), size=shape)
        else:
            w = np.zeros(shape)
            if arch.cell == "lstm" and name.endswith(".bias"):
                w[H:2 * H] = 1.0  # forget gate
        params[key] = w.astype(dtype)
    return params


def _orthogonal(n: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def zero_state(arch: Arch, batch: int, dtype) -> list[tuple]:
    """Zero states of every layer."""
    return [cells.zero_state(arch.cell, batch, arch.hidden_size, dtype) for _ in range(arch.num_layers)]


def input_projection(params, l: int, x) -> np.ndarray:
    """gx = W_ih x + b for all steps at once.

    Layer 0: x holds token ids (..., ) and W_ih x is the column x of W_ih, a
    lookup.  Above: x holds hidden states (..., H) and it is one matmul.
    """
    W, b = params[f"layers.{l}.weight_ih"], params[f"layers.{l}.bias"]
    if l == 0:
        gx = np.take(np.ascontiguousarray(W.T), x.reshape(-1), axis=0)
    else:
        gx = x.reshape(-1, x.shape[-1]) @ W.T
    gx += b
    return gx.reshape(*x.shape[: (x.ndim if l == 0 else x.ndim - 1)], -1)


def lookup_gradient(ids: np.ndarray, dgx: np.ndarray, vocab_size: int) -> np.ndarray:
    """dW_ih of a column lookup: column v gets the sum of dgx over the steps whose input is v.

    That sum is a product with the (V, T·B) one-hot matrix of the inputs;
    for a small vocabulary BLAS does it fastest.  For a large one, sorting
    the ids groups the rows of each token and one `add.reduceat` sums the
    groups: O(T·B·G) work whatever the vocabulary size.
    """
    ids = ids.reshape(-1)
    rows = dgx.reshape(len(ids), -1)
    if vocab_size <= 256:
        onehot = np.zeros((vocab_size, len(ids)), dtype=dgx.dtype)
        onehot[ids, np.arange(len(ids))] = 1.0
        return (onehot @ rows).T
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    dWT = np.zeros((vocab_size, rows.shape[1]), dtype=dgx.dtype)
    dWT[sorted_ids[starts]] = np.add.reduceat(rows[order], starts, axis=0)
    return dWT.T


def dropout_masks(arch: Arch, T: int, B: int, p: float, rng, dtype) -> list | None:
    """Inverted-dropout masks (T, H, B) for the outputs of layers 0.. (the inputs of layers 1.. and of the head).

    A bidirectional model gets 2L masks: the forward stack's, then the backward stack's.
    """
    if p <= 0.0:
        return None
    keep = 1.0 - p
    return [(rng.random((T, arch.hidden_size, B)) < keep).astype(dtype) / dtype.type(keep)
            for _ in range(arch.num_layers * (2 if arch.bidirectional else 1))]


def drop_characters(x: np.ndarray, p: float, rng) -> np.ndarray:
    """Character dropout: each input id other than <EOS> becomes <UNK> with probability p.

    The model must then predict from the rest of its context, as an n-gram
    model backs off to a shorter one; <EOS> is kept, since it marks where
    sequences start.
    """
    if p <= 0.0:
        return x
    drop = (rng.random(x.shape) < p) & (x != EOS_ID)
    return np.where(drop, UNK_ID, x).astype(x.dtype, copy=False)


def state_keep(arch: Arch, x: np.ndarray, dtype) -> np.ndarray | None:
    """(T, B, 1): 0 where the input is <EOS> and lines are independent sequences, else 1."""
    if not arch.reset_at_eos:
        return None
    return (x != EOS_ID)[..., None].astype(dtype)


ONEHOT_VOCAB = 128  # layer 0 reads one-hot inputs through its step matmul when V <= max(H, this)


def concatenated(arch: Arch, l: int, batch: int) -> bool:
    """Whether gated layer l reads its input u<t> through each step's matmul (else as gx, computed before the loop).

    Above layer 0 it does.  Layer 0's one-hot rows widen every step's
    matmul by V; for a vocabulary up to the hidden size that costs less than
    looking the columns up and laying them out for the loop.  A single
    sequence (batch 1, e.g. `score --exact`) is the exception: its steps are
    matrix-vector products, bound by reading the weights, and a wider W
    only adds to what each step reads.
    """
    if arch.cell == "rnn" or batch == 1:                 # (the vanilla RNN always projects its inputs first)
        return False
    return l > 0 or arch.vocab_size <= max(arch.hidden_size, ONEHOT_VOCAB)


def layer_input(params, arch: Arch, l: int, x: np.ndarray, below: np.ndarray | None,
                below_bm: np.ndarray | None = None, batch_major: bool = False):
    """What gated layer l's loop reads: W = [W_hh | W_u], xh (T+1, K, B) with u<t> filled in, xs, and gx (or None).

    Concatenated (see `concatenated`): in layer 0 u<t> = onehot(x<t>) and
    W_u = W_ih + b (the bias rides along with the one column each step
    reads); above, u<t> = [below<t>; 1] and W_u = [W_ih | b].  Otherwise
    W = W_hh, u is empty and gx<t> = W_ih x<t> + b (a column lookup in layer 0).
    `batch_major` (training) also builds xs (T+1, B, K), the batch-major copy
    of xh for the weight gradients (see `charlm.cells`), with its u part
    filled in; `below_bm` is `below` batch-major, (T, B, H).
    """
    T, B = x.shape
    H = arch.hidden_size
    W_hh, W_ih, b = (params[f"layers.{l}.{k}"] for k in ("weight_hh", "weight_ih", "bias"))
    dtype = W_hh.dtype
    if not concatenated(arch, l, B):
        if l == 0:
            gx = cells.swap_layout(input_projection(params, 0, x))
        else:
            gx = np.matmul(W_ih, below)
            gx += b[:, None]
        xs = aligned_empty((T + 1, B, H), dtype) if batch_major else None
        return W_hh, aligned_empty((T + 1, H, B), dtype), xs, gx
    K = H + arch.vocab_size if l == 0 else 2 * H + 1
    xh = aligned_empty((T + 1, K, B), dtype)                       # (the loop writes the h rows)
    xs = aligned_empty((T + 1, B, K), dtype) if batch_major else None
    if l > 0:
        xh[:T, H:2 * H] = below
        if batch_major:
            xs[:T, :, H:2 * H] = below_bm
    write_constant_inputs(l, x, H, xh, xs)
    return concatenated_weights(params, l), xh, xs, None


def write_constant_inputs(l: int, x: np.ndarray, H: int, xh: np.ndarray, xs: np.ndarray | None = None,
                          steps: slice = slice(None)) -> None:
    """The rows of [h; u] in xh (and xs) that the layer below does not give, for the time steps `steps` of 0..T.

    Layer 0: u<t> = onehot(x<t>) (zeros at t = T); above, the bias row's 1.
    """
    if l > 0:
        xh[steps, 2 * H] = 1.0
        if xs is not None:
            xs[steps, :, 2 * H] = 1.0
        return
    xh[steps, H:] = 0.0
    if xs is not None:
        xs[steps, :, H:] = 0.0
    t = np.arange(len(xh))[steps]
    t = t[t < len(x), None]
    ids, b = H + x[t[:, 0]].astype(np.intp), np.arange(x.shape[1])
    xh[t, ids, b] = 1.0
    if xs is not None:
        xs[t, b, ids] = 1.0


def concatenated_weights(params, l: int, rows=slice(None)) -> np.ndarray:
    """W = [W_hh | W_u] of gated layer l, its `rows` only (all by default): W_u = W_ih + b in layer 0, [W_ih | b] above."""
    W_hh, W_ih, b = (params[f"layers.{l}.{k}"][rows] for k in ("weight_hh", "weight_ih", "bias"))
    W_u = (W_ih + b[:, None],) if l == 0 else (W_ih, b[:, None])
    return np.concatenate((W_hh, *W_u), axis=1)


def concatenated_gradients(dW: np.ndarray, l: int, H: int) -> tuple:
    """The gradients (views) of W_hh, W_ih and b of gated layer l from dW = [dW_hh | dW_u] (`concatenated_weights`)."""
    if l == 0:                                                         # dW_u = d(W_ih + b)
        return dW[:, :H], dW[:, H:], dW[:, H:].sum(axis=1)
    return dW[:, :H], dW[:, H:2 * H], dW[:, 2 * H]                     # dW_u = [dW_ih | db]


def gated_forward(params, arch: Arch, x: np.ndarray, state, masks=None, cache: bool = True):
    """The GRU/LSTM stack: the top layer's output (T, H, B) feature-major and, with a cache, (T, B, H) batch-major; final states, caches."""
    keep = state_keep(arch, x, params["layers.0.weight_hh"].dtype)
    keep = None if keep is None else np.swapaxes(keep, 1, 2)              # (T, 1, B)
    H = arch.hidden_size
    below = below_bm = None
    caches, final = [], []
    for l in range(arch.num_layers):
        W, xh, xs, gx = layer_input(params, arch, l, x, below, below_bm, batch_major=cache)
        state_fm = tuple(np.ascontiguousarray(s.T) for s in state[l])
        hs, state_l, cache_l = cells.FORWARD[arch.cell](xh, W, state_fm, keep, gx, cache, xs)
        caches.append((below, cache_l))
        final.append(tuple(np.ascontiguousarray(s.T) for s in state_l))
        below = hs if masks is None else hs * masks[l]
        if cache:    # xs[1:, :, :H] is hs batch-major, unless states were reset or dropout applies
            below_bm = xs[1:, :, :H] if masks is None and keep is None else cells.swap_layout(below)
    return below, below_bm, final, caches


def forward(params, arch: Arch, x: np.ndarray, state, masks=None):
    """Run the stack over token ids `x` (T, B).

    Returns logits (T, B, V), the final state of every layer, and a cache
    for `backward`.  `masks[l]` (optional, (T, H, B)) multiplies the output of layer l.
    """
    top, final, cache = stack_forward(params, arch, x, state, masks)
    return head(params, top), final, cache


def stack_forward(params, arch: Arch, x: np.ndarray, state, masks=None):
    """`forward` without the head: the top layer's outputs (T, B, H), the final states, a cache for `stack_backward`.

    Reads only the `layers.*` keys of `params`.
    """
    if arch.cell != "rnn":
        _, top, final, caches = gated_forward(params, arch, x, state, masks)
        return top, final, (caches, top, masks, x)
    keep = state_keep(arch, x, params["layers.0.weight_hh"].dtype)
    inp = x
    caches, final = [], []
    for l in range(arch.num_layers):
        gx = input_projection(params, l, inp)
        hs, state_l, cache = cells.rnn_forward(gx, state[l], params[f"layers.{l}.weight_hh"], arch.activation, keep)
        out = hs if masks is None else hs * np.swapaxes(masks[l], 1, 2)
        caches.append((inp, cache))
        final.append(state_l)
        inp = out
    return inp, final, (caches, inp, masks, x)


def backward(params, arch: Arch, dlogits: np.ndarray, cache, dstate_final=None):
    """BPTT: the gradient of every parameter (same keys), and of the initial state."""
    grads, dout = head_backward(params, dlogits, cache[1])
    return stack_backward(params, arch, dout, cache, dstate_final, grads)


def stack_backward(params, arch: Arch, dout: np.ndarray, cache, dstate_final=None, grads=None):
    """BPTT through the stack from the gradient `dout` (T, B, H) of its top outputs.

    Adds the `layers.*` gradients to `grads` (a new dict if None); returns it and the initial state's gradient.
    """
    caches, top, masks, x = cache
    V, H = arch.vocab_size, arch.hidden_size
    grads = {} if grads is None else grads
    if arch.cell == "rnn":
        return _rnn_backward(params, arch, dout, caches, masks, dstate_final, grads)
    dhs = cells.swap_layout(dout)                                      # (T, H, B)
    dstate0 = [None] * arch.num_layers
    for l in reversed(range(arch.num_layers)):
        if masks is not None:
            dhs *= masks[l]
        dsf = None if dstate_final is None else tuple(np.ascontiguousarray(s.T) for s in dstate_final[l])
        below, cache_l = caches[l]
        da, ds0, dW = cells.BACKWARD[arch.cell](dhs, dsf, cache_l)         # da (T, B, G·H)
        dstate0[l] = tuple(np.ascontiguousarray(s.T) for s in ds0)
        grads[f"layers.{l}.weight_hh"] = np.ascontiguousarray(dW[:, :H])
        da2 = da.reshape(-1, da.shape[-1])
        if not concatenated(arch, l, x.shape[1]):                          # dW = dW_hh
            grads[f"layers.{l}.weight_ih"] = (lookup_gradient(x, da2, V) if l == 0
                                              else da2.T @ cells.swap_layout(below).reshape(-1, H))
            grads[f"layers.{l}.bias"] = da2.sum(axis=0)
        else:                                                              # dW = [dW_hh | dW_u]
            for k, g in zip(("weight_ih", "bias"), concatenated_gradients(dW, l, H)[1:]):
                grads[f"layers.{l}.{k}"] = np.ascontiguousarray(g)
        if l > 0:
            dhs = cells.swap_layout((da2 @ params[f"layers.{l}.weight_ih"]).reshape(*da.shape[:2], H))
    return grads, dstate0


def _rnn_backward(params, arch: Arch, dout, caches, masks, dstate_final, grads):
    V, H = arch.vocab_size, arch.hidden_size
    dstate0 = [None] * arch.num_layers
    for l in reversed(range(arch.num_layers)):
        inp, cache_l = caches[l]
        dhs = dout if masks is None else dout * np.swapaxes(masks[l], 1, 2)
        dgx, dstate0[l], grads[f"layers.{l}.weight_hh"] = cells.rnn_backward(
            dhs, None if dstate_final is None else dstate_final[l], cache_l)
        dgx2 = dgx.reshape(-1, dgx.shape[-1])
        grads[f"layers.{l}.bias"] = dgx2.sum(axis=0)
        W = params[f"layers.{l}.weight_ih"]
        if l == 0:
            grads[f"layers.{l}.weight_ih"] = lookup_gradient(inp, dgx2, V)
        else:
            grads[f"layers.{l}.weight_ih"] = dgx2.T @ inp.reshape(-1, H)
            dout = (dgx2 @ W).reshape(inp.shape)
    return grads, dstate0


def loss_and_grads(params, arch: Arch, x, y, state, mask=None, masks=None, denominator=None):
    """Forward, loss, backward: (loss, grads, final state); `denominator` as in `cross_entropy`."""
    logits, final, cache = forward(params, arch, x, state, masks)
    loss, dlogits, _ = cross_entropy(logits, y, mask, denominator)
    grads, _ = backward(params, arch, dlogits, cache)
    return loss, grads, final


def num_params(params) -> int:
    return int(sum(p.size for p in params.values()))
