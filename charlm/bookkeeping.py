"""What every training loop does around its steps, whichever engine computes them (NumPy, or PyTorch).

A loop (`charlm.train`, `charlm.torch_engine.train`) computes the loss and
the gradients and takes the optimizer step its own way; these functions
keep the run's state (`charlm.run.RunState`) and say what happened, the
same way for both: the automatic choices before the first step, a step
that is skipped, a validation, the events and the checkpoints.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from charlm.config import Config, auto_char_dropout, auto_dropout
from charlm.errors import TrainingDiverged
from charlm.run import Budget, RunState
from charlm.score import LN2
from charlm.validation import Validation, fit_combination, fit_ngram


def choose_dropout(cfg: Config, passes: Callable[[], float], on_event) -> None:
    """Resolve an automatic dropout (from how many `passes()` over the training split the budget allows, asked
    only then) and character dropout, and report the choice."""
    chosen = None
    if cfg.dropout is None:
        chosen = passes()
        cfg.dropout = auto_dropout(chosen)
    if cfg.char_dropout is None:   # auto: goes with the dropout
        cfg.char_dropout = auto_char_dropout(cfg.dropout)
    if chosen is not None:
        on_event("auto", {"dropout": cfg.dropout, "char_dropout": cfg.char_dropout, "passes": chosen})


def validation_ngram(cfg: Config, arch, corpus, extra_meta: dict):
    """The n-gram to save and its probabilities of the validation tokens (None, None without one); the
    n-gram's own validation figure goes into `extra_meta`.  (A bidirectional model has none during training:
    its n-grams are fitted at the end, with the combination, `combine`.)"""
    if not (cfg.ngram and len(corpus.val_ids)) or arch.bidirectional:
        return None, None
    ng, p_ngram = fit_ngram(cfg, arch, corpus)
    extra_meta["ngram_val_bpc"] = -float(np.log2(p_ngram).mean())   # the n-gram alone, on validation
    return ng, p_ngram


def record_validation(st: RunState, result: Validation, best_weights: Callable[[], dict], seconds: float) -> dict:
    """Keep a validation in the run's state (`best_weights()`: a copy, as NumPy arrays, of the weights validated,
    asked for when they are the best so far); the `eval` event."""
    val = result.nats
    st.last_val = val
    improved = st.best_val is None or val < st.best_val
    if result.mix_weight is not None:
        st.mix_weights = {**(st.mix_weights or {}), "last": result.mix_weight}
    if improved:
        st.best_val, st.best_step = val, st.step
        st.best_params = best_weights()
        if result.mix_weight is not None:
            st.mix_weights["best"] = result.mix_weight
    st.history.append({"step": st.step, "seconds": round(st.train_seconds, 3), "chars": st.chars_seen,
                       "train_bpc": None if st.last_loss is None else st.last_loss / LN2,
                       "val_bpc": val / LN2, "net_val_bpc": result.net_nats / LN2,
                       "mix_weight": result.mix_weight})
    return {"step": st.step, "val_nats": val, "val_bpc": val / LN2, "best": improved,
            "net_val_bpc": result.net_nats / LN2, "mix_weight": result.mix_weight, "seconds": seconds}


def record_kept(st: RunState, loss: float) -> None:
    """A step whose update was taken."""
    st.bad_streak = 0
    st.last_loss = loss


def record_skipped(st: RunState, cfg: Config, loss: float, norm: float, on_event) -> None:
    """A step with a non-finite loss or gradient, not taken; TrainingDiverged after `max_bad_steps` in a row."""
    st.skipped_steps += 1
    st.bad_streak += 1
    on_event("skipped", {"step": st.step, "loss": loss, "grad_norm": norm, "streak": st.bad_streak})
    if st.bad_streak >= cfg.max_bad_steps:
        raise TrainingDiverged(
            f"training diverged: {st.bad_streak} steps in a row had a non-finite loss or gradient "
            f"(at step {st.step}); try a lower --lr or --clip. Nothing non-finite was saved")


def update(opt, cfg: Config, params: dict, grads: dict, state: dict, lr: float) -> None:
    """The optimizer step of a finite loss and gradient: clipping by value, the update, the weight average.

    `opt` is the module of the engine's arrays: `charlm.optim` (NumPy) or
    `charlm.torch_engine.optim` (tensors), which offer the same functions.
    Raises TrainingDiverged if the weights overflowed (nothing is saved then).
    """
    if cfg.clip_value:
        opt.clip_by_value(grads, cfg.clip_value)
    opt.apply_update(cfg, params, grads, state, lr)
    if cfg.ema:
        opt.update_average(state, params, cfg.ema)
    if not math.isfinite(opt.global_norm(params)):
        raise TrainingDiverged("the weights overflowed to infinity (learning rate far too large?); nothing was "
                               "saved from this step on")


def record_step(st: RunState, budget: Budget, chars: int, seconds: float, loss: float, lr: float, norm: float,
                on_event) -> None:
    """Advance the run's counters past a step (taken or skipped) and report it."""
    st.chunk += 1
    st.step += 1
    st.chars_seen += chars
    st.train_seconds += seconds
    on_event("step", {"step": st.step, "loss": loss, "lr": lr, "grad_norm": norm, "seconds": seconds,
                      "chars": chars, "progress": budget.progress(st), "epoch": st.epoch,
                      "train_seconds": st.train_seconds})


def after_step(st: RunState, cfg: Config, budget: Budget, has_val: bool, run_eval, save_checkpoint, on_event) -> bool:
    """Validate and save when it is time; whether a validation ran."""
    evaluated = False
    if has_val and cfg.eval_every and st.step % cfg.eval_every == 0:
        run_eval()
        evaluated = True
    if cfg.save_every and st.step % cfg.save_every == 0 and not budget.done(st):
        save_checkpoint()
        on_event("saved", {"step": st.step})
    return evaluated


def finish(st: RunState, ended: str, has_val: bool, last_eval_step, run_eval, checkpoint, save, on_event,
           cfg: Config, arch, corpus):
    """The end of a run: a last validation if the weights moved since, the final checkpoint (with a
    bidirectional model's n-grams, fitted once training is over: `combine`), the `end` event."""
    finished = ended == "done" and has_val
    if finished and last_eval_step != st.step:
        run_eval()
    ckpt = checkpoint()
    combine(cfg, arch, corpus, ckpt, on_event, finished)
    save(ckpt)
    on_event("end", {"ended": ended, "step": st.step, "train_seconds": st.train_seconds,
                     "chars_seen": st.chars_seen, "checkpoint": ckpt})
    return ckpt, ended


def combine(cfg: Config, arch, corpus, ckpt, on_event, finished: bool) -> None:
    """A bidirectional model's n-grams and their weights (`charlm.combine`), fitted on the final checkpoint's
    weights ("last" and "best") and stored in it; `finished`: the budget was spent and there is a validation
    split.  (Part of `finish`, on either engine.)"""
    if not (arch.bidirectional and cfg.ngram and finished):
        return
    on_event("combine", {"order": cfg.ngram})
    comb, fitted, figures = fit_combination(cfg, arch, corpus, {w: ckpt.weights(w) for w in ("last", "best")})
    ckpt.ngram, ckpt.backward_ngram, ckpt.two_sided_ngram = comb.forward, comb.backward, comb.two_sided
    ckpt.combine_weights = fitted
    ckpt.meta.update(figures)
