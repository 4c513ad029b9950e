"""charlm.optim's formulas on torch tensors, in place: clipping, the updates, the weight average.

The optimizer state has charlm's keys (`{"step": n, "m.<param>": ..., "v.<param>": ..., "avg.<param>": ...}`),
so it converts to and from a checkpoint's `optim.*` arrays name by name.
The learning rate itself comes from `charlm.optim.learning_rate`.  Each
update is written in the same order of operations as charlm.optim's (see
there for the equations); only the reductions of the gradient norm are
summed in another order.
"""

from __future__ import annotations

import math

import torch

from charlm.optim import AVERAGE, adam_scales, average_decay, is_decayed


def global_norm(grads: dict) -> float:
    """sqrt(Σ_k ‖g_k‖²), summed in float64 (one transfer from the device)."""
    return math.sqrt(float(torch.stack([torch.sum(g.detach().double() ** 2) for g in grads.values()]).sum()))


def clip_by_global_norm(grads: dict, max_norm: float) -> float:
    norm = global_norm(grads)
    if max_norm > 0 and math.isfinite(norm) and norm > max_norm:
        for g in grads.values():
            g.mul_(max_norm / norm)
    return norm


def clip_by_value(grads: dict, limit: float) -> None:
    for g in grads.values():
        g.clamp_(-limit, limit)


@torch.no_grad()
def update_average(state: dict, params: dict, decay: float) -> None:
    """avg ← β·avg + (1 − β)·θ, β = charlm.optim.average_decay."""
    beta = average_decay(decay, state["step"])
    for name, p in params.items():
        avg = state[f"{AVERAGE}.{name}"]
        avg.mul_(beta).add_(p.detach() * (1.0 - beta))


def averaged(state: dict, params: dict) -> dict:
    if f"{AVERAGE}.{next(iter(params))}" not in state:
        return {k: p.detach() for k, p in params.items()}
    return {name: state[f"{AVERAGE}.{name}"] for name in params}


def sgd(params, grads, state, lr, momentum=0.9):
    for name, p in params.items():
        v = state[f"v.{name}"]
        v.mul_(momentum).add_(grads[name])
        p.sub_(v * lr)


def adagrad(params, grads, state, lr, eps=1e-8):
    for name, p in params.items():
        g, g2 = grads[name], state[f"g2.{name}"]
        g2.add_(g * g)
        p.sub_(g / (torch.sqrt(g2) + eps) * lr)


def adam(params, grads, state, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    step_size, eps_hat = adam_scales(state["step"], lr, beta1, beta2, eps)
    for name, p in params.items():
        g, m, v = grads[name], state[f"m.{name}"], state[f"v.{name}"]
        g1 = g * (1.0 - beta1)
        m.mul_(beta1).add_(g1)
        v.mul_(beta2).add_(g1.square() * ((1.0 - beta2) / (1.0 - beta1) ** 2))
        p.sub_(m / (torch.sqrt(v) + eps_hat) * step_size)


def apply_update(cfg, params: dict, grads: dict, state: dict, lr: float) -> None:
    """One step with decoupled weight decay (charlm.optim.apply_update), under no_grad."""
    with torch.no_grad():
        state["step"] += 1
        if cfg.weight_decay:
            for name, p in params.items():
                if is_decayed(name):
                    p.mul_(1.0 - lr * cfg.weight_decay)
        if cfg.optimizer == "adam":
            adam(params, grads, state, lr)
        elif cfg.optimizer == "sgd":
            sgd(params, grads, state, lr, cfg.momentum)
        else:
            adagrad(params, grads, state, lr)
