"""A training run's state: what changes while training and is saved to resume it, and its budget.

Everything a run depends on is in its checkpoint (weights, optimizer
moments and step, random-generator state, data position and offset, carried
hidden state, clock, best validation weights), so a resumed run continues
exactly.  `check_resume` refuses options that contradict the saved run and
says which allowed options changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from charlm import data as batches
from charlm import model, ngram, optim
from charlm.checkpoint import Checkpoint, arch_of
from charlm.config import Config
from charlm.dataset import Corpus
from charlm.errors import CharlmError, ConfigError
from charlm.score import LN2

# options that define the run; resuming with a different value is refused
FIXED_OPTIONS = ("cell", "hidden_size", "num_layers", "activation", "dtype", "line_state", "seq_len", "batch_size",
                 "val_fraction", "min_count", "max_size", "optimizer", "seed", "encoding", "errors", "ngram",
                 "bidirectional")


BUDGET = {"steps", "epochs", "max_time"}   # the run's totals; whichever is reached first ends it


def check_resume(cfg: Config, ckpt: Checkpoint, corpus: Corpus, given: set) -> list[str]:
    """Refuse options that contradict the checkpoint; describe allowed changes."""
    old = ckpt.config
    for name in FIXED_OPTIONS:
        if getattr(cfg, name) != getattr(old, name):
            raise ConfigError(
                f"cannot resume with --{name.replace('_', '-')} {_shown(getattr(cfg, name))}: the checkpoint was "
                f"trained with {_shown(getattr(old, name))} (start a new run with another -c PATH)")
    if corpus.vocab.tokens != ckpt.vocab.tokens:
        raise ConfigError("cannot resume with another vocabulary: the corpus or --vocab differs from the checkpoint's")
    old_corpus = ckpt.meta.get("corpus")
    old_corpus = old_corpus if isinstance(old_corpus, dict) else {}  # meta is free-form JSON in the file
    old_fp = old_corpus.get("fingerprint")
    if old_fp and old_fp != corpus.info["fingerprint"]:
        raise ConfigError("cannot resume on another corpus: its contents differ from the checkpoint's "
                          f"({old_corpus.get('name')})")
    done = ckpt.train_state["step"]
    if "steps" in given and cfg.steps is not None and cfg.steps <= done:
        raise ConfigError(f"the run is already at step {done:,}: --steps counts the run's total, so give more than {done}")
    changes = []
    if BUDGET & given:   # a budget given on resume replaces the saved one (whose limits would still apply)
        for name in sorted(BUDGET - given):
            if getattr(cfg, name) is not None:
                changes.append(f"{name.replace('_', '-')}: {_shown(getattr(cfg, name))} -> none (the budget given replaces it)")
                setattr(cfg, name, None)
    for name in ("steps", "epochs", "max_time", "lr", "eval_every", "save_every", "clip", "clip_value",
                 "weight_decay", "dropout", "char_dropout", "ema", "schedule", "warmup_steps", "min_lr_ratio", "momentum", "max_bad_steps"):
        if getattr(cfg, name) != getattr(old, name):
            if name in given:
                changes.append(f"{name.replace('_', '-')}: {_shown(getattr(old, name))} -> {_shown(getattr(cfg, name))}")
            elif name in BUDGET and BUDGET & given:
                pass                      # cleared above
            else:
                setattr(cfg, name, getattr(old, name))
    return changes


def _shown(value) -> str:
    """An option's value in a message (None: not set)."""
    return "none" if value is None else str(value)


@dataclass
class RunState:
    """Everything that changes during a run (and is saved to resume it)."""

    params: dict
    optim_state: dict
    rng: np.random.Generator
    carry: list
    step: int = 0
    epoch: int = 0
    chunk: int = 0
    offset: int = 0
    train_seconds: float = 0.0
    chars_seen: int = 0
    skipped_steps: int = 0
    bad_streak: int = 0
    best_val: float | None = None   # nats per token
    best_step: int | None = None
    best_params: dict | None = None
    mix_weights: dict | None = None   # "last"/"best": the network's share in the interpolation with the n-gram
    last_loss: float | None = None
    last_val: float | None = None
    history: list | None = None

    def to_json(self) -> dict:
        return {
            "step": self.step, "epoch": self.epoch, "chunk": self.chunk, "offset": self.offset,
            "train_seconds": self.train_seconds, "chars_seen": self.chars_seen,
            "skipped_steps": self.skipped_steps, "bad_streak": self.bad_streak,
            "best_val": self.best_val, "best_step": self.best_step,
            "last_loss": self.last_loss, "last_val": self.last_val,
            "rng": self.rng.bit_generator.state, "history": self.history or [],
        }


def new_run(cfg: Config, vocab_size: int, num_predictions: int, batch_size: int, seq_len: int) -> RunState:
    rng = np.random.default_rng(cfg.seed)
    arch = arch_of(cfg, vocab_size)
    params = model.init_params(arch, rng, cfg.dtype)
    plan = batches.epoch_plan(num_predictions, batch_size, seq_len, rng)
    return RunState(params=params, optim_state=optim.init_state(cfg.optimizer, params), rng=rng,
                    carry=model.zero_state(arch, batch_size, np.dtype(cfg.dtype)), offset=plan.offset, history=[])


def resume_run(ckpt: Checkpoint, batch_size: int) -> RunState:
    ts = ckpt.train_state
    try:
        rng = np.random.default_rng()
        rng.bit_generator.state = ts["rng"]
        st = RunState(
            params=ckpt.params, optim_state=ckpt.optim_state, rng=rng,
            carry=ckpt.carry or model.zero_state(ckpt.arch, batch_size, np.dtype(ckpt.config.dtype)),
            step=int(ts["step"]), epoch=int(ts["epoch"]), chunk=int(ts["chunk"]), offset=int(ts["offset"]),
            train_seconds=float(ts["train_seconds"]), chars_seen=int(ts["chars_seen"]),
            skipped_steps=int(ts["skipped_steps"]), bad_streak=int(ts["bad_streak"]),
            best_val=ts.get("best_val"), best_step=ts.get("best_step"), best_params=ckpt.best_params,
            mix_weights=dict(ckpt.mix_weights),
            last_loss=ts.get("last_loss"), last_val=ts.get("last_val"), history=list(ts.get("history", [])),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise CharlmError(f"the checkpoint's resume state is damaged ({e}); start a new run") from None
    if st.carry[0][0].shape[0] != batch_size:
        raise CharlmError("the checkpoint's carried state does not match the batch size")
    counters = {"step": st.step, "epoch": st.epoch, "chunk": st.chunk, "offset": st.offset,
                "chars_seen": st.chars_seen, "skipped_steps": st.skipped_steps, "bad_streak": st.bad_streak}
    bad = [k for k, v in counters.items() if v < 0] + (["offset"] if st.offset >= ckpt.config.seq_len else [])
    if bad or not math.isfinite(st.train_seconds) or st.train_seconds < 0:
        raise CharlmError(f"the checkpoint's resume state is damaged ({(bad or ['train_seconds'])[0]} out of range); "
                          "start a new run")
    return st


def make_checkpoint(cfg: Config, corpus: Corpus, st: RunState, extra_meta: dict | None = None,
                    ng: ngram.NGram | None = None) -> Checkpoint:
    meta = {
        "corpus": corpus.info,
        "steps": st.step,
        "train_seconds": round(st.train_seconds, 3),
        "chars_seen": st.chars_seen,
        "skipped_steps": st.skipped_steps,
        "best_val_bpc": None if st.best_val is None else st.best_val / LN2,
        "best_step": st.best_step,
        "last_val_bpc": None if st.last_val is None else st.last_val / LN2,
        "last_train_bpc": None if st.last_loss is None else st.last_loss / LN2,
    }
    meta.update(extra_meta or {})
    weights = st.mix_weights or {}
    return Checkpoint(cfg, corpus.vocab, st.params, st.to_json(), st.optim_state, st.carry,
                      st.best_params, meta, ngram=ng if weights else None, mix_weights=dict(weights) if ng else {})


@dataclass
class Budget:
    total_steps: int | None
    max_time: float | None

    def progress(self, st: RunState) -> float:
        p = 0.0
        if self.total_steps:
            p = max(p, st.step / self.total_steps)
        if self.max_time:
            p = max(p, st.train_seconds / self.max_time)
        return p

    def done(self, st: RunState) -> bool:
        return (self.total_steps is not None and st.step >= self.total_steps) or \
            (self.max_time is not None and st.train_seconds >= self.max_time)


def make_budget(cfg: Config, steps_per_epoch: int) -> Budget:
    total = cfg.steps
    if cfg.epochs is not None:
        by_epochs = max(1, math.ceil(cfg.epochs * steps_per_epoch))
        total = by_epochs if total is None else min(total, by_epochs)
    return Budget(total, cfg.max_time)


def check_resumed_budget(cfg: Config, old_cfg: Config, budget: Budget, old_budget: Budget, st: RunState,
                          on_event) -> None:
    """Refuse a resumed run with nothing left to do; report a learning rate that the new budget moves."""
    if budget.done(st):
        by_epochs = f" (--epochs {cfg.epochs:g})" if cfg.epochs is not None else ""
        spent = [f"{budget.total_steps:,} steps{by_epochs}" if budget.total_steps is not None else "",
                 f"{budget.max_time:g} s of training" if budget.max_time is not None else ""]
        raise ConfigError(f"the run has already used its budget ({' or '.join(p for p in spent if p)}; it is at step "
                          f"{st.step:,} after {st.train_seconds:.0f} s): --steps, --epochs and --max-time count "
                          "the run's total, so give one that goes beyond that")
    old_lr = optim.learning_rate(old_cfg, old_budget.progress(st), st.step)
    moved = optim.learning_rate(old_cfg, budget.progress(st), st.step)    # the budget's doing alone
    if cfg.schedule == old_cfg.schedule and not math.isclose(old_lr, moved, rel_tol=0.01):
        new_lr = optim.learning_rate(cfg, budget.progress(st), st.step)
        on_event("schedule", {"step": st.step, "old_lr": old_lr, "new_lr": new_lr, "schedule": cfg.schedule})


def set_up(cfg: Config, corpus: Corpus, resume: Checkpoint | None, on_event, start=None):
    """A run ready for its first step, whichever engine takes it: (arch, state, batch plan, budget).

    Resolves the automatic line state, fits the batch to a small corpus, and
    starts a new run or picks up the saved one; `start(state)` may replace a
    new run's weights and optimizer state (fine-tuning) before the weight
    average is kept.
    """
    if cfg.line_state == "auto":  # a list of items (no blank lines): each line is its own sequence
        cfg.line_state = "reset" if corpus.info.get("line_items") else "carry"
        on_event("line_state", {"line_state": cfg.line_state})
    arch = arch_of(cfg, len(corpus.vocab))
    N = len(corpus.train_ids)
    B, T = batches.fit_batch(N, cfg.batch_size, cfg.seq_len)
    if (B, T) != (cfg.batch_size, cfg.seq_len):
        if resume is not None:
            raise CharlmError("the corpus is too small for the checkpoint's batch size and sequence length")
        on_event("adapted", {"batch_size": B, "seq_len": T, "requested": (cfg.batch_size, cfg.seq_len), "N": N})
        cfg.batch_size, cfg.seq_len = B, T
    st = resume_run(resume, B) if resume is not None else new_run(cfg, len(corpus.vocab), N, B, T)
    if start is not None and resume is None:
        start(st)
    optim.keep_average(st.optim_state, st.params, cfg.ema > 0)  # a resumed run may turn --ema on or off
    plan = batches.BatchPlan(N, B, T, st.offset)
    steps_per_pass = batches.BatchPlan(N, B, T, 0).steps
    budget = make_budget(cfg, max(1, steps_per_pass))
    if resume is not None:
        check_resumed_budget(cfg, resume.config, budget, make_budget(resume.config, max(1, steps_per_pass)), st,
                             on_event)
    return arch, st, plan, budget
