"""charlm's arrays <-> torch tensors, and the device they live on.

charlm's parameters, gradients, optimizer slots and carried states are flat
dicts / lists of NumPy arrays keyed as in the checkpoint (`charlm.model`):
`layers.{l}.weight_ih` (G·H, In), `layers.{l}.weight_hh` (G·H, H),
`layers.{l}.bias` (G·H,), `head.weight` (V, H), `head.bias` (V,), gate
blocks in charlm's order (rnn: one; gru: r, z, n; lstm: i, f, g, o).
`Network.named()` gives each name its tensor of the same shape and gate
order, so a conversion is a copy, name by name.  (The concatenated,
feature-major W = [W_hh | W_ih | b] of charlm's NumPy loops is built from
these arrays inside `charlm.model` and never stored.)
"""

from __future__ import annotations

import numpy as np
import torch

from charlm.errors import CharlmError

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """auto (a CUDA device if there is one, else the CPU), cpu, cuda, or cuda:N; under torchrun, cuda is
    this process's GPU (LOCAL_RANK)."""
    if spec not in ("auto", "cpu", "cuda") and not (spec.startswith("cuda:") and spec[5:].isdigit()):
        raise CharlmError(f"--device must be auto, cpu, cuda or cuda:N, not {spec!r}")
    if spec == "cpu" or (spec == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise CharlmError(f"--device {spec}: this PyTorch sees no CUDA device (use --device cpu or auto)")
    index = int(spec[5:]) if spec.startswith("cuda:") else local_rank % torch.cuda.device_count()
    if index >= torch.cuda.device_count():
        raise CharlmError(f"--device {spec}: there are {torch.cuda.device_count()} CUDA devices (cuda:0 ...)")
    return torch.device("cuda", index)


def tensor(a: np.ndarray, device) -> torch.Tensor:
    """A copy of `a` on `device`, same dtype."""
    return torch.from_numpy(np.ascontiguousarray(a)).to(device, copy=True)


def array(t: torch.Tensor) -> np.ndarray:
    """A NumPy copy of `t`, same dtype."""
    return t.detach().cpu().numpy().copy()


def load_params(named: dict, params: dict) -> None:
    """Copy charlm's arrays into the network's tensors (`Network.named()`), checking every shape."""
    if set(named) != set(params):
        raise CharlmError("the parameters do not match the network: " + ", ".join(sorted(set(named) ^ set(params))))
    with torch.no_grad():
        for name, t in named.items():
            a = params[name]
            if tuple(a.shape) != tuple(t.shape):
                raise CharlmError(f"{name} has shape {a.shape}, the network {tuple(t.shape)}")
            t.copy_(torch.from_numpy(np.ascontiguousarray(a)))


def arrays(tensors: dict) -> dict:
    """A dict of tensors as NumPy arrays (other values, e.g. an optimizer's step count, as they are)."""
    return {k: array(v) if isinstance(v, torch.Tensor) else v for k, v in tensors.items()}


def tensors(values: dict, device) -> dict:
    """A dict of arrays as tensors on `device` (other values as they are)."""
    return {k: tensor(v, device) if isinstance(v, np.ndarray) else v for k, v in values.items()}


def state_tensors(state: list, device) -> list:
    """A carried state (per layer, a tuple of (B, H) arrays) as tensors."""
    return [tuple(tensor(s, device) for s in layer) for layer in state]


def state_arrays(state: list) -> list:
    return [tuple(array(s) for s in layer) for layer in state]
