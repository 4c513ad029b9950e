"""Gradient checking: the gradients BPTT computes, against finite differences, in float64.

For each entry i of a parameter θ (or of an initial state), the two-sided
difference of the course notes,

    dθ_approx[i] = (J(θ + ε·e_i) − J(θ − ε·e_i)) / 2ε

where J is the loss summed over all T time steps and B sequences (summed,
not averaged, so that gradients are of order one), is compared with BPTT's
dθ over the whole array:

    difference = ‖dθ_approx − dθ‖ / (‖dθ_approx‖ + ‖dθ‖)

With ε = 1e-5 in float64 a correct backward pass gives about 1e-9 (the
truncation error ε², the round-off of J divided by ε); a wrong one gives
1e-3 or more.  Where an array's gradient is itself tiny (the lower layers
of a deep LSTM: vanishing gradients), the round-off dominates that ratio
however right the gradient is; so an array also passes when every entry's
error is within the round-off, ROUNDOFF·max(1, |J|)/ε (`Result.noise`).

The model is a small one with random weights (not the initial ones,
whose zero biases and orthogonal blocks would leave some paths without
gradient), random inputs and targets, and a random initial state; with
the state reset at <EOS>, every sequence has an <EOS> input after its
first step, so that the reset is on the path being checked.

Pure functions: nothing here prints; `charlm gradcheck` shows the results.
"""

from __future__ import annotations

import time

from dataclasses import dataclass

import numpy as np

from charlm.model import Arch, backward, cross_entropy, forward, init_params, zero_state
from charlm.vocab import EOS_ID

STATE_NAMES = ("h", "c")     # an LSTM's state is (h, c); the others' is (h,)
ROUNDOFF = 10 * np.finfo(np.float64).eps   # relative round-off allowed in J (a sum of T·B terms)


@dataclass(frozen=True)
class Problem:
    """A small model and a batch to differentiate the loss of."""

    arch: Arch
    params: dict          # name -> float64 array
    state: list           # per layer, a tuple of (B, H) float64 arrays
    x: np.ndarray         # (T, B) input ids
    y: np.ndarray         # (T, B) target ids


@dataclass(frozen=True)
class Result:
    """How one array's gradient compares."""

    name: str             # "layers.0.weight_hh", or "state.0.h" for layer 0's initial h
    shape: tuple
    checked: int          # entries perturbed
    difference: float     # ‖approx − bptt‖ / (‖approx‖ + ‖bptt‖), over the checked entries
    max_abs_error: float  # max |approx − bptt| over the checked entries
    noise: float = 0.0    # the round-off of a difference quotient: an error below it says nothing

    def ok(self, tolerance: float) -> bool:
        return self.difference <= tolerance or self.within_roundoff

    @property
    def within_roundoff(self) -> bool:
        return self.max_abs_error <= self.noise


def make_problem(arch: Arch, seq_len: int, batch_size: int, seed: int) -> Problem:
    rng = np.random.default_rng(seed)
    params = init_params(arch, rng, dtype="float64")
    for name in params:   # random weights, so that every path carries gradient
        params[name] = rng.standard_normal(params[name].shape) * 0.5
    state = [tuple(rng.standard_normal(s.shape) * 0.5 for s in layer)
             for layer in zero_state(arch, batch_size, np.float64)]
    x = rng.integers(0, arch.vocab_size, size=(seq_len, batch_size))
    y = rng.integers(0, arch.vocab_size, size=(seq_len, batch_size))
    if arch.reset_at_eos and seq_len > 1:   # an <EOS> input in every sequence, so that its state resets
        x[rng.integers(1, seq_len, size=batch_size), np.arange(batch_size)] = EOS_ID
    return Problem(arch, params, state, x, y)


def summed_loss(p: Problem) -> float:
    """J: the cross-entropy summed over every step and sequence."""
    logits, _, _ = forward(p.params, p.arch, p.x, p.state)
    loss, _, count = cross_entropy(logits, p.y)
    return float(loss * count)


def bptt_gradients(p: Problem) -> dict[str, np.ndarray]:
    """dJ/dθ for every parameter and initial state, by backpropagation through time."""
    logits, _, cache = forward(p.params, p.arch, p.x, p.state)
    _, dlogits, count = cross_entropy(logits, p.y)
    grads, dstate0 = backward(p.params, p.arch, dlogits * count, cache)
    for l, layer in enumerate(dstate0):
        for k, d in enumerate(layer):
            grads[f"state.{l}.{STATE_NAMES[k]}"] = d
    return grads


def arrays_of(p: Problem) -> dict[str, np.ndarray]:
    """The arrays J depends on, by the names `bptt_gradients` uses (the same objects: perturbing one changes J)."""
    arrays = dict(p.params)
    for l, layer in enumerate(p.state):
        for k, s in enumerate(layer):
            arrays[f"state.{l}.{STATE_NAMES[k]}"] = s
    return arrays


def finite_differences(J, array: np.ndarray, indices, eps: float) -> np.ndarray:
    """(J(θ + ε·e_i) − J(θ − ε·e_i)) / 2ε for each flat index i, perturbing `array` in place and restoring it."""
    flat = array.reshape(-1)              # a view: the perturbation reaches the model
    approx = np.empty(len(indices))
    for n, i in enumerate(indices):
        old = flat[i]
        flat[i] = old + eps
        plus = J()
        flat[i] = old - eps
        minus = J()
        flat[i] = old
        approx[n] = (plus - minus) / (2 * eps)
    return approx


def difference(approx: np.ndarray, exact: np.ndarray) -> float:
    """‖approx − exact‖ / (‖approx‖ + ‖exact‖), 0 when both are zero."""
    scale = np.linalg.norm(approx) + np.linalg.norm(exact)
    return float(np.linalg.norm(approx - exact) / scale) if scale > 0 else 0.0


def check(p: Problem, eps: float = 1e-5, entries: int = 0, seed: int = 0) -> list[Result]:
    """Compare BPTT with finite differences for every array; `entries` > 0 checks that many random entries of each."""
    grads = bptt_gradients(p)
    rng = np.random.default_rng(seed)
    J = lambda: summed_loss(p)
    noise = ROUNDOFF * max(1.0, abs(J())) / eps
    results = []
    for name, array in arrays_of(p).items():
        n = array.size
        indices = np.arange(n) if not entries or entries >= n else np.sort(rng.choice(n, entries, replace=False))
        approx = finite_differences(J, array, indices, eps)
        exact = grads[name].reshape(-1)[indices]
        results.append(Result(name, array.shape, len(indices), difference(approx, exact),
                              float(np.max(np.abs(approx - exact))), noise))
    return results


def gradcheck_json(reports: list[tuple[Arch, list[Result]]], tolerance: float, **settings) -> dict:
    """`charlm gradcheck --json`: the settings, then per cell and array how BPTT compares."""
    return {
        **settings, "tolerance": tolerance,
        "ok": all(r.ok(tolerance) for _, results in reports for r in results),
        "largest_difference": max(r.difference for _, results in reports for r in results),
        "cells": [{"cell": a.cell, "num_layers": a.num_layers, "hidden_size": a.hidden_size,
                   "vocab_size": a.vocab_size, "activation": a.activation,
                   "line_state": "reset" if a.reset_at_eos else "carry",
                   "ok": all(r.ok(tolerance) for r in results),
                   "arrays": [{"name": r.name, "shape": list(r.shape), "checked": r.checked,
                               "difference": r.difference, "max_abs_error": r.max_abs_error,
                               "roundoff": r.noise, "ok": r.ok(tolerance)} for r in results]}
                  for a, results in reports],
    }


SLOW_SECONDS = 5   # a check expected to take longer is announced (with how to shorten it)


def _seconds(run, tries: int = 3) -> float:
    """The fastest of a few timed calls: one call on a busy machine can take many times its usual time."""
    best = float("inf")
    for _ in range(tries):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return best


def check_cells(cells, num_layers: int, hidden_size: int, activation: str, reset_at_eos: bool, vocab_size: int,
                seq_len: int, batch_size: int, seed: int, eps: float = 1e-5, entries: int = 0,
                on_slow=lambda message: None) -> list[tuple[Arch, list[Result]]]:
    """`check` for a small random model of each cell (the activation applies to the rnn only).

    `on_slow(message)` hears, before it starts, of a check that will take
    more than SLOW_SECONDS (two forward passes per perturbed entry).
    """
    reports = []
    for c in cells:
        arch = Arch(c, vocab_size, hidden_size, num_layers, activation if c == "rnn" else "tanh", reset_at_eos)
        problem = make_problem(arch, seq_len, batch_size, seed)
        perturbed = sum(a.size if not entries else min(entries, a.size) for a in arrays_of(problem).values())
        expected = 2 * perturbed * _seconds(lambda: summed_loss(problem))
        if expected > SLOW_SECONDS:
            on_slow(f"{c}: {perturbed:,} entries to perturb, two forward passes each: about {expected:.0f} s "
                    "(--entries N checks N of each array)")
        reports.append((arch, check(problem, eps, entries, seed)))
    return reports
