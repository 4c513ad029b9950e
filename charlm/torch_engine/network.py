"""charlm's stacked network in PyTorch: the same equations as `charlm.model`, with autograd for BPTT.

    Network(arch, dtype, device)
    net(x, state, masks=None, keep=None) -> logits (T, B, V), final state

(`Stack` is the same without the head: it returns the top layer's
outputs; the bidirectional model, `torch_engine.bidirectional`, has two.)

x (T, B) token ids (int64 tensor), state a list (one per layer) of tuples
of (B, H) tensors -- `(h,)` for rnn and gru, `(h, c)` for lstm -- held by
the caller (never module buffers: under DistributedDataParallel a buffer
would be overwritten by rank 0's on every forward).  masks (optional) a
list of (T, B, H) inverted-dropout masks, one per layer, that multiply
that layer's output (the input of the layer above, or of the head), as
in charlm.  keep (optional) a `Resets`: where lines restart.

The layers, with charlm's parameters (`layers.{l}.weight_ih` (G·H, In),
`weight_hh` (G·H, H), `bias` (G·H,), `head.weight`, `head.bias`):

- rnn, lstm: one single-layer `nn.RNN` (tanh or relu) / `nn.LSTM` per
  layer, whose equations are charlm's (LSTM gate blocks i, f, g, o in
  both).  charlm has one bias per layer, PyTorch two: `bias_ih_l0` is
  charlm's bias and `bias_hh_l0` stays zero and frozen.  On a GPU these
  run on cuDNN.
- gru: charlm's GRU (Cho et al. 2014) applies the reset gate to h<t-1>
  *before* the matmul, `n = tanh(W_in u + W_hn (r·h<t-1>) + b_n)`;
  `nn.GRU` applies it after (`r·(W_hn h<t-1> + b_hn)`), so it is a
  different model and is never used.  The GRU is a loop over time
  (`GRULoop`, its BPTT written out rather than recorded by autograd):
      [r z] = σ(W_ih,rz u<t> + W_hh,rz h<t-1> + b_rz)
      n     = tanh(W_ih,n u<t> + W_hh,n (r·h<t-1>) + b_n)
      h<t>  = (1 - z)·n + z·h<t-1>

Layer 0 reads one-hot vectors of the input ids (exact: the matmul picks
one column).  Line resets: where the input is <EOS> and lines are their
own sequences, the state of that row is taken as zero before the step
(the gradient stops there too).  `nn.RNN`/`nn.LSTM` cannot reset inside a
call, so a layer is run in stretches between the steps where some row
restarts, its state multiplied by the keep mask at each such step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from charlm.cells import NUM_STATES
from charlm.model import Arch
from charlm.vocab import EOS_ID


@dataclass
class Resets:
    """Where rows restart: keep (T, B, 1) of 0/1 and the steps at which any row does."""

    keep: torch.Tensor
    steps: list


def resets(arch: Arch, x: np.ndarray, dtype, device) -> Resets | None:
    """The line resets of ids `x` (T, B), NumPy, or None when lines carry their state (charlm.model.state_keep)."""
    if not arch.reset_at_eos:
        return None
    eos = x == EOS_ID
    keep = torch.as_tensor(~eos, device=device).to(dtype).unsqueeze(-1)
    return Resets(keep, [int(t) for t in np.flatnonzero(eos.any(axis=1))])


class SeedGRU(nn.Module):
    """One GRU layer in charlm's (seed) form, its parameters named as charlm's."""

    def __init__(self, inputs: int, hidden: int, dtype, device):
        super().__init__()
        G = 3 * hidden
        self.weight_ih = nn.Parameter(torch.zeros(G, inputs, dtype=dtype, device=device))
        self.weight_hh = nn.Parameter(torch.zeros(G, hidden, dtype=dtype, device=device))
        self.bias = nn.Parameter(torch.zeros(G, dtype=dtype, device=device))

    def forward(self, gx: torch.Tensor, state: tuple, res: Resets | None) -> tuple:
        """gx (T, B, 3H) = W_ih u<t> + b for every step -> hs (T, B, H), (h<T>,)."""
        hs = GRULoop.apply(gx, state[0], self.weight_hh, None if res is None else res.keep)
        return hs, (hs[-1],)


class GRULoop(torch.autograd.Function):
    """The seed-form GRU over T steps with its BPTT written out (as charlm.cells.gru_backward), batch-major.

    Autograd through a Python loop of small operations records and replays
    a dozen nodes per step; here the forward keeps r, z, n and h<t-1> of
    every step and the backward is one loop of the local derivatives, with
    the weight gradients as two matmuls over all steps after it.
    """

    @staticmethod
    def forward(ctx, gx, h0, W_hh, keep):
        T, B, G = gx.shape
        H = G // 3
        W_rzT, W_nT = W_hh[: 2 * H].t(), W_hh[2 * H:].t()
        hs = gx.new_empty((T, B, H))
        saved = gx.new_empty((4, T, B, H))           # h<t-1> (after a reset), r, z, n
        h = h0
        for t in range(T):
            if keep is not None:
                h = h * keep[t]
            saved[0, t] = h
            rz = torch.sigmoid(torch.addmm(gx[t, :, : 2 * H], h, W_rzT))
            r, z = rz[:, :H], rz[:, H:]
            n = torch.tanh(torch.addmm(gx[t, :, 2 * H:], r * h, W_nT))
            saved[1, t], saved[2, t], saved[3, t] = r, z, n
            h = torch.addcmul(n, z, h - n, out=hs[t])      # h = n + z·(h<t-1> - n)
        ctx.save_for_backward(saved, W_hh, keep)
        return hs

    @staticmethod
    def backward(ctx, dhs):
        saved, W_hh, keep = ctx.saved_tensors
        T, B, H = saved.shape[1:]
        W_rz, W_n = W_hh[: 2 * H], W_hh[2 * H:]
        h_prev, r, z, n = saved[0], saved[1], saved[2], saved[3]
        da = dhs.new_empty((T, B, 3 * H))
        drh = dhs.new_empty((T, B, H))                # d(r·h<t-1>)
        dh = torch.zeros_like(dhs[0])
        for t in reversed(range(T)):
            dh = dh + dhs[t]                                          # dh<t>
            dn = dh * (1 - z[t])
            da_n = da[t, :, 2 * H:]
            torch.mul(dn, 1 - n[t] * n[t], out=da_n)                 # dh·(1 - z)·(1 - n²)
            torch.mul(dh * (h_prev[t] - n[t]), z[t] * (1 - z[t]), out=da[t, :, H:2 * H])
            torch.mm(da_n, W_n[:, :H], out=drh[t])                    # W_hnᵀ da_n
            torch.mul(drh[t] * h_prev[t], r[t] * (1 - r[t]), out=da[t, :, :H])
            dh = dh * z[t] + drh[t] * r[t] + da[t, :, : 2 * H] @ W_rz[:, :H]
            if keep is not None:
                dh = dh * keep[t]
        dW = torch.cat([da[:, :, : 2 * H].reshape(-1, 2 * H).t() @ h_prev.reshape(-1, H),
                        da[:, :, 2 * H:].reshape(-1, H).t() @ (r * h_prev).reshape(-1, H)])
        return da, dh, dW, None


def _recurrent(arch: Arch, inputs: int, dtype, device) -> nn.Module:
    H = arch.hidden_size
    if arch.cell == "gru":
        return SeedGRU(inputs, H, dtype, device)
    if arch.cell == "lstm":
        layer = nn.LSTM(inputs, H, num_layers=1, bias=True, dtype=dtype, device=device)
    else:
        layer = nn.RNN(inputs, H, num_layers=1, nonlinearity=arch.activation, bias=True, dtype=dtype, device=device)
    layer.bias_hh_l0.requires_grad_(False)      # charlm has one bias: bias_ih_l0; this one stays 0
    with torch.no_grad():
        layer.bias_hh_l0.zero_()
    return layer


class Stack(nn.Module):
    """The recurrent layers of `arch`, without a head: ids (T, B) -> the top layer's outputs (T, B, H)."""

    def __init__(self, arch: Arch, dtype=torch.float32, device="cpu"):
        super().__init__()
        self.arch, self.dtype = arch, dtype
        V, H = arch.vocab_size, arch.hidden_size
        self.layers = nn.ModuleList([_recurrent(arch, V if l == 0 else H, dtype, device)
                                     for l in range(arch.num_layers)])

    def named(self, prefix: str = "") -> dict:
        """charlm's parameter names (`{prefix}layers.{l}.*`) -> this stack's tensors (charlm's shapes)."""
        out = {}
        for l, layer in enumerate(self.layers):
            if isinstance(layer, SeedGRU):
                w_ih, w_hh, b = layer.weight_ih, layer.weight_hh, layer.bias
            else:
                w_ih, w_hh, b = layer.weight_ih_l0, layer.weight_hh_l0, layer.bias_ih_l0
            key = f"{prefix}layers.{l}."
            out[key + "weight_ih"], out[key + "weight_hh"], out[key + "bias"] = w_ih, w_hh, b
        return out

    def forward(self, x: torch.Tensor, state: list, masks: list | None = None, keep: Resets | None = None):
        """The top layer's outputs (T, B, H), after its dropout mask, and the final state."""
        inp = nn.functional.one_hot(x, self.arch.vocab_size).to(self.dtype)
        final = []
        for l, layer in enumerate(self.layers):
            if isinstance(layer, SeedGRU):
                gx = torch.nn.functional.linear(inp, layer.weight_ih, layer.bias)
                out, s = layer(gx, state[l], keep)
            else:
                out, s = _run_module(layer, inp, state[l], keep)
            final.append(s)
            inp = out if masks is None else out * masks[l]
        return inp, final


class Network(Stack):
    """The stack of `arch` with its head (see the module docstring): ids -> logits (T, B, V), final state."""

    def __init__(self, arch: Arch, dtype=torch.float32, device="cpu"):
        super().__init__(arch, dtype, device)
        self.head = nn.Linear(arch.hidden_size, arch.vocab_size, dtype=dtype, device=device)

    def named(self) -> dict:
        """charlm's parameter names -> this network's tensors (the same arrays, charlm's shapes)."""
        return {**super().named(), "head.weight": self.head.weight, "head.bias": self.head.bias}

    def forward(self, x: torch.Tensor, state: list, masks: list | None = None, keep: Resets | None = None):
        top, final = super().forward(x, state, masks, keep)
        return self.head(top), final


def _run_module(layer: nn.Module, inp: torch.Tensor, state: tuple, res: Resets | None):
    """An nn.RNN / nn.LSTM layer over (T, B, In), in stretches between the steps where rows restart."""
    state = tuple(s.unsqueeze(0) for s in state)               # (1, B, H): PyTorch's (layers, B, H)
    restarts = set(res.steps) if res is not None else set()
    bounds = [0] + sorted(restarts - {0}) + [inp.shape[0]]
    outs = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        if a in restarts:
            state = tuple(s * res.keep[a] for s in state)
        out, state = layer(inp[a:b], state[0] if len(state) == 1 else state)
        state = state if isinstance(state, tuple) else (state,)
        outs.append(out)
    return (outs[0] if len(outs) == 1 else torch.cat(outs)), tuple(s.squeeze(0) for s in state)


def zero_state(arch: Arch, batch: int, dtype, device) -> list:
    """Zero states of every layer, (B, H) tensors."""
    n = NUM_STATES[arch.cell]
    return [tuple(torch.zeros(batch, arch.hidden_size, dtype=dtype, device=device) for _ in range(n))
            for _ in range(arch.num_layers)]


def detached(state: list) -> list:
    """The state without its graph (truncated BPTT carries values, not gradients)."""
    return [tuple(s.detach() for s in layer) for layer in state]
