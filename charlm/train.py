"""Training: the loop of truncated BPTT steps, as a library function.

`train()` never prints: it reports through an `on_event(kind, info)` callback
and writes checkpoints through a `save(checkpoint)` callback, so the CLI
decides how things look and where they go.  It stops when the budget (steps,
epochs, seconds) is spent or when `should_stop()` turns true, and always
returns a resumable checkpoint.

Everything a run depends on is in its checkpoint (`charlm.run`), so a
resumed run continues exactly: N steps in one go and N steps with an
interruption give bit-identical weights.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from charlm import data as batches
from charlm import bidirectional, finetune, model, optim
from charlm import bookkeeping as keep
from charlm.checkpoint import Checkpoint
from charlm.config import Config, auto_eval_every
from charlm.dataset import Corpus
from charlm.errors import ConfigError
from charlm.run import Budget, RunState, make_checkpoint, set_up
from charlm.validation import evaluate, evaluate_bidirectional
from charlm.workers import train as step_workers
from charlm.workers.process import usable_cores



def measure_speed(step: Callable[[], object], chars: int, clock) -> float:
    """Training characters per second of `step()` (the loss and gradients of `chars` characters),
    from the faster of two timed calls (after one untimed)."""
    step()
    best = math.inf
    for _ in range(2):
        t0 = clock()
        step()
        best = min(best, clock() - t0)
    return chars / max(best, 1e-9)


def expected_passes(budget: Budget, N: int, chars_per_step: int, speed: Callable[[], float] | None) -> float:
    """How many times the budget will read the N training tokens (the smaller of its limits)."""
    passes = math.inf
    if budget.total_steps:
        passes = budget.total_steps * chars_per_step / N
    if budget.max_time and speed is not None:
        passes = min(passes, speed() * budget.max_time / N)
    return passes


@np.errstate(over="ignore", invalid="ignore", divide="ignore")   # non-finite steps are caught and reported below
def train(cfg: Config, corpus: Corpus, *, resume: Checkpoint | None = None,
          save: Callable[[Checkpoint], None] = lambda c: None,
          on_event: Callable[[str, dict], None] = lambda kind, info: None,
          should_stop: Callable[[], bool] = lambda: False,
          clock: Callable[[], float] = time.perf_counter,
          init: finetune.Start | None = None) -> tuple[Checkpoint, str]:
    """Train (or continue training) a model; returns (checkpoint, how it ended).

    `init`: start a new run from a trained model's weights (`charlm.finetune`).

    How it ended: "done" (budget spent) or "interrupted" (should_stop()).
    Raises TrainingDiverged after `max_bad_steps` non-finite steps in a row;
    the weights are never updated with a non-finite gradient.
    """
    arch, st, plan, budget = set_up(cfg, corpus, resume, on_event, finetune.starter(init, cfg, corpus.vocab))
    B, T = cfg.batch_size, cfg.seq_len
    init_meta = finetune.meta_of(init, resume)
    dtype = np.dtype(cfg.dtype)
    workers = 1 if arch.bidirectional else resolve_workers(cfg, arch, B, dtype)   # (bidirectional: this process)
    hooks = Hooks(save, on_event, should_stop, clock)
    with step_workers.StepComputer(arch, dtype, B, T, workers,
                                   on_failure=lambda msg: on_event("workers_failed", {"error": msg})) as steps:
        return _loop(_Run(cfg, corpus, arch, st, budget, plan, steps, resumed=resume is not None,
                          init_meta=init_meta), hooks)


def resolve_workers(cfg: Config, arch, B: int, dtype) -> int:
    """The number of worker processes a step is shared by (1: this process alone); see `charlm.workers.train`."""
    if cfg.workers is None:
        return step_workers.auto_workers(arch, B, dtype.itemsize, usable_cores())
    if cfg.workers > 1 and os.name != "posix":
        raise ConfigError("--workers above 1 needs a POSIX system (Linux, macOS); use --workers 1")
    return min(cfg.workers, B)


@dataclass
class Hooks:
    """How `train` talks to its caller: it saves, reports, asks whether to stop, and reads the time through these."""

    save: Callable[[Checkpoint], None]
    on_event: Callable[[str, dict], None]
    should_stop: Callable[[], bool]
    clock: Callable[[], float]


@dataclass
class _Run:
    """A run once it is set up: what `_loop` reads and advances."""

    cfg: Config
    corpus: Corpus
    arch: model.Arch
    st: RunState
    budget: Budget
    plan: batches.BatchPlan
    steps: step_workers.StepComputer   # computes each step's loss and gradients (in workers, or here)
    resumed: bool
    init_meta: dict | None = None    # a fine-tuned run's base (meta.init_from)


def _loop(run: _Run, hooks: Hooks):
    """The loop of `train`, once the run is set up."""
    cfg, corpus, arch, st, budget, plan, engine = run.cfg, run.corpus, run.arch, run.st, run.budget, run.plan, run.steps
    save, on_event, should_stop, clock = hooks.save, hooks.on_event, hooks.should_stop, hooks.clock
    N = len(corpus.train_ids)
    B, T = cfg.batch_size, cfg.seq_len
    dtype = np.dtype(cfg.dtype)
    steps_per_pass = batches.BatchPlan(N, B, T, 0).steps
    if cfg.eval_every is None:
        cfg.eval_every = auto_eval_every(steps_per_pass)

    def passes() -> float:   # how many passes over the training split the budget allows (for auto dropout)
        x, y = batches.chunk(corpus.train_ids, plan, st.chunk)
        one_step = lambda: engine.loss_and_grads(st.params, arch, x, y, st.carry)
        if arch.bidirectional:   # its windows, read both ways
            one_step = lambda: bidirectional.train_step(st.params, arch, corpus.train_ids, plan.positions(st.chunk),
                                                        0.0, 0.0, None, dtype)
        speed = (lambda: measure_speed(one_step, x.size, clock)) if budget.max_time else None
        return expected_passes(budget, N, B * T, speed)

    keep.choose_dropout(cfg, passes, on_event)
    extra_meta = {"init_from": run.init_meta} if run.init_meta else {}
    ng, p_ngram = keep.validation_ngram(cfg, arch, corpus, extra_meta)   # (bidirectional: none until the end)
    on_event("start", {"arch": arch, "budget": budget, "batch_size": B, "seq_len": T, "step": st.step, "workers": engine.count,
                       "params": model.num_params(st.params), "train_tokens": N,
                       "val_tokens": len(corpus.val_ids)})

    def checkpoint() -> Checkpoint:   # meta.workers as it stands: a worker failure falls back to one process
        return make_checkpoint(cfg, corpus, st, {**extra_meta, "workers": engine.count}, ng=ng)

    def run_eval():
        t0 = clock()
        weights = optim.averaged(st.optim_state, st.params)  # the weight average, if kept
        if arch.bidirectional:   # windows of seq_len, as in training
            result = evaluate_bidirectional(weights, arch, corpus.val_ids, T)
        else:
            result = evaluate(weights, arch, corpus.val_ids, p_ngram)
        copy = lambda: {k: v.copy() for k, v in weights.items()}   # (the average is updated in place)
        on_event("eval", keep.record_validation(st, result, copy, clock() - t0))

    ended = "done"
    has_val = len(corpus.val_ids) > 0
    last_eval_step = st.step if run.resumed else None
    while not budget.done(st):
        if should_stop():
            ended = "interrupted"
            break
        if st.chunk >= plan.steps:  # a new epoch: new offset, zero state
            st.epoch += 1
            plan = batches.epoch_plan(N, B, T, st.rng)
            st.offset, st.chunk = plan.offset, 0
            st.carry = model.zero_state(arch, B, dtype)
        t0 = clock()
        lr = optim.learning_rate(cfg, budget.progress(st), st.step)
        if arch.bidirectional:   # the chunk's positions as windows, each its own sequence, no state carried
            loss, grads = bidirectional.train_step(st.params, arch, corpus.train_ids, plan.positions(st.chunk),
                                                   cfg.dropout, cfg.char_dropout, st.rng, dtype)
            final = st.carry
        else:
            x, y = batches.chunk(corpus.train_ids, plan, st.chunk)
            masks = model.dropout_masks(arch, T, B, cfg.dropout, st.rng, dtype)
            x = model.drop_characters(x, cfg.char_dropout, st.rng)
            loss, grads, final = engine.loss_and_grads(st.params, arch, x, y, st.carry, masks)
        norm = optim.clip_by_global_norm(grads, cfg.clip)
        if math.isfinite(loss) and math.isfinite(norm):
            keep.update(optim, cfg, st.params, grads, st.optim_state, lr)
            st.carry = final
            keep.record_kept(st, loss)
        else:
            st.carry = model.zero_state(arch, B, dtype)
            keep.record_skipped(st, cfg, loss, norm, on_event)
        keep.record_step(st, budget, B * T, clock() - t0, loss, lr, norm, on_event)
        if keep.after_step(st, cfg, budget, has_val, run_eval, lambda: save(checkpoint()), on_event):
            last_eval_step = st.step

    return keep.finish(st, ended, has_val, last_eval_step, run_eval, checkpoint, save, on_event, cfg, arch, corpus)
