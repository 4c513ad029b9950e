"""The language model: cells stacked over time, the softmax head, the loss, BPTT.

For token ids x (T, N), the input of layer 0 at step t is the one-hot
vector of x<t> (V entries); layer l > 0 reads a<t> of layer l − 1, times
that layer's dropout mask if there is one; the head reads the top layer's
a<t> (times its mask):

    ŷ<t> = softmax(W_ya a<t> + b_y)
    L = − Σ_t Σ_n log ŷ<t>[y<t>]               (summed over the counted positions)

With `reset_at_eos`, every line is its own sequence: at a step whose input
is <EOS> the previous state of that row is taken as zero, a<t-1> := 0
(and c<t-1> := 0), so no gradient flows back across it either.

Shapes: T time, N batch, V vocabulary, H hidden.  Parameters (see
`charlm.reference.params`): {"layers": [one dict per layer, keys as in its
cell's module], "W_ya": (V, H), "b_y": (V,)}.  A state is a tuple per layer:
(a,) for rnn and gru, (a, c) for lstm, each (N, H).
"""

from __future__ import annotations

import numpy as np

from charlm.reference.gru import gru_step_backward, gru_step_forward
from charlm.reference.lstm import lstm_step_backward, lstm_step_forward
from charlm.reference.rnn import rnn_step_backward, rnn_step_forward
from charlm.vocab import EOS_ID


def step_forward(cell, activation, x, state, p):
    """One step of one layer, state -> (next state, cache), whatever the cell."""
    if cell == "rnn":
        a, cache = rnn_step_forward(x, state[0], p, activation)
        return (a,), cache
    if cell == "gru":
        a, cache = gru_step_forward(x, state[0], p)
        return (a,), cache
    a, c, cache = lstm_step_forward(x, state[0], state[1], p)
    return (a, c), cache


def step_backward(cell, dstate, cache):
    """Backward through `step_forward`: dstate = dL/d(next state) -> dx, dL/d(previous state), grads."""
    if cell == "rnn":
        dx, da_prev, grads = rnn_step_backward(dstate[0], cache)
        return dx, (da_prev,), grads
    if cell == "gru":
        dx, da_prev, grads = gru_step_backward(dstate[0], cache)
        return dx, (da_prev,), grads
    dx, da_prev, dc_prev, grads = lstm_step_backward(dstate[0], dstate[1], cache)
    return dx, (da_prev, dc_prev), grads


def layer_forward(cell, activation, x, state0, p, keep=None):
    """One layer over T steps.  x (T, N, D), keep (T, N) of 0/1 or None.

    Returns a (T, N, H), the final state, and a cache for `layer_backward`.
    """
    state = state0
    a, caches = [], []
    for t in range(len(x)):
        if keep is not None:
            state = tuple(s * keep[t][:, None] for s in state)      # a new line starts from zero
        state, cache = step_forward(cell, activation, x[t], state, p)
        a.append(state[0])
        caches.append(cache)
    return np.stack(a), state, (cell, caches, keep, p)


def layer_backward(da, dstate_final, cache):
    """BPTT through one layer: da (T, N, H) = dL/da<t> from above, dstate_final = dL/d(final state) or None.

    Returns dx (T, N, D), dL/d(initial state) and the parameter gradients.
    """
    cell, caches, keep, p = cache
    n_states = 2 if cell == "lstm" else 1
    dstate = tuple(np.zeros_like(da[0]) for _ in range(n_states)) if dstate_final is None else dstate_final
    grads = {k: np.zeros_like(v) for k, v in p.items()}
    dx = [None] * len(da)
    for t in reversed(range(len(da))):
        dstate = (dstate[0] + da[t],) + tuple(dstate[1:])         # from above, plus from step t+1
        dx[t], dstate, g = step_backward(cell, dstate, caches[t])
        for k in grads:
            grads[k] += g[k]
        if keep is not None:
            dstate = tuple(d * keep[t][:, None] for d in dstate)   # no gradient across a reset
    return np.stack(dx), dstate, grads


def head_forward(a, W_ya, b_y):
    """logits = W_ya a<t> + b_y for every step: a (T, N, H) -> (T, N, V)."""
    return a @ W_ya.T + b_y


def head_backward(dlogits, a, W_ya):
    """dlogits (T, N, V) -> da (T, N, H), dW_ya (V, H), db_y (V,)."""
    da = dlogits @ W_ya
    dW_ya = np.einsum("tnv,tnh->vh", dlogits, a)
    db_y = dlogits.sum(axis=(0, 1))
    return da, dW_ya, db_y


def softmax_loss(logits, y, mask=None):
    """The summed cross-entropy L = − Σ mask · log softmax(logits)[y] and dL/dlogits.

    logits (T, N, V), y (T, N) target ids, mask (T, N) of 0/1 or None (all
    counted).  Returns (L, dlogits (T, N, V), number of counted positions).
    charlm's training loss (`charlm.model.cross_entropy`) is L divided by
    that number.
    """
    z = logits - logits.max(axis=-1, keepdims=True)              # log-sum-exp, stable
    log_p = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    weight = np.ones(y.shape) if mask is None else mask
    picked = np.take_along_axis(log_p, y[..., None], axis=-1)[..., 0]
    loss = -np.sum(weight * picked)
    T, N = y.shape
    dlogits = np.exp(log_p)                                       # ŷ
    dlogits[np.arange(T)[:, None], np.arange(N), y] -= 1.0        # ŷ − onehot(y)
    dlogits *= weight[..., None]                                  # (ŷ − onehot(y)) · mask
    return float(loss), dlogits, float(weight.sum())


def one_hot(ids, V):
    """ids (T, N) -> (T, N, V) of 0/1."""
    return np.eye(V)[ids]


def line_keep(x, reset_at_eos):
    """(T, N): 0 where the input is <EOS> and lines are separate sequences, else 1; None without resets."""
    return (x != EOS_ID).astype(np.float64) if reset_at_eos else None


def forward(params, cell, x, state0, activation="tanh", reset_at_eos=False, masks=None):
    """The stack over token ids x (T, N).  masks[l] (T, N, H), optional, multiplies layer l's output.

    Returns logits (T, N, V), the final state of every layer, and a cache.
    """
    keep = line_keep(x, reset_at_eos)
    inp = one_hot(x, len(params["b_y"]))
    caches, final = [], []
    for l, p in enumerate(params["layers"]):
        a, state, cache = layer_forward(cell, activation, inp, state0[l], p, keep)
        caches.append(cache)
        final.append(state)
        inp = a if masks is None else a * masks[l]                    # dropout between layers, and before the head
    return head_forward(inp, params["W_ya"], params["b_y"]), final, (caches, inp, masks, params)


def backward(dlogits, cache, dstate_final=None):
    """BPTT through `forward`: the gradients of every parameter (same structure) and of the initial states."""
    caches, top, masks, params = cache
    dinp, dW_ya, db_y = head_backward(dlogits, top, params["W_ya"])
    layers, dstate0 = [None] * len(caches), [None] * len(caches)
    for l in reversed(range(len(caches))):
        da = dinp if masks is None else dinp * masks[l]
        dfinal = None if dstate_final is None else dstate_final[l]
        dinp, dstate0[l], layers[l] = layer_backward(da, dfinal, caches[l])
    return {"layers": layers, "W_ya": dW_ya, "b_y": db_y}, dstate0


def loss_and_grads(params, cell, x, y, state0, activation="tanh", reset_at_eos=False, mask=None, masks=None):
    """Forward, the summed loss L, backward: (L, grads, final state, number of counted positions)."""
    logits, final, cache = forward(params, cell, x, state0, activation, reset_at_eos, masks)
    loss, dlogits, count = softmax_loss(logits, y, mask)
    grads, _ = backward(dlogits, cache)
    return loss, grads, final, count
