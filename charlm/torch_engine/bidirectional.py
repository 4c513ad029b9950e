"""The bidirectional model (`charlm.bidirectional`) on the torch engine: its training step's loss and gradients.

    BiNetwork(arch, dtype, device)
    net(x_f, x_b, masks=None, keep_f=None, keep_b=None) -> logits (T, B, V)

Two `network.Stack`s, each exactly charlm's stack: the forward one reads
x_f = <EOS>, x<1>, …, x<T-1> and has the keys `layers.{l}.*`, the backward
one reads x_b = <EOS>, x<T>, …, x<2> (the window turned around, shifted)
and has the keys `backward.layers.{l}.*` (`model.BACKWARD_PREFIX`).  The
backward stack's outputs are turned back to the forward order and

    ŷ<t> = softmax(W_y [a_f<t>; a_b<t>] + b_y)       W_y (V, 2H)

Both stacks start from the zero state (windows are independent); with
line resets each stack's state is zeroed where its input is <EOS>
(`network.resets`).  masks: 2L inverted-dropout masks (T, B, H), the
forward stack's then the backward stack's, each in its stack's reading
order (as `charlm.model.dropout_masks`).  Training windows are full
(T, B), so "turned around" is a flip of the time axis
(`charlm.bidirectional.reading_order` without lengths).

The loss is the mean cross-entropy over the counted positions
(`charlm.bidirectional.window_mask`: for items, the characters of the
lines that lie whole in their window); autograd gives the gradients.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from charlm.bidirectional import shifted
from charlm.model import BACKWARD_PREFIX, Arch
from charlm.torch_engine import network


class BiNetwork(nn.Module):
    """A forward and a backward stack of `arch` and one head over both (see the module docstring)."""

    def __init__(self, arch: Arch, dtype=torch.float32, device="cpu"):
        super().__init__()
        self.arch = arch
        self.forward_stack = network.Stack(arch, dtype, device)
        self.backward_stack = network.Stack(arch, dtype, device)
        self.head = nn.Linear(2 * arch.hidden_size, arch.vocab_size, dtype=dtype, device=device)

    def named(self) -> dict:
        """charlm's parameter names (`model.param_shapes` of a bidirectional arch) -> this network's tensors."""
        return {**self.forward_stack.named(), **self.backward_stack.named(BACKWARD_PREFIX),
                "head.weight": self.head.weight, "head.bias": self.head.bias}

    def forward(self, x_f: torch.Tensor, x_b: torch.Tensor, masks: list | None = None,
                keep_f: network.Resets | None = None, keep_b: network.Resets | None = None) -> torch.Tensor:
        L, B = self.arch.num_layers, x_f.shape[1]
        m_f, m_b = (None, None) if masks is None else (masks[:L], masks[L:])
        dtype, device = self.head.weight.dtype, self.head.weight.device
        top_f, _ = self.forward_stack(x_f, network.zero_state(self.arch, B, dtype, device), m_f, keep_f)
        top_b, _ = self.backward_stack(x_b, network.zero_state(self.arch, B, dtype, device), m_b, keep_b)
        return self.head(torch.cat((top_f, top_b.flip(0)), dim=-1))     # [a_f; a_b] in the forward order


def inputs(arch: Arch, seq: np.ndarray, dtype, device) -> tuple:
    """What the two stacks read of windows `seq` (T, B) ids: (x_f, x_b, keep_f, keep_b), the arguments of BiNetwork."""
    x_f, x_b = shifted(seq), shifted(seq[::-1])
    as_ids = lambda x: torch.as_tensor(np.ascontiguousarray(x), dtype=torch.long, device=device)
    return (as_ids(x_f), as_ids(x_b),
            network.resets(arch, x_f, dtype, device), network.resets(arch, x_b, dtype, device))


def counted_loss(logits: torch.Tensor, y: np.ndarray, mask: np.ndarray | None, denominator: float) -> torch.Tensor:
    """Σ cross-entropy over the counted positions (mask 1; all when None) of targets `y` (T, B), / denominator."""
    yt = torch.as_tensor(np.ascontiguousarray(y), dtype=torch.long, device=logits.device)
    nll = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), yt.reshape(-1), reduction="none")
    if mask is not None:
        nll = nll * torch.as_tensor(np.ascontiguousarray(mask), device=logits.device).reshape(-1).to(nll.dtype)
    return nll.sum() / denominator


def count(y: np.ndarray, mask: np.ndarray | None) -> float:
    """The number of counted positions of a batch (at least 1), as `charlm.loss.cross_entropy` divides by."""
    return float(y.size) if mask is None else max(float(mask.sum()), 1.0)


def window_loss(net: nn.Module, arch: Arch, seq: np.ndarray, y: np.ndarray, mask: np.ndarray | None,
                masks: list | None, denominator: float, dtype, device) -> torch.Tensor:
    """The loss of windows read as `seq` (T, B) with targets `y` and loss mask `mask` (`window_batch`):
    Σ over the counted positions / denominator (`count(y, mask)` for the mean), with its graph."""
    x_f, x_b, keep_f, keep_b = inputs(arch, seq, dtype, device)
    return counted_loss(net(x_f, x_b, masks, keep_f, keep_b), y, mask, denominator)
