"""Gradient clipping, the learning-rate schedule, and the optimizers.

Optimizers are written in order of increasing complexity.  Parameters,
gradients and optimizer state are flat dicts with the same dotted keys; the
state of an optimizer is `{"step": n, "<slot>.<param name>": array}` so it
can be saved in a checkpoint as it is.  Updates are in place.
"""

from __future__ import annotations

import math

import numpy as np


def global_norm(grads: dict) -> float:
    """‖g‖ over all gradients together: sqrt(Σ_k ‖g_k‖²), in float64."""
    return math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))


def clip_by_global_norm(grads: dict, max_norm: float) -> float:
    """If ‖g‖ > max_norm, rescale every gradient by max_norm/‖g‖ (in place).

    Returns the norm before clipping (NaN or Inf if a gradient is not finite).
    """
    norm = global_norm(grads)
    if max_norm > 0 and math.isfinite(norm) and norm > max_norm:
        scale = max_norm / norm
        for g in grads.values():
            g *= g.dtype.type(scale)
    return norm


def clip_by_value(grads: dict, limit: float) -> None:
    """Clip every gradient entry to [-limit, limit] (in place)."""
    for g in grads.values():
        np.clip(g, -limit, limit, out=g)


def learning_rate(cfg, progress: float, step: int) -> float:
    """The learning rate at `step` (0-based), `progress` ∈ [0, 1] of the budget.

    Linear warm-up over `warmup_steps`, then constant or cosine decay from
    lr to `min_lr_ratio`·lr at the end of the budget.
    """
    lr = cfg.lr
    if cfg.warmup_steps and step < cfg.warmup_steps:
        lr *= (step + 1) / cfg.warmup_steps
    if cfg.schedule == "cosine":
        p = min(max(progress, 0.0), 1.0)
        floor = cfg.min_lr_ratio
        lr *= floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * p))
    return lr


def is_decayed(name: str) -> bool:
    """Weight decay applies to weight matrices, not to biases."""
    return name.endswith("weight") or ".weight_" in name


SLOTS = {"sgd": ("v",), "adagrad": ("g2",), "adam": ("m", "v")}
AVERAGE = "avg"  # the slot of the weight average (see update_average)


def init_state(optimizer: str, params: dict) -> dict:
    """Zero moments for every parameter."""
    state = {"step": 0}
    for slot in SLOTS[optimizer]:
        for name, p in params.items():
            state[f"{slot}.{name}"] = np.zeros_like(p)
    return state


def keep_average(state: dict, params: dict, on: bool) -> None:
    """Give the state a weight average (starting at the weights) if `on` and it has none; drop it if not `on`."""
    keys = [k for k in state if k.startswith(f"{AVERAGE}.")]
    if on and not keys:
        state.update({f"{AVERAGE}.{name}": p.copy() for name, p in params.items()})
    elif not on:
        for k in keys:
            del state[k]


def average_decay(decay: float, step: int) -> float:
    """β of the weight average after `step` updates: min(decay, (1 + n)/(10 + n)).

    The warm-up term lets early averages follow the weights closely (no long
    memory of the random initial weights) and lengthens the memory to
    1/(1 - decay) steps as training goes on.
    """
    return min(decay, (1.0 + step) / (10.0 + step))


def update_average(state: dict, params: dict, decay: float) -> None:
    """Polyak averaging, exponential: avg ← β·avg + (1 − β)·θ, after each update (in place).

    The average of the weights is a better model than the weights themselves
    while the optimizer's noise is large (a high learning rate, a small
    corpus); validation, `sample` and `score` use it.
    """
    beta = average_decay(decay, state["step"])
    for name, p in params.items():
        avg = state[f"{AVERAGE}.{name}"]
        avg *= avg.dtype.type(beta)
        avg += np.multiply(p, avg.dtype.type(1.0 - beta))


def averaged(state: dict, params: dict) -> dict:
    """The averaged weights if the state keeps an average, else the weights."""
    if f"{AVERAGE}.{next(iter(params))}" not in state:
        return params
    return {name: state[f"{AVERAGE}.{name}"] for name in params}


def sgd(params, grads, state, lr, momentum=0.9, **_):
    """SGD with momentum: v = μ·v + g;  p -= lr·v."""
    for name, p in params.items():
        g, v = grads[name], state[f"v.{name}"]
        v *= momentum
        v += g
        p -= np.multiply(v, lr, out=g)  # g is free now: reuse it for lr·v


def adagrad(params, grads, state, lr, eps=1e-8, **_):
    """Adagrad (min-char-rnn's): G += g²;  p -= lr·g / (√G + ε)."""
    for name, p in params.items():
        g, g2 = grads[name], state[f"g2.{name}"]
        g2 += g * g
        denom = np.sqrt(g2)
        denom += eps
        g /= denom
        g *= lr
        p -= g


def adam_scales(t: int, lr: float, beta1: float, beta2: float, eps: float) -> tuple[float, float]:
    """Adam's bias corrections folded into its step: lr·√(1-β2ᵗ)/(1-β1ᵗ), and ε·√(1-β2ᵗ)."""
    c1 = 1.0 - beta1 ** t
    c2 = 1.0 - beta2 ** t
    return lr * math.sqrt(c2) / c1, eps * math.sqrt(c2)


def adam(params, grads, state, lr, beta1=0.9, beta2=0.999, eps=1e-8, **_):
    """Adam: m = β1·m + (1-β1)·g;  v = β2·v + (1-β2)·g²;
    p -= lr·m̂ / (√v̂ + ε) with the bias-corrected m̂ = m/(1-β1ᵗ), v̂ = v/(1-β2ᵗ).

    The update is written as lr·√(1-β2ᵗ)/(1-β1ᵗ) · m / (√v + ε·√(1-β2ᵗ)), which
    is the same number, and the gradient arrays serve as scratch space (no
    temporary arrays: a few in-place passes per parameter).
    """
    step_size, eps_hat = adam_scales(state["step"], lr, beta1, beta2, eps)
    for name, p in params.items():
        g, m, v = grads[name], state[f"m.{name}"], state[f"v.{name}"]
        m *= beta1
        m += np.multiply(g, 1.0 - beta1, out=g)           # g <- (1-β1)·g
        v *= beta2
        v += np.multiply(np.square(g, out=g), (1.0 - beta2) / (1.0 - beta1) ** 2, out=g)  # (1-β2)·g²
        denom = np.sqrt(v, out=g)
        denom += eps_hat
        p -= np.multiply(np.divide(m, denom, out=g), step_size, out=g)


UPDATES = {"sgd": sgd, "adagrad": adagrad, "adam": adam}


def apply_update(cfg, params: dict, grads: dict, state: dict, lr: float) -> None:
    """One optimizer step (in place), with decoupled weight decay.

    The gradients are consumed: their arrays are used as scratch space.
    """
    state["step"] += 1
    if cfg.weight_decay:
        for name, p in params.items():
            if is_decayed(name):
                p *= p.dtype.type(1.0 - lr * cfg.weight_decay)
    UPDATES[cfg.optimizer](params, grads, state, lr, momentum=cfg.momentum)
