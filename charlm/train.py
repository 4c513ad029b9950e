"""Training: the loop of truncated BPTT steps, as a library function.

`train()` never prints: it reports through an `on_event(kind, info)` callback
and writes checkpoints through a `save(checkpoint)` callback, so the CLI
decides how things look and where they go.  It stops when the budget (steps,
epochs, seconds) is spent or when `should_stop()` turns true, and always
returns a resumable checkpoint.

Everything a run depends on is in its checkpoint (weights, optimizer
moments and step, random-generator state, data position and offset, carried
hidden state, clock, best validation weights), so a resumed run continues
exactly: N steps in one go and N steps with an interruption give
bit-identical weights.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from charlm import data as batches
from charlm import finetune, mixture, model, ngram, optim, parallel, sources
from charlm.checkpoint import Checkpoint, arch_of
from charlm.config import Config, auto_char_dropout, auto_dropout, auto_eval_every
from charlm.corpus import count_corpus, encode_corpus
from charlm.errors import CharlmError, ConfigError, CorpusError, TrainingDiverged
from charlm.score import LN2, read_in_pieces
from charlm.vocab import Vocab, build_vocab

# options that define the run; resuming with a different value is refused
FIXED_OPTIONS = ("cell", "hidden_size", "num_layers", "activation", "dtype", "line_state", "seq_len", "batch_size",
                 "val_fraction", "min_count", "max_size", "optimizer", "seed", "encoding", "errors", "ngram")


@dataclass
class Corpus:
    """A corpus encoded once: the id array split for training and validation."""

    vocab: Vocab
    train_ids: np.ndarray
    val_ids: np.ndarray
    info: dict  # name, characters, lines, fingerprint, line_items


def load_corpus(source, cfg: Config, vocab=None, name: str | None = None) -> Corpus:
    """Read a corpus (path, "-", bytes, or a `sources.FileSet` of many files), build or apply the vocabulary,
    encode, split.

    `vocab`: None builds one from the corpus; a Vocab is applied; a function of
    the corpus's code-point counts returns the Vocab to apply (`--extend-vocab`).
    """
    files = source if isinstance(source, sources.FileSet) else None
    stats = sources.merged_stats(files) if files else count_corpus(source, cfg.encoding, cfg.errors)
    label = name or (files.label if files else source if isinstance(source, str) else "<stdin>")
    if stats.num_chars == 0:
        what = "only empty lines" if stats.num_lines else "no text"
        raise CorpusError(f"corpus {label} is empty ({what}); it needs at least one character")
    if vocab is None:
        vocab = build_vocab(stats.counts, cfg.min_count, cfg.max_size)
    elif callable(vocab):
        vocab = vocab(stats.counts)
    if files:
        ids = sources.encode(files, vocab, cfg.encoding, cfg.errors)
        digest = sources.fingerprint(ids, files, vocab)
    else:
        ids = encode_corpus(source, vocab, cfg.encoding, cfg.errors, num_tokens=stats.num_chars + stats.num_lines)
        digest = hashlib.sha256(memoryview(np.ascontiguousarray(ids)).cast("B")).hexdigest()[:16] + f"-{ids.dtype.str}"
    info = {
        "name": label,
        "num_chars": stats.num_chars,
        "num_lines": stats.num_lines,
        "num_tokens": int(len(ids)),
        "fingerprint": digest,
        # a list of items (names, words): no blank lines; samples then stop at <EOS>
        # (blank lines before the first line and after the last do not count: editors leave them)
        "line_items": stats.num_inner_empty_lines == 0 and stats.num_lines > 1,
    }
    if files:
        info["num_files"] = len(files.paths)
    train_ids, val_ids = batches.split(ids, cfg.val_fraction)   # consumes ids
    return Corpus(vocab, train_ids, val_ids, info)


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


def _check_resumed_budget(cfg: Config, old_cfg: Config, budget: Budget, old_budget: Budget, st: RunState,
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


VAL_MAX_TOKENS = 1_000_000  # validation reads at most this many held-out tokens (the first ones)


@dataclass
class Validation:
    nats: float                 # per token: the model as `score` uses it (with the n-gram, if any)
    net_nats: float             # per token: the network alone
    mix_weight: float | None    # the network's share λ fitted on this validation (None: no n-gram)


def evaluate(params, arch, val_ids: np.ndarray, p_ngram: np.ndarray | None = None) -> Validation:
    """Validation loss in nats per token: the `score --document` measure.

    Read as 16+ pieces side by side with 256 tokens of burn-in each (see
    `read_in_pieces`, without its joint check), over at most the first VAL_MAX_TOKENS
    held-out tokens, so validating costs seconds on any corpus.  With the
    n-gram's probabilities of those tokens (`p_ngram`), the network's share
    in the interpolation is fitted to them and the interpolation is measured.
    """
    ids = val_ids[:VAL_MAX_TOKENS]
    pieces = max(16, len(ids) // 16384)          # at least 16, at most ~16k tokens each
    pieces = min(pieces, max(1, len(ids) // 1024))  # and no piece shorter than 1024 tokens
    logp = np.zeros(len(ids))

    def keep(pos, lp):
        logp[pos] = lp
        return lp

    read_in_pieces(params, arch, ids, pieces, burn_in=256, adjust=keep)
    net = -float(logp.mean())
    if p_ngram is None:
        return Validation(net, net, None)
    weight = mixture.fit_weight(np.exp(logp), p_ngram)
    return Validation(-float(mixture.log_prob(weight, logp, p_ngram).mean()), net, weight)


def fit_ngram(cfg: Config, arch, corpus: Corpus) -> tuple[ngram.NGram, np.ndarray]:
    """The n-gram to save, and the probabilities of the validation tokens to fit its share on.

    Validation needs an n-gram that has not seen the validation split: one
    counted on the training split.  Once the share is fitted, the n-gram
    that goes into the checkpoint also counts the held-out split, if the
    two together are within ngram.MAX_TOKENS (more counts, better estimates
    for small corpora).
    """
    V, reset = len(corpus.vocab), arch.reset_at_eos
    held_out = ngram.fit(corpus.train_ids, V, cfg.ngram, reset)
    p_ngram = ngram.probs(held_out, corpus.val_ids[:VAL_MAX_TOKENS])
    if len(corpus.train_ids) + len(corpus.val_ids) > ngram.MAX_TOKENS:
        return held_out, p_ngram
    return ngram.fit(np.concatenate([corpus.train_ids, corpus.val_ids]), V, cfg.ngram, reset), p_ngram


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
    if init is not None and resume is None:   # the base's weights, a fresh optimizer
        st.params = finetune.start_params(st.params, init, corpus.vocab)
        st.optim_state = optim.init_state(cfg.optimizer, st.params)
    init_meta = init.meta if init is not None else (resume.meta.get("init_from") if resume is not None else None)
    optim.keep_average(st.optim_state, st.params, cfg.ema > 0)  # a resumed run may turn --ema on or off
    plan = batches.BatchPlan(N, B, T, st.offset)
    steps_per_pass = batches.BatchPlan(N, B, T, 0).steps
    budget = make_budget(cfg, max(1, steps_per_pass))
    if resume is not None:
        _check_resumed_budget(cfg, resume.config, budget, make_budget(resume.config, max(1, steps_per_pass)), st, on_event)
    dtype = np.dtype(cfg.dtype)
    workers = resolve_workers(cfg, arch, B, dtype)
    with parallel.Engine(arch, dtype, B, T, workers,
                         on_failure=lambda msg: on_event("workers_failed", {"error": msg})) as engine:
        return _run(cfg, corpus, arch, st, budget, plan, engine, resume, save, on_event, should_stop, clock, init_meta)


def resolve_workers(cfg: Config, arch, B: int, dtype) -> int:
    """The number of worker processes a step is shared by (1: this process alone); see `charlm.parallel`."""
    if cfg.workers is None:
        return parallel.auto_workers(arch, B, dtype.itemsize, parallel.usable_cores())
    if cfg.workers > 1 and os.name != "posix":
        raise ConfigError("--workers above 1 needs a POSIX system (Linux, macOS); use --workers 1")
    return min(cfg.workers, B)


def _run(cfg, corpus, arch, st, budget, plan, engine, resume, save, on_event, should_stop, clock, init_meta=None):
    """The loop of `train`, once the run is set up."""
    N = len(corpus.train_ids)
    B, T = cfg.batch_size, cfg.seq_len
    dtype = np.dtype(cfg.dtype)
    steps_per_pass = batches.BatchPlan(N, B, T, 0).steps
    if cfg.eval_every is None:
        cfg.eval_every = auto_eval_every(steps_per_pass)
    passes = None
    if cfg.dropout is None:  # auto: from how many passes over the training split the budget allows
        x, y = batches.chunk(corpus.train_ids, plan, st.chunk)
        speed = (lambda: measure_speed(lambda: engine.loss_and_grads(st.params, arch, x, y, st.carry), x.size, clock)
                 if budget.max_time else None)
        passes = expected_passes(budget, N, B * T, speed)
        cfg.dropout = auto_dropout(passes)
    if cfg.char_dropout is None:  # auto: goes with the dropout
        cfg.char_dropout = auto_char_dropout(cfg.dropout)
    if passes is not None:
        on_event("auto", {"dropout": cfg.dropout, "char_dropout": cfg.char_dropout, "passes": passes})
    ng = p_ngram = None
    extra_meta = {"init_from": init_meta} if init_meta else {}
    if cfg.ngram and len(corpus.val_ids):
        ng, p_ngram = fit_ngram(cfg, arch, corpus)
        extra_meta["ngram_val_bpc"] = -float(np.log2(p_ngram).mean())   # the n-gram alone, on validation
    on_event("start", {"arch": arch, "budget": budget, "batch_size": B, "seq_len": T, "step": st.step, "workers": engine.count,
                       "params": model.num_params(st.params), "train_tokens": N,
                       "val_tokens": len(corpus.val_ids)})

    def checkpoint() -> Checkpoint:   # meta.workers as it stands: a worker failure falls back to one process
        return make_checkpoint(cfg, corpus, st, {**extra_meta, "workers": engine.count}, ng=ng)

    def run_eval():
        t0 = clock()
        weights = optim.averaged(st.optim_state, st.params)  # the weight average, if kept
        result = evaluate(weights, arch, corpus.val_ids, p_ngram)
        val = result.nats
        st.last_val = val
        improved = st.best_val is None or val < st.best_val
        if result.mix_weight is not None:
            st.mix_weights = {**(st.mix_weights or {}), "last": result.mix_weight}
        if improved:
            st.best_val, st.best_step = val, st.step
            st.best_params = {k: v.copy() for k, v in weights.items()}
            if result.mix_weight is not None:
                st.mix_weights["best"] = result.mix_weight
        st.history.append({"step": st.step, "seconds": round(st.train_seconds, 3), "chars": st.chars_seen,
                           "train_bpc": None if st.last_loss is None else st.last_loss / LN2,
                           "val_bpc": val / LN2, "net_val_bpc": result.net_nats / LN2,
                           "mix_weight": result.mix_weight})
        on_event("eval", {"step": st.step, "val_nats": val, "val_bpc": val / LN2, "best": improved,
                          "net_val_bpc": result.net_nats / LN2, "mix_weight": result.mix_weight, "seconds": clock() - t0})

    ended = "done"
    last_eval_step = None if resume is None else st.step
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
        x, y = batches.chunk(corpus.train_ids, plan, st.chunk)
        masks = model.dropout_masks(arch, T, B, cfg.dropout, st.rng, dtype)
        x = model.drop_characters(x, cfg.char_dropout, st.rng)
        lr = optim.learning_rate(cfg, budget.progress(st), st.step)
        loss, grads, final = engine.loss_and_grads(st.params, arch, x, y, st.carry, masks)
        norm = optim.clip_by_global_norm(grads, cfg.clip)
        if math.isfinite(loss) and math.isfinite(norm):
            if cfg.clip_value:
                optim.clip_by_value(grads, cfg.clip_value)
            optim.apply_update(cfg, st.params, grads, st.optim_state, lr)
            if cfg.ema:
                optim.update_average(st.optim_state, st.params, cfg.ema)
            if not math.isfinite(optim.global_norm(st.params)):
                raise TrainingDiverged("the weights overflowed to infinity (learning rate far too large?); "
                                       "nothing was saved from this step on")
            st.carry = final
            st.bad_streak = 0
            st.last_loss = loss
        else:
            st.skipped_steps += 1
            st.bad_streak += 1
            st.carry = model.zero_state(arch, B, dtype)
            on_event("skipped", {"step": st.step, "loss": loss, "grad_norm": norm, "streak": st.bad_streak})
            if st.bad_streak >= cfg.max_bad_steps:
                raise TrainingDiverged(
                    f"training diverged: {st.bad_streak} steps in a row had a non-finite loss or gradient "
                    f"(at step {st.step}); try a lower --lr or --clip. Nothing non-finite was saved")
        st.chunk += 1
        st.step += 1
        st.chars_seen += B * T
        dt = clock() - t0
        st.train_seconds += dt
        on_event("step", {"step": st.step, "loss": loss, "lr": lr, "grad_norm": norm, "seconds": dt,
                          "chars": B * T, "progress": budget.progress(st), "epoch": st.epoch,
                          "train_seconds": st.train_seconds})
        if len(corpus.val_ids) and cfg.eval_every and st.step % cfg.eval_every == 0:
            run_eval()
            last_eval_step = st.step
        if cfg.save_every and st.step % cfg.save_every == 0 and not budget.done(st):
            save(checkpoint())
            on_event("saved", {"step": st.step})
    if ended == "done" and len(corpus.val_ids) and last_eval_step != st.step:
        run_eval()
    ckpt = checkpoint()
    save(ckpt)
    on_event("end", {"ended": ended, "step": st.step, "train_seconds": st.train_seconds,
                     "chars_seen": st.chars_seen, "checkpoint": ckpt})
    return ckpt, ended
