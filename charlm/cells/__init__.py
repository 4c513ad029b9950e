"""The recurrent cells, as pure functions over a whole sequence (one module per cell: rnn, gru, lstm).

Shapes use one vocabulary: T time steps, B batch, H hidden size, G gates
(G·H rows of pre-activations), K the length of a step's matmul input.

The vanilla RNN, time- and batch-major (`gx[t]` is the (B, H) input of step t):

    rnn_forward(gx, state0, W_hh)          -> hs (T, B, H), final state, cache
    rnn_backward(dhs, dstate_final, cache) -> dgx (T, B, H), dstate0, dW_hh

where `gx = W_ih x + b` is the input projection of every step, computed by
the caller for the whole sequence at once, and `dgx` its gradient.

The gated cells (GRU, LSTM) in the concatenated form of the course notes,
a<t> = W [h<t-1>; u<t>] with W = [W_hh | W_u], feature-major:

    forward(xh, W, state0, keep, gx, cache, xs) -> hs (T, H, B), final state, cache
    backward(dhs, dstate_final, cache)           -> da (T, B, G·H), dstate0, dW (G·H, K)

- xh (T+1, K, B), K = H + E: rows H: of xh[t] hold the step input u<t>
  (t < T), filled by the caller; the loop writes h<t-1> into rows :H, so
  that step t's matmul reads the contiguous [h<t-1>; u<t>].  The caller
  chooses u: for a one-hot first layer u<t> = onehot(x<t>) and W_u =
  W_ih + b (one column per token: the bias rides along), above it
  u<t> = [x<t>; 1] and W_u = [W_ih | b].  The input projection is then
  part of each step's matmul: no separate pass, no layout copy.
- xs (T+1, B, K), optional: the same rows batch-major, which the
  weight-gradient matmul reads.  The caller fills the u part (steps < T);
  the loop copies each h<t-1>, transposed, from xh into xs while it is in
  cache (xs[t, :, :H] = xh[t, :H]ᵀ for t ≤ T, so that without resets
  xs[1:, :, :H] is the output hs, batch-major; the GRU keeps its
  [r·h<t-1>; u<t>] batch-major the same way).  Without xs (and with a
  cache), the forward builds it.
- gx (T, G·H, B), optional, which the forward overwrites: pre-activations
  added to W [h; u] (for a large vocabulary, whose one-hot input would make
  the matmul too wide, the caller looks the columns up instead and u is
  empty).
- da is the gradient of the pre-activations (batch-major, for the caller's
  weight-gradient matmuls), dW = Σ_t da<t> [h<t-1>; u<t>]ᵀ: one matmul over
  all steps.
- hs and the states, (H, B), are feature-major.  `cache=False` (inference)
  keeps nothing and returns no cache.

    step(gx_t, state, W_hhT)           -> state  (one step, batch-major; W_hhT = W_hhᵀ)

How the time loops are kept cheap (the equations are unchanged):
- inside the GRU and LSTM loops a step's gates are one contiguous (G·H, B)
  matrix and the recurrent product is computed as written, W (G·H × K) ·
  [h; u] (K × B) — at batch 32 BLAS does that faster here than the
  batch-major (B × K) · Wᵀ, and the elementwise work reads contiguous rows;
- per step, one matmul (the GRU: two, W_rz [h; u] and W_n [r·h; u],
  since its reset gate sits before the second) into a preallocated
  buffer, then in-place ufuncs;
- σ(x) = ½·tanh(x/2) + ½, with the ½ folded into the weights, so one tanh
  call activates all the gates of a step;
- each step's local derivatives are computed inside the backward loop,
  while its arrays are in cache, into one (G·H, B) buffer that the
  recurrent matmul reads and that is then copied, transposed, into the
  batch-major da; dW is one matmul over all steps after the loop;
- the loops' arrays start on a 64-byte boundary (`allocator.aligned_empty`),
  and so does each step's slice of them: vectorised ufunc loops then never
  straddle two cache lines.

The LSTM's loops also run on a share of the hidden units, beside other
processes that run the rest (`charlm.workers.units`): `lstm_forward` takes
the units it writes and a `sync` called after each step, `lstm_backward`
the recurrent product as a function.

A state is a tuple: `(h,)` for rnn and gru, `(h, c)` for lstm.

`keep` (optional, of 0/1; (T, B, 1) for the RNN, (T, 1, B) for the gated
cells) resets the state: at a step where keep[t] is 0 the previous state
of that row is taken as zero (a new sequence starts there; its gradient
stops there too).
"""

from __future__ import annotations

import numpy as np

from charlm.cells.common import sigmoid, swap_layout  # noqa: F401  (the cells' public helpers)
from charlm.cells.gru import gru_backward, gru_forward, gru_step
from charlm.cells.lstm import lstm_backward, lstm_forward, lstm_step
from charlm.cells.rnn import rnn_backward, rnn_forward, rnn_step

CELLS = ("rnn", "gru", "lstm")
ACTIVATIONS = ("tanh", "relu")
NUM_GATES = {"rnn": 1, "gru": 3, "lstm": 4}
NUM_STATES = {"rnn": 1, "gru": 1, "lstm": 2}     # (h,) or (h, c)


FORWARD = {"rnn": rnn_forward, "gru": gru_forward, "lstm": lstm_forward}
BACKWARD = {"rnn": rnn_backward, "gru": gru_backward, "lstm": lstm_backward}
STEP = {"rnn": rnn_step, "gru": gru_step, "lstm": lstm_step}


def zero_state(cell: str, batch: int, hidden: int, dtype) -> tuple:
    """The zero initial state of one layer."""
    return tuple(np.zeros((batch, hidden), dtype=dtype) for _ in range(NUM_STATES[cell]))
