"""A plain float64 reference of the bidirectional model, the test oracle of `charlm.bidirectional`.

One sequence at a time, one step at a time, one short function per
equation, vectors rather than batches, no layout tricks.  The fast path
(`charlm.bidirectional` on `charlm.model`'s stacks) must agree with it.

A cell step maps (input u, state) to the new state, with W_ih, W_hh, b:

    rnn:   h' = g(W_ih u + W_hh h + b)                           g = tanh or relu
    gru:   r = σ(W_ih^r u + W_hh^r h + b^r),  z = σ(W_ih^z u + W_hh^z h + b^z)
           n = tanh(W_ih^n u + b^n + W_hh^n (r·h))               (reset gate before the product)
           h' = (1 − z)·n + z·h
    lstm:  [i f g o] = W_ih u + W_hh h + b
           c' = σ(f)·c + σ(i)·tanh(g),  h' = σ(o)·tanh(c')

Layer 0 reads onehot(id); layer l > 0 reads layer l-1's h'.  With
`reset_at_eos`, the state is zero before a step whose input is <EOS>.
The bidirectional model (see `charlm.bidirectional`):

    a_f<t> = stack_f(<EOS>, x<1..t-1>),  a_b<t> = stack_b(<EOS>, x<n..t+1>)
    logits<t> = W_y [a_f<t>; a_b<t>] + b_y
    J = Σ_t mask<t> · −log softmax(logits<t>)[x<t>]
"""

from __future__ import annotations

import numpy as np

from charlm.reference.ops import sigmoid
from charlm.vocab import EOS_ID


def cell_step(cell, activation, W_ih, W_hh, b, u, h, c):
    """One step: (h', c', cache).  c is unused (None) except for the LSTM."""
    H = W_hh.shape[1]
    if cell == "rnn":
        a = W_ih @ u + W_hh @ h + b
        h_new = np.tanh(a) if activation == "tanh" else np.maximum(a, 0.0)
        return h_new, None, (u, h, c, a, h_new)
    if cell == "gru":
        gx = W_ih @ u + b
        r = sigmoid(gx[:H] + W_hh[:H] @ h)
        z = sigmoid(gx[H:2 * H] + W_hh[H:2 * H] @ h)
        n = np.tanh(gx[2 * H:] + W_hh[2 * H:] @ (r * h))
        return (1 - z) * n + z * h, None, (u, h, c, r, z, n)
    a = W_ih @ u + W_hh @ h + b
    i, f, o = sigmoid(a[:H]), sigmoid(a[H:2 * H]), sigmoid(a[3 * H:])
    g = np.tanh(a[2 * H:3 * H])
    c_new = f * c + i * g
    return o * np.tanh(c_new), c_new, (u, h, c, i, f, g, o, c_new)


def cell_step_backward(cell, activation, W_ih, W_hh, dh, dc, cache, grads):
    """Gradients of one step: adds to grads["weight_ih"/"weight_hh"/"bias"]; returns (du, dh_prev, dc_prev)."""
    H = W_hh.shape[1]
    if cell == "rnn":
        u, h, c, a, h_new = cache
        da = dh * ((1 - h_new ** 2) if activation == "tanh" else (a > 0))
        dc_prev = None
        dh_extra = 0.0
    elif cell == "gru":
        u, h, c, r, z, n = cache
        dn = dh * (1 - z)
        dz = dh * (h - n)
        dan = dn * (1 - n ** 2)
        d_rh = W_hh[2 * H:].T @ dan                  # through W_hh^n (r·h)
        dr = d_rh * h
        da_rz = np.concatenate([dr * r * (1 - r), dz * z * (1 - z)])
        grads["weight_hh"][2 * H:] += np.outer(dan, r * h)
        grads["weight_hh"][:2 * H] += np.outer(da_rz, h)
        da = np.concatenate([da_rz, dan])
        dh_extra = dh * z + d_rh * r + W_hh[:2 * H].T @ da_rz
        dc_prev = None
    else:
        u, h, c, i, f, g, o, c_new = cache
        tc = np.tanh(c_new)
        dc_total = dc + dh * o * (1 - tc ** 2)
        da = np.concatenate([dc_total * g * i * (1 - i), dc_total * c * f * (1 - f),
                             dc_total * i * (1 - g ** 2), dh * tc * o * (1 - o)])
        dc_prev = dc_total * f
        dh_extra = 0.0
    grads["weight_ih"] += np.outer(da, u)
    grads["bias"] += da
    if cell != "gru":
        grads["weight_hh"] += np.outer(da, h)
        dh_prev = W_hh.T @ da + dh_extra
    else:
        dh_prev = dh_extra
    return W_ih.T @ da, dh_prev, dc_prev


def stack_forward(params, prefix, arch, inputs):
    """The top layer's h at every step of one sequence of input ids, and the caches of every step."""
    V, H = arch.vocab_size, arch.hidden_size
    below = [np.eye(V)[i] for i in inputs]
    caches = []
    for l in range(arch.num_layers):
        W_ih, W_hh, b = (params[f"{prefix}layers.{l}.{k}"] for k in ("weight_ih", "weight_hh", "bias"))
        h, c = np.zeros(H), np.zeros(H)
        outs, layer_caches = [], []
        for t, u in enumerate(below):
            if arch.reset_at_eos and inputs[t] == EOS_ID:
                h, c = np.zeros(H), np.zeros(H)
            h, c_new, cache = cell_step(arch.cell, arch.activation, W_ih, W_hh, b, u, h, c)
            c = c_new if c_new is not None else c
            outs.append(h)
            layer_caches.append(cache)
        caches.append(layer_caches)
        below = outs
    return below, caches


def stack_backward(params, prefix, arch, inputs, dtop, caches, grads):
    """BPTT through one stack from the gradients of its top outputs; adds into `grads` (keys with `prefix`)."""
    H = arch.hidden_size
    dbelow = dtop
    for l in reversed(range(arch.num_layers)):
        W_ih, W_hh = params[f"{prefix}layers.{l}.weight_ih"], params[f"{prefix}layers.{l}.weight_hh"]
        g = {k: grads[f"{prefix}layers.{l}.{k}"] for k in ("weight_ih", "weight_hh", "bias")}
        dh_next, dc_next = np.zeros(H), np.zeros(H)
        dinputs = [None] * len(inputs)
        for t in reversed(range(len(inputs))):
            du, dh_next, dc_prev = cell_step_backward(arch.cell, arch.activation, W_ih, W_hh,
                                                      dbelow[t] + dh_next, dc_next, caches[l][t], g)
            dc_next = dc_prev if dc_prev is not None else dc_next
            if arch.reset_at_eos and inputs[t] == EOS_ID:   # the state before this step was zero: nothing flows back
                dh_next, dc_next = np.zeros(H), np.zeros(H)
            dinputs[t] = du
        dbelow = dinputs


def forward(params, arch, seq):
    """Logits (n, V) of one sequence of ids, each position given the rest, and a cache."""
    n = len(seq)
    x_f = [EOS_ID] + list(seq[:-1])
    x_b = [EOS_ID] + list(seq[::-1][:-1])
    a_f, caches_f = stack_forward(params, "", arch, x_f)
    a_b, caches_b = stack_forward(params, "backward.", arch, x_b)
    tops = [np.concatenate([a_f[t], a_b[n - 1 - t]]) for t in range(n)]
    logits = np.array([params["head.weight"] @ a + params["head.bias"] for a in tops])
    return logits, (tops, x_f, x_b, caches_f, caches_b)


def loss_and_grads(params, arch, seq, mask=None):
    """J = Σ_t mask<t> · −log P(x<t> | the rest) of one sequence, and dJ for every parameter."""
    n, H = len(seq), arch.hidden_size
    mask = np.ones(n) if mask is None else np.asarray(mask, dtype=float)
    logits, (tops, x_f, x_b, caches_f, caches_b) = forward(params, arch, seq)
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    J = 0.0
    da_f, da_b = [None] * n, [None] * n
    for t in range(n):
        z = logits[t] - logits[t].max()
        p = np.exp(z) / np.exp(z).sum()
        J -= mask[t] * np.log(p[seq[t]])
        dlogit = mask[t] * (p - np.eye(len(p))[seq[t]])          # softmax − onehot(x<t>)
        grads["head.weight"] += np.outer(dlogit, tops[t])
        grads["head.bias"] += dlogit
        dtop = params["head.weight"].T @ dlogit
        da_f[t], da_b[n - 1 - t] = dtop[:H], dtop[H:]
    stack_backward(params, "", arch, x_f, da_f, caches_f, grads)
    stack_backward(params, "backward.", arch, x_b, da_b, caches_b, grads)
    return J, grads
