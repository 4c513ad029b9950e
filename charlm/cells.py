"""The recurrent cells, as pure functions over a whole sequence.

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

A state is a tuple: `(h,)` for rnn and gru, `(h, c)` for lstm.

`keep` (optional, of 0/1; (T, B, 1) for the RNN, (T, 1, B) for the gated
cells) resets the state: at a step where keep[t] is 0 the previous state
of that row is taken as zero (a new sequence starts there; its gradient
stops there too).
"""

from __future__ import annotations

import numpy as np

from charlm.allocator import aligned_empty, aligned_zeros

CELLS = ("rnn", "gru", "lstm")
ACTIVATIONS = ("tanh", "relu")
NUM_GATES = {"rnn": 1, "gru": 3, "lstm": 4}
NUM_STATES = {"rnn": 1, "gru": 1, "lstm": 2}     # (h,) or (h, c)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """σ(x) = ½·tanh(x/2) + ½: one transcendental, and never overflows."""
    return 0.5 * np.tanh(0.5 * x) + 0.5


def _matmul_with_previous(da: np.ndarray, h0: np.ndarray, hs: np.ndarray) -> np.ndarray:
    """Σ_t da[t]ᵀ h<t-1> without building the shifted copy of hs: two matmuls."""
    out = da[0].T @ h0
    if len(hs) > 1:
        out += _matmul_over_time(da[1:], hs[:-1])
    return out


def _matmul_over_time(da: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Σ_t da[t]ᵀ x[t] as one matmul: (T, B, K), (T, B, N) -> (K, N)."""
    return da.reshape(-1, da.shape[-1]).T @ x.reshape(-1, x.shape[-1])


def _sigmoid_scale(G: int, H: int, sigmoid_blocks, dtype) -> np.ndarray:
    """(G·H,) factors: ½ on the blocks that go through σ, 1 on the others."""
    s = np.ones(G * H, dtype=dtype)
    for k in sigmoid_blocks:
        s[k * H:(k + 1) * H] = 0.5
    return s


def _halve_rows(x: np.ndarray, halved: tuple) -> np.ndarray:
    """x (T, F, B) with its feature rows [a, b) of each (a, b) in `halved` times ½, in place."""
    for a, b in halved:
        x[:, a:b] *= x.dtype.type(0.5)
    return x


SWAP_ROWS = 256   # swap_layout moves a feature-major array this many feature rows at a time


def swap_layout(x: np.ndarray) -> np.ndarray:
    """(…, B, F) <-> (…, F, B): a new contiguous array with the last two axes swapped (batch- to feature-major and back).

    From feature-major, the rows go over in blocks of `SWAP_ROWS`: a block of
    one step, 256 × 32 floats, is read while it sits in the L1 cache (at
    batch 32 that moves the 4H = 1024 gate rows in about 3.7 ms instead of
    4.3, the 2H + 1 = 513 rows of [h; u] in 1.1 ms instead of 1.6).
    """
    F = x.shape[-2]
    out = aligned_empty(x.shape[:-2] + (x.shape[-1], F), x.dtype)
    if F <= SWAP_ROWS or x.shape[-1] >= F:
        np.copyto(out, np.swapaxes(x, -1, -2))
        return out
    for a in range(0, F, SWAP_ROWS):
        np.copyto(out[..., a:a + SWAP_ROWS], np.swapaxes(x[..., a:a + SWAP_ROWS, :], -1, -2))
    return out


def _initial_gradient(dstate_final, n: int, shape, dtype) -> list:
    """The n gradients flowing into the last state, as fresh aligned arrays (zeros where none is given)."""
    out = [aligned_zeros(shape, dtype) for _ in range(n)]
    if dstate_final is not None:
        for o, d in zip(out, dstate_final):
            o += d
    return out


def _batch_major_inputs(xh: np.ndarray, H: int, xs: np.ndarray | None) -> np.ndarray:
    """xs as given, or built from xh's u rows (the forward fills in the h rows)."""
    if xs is None:
        T1, K, B = xh.shape
        xs = aligned_empty((T1, B, K), xh.dtype)
        np.copyto(xs[:-1, :, H:], np.swapaxes(xh[:-1, H:], 1, 2))
    return xs


def _half_affine(x: np.ndarray) -> None:
    """x <- ½·x + ½ in place (turns tanh(a/2) into σ(a))."""
    x *= 0.5
    x += 0.5


# ----------------------------------------------------------------------------
# Vanilla RNN:  h<t> = act(W_ih x<t> + W_hh h<t-1> + b)
# ----------------------------------------------------------------------------

def rnn_forward(gx, state0, W_hh, activation="tanh", keep=None):
    """Vanilla RNN over T steps; `activation` is "tanh" or "relu"."""
    T, B, H = gx.shape
    WT = np.ascontiguousarray(W_hh.T)
    hs = aligned_empty((T, B, H), gx.dtype)
    h = state0[0]
    for t in range(T):
        if keep is not None:
            h = h * keep[t]                    # a new sequence starts from zero
        a = np.dot(h, WT, out=hs[t])           # W_hh h<t-1>
        a += gx[t]                             # + W_ih x<t> + b
        if activation == "tanh":
            h = np.tanh(a, out=a)
        else:
            h = np.maximum(a, 0, out=a)
    return hs, (h,), (hs, state0[0], W_hh, activation, keep)


def rnn_backward(dhs, dstate_final, cache):
    hs, h0, W_hh, activation, keep = cache
    T, B, H = hs.shape
    # local derivative of the activation, for all steps: tanh' = 1 - h², relu' = [h > 0]
    da = aligned_empty(hs.shape, hs.dtype)
    if activation == "tanh":
        np.subtract(1.0, np.multiply(hs, hs, out=da), out=da)
    else:
        np.greater(hs, 0, out=da)
    (dh_next,) = _initial_gradient(dstate_final, 1, (B, H), hs.dtype)
    for t in reversed(range(T)):
        dh_next += dhs[t]                      # dh<t> = dL/dh<t> + from step t+1
        da[t] *= dh_next                       # da<t> = dh<t> · act'
        np.matmul(da[t], W_hh, out=dh_next)    # to h<t-1>: W_hhᵀ da<t>
        if keep is not None:
            dh_next *= keep[t]
    dW_hh = _matmul_with_previous(da if keep is None else da * keep, h0, hs)
    return da, (dh_next,), dW_hh


def rnn_step(gx_t, state, W_hhT, activation="tanh"):
    """One step for inference; W_hhT is W_hhᵀ (H, H), contiguous."""
    a = np.dot(state[0], W_hhT)
    a += gx_t
    return (np.tanh(a, out=a) if activation == "tanh" else np.maximum(a, 0, out=a),)


# ----------------------------------------------------------------------------
# LSTM, gate blocks in order i, f, g, o:
#   [i f g o] = W [h<t-1>; u<t>]           W = [W_hh | W_u]
#   c<t> = σ(f)·c<t-1> + σ(i)·tanh(g)
#   h<t> = σ(o)·tanh(c<t>)
# ----------------------------------------------------------------------------

def lstm_forward(xh, W, state0, keep=None, gx=None, cache=True, xs=None):
    """The LSTM over T steps; see "The gated cells" above for xh, W, gx, keep and xs."""
    H = W.shape[0] // 4
    T, B = xh.shape[0] - 1, xh.shape[2]
    G = 4 * H
    xs = _batch_major_inputs(xh, H, xs) if cache else None
    Ws = W * _sigmoid_scale(4, H, (0, 1, 3), W.dtype)[:, None]    # σ rows halved
    if gx is not None:
        _halve_rows(gx, ((0, 2 * H), (3 * H, 4 * H)))
    gates = gx if gx is not None or not cache else aligned_empty((T, G, B), W.dtype)
    cs = aligned_empty((T, H, B), W.dtype) if cache else None
    tcs = aligned_empty((T, H, B), W.dtype) if cache else None    # tanh(c<t>)
    hs = xh[1:, :H] if keep is None else aligned_empty((T, H, B), W.dtype)
    buf = aligned_empty((G, B), W.dtype)
    tmp = aligned_empty((H, B), W.dtype)
    c_bufs = None if cache else aligned_empty((2, H, B), W.dtype)
    g4 = (buf[None] if gates is None else gates).reshape(-1, 4, H, B)   # the gate blocks of each step
    h, c = state0
    for t in range(T):
        if keep is not None:                       # a new sequence starts from zero
            h, c = np.multiply(h, keep[t], out=xh[t, :H]), c * keep[t]
        elif t == 0:
            xh[0, :H] = h
        if xs is not None:
            np.copyto(xs[t, :, :H], xh[t, :H].T)  # h<t-1>, batch-major
        if gates is None:                          # pre-activations (σ blocks halved)
            a = np.matmul(Ws, xh[t], out=buf)
        elif gx is None:
            a = np.matmul(Ws, xh[t], out=gates[t])
        else:
            a = gates[t]
            a += np.matmul(Ws, xh[t], out=buf)
        np.tanh(a, out=a)                          # tanh(g); tanh(x/2) for i, f, o
        a4 = g4[0 if gates is None else t]
        i, f, g, o = a4[0], a4[1], a4[2], a4[3]
        _half_affine(a4[:2])                       # σ(i), σ(f)
        _half_affine(o)                            # σ(o)
        c_t = np.multiply(f, c, out=cs[t] if cache else c_bufs[t % 2])   # c = σ(f)·c<t-1>
        c_t += np.multiply(i, g, out=tmp)          #   + σ(i)·tanh(g)
        tc = np.tanh(c_t, out=tcs[t] if cache else tmp)
        h = np.multiply(o, tc, out=hs[t])          # h = σ(o)·tanh(c)
        c = c_t
    if not cache:
        return hs, (h, c), None
    np.copyto(xs[T, :, :H], h.T)
    return hs, (h, c), (xs, gates, cs, tcs, state0[1], W, keep)


def lstm_backward(dhs, dstate_final, cache):
    """BPTT through `lstm_forward`: da (T, B, 4H) batch-major, (dh<0>, dc<0>), dW (4H, K).

    dhs (T, H, B) and the states are feature-major; da is the gradient of
    the pre-activations, dW = Σ_t da<t> [h<t-1>; u<t>]ᵀ.
    """
    xs, gates, cs, tcs, c0, W, keep = cache
    T, H, B = cs.shape
    g4 = gates.reshape(T, 4, H, B)
    da = aligned_empty((T, B, 4 * H), W.dtype)                      # batch-major, for the dW matmul
    da_t = aligned_empty((4 * H, B), W.dtype)                       # one step's, feature-major
    da_i, da_f, da_g, da_o = da_t.reshape(4, H, B)
    da_if = da_t[:2 * H].reshape(2, H, B)
    WT = np.ascontiguousarray(W[:, :H].T)                           # W_hhᵀ (H, G)
    dh, dc = _initial_gradient(dstate_final, 2, (H, B), W.dtype)
    tmp = aligned_empty((H, B), W.dtype)
    dh_o = aligned_empty((H, B), W.dtype)
    dh_otc = aligned_empty((H, B), W.dtype)
    # Each step's arrays are small and stay in cache, so the local derivatives
    # are computed here, step by step, with in-place ufuncs, into one
    # (G·H, B) buffer that the recurrent matmul reads and that is then copied,
    # transposed, into da<t> (cheaper than writing the steps feature-major
    # and transposing all of da afterwards).
    for t in reversed(range(T)):
        i, f, g, o = g4[t, 0], g4[t, 1], g4[t, 2], g4[t, 3]
        tc = tcs[t]
        c_prev = cs[t - 1] if t > 0 else c0
        if keep is not None:
            c_prev = c_prev * keep[t]
        dh += dhs[t]                                                  # dh<t>
        np.multiply(dh, o, out=dh_o)                                  # dh·σ(o)
        np.multiply(dh_o, tc, out=dh_otc)                             # dh·σ(o)·tanh(c)
        # da_o = dh·σ(o)(1 - σ(o))·tanh(c)
        np.subtract(1.0, o, out=da_o); da_o *= dh_otc
        # dc<t> = dc from step t+1 + dh·σ(o)·(1 - tanh²(c))
        np.multiply(dh_otc, tc, out=tmp); np.subtract(dh_o, tmp, out=tmp)
        dc += tmp
        # [da_i da_f] = dc·σ(1 - σ) of [i f] (one pass over both blocks), then ·tanh(g) and ·c<t-1>
        if_ = g4[t, :2]
        np.subtract(1.0, if_, out=da_if); da_if *= if_; da_if *= dc
        da_i *= g
        da_f *= c_prev
        # da_g = dc·σ(i)·(1 - tanh²(g))
        np.multiply(g, g, out=da_g); np.subtract(1.0, da_g, out=da_g); da_g *= i; da_g *= dc
        dc *= f                                                       # to c<t-1>: σ(f)·dc
        np.matmul(WT, da_t, out=dh)                                   # to h<t-1>: W_hhᵀ da<t>
        np.copyto(da[t], da_t.T)
        if keep is not None:
            dh *= keep[t]
            dc *= keep[t]
    return da, (dh, dc), _matmul_over_time(da, xs[:T])


def lstm_step(gx_t, state, W_hhT, activation=None):
    """One step for inference; W_hhT is W_hhᵀ (H, 4H), contiguous."""
    h, c = state
    H = h.shape[-1]
    a = np.dot(h, W_hhT)
    a += gx_t
    a[:, 2 * H:3 * H] *= 2.0                 # so that one tanh(a/2) call serves all gates:
    a *= 0.5
    np.tanh(a, out=a)                        # tanh(g) = tanh(2g/2); tanh(x/2) for i, f, o
    g = a[:, 2 * H:3 * H].copy()
    a += 1.0
    a *= 0.5                                 # σ(x) = ½·tanh(x/2) + ½ (the g block is unused)
    c = a[:, H:2 * H] * c + a[:, :H] * g
    return (a[:, 3 * H:] * np.tanh(c), c)


# ----------------------------------------------------------------------------
# GRU (Cho et al. 2014: the reset gate applies to h<t-1> *before* the matmul;
# PyTorch's nn.GRU applies it after), gate blocks in order r, z, n,
# W = [W_hh | W_u] = [[W_hrz, W_urz], [W_hn, W_un]]:
#   [r z] = σ(W_rz [h<t-1>; u<t>])
#   n = tanh(W_n [r·h<t-1>; u<t>])
#   h<t> = (1 - z)·n + z·h<t-1>
# ----------------------------------------------------------------------------

def gru_forward(xh, W, state0, keep=None, gx=None, cache=True, xs=None):
    """The GRU over T steps; see "The gated cells" above for xh, W, gx, keep and xs."""
    H = W.shape[0] // 3
    T, K, B = xh.shape[0] - 1, xh.shape[1], xh.shape[2]
    W_rz = W[: 2 * H] * 0.5                                # σ via tanh(x/2)
    W_n = W[2 * H:]                                        # [W_hn | W_un]
    rxu = aligned_empty((T, K, B), W.dtype)                # [r·h<t-1>; u<t>]
    rxu[:, H:] = xh[:T, H:]
    xs = _batch_major_inputs(xh, H, xs) if cache else None
    rxs = None                                             # [r·h<t-1>; u<t>], batch-major
    if cache:
        rxs = aligned_empty((T, B, K), W.dtype)
        rxs[:, :, H:] = xs[:T, :, H:]
    if gx is not None:
        _halve_rows(gx, ((0, 2 * H),))
    gates = gx if gx is not None or not cache else aligned_empty((T, 3 * H, B), W.dtype)  # [σ(r) σ(z) n]
    hs = xh[1:, :H] if keep is None else aligned_empty((T, H, B), W.dtype)
    buf = aligned_empty((3 * H, B), W.dtype)
    (h,) = state0
    for t in range(T):
        if keep is not None:                               # a new sequence starts from zero
            h = np.multiply(h, keep[t], out=xh[t, :H])
        elif t == 0:
            xh[0, :H] = h
        if xs is not None:
            np.copyto(xs[t, :, :H], xh[t, :H].T)          # h<t-1>, batch-major
        a = gates[t] if gates is not None else buf
        rz, n = a[: 2 * H], a[2 * H:]
        if gx is None:
            np.matmul(W_rz, xh[t], out=rz)
        else:
            rz += np.matmul(W_rz, xh[t], out=buf[: 2 * H])
        np.tanh(rz, out=rz)
        _half_affine(rz)                                   # σ(r), σ(z)
        r, z = rz[:H], rz[H:]
        np.multiply(r, h, out=rxu[t, :H])                  # r·h<t-1>
        if rxs is not None:
            np.copyto(rxs[t, :, :H], rxu[t, :H].T)
        if gx is None:
            np.matmul(W_n, rxu[t], out=n)                  # W_hn (r·h<t-1>) + W_un u<t>
        else:
            n += np.matmul(W_n, rxu[t], out=buf[2 * H:])
        np.tanh(n, out=n)
        h_t = np.subtract(h, n, out=hs[t])                 # h = n + z·(h<t-1> - n)
        h_t *= z
        h_t += n
        h = h_t
    if not cache:
        return hs, (h,), None
    np.copyto(xs[T, :, :H], h.T)
    return hs, (h,), (xh, xs, gates, rxs, W, keep)


def gru_backward(dhs, dstate_final, cache):
    """BPTT through `gru_forward`: da (T, B, 3H) batch-major, (dh<0>,), dW (3H, K)."""
    xh, xs, gates, rxs, W, keep = cache
    T, H, B = dhs.shape
    W_rzT = np.ascontiguousarray(W[: 2 * H, :H].T)         # (H, 2H)
    W_hnT = np.ascontiguousarray(W[2 * H:, :H].T)
    da = aligned_empty((T, B, 3 * H), W.dtype)                    # batch-major, for the dW matmuls
    da_t = aligned_empty((3 * H, B), W.dtype)                     # one step's, feature-major (as in lstm_backward)
    da_r, da_z, da_n = da_t[:H], da_t[H:2 * H], da_t[2 * H:]
    (dh,) = _initial_gradient(dstate_final, 1, (H, B), W.dtype)
    drh = aligned_empty((H, B), W.dtype)
    tmp = aligned_empty((H, B), W.dtype)
    for t in reversed(range(T)):
        r, z, n = gates[t, :H], gates[t, H:2 * H], gates[t, 2 * H:]
        h_prev = xh[t, :H]                                            # (already reset where keep is 0)
        dh += dhs[t]                                                  # dh<t>
        np.subtract(1.0, z, out=tmp); tmp *= dh                       # dh·(1 - z)
        # da_n = dh·(1 - z)·(1 - n²)
        np.multiply(n, n, out=da_n); np.subtract(1.0, da_n, out=da_n); da_n *= tmp
        # da_z = dh·(h<t-1> - n)·z(1 - z)
        np.subtract(h_prev, n, out=da_z); da_z *= z; da_z *= tmp
        np.matmul(W_hnT, da_n, out=drh)                               # d(r·h<t-1>) = W_hnᵀ da_n
        np.multiply(drh, r, out=drh)                                  # r·d(r·h<t-1>)
        # da_r = d(r·h)·h<t-1>·r(1 - r)
        np.subtract(1.0, r, out=da_r); da_r *= h_prev; da_r *= drh
        dh *= z                                                       # to h<t-1>: z·dh
        dh += drh                                                     #   + r·d(r·h)
        dh += np.matmul(W_rzT, da_t[: 2 * H], out=tmp)                #   + W_hrzᵀ [da_r da_z]
        np.copyto(da[t], da_t.T)
        if keep is not None:
            dh *= keep[t]
    da2 = da.reshape(T * B, -1)       # a 2-D view: BLAS reads its column blocks in place
    dW = np.empty_like(W)
    np.matmul(da2[:, : 2 * H].T, xs[:T].reshape(T * B, -1), out=dW[: 2 * H])   # Σ da_rz [h; u]ᵀ
    np.matmul(da2[:, 2 * H:].T, rxs.reshape(T * B, -1), out=dW[2 * H:])         # Σ da_n [r·h; u]ᵀ
    return da, (dh,), dW


def gru_step(gx_t, state, W_hhT, activation=None):
    """One step for inference; W_hhT is W_hhᵀ (H, 3H), contiguous."""
    (h,) = state
    H = h.shape[-1]
    rz = sigmoid(gx_t[:, : 2 * H] + np.dot(h, W_hhT[:, : 2 * H]))
    r, z = rz[:, :H], rz[:, H:]
    n = np.tanh(gx_t[:, 2 * H:] + np.dot(r * h, W_hhT[:, 2 * H:]))
    return (n + z * (h - n),)


FORWARD = {"rnn": rnn_forward, "gru": gru_forward, "lstm": lstm_forward}
BACKWARD = {"rnn": rnn_backward, "gru": gru_backward, "lstm": lstm_backward}
STEP = {"rnn": rnn_step, "gru": gru_step, "lstm": lstm_step}


def zero_state(cell: str, batch: int, hidden: int, dtype) -> tuple:
    """The zero initial state of one layer."""
    return tuple(np.zeros((batch, hidden), dtype=dtype) for _ in range(NUM_STATES[cell]))
