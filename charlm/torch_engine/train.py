"""Training on the torch engine: `charlm.train`'s loop with PyTorch computing the steps.

    train(cfg, corpus, resume=..., save=..., on_event=..., should_stop=..., clock=..., device="auto")

has the signature, events and result of `charlm.train.train`, and reuses
its parts: the corpus, the batch plan (`charlm.data`), the budget, the
automatic dropout, character dropout, the learning-rate schedule
(`charlm.optim.learning_rate`), the n-gram (counted by NumPy), the
validation measure and the best-weights choice, and the checkpoint (the
ordinary v1 `.npz`, via `charlm.train.make_checkpoint`).  What changes:

- the weights, optimizer slots, weight average and carried state live as
  tensors on the device; the forward and BPTT are `network.Network` and
  autograd; the updates are `torch_engine.optim` (charlm's formulas);
- the dropout masks are drawn by a torch generator seeded, each step, by a
  number drawn from the run's NumPy generator (so only that generator's
  state is saved, and a resumed run continues exactly);
- under torchrun each rank computes its rows of the batch (`distributed`);
- a bidirectional model's step is `torch_engine.bidirectional` (its windows
  and counted positions as `charlm.bidirectional`, no carried state), its
  validation and end-of-run n-gram combination NumPy's
  (`validation.evaluate_bidirectional`, `bookkeeping.combine`).

Resume: a torch-engine checkpoint resumed on the torch engine continues
bit-identically on the CPU in one process.  Across engines (a NumPy
checkpoint continued here, or this checkpoint continued by NumPy) the
weights, optimizer moments, step and schedule position, weight average,
carried state, data position and random generator carry over, but the
dropout masks are drawn differently and float sums are ordered
differently: the runs agree closely, not bit for bit.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import torch

from charlm import data as batches
from charlm import bookkeeping as keep
from charlm import finetune
from charlm import bidirectional, model
from charlm.checkpoint import Checkpoint
from charlm.config import Config, auto_eval_every
from charlm.optim import learning_rate
from charlm.torch_engine import bidirectional as bidi
from charlm.torch_engine import convert, distributed, network
from charlm.torch_engine import optim as toptim
from charlm.torch_engine.score import inference_network, piece_log_probs
from charlm.dataset import Corpus
from charlm.run import make_checkpoint, set_up
from charlm.train import expected_passes, measure_speed
from charlm.validation import VAL_BURN_IN, VAL_MAX_TOKENS, Validation, evaluate_bidirectional, measured, val_pieces

SEED_BOUND = 2 ** 63   # each step's dropout seed is drawn from [0, SEED_BOUND)


def dropout_masks(arch, T: int, B: int, p: float, seed: int | None, rows: slice, dtype, device) -> list | None:
    """Inverted-dropout masks (T, b, H) of this rank's rows, drawn for the whole batch (T, B, H) from `seed`
    (a bidirectional model's 2L: the forward stack's, then the backward stack's)."""
    if p <= 0.0 or seed is None:
        return None
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    keep = 1.0 - p
    return [((torch.rand((T, B, arch.hidden_size), generator=gen, device=device, dtype=dtype) < keep)
             .to(dtype) / keep)[:, rows] for _ in range(arch.num_layers * (2 if arch.bidirectional else 1))]


def evaluate(params: dict, arch, val_ids: np.ndarray, p_ngram, group: distributed.Group) -> Validation:
    """charlm.train.evaluate on the torch engine: the same pieces, burn-in and mixture fit; the pieces shared by the ranks."""
    ids = val_ids[:VAL_MAX_TOKENS]
    net = inference_network(params, arch, group.device)
    return measured(piece_log_probs(net, ids, val_pieces(len(ids)), VAL_BURN_IN, group), p_ngram)


def train(cfg: Config, corpus: Corpus, *, resume: Checkpoint | None = None,
          save: Callable[[Checkpoint], None] = lambda c: None,
          on_event: Callable[[str, dict], None] = lambda kind, info: None,
          should_stop: Callable[[], bool] = lambda: False,
          clock: Callable[[], float] = time.perf_counter, init: finetune.Start | None = None,
          device: str = "auto") -> tuple[Checkpoint, str]:
    """Train (or continue, or fine-tune) on the torch engine; see `charlm.train.train`.  Under torchrun only
    rank 0 saves and reports (the others' `on_event` hears nothing); every rank returns the checkpoint."""
    with distributed.session(device) as group:
        report = on_event if group.leader else (lambda kind, info: None)
        store = save if group.leader else (lambda c: None)
        arch, st, plan, budget = set_up(cfg, corpus, resume, report, finetune.starter(init, cfg, corpus.vocab))
        rows = distributed.rows(cfg.batch_size, group)
        run = Run(cfg, corpus, arch, st, budget, plan, rows, group, clock, finetune.meta_of(init, resume))
        return run.loop(resume, store, report, should_stop)


class Run:
    """A run in progress: RunState's counters and generator in NumPy, its arrays as tensors."""

    def __init__(self, cfg, corpus, arch, st, budget, plan, rows, group, clock, init_meta=None):
        self.cfg, self.corpus, self.arch, self.st, self.budget, self.plan = cfg, corpus, arch, st, budget, plan
        self.rows, self.group, self.clock, self.init_meta = rows, group, clock, init_meta
        self.device, self.dtype = group.device, convert.DTYPES[cfg.dtype]
        self.net = (bidi.BiNetwork if arch.bidirectional else network.Network)(arch, self.dtype, self.device)
        self.params = self.net.named()
        convert.load_params(self.params, st.params)
        self.state = convert.tensors(st.optim_state, self.device)
        self.carry = [tuple(convert.tensor(s[rows], self.device) for s in layer) for layer in st.carry]
        self.model = distributed.wrap(self.net, group)

    # -- one step -------------------------------------------------------------------------------
    def batch(self, chunk: int) -> tuple:
        """The (T, B) inputs and targets of a step and the targets' loss mask (None: all count).  A bidirectional
        model reads the chunk's positions as windows (`charlm.bidirectional.window_batch`): its inputs are the
        targets, which its stacks read shifted."""
        if not self.arch.bidirectional:
            return (*batches.chunk(self.corpus.train_ids, self.plan, chunk), None)
        y, mask = bidirectional.window_batch(self.corpus.train_ids, self.plan.positions(chunk),
                                             self.arch.reset_at_eos, np.dtype(self.cfg.dtype))
        return y, y, mask

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray, masks, mask=None) -> tuple:
        """Forward and BPTT of this rank's rows of (T, B) ids: (loss, grads by name, final state).  A bidirectional
        model's loss is over the batch's counted positions (`mask`), its rows' share; no state is carried."""
        for p in self.params.values():
            p.grad = None
        xr, yr = x[:, self.rows], y[:, self.rows]
        if self.arch.bidirectional:   # Σ over this rank's rows / (the batch's count / ranks): DDP's mean is the batch's
            share = bidi.count(y, mask) / self.group.world
            loss = bidi.window_loss(self.model, self.arch, xr, yr, None if mask is None else mask[:, self.rows],
                                    masks, share, self.dtype, self.device)
            final = self.carry
        else:
            xt = torch.as_tensor(xr, dtype=torch.long, device=self.device)
            logits, final = self.model(xt, self.carry, masks, network.resets(self.arch, xr, self.dtype, self.device))
            yt = torch.as_tensor(yr, dtype=torch.long, device=self.device)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, self.arch.vocab_size), yt.reshape(-1))
        loss.backward()
        grads = {k: (p.grad if p.grad is not None else torch.zeros_like(p)) for k, p in self.params.items()}
        return loss.detach(), grads, network.detached(final)

    def agree(self, loss: torch.Tensor, seconds: float, stop: bool) -> tuple[float, float, bool]:
        """The batch's mean loss, the step's time and whether to stop, the same on every rank."""
        t = torch.stack([loss.double(), torch.tensor(seconds, dtype=torch.float64, device=loss.device),
                         torch.tensor(float(stop), dtype=torch.float64, device=loss.device)])
        t = distributed.all_sum(t, self.group).cpu().numpy()
        return float(t[0]) / self.group.world, float(t[1]) / self.group.world, bool(t[2] > 0)

    # -- state to NumPy ---------------------------------------------------------------------------
    def sync(self) -> None:
        """Copy the tensors into the RunState (every rank takes part: the carried rows are gathered)."""
        self.st.params = convert.arrays(self.params)
        self.st.optim_state = convert.arrays(self.state)
        self.st.carry = [tuple(convert.array(distributed.gather_rows(s, self.group)) for s in layer)
                         for layer in self.carry]

    def zero_carry(self) -> list:
        return network.zero_state(self.arch, self.rows.stop - self.rows.start, self.dtype, self.device)

    # -- the loop ---------------------------------------------------------------------------------
    def loop(self, resume, save, on_event, should_stop):
        cfg, corpus, arch, st, budget, group = self.cfg, self.corpus, self.arch, self.st, self.budget, self.group
        N = len(corpus.train_ids)
        B, T = cfg.batch_size, cfg.seq_len
        steps_per_pass = batches.BatchPlan(N, B, T, 0).steps
        if cfg.eval_every is None:
            cfg.eval_every = auto_eval_every(steps_per_pass)
        def passes() -> float:   # how many passes the budget allows (for auto dropout), the same on every rank
            x, y, mask = self.batch(st.chunk)

            def one_step():
                self.loss_and_grads(x, y, None, mask)
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
            speed = (lambda: measure_speed(one_step, x.size, self.clock)) if budget.max_time else None
            return distributed.broadcast_float(expected_passes(budget, N, B * T, speed), group)

        keep.choose_dropout(cfg, passes, on_event)
        extra_meta = {"init_from": self.init_meta} if self.init_meta else {}
        ng, p_ngram = keep.validation_ngram(cfg, arch, corpus, extra_meta)
        on_event("start", {"arch": arch, "budget": budget, "batch_size": B, "seq_len": T, "step": st.step,
                           "workers": group.world, "params": model.num_params(st.params), "train_tokens": N,
                           "val_tokens": len(corpus.val_ids), "engine": "torch", "device": str(self.device)})

        def checkpoint() -> Checkpoint:
            self.sync()
            return make_checkpoint(cfg, corpus, st, {**extra_meta, "workers": group.world}, ng=ng)

        def run_eval():
            t0 = self.clock()
            weights = convert.arrays(toptim.averaged(self.state, self.params))
            result = (evaluate_bidirectional(weights, arch, corpus.val_ids, T) if arch.bidirectional
                      else evaluate(weights, arch, corpus.val_ids, p_ngram, group))
            on_event("eval", keep.record_validation(st, result, lambda: weights, self.clock() - t0))

        ended = "done"
        stop = False
        has_val = len(corpus.val_ids) > 0
        last_eval_step = None if resume is None else st.step
        while not budget.done(st):
            if stop or (not group.active and should_stop()):
                ended = "interrupted"
                break
            if st.chunk >= self.plan.steps:
                st.epoch += 1
                self.plan = batches.epoch_plan(N, B, T, st.rng)
                st.offset, st.chunk = self.plan.offset, 0
                self.carry = self.zero_carry()
            t0 = self.clock()
            x, y, mask = self.batch(st.chunk)
            seed = int(st.rng.integers(0, SEED_BOUND)) if cfg.dropout > 0 else None
            masks = dropout_masks(arch, T, B, cfg.dropout, seed, self.rows, self.dtype, self.device)
            x = model.drop_characters(x, cfg.char_dropout, st.rng)
            lr = learning_rate(cfg, budget.progress(st), st.step)
            loss_t, grads, final = self.loss_and_grads(x, y, masks, mask)
            norm = toptim.clip_by_global_norm(grads, cfg.clip)
            loss = float(loss_t)
            if group.active:    # the batch's loss, the same on every rank (so every rank takes the same branch)
                loss, _, _ = self.agree(loss_t, 0.0, False)
            if math.isfinite(loss) and math.isfinite(norm):
                keep.update(toptim, cfg, self.params, grads, self.state, lr)
                self.carry = final
                keep.record_kept(st, loss)
            else:
                self.carry = self.zero_carry()
                keep.record_skipped(st, cfg, loss, norm, on_event)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            dt = self.clock() - t0
            if group.active:    # one clock and one stop request for all ranks: they run the same steps
                _, dt, stop = self.agree(torch.zeros((), device=self.device), dt, should_stop())
            keep.record_step(st, budget, B * T, dt, loss, lr, norm, on_event)
            if keep.after_step(st, cfg, budget, has_val, run_eval, lambda: save(checkpoint()), on_event):
                last_eval_step = st.step
        return keep.finish(st, ended, has_val, last_eval_step, run_eval, checkpoint, save, on_event, cfg, arch, corpus)
