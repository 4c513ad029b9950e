"""What `charlm train` shows while it runs, and the metrics file it keeps.

`TrainReporter.on_event` receives the training loop's events.  On a terminal
it drives a Rich progress bar (step, loss, bits/char, validation bits/char,
chars/s, ETA); elsewhere (a pipe, a log file) it prints one line per
validation.  Every step and validation is also appended as a JSON line to
`<checkpoint>.metrics.jsonl`, for plotting elsewhere.
"""

from __future__ import annotations

import json
import math
import time

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from charlm.cli.render import counted, fmt_count, fmt_seconds, history_curve, shared_by
from charlm.score import LN2


class TrainReporter:
    def __init__(self, console: Console, cfg, corpus, checkpoint_path: str, metrics: bool = True,
                 notes: list[str] | None = None):
        self.console = console
        self.notes = list(notes or [])   # printed before training's first event (none if it is refused first)
        self.cfg = cfg
        self.corpus = corpus
        self.path = checkpoint_path
        self.metrics_path = checkpoint_path + ".metrics.jsonl" if metrics else None
        self.progress = None
        self.task = None
        self.loss_ema = None
        self.speed_ema = None
        self.val_bpc = None
        self.budget = None
        self.step_seconds = 0.0
        self.steps_timed = 0
        self.chars_timed = 0
        self.started = time.time()
        self._metrics_file = None

    # -- context: the live display -------------------------------------------
    def __enter__(self):
        if self.metrics_path:
            try:
                self._metrics_file = open(self.metrics_path, "a", encoding="utf-8")
            except OSError:
                self._metrics_file = None
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()
        if self._metrics_file is not None:
            self._metrics_file.close()
        return False

    def _metric(self, record: dict):
        if self._metrics_file is not None:
            self._metrics_file.write(json.dumps(record) + "\n")
            self._metrics_file.flush()

    # -- events ------------------------------------------------------------------
    def _warning(self, message: str) -> None:
        console = self.progress.console if self.progress is not None else self.console
        console.print(f"[yellow]warning:[/] {escape(message)}", markup=True)

    def on_event(self, kind: str, info: dict):
        while self.notes:
            self.console.print(self.notes.pop(0))
        getattr(self, f"_on_{kind}", lambda info: None)(info)

    def _on_adapted(self, info):
        B, T = info["batch_size"], info["seq_len"]
        rb, rt = info["requested"]
        self._warning(f"the training split has only {info['N']} characters, less than one "
                      f"batch of {rb}×{rt}: using --batch-size {B} --seq-len {T}")

    def _on_auto(self, info):
        passes = info["passes"]
        about = "many" if not math.isfinite(passes) else f"about {passes:.1f}"
        self.console.print(f"Dropout {info['dropout']:g}, character dropout {info['char_dropout']:g}: "
                           f"chosen for a budget of {about} passes over the training split (--dropout sets it).")

    def _on_line_state(self, info):
        if info["line_state"] == "reset":
            self.console.print("A list of items (no blank lines between lines): each line is its own sequence, "
                               "and samples stop at <EOS> (--line-state carry sets it otherwise).")
        else:
            self.console.print("Prose (blank lines between lines): the state flows from line to line "
                               "(--line-state reset sets it otherwise).")

    def _on_combine(self, info):
        self.console.print(f"Counting a forward, a backward and a two-sided {info['order']}-gram and fitting their weights "
                           "with the network's on the validation split (for `charlm check`).")

    def _on_workers_failed(self, info):
        self._warning(f"training workers: {info['error']}; this process computes the steps instead "
                      "(--workers 1 does so from the start)")

    def _on_schedule(self, info):
        self._warning(f"the {info['schedule']} learning-rate schedule spans the run's new "
                      f"budget, so at step {info['step']:,} the rate goes from {info['old_lr']:.3g} to "
                      f"{info['new_lr']:.3g}: the rest of the run follows the schedule of a run started with "
                      "this budget (--schedule constant keeps the rate fixed)")

    def _on_start(self, info):
        self.budget = info["budget"]
        arch = info["arch"]
        c = self.corpus.info
        parts = []
        if self.budget.total_steps:
            parts.append(counted(self.budget.total_steps, "step"))
        if self.budget.max_time:
            parts.append(f"{fmt_seconds(self.budget.max_time)} of training steps (validation adds a little)")
        resumed = f", resuming at step {info['step']:,}" if info["step"] else ""
        self.console.print(
            f"Training {'a bidirectional ' if arch.bidirectional else ''}{arch.cell} {arch.num_layers}×{arch.hidden_size} ({info['params']:,} parameters, "
            f"vocabulary {arch.vocab_size}) on {c['name']}: {fmt_count(info['train_tokens'])} training / "
            f"{fmt_count(info['val_tokens'])} validation tokens; batch {info['batch_size']}×{info['seq_len']}"
            f"{shared_by(info.get('workers', 1))}; "
            f"budget {' or '.join(parts)}{' (whichever comes first)' if len(parts) > 1 else ''}{resumed}.")
        if self.console.is_terminal:
            self.progress = Progress(
                TextColumn("step {task.fields[step]:>6}"),
                BarColumn(bar_width=24),
                TextColumn("loss {task.fields[loss]} · {task.fields[bpc]} bits/char · val {task.fields[val]}"
                           " · {task.fields[speed]} chars/s · ETA {task.fields[eta]}"),
                console=self.console, transient=False, refresh_per_second=4)
            self.task = self.progress.add_task("train", total=1000, step=info["step"], loss="–", bpc="–", val="–",
                                               speed="–", eta="–")
            self.progress.start()

    def _on_step(self, info):
        loss = info["loss"]
        if math.isfinite(loss):
            self.loss_ema = loss if self.loss_ema is None else 0.9 * self.loss_ema + 0.1 * loss
        speed = info["chars"] / max(info["seconds"], 1e-9)
        self.speed_ema = speed if self.speed_ema is None else 0.9 * self.speed_ema + 0.1 * speed
        self.step_seconds += info["seconds"]
        self.steps_timed += 1
        self.chars_timed += info["chars"]
        if info["step"] % 10 == 0 or info["step"] == 1:
            self._metric({"kind": "step", "step": info["step"], "seconds": round(info["train_seconds"], 3),
                          "loss": loss, "bpc": loss / LN2, "lr": info["lr"], "grad_norm": info["grad_norm"]})
        if self.progress is not None:
            self.progress.update(self.task, completed=1000 * min(info["progress"], 1.0), step=info["step"],
                                 loss=f"{self.loss_ema:.3f}" if self.loss_ema is not None else "–",
                                 bpc=f"{self.loss_ema / LN2:.3f}" if self.loss_ema is not None else "–",
                                 speed=f"{self.speed_ema:,.0f}", eta=self._eta(info))

    def _eta(self, info) -> str:
        p = info["progress"]
        if p <= 0:
            return "–"
        elapsed = time.time() - self.started
        return fmt_seconds(elapsed * (1 - p) / p)

    def _on_eval(self, info):
        self.val_bpc = info["val_bpc"]
        self._metric({"kind": "eval", "step": info["step"], "val_nats": info["val_nats"], "val_bpc": info["val_bpc"],
                      "net_val_bpc": info.get("net_val_bpc"), "mix_weight": info.get("mix_weight"),
                      "train_bpc": None if self.loss_ema is None else self.loss_ema / LN2})
        mark = " (best)" if info["best"] else ""
        if self.progress is not None:
            self.progress.update(self.task, val=f"{info['val_bpc']:.3f}{'*' if info['best'] else ''}")
        else:
            train = f"{self.loss_ema / LN2:.4f}" if self.loss_ema is not None else "–"
            net = "" if info.get("mix_weight") is None else \
                f" (network alone {info['net_val_bpc']:.4f}, its share {info['mix_weight']:.2f})"
            self.console.print(f"step {info['step']:>7,}  train {train} bits/char  val {info['val_bpc']:.4f} "
                               f"bits/char{net}{mark}  {self._speed():,.0f} chars/s")

    def _on_skipped(self, info):
        msg = (f"step {info['step']}: non-finite loss or gradient (loss {info['loss']}, gradient norm "
               f"{info['grad_norm']}); update skipped ({info['streak']} in a row)")
        self._warning(msg)

    def _speed(self) -> float:
        return self.chars_timed / self.step_seconds if self.step_seconds else 0.0

    # -- the end -----------------------------------------------------------------
    def summary(self, ckpt, ended: str, baselines: dict | None = None):
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        m = ckpt.meta
        hist = (ckpt.train_state or {}).get("history") or []
        t = Table(title="interrupted" if ended == "interrupted" else "trained", show_header=False,
                  title_justify="left")
        t.add_column(style="bold")
        t.add_column()
        t.add_row("steps", f"{m['steps']:,} ({fmt_count(m['chars_seen'])} characters seen"
                  + (f", {m['skipped_steps']} skipped" if m["skipped_steps"] else "") + ")")
        t.add_row("time", f"{fmt_seconds(m['train_seconds'])} of training, {self._speed():,.0f} chars/s")
        if m.get("last_train_bpc") is not None:
            t.add_row("train", f"{m['last_train_bpc']:.4f} bits/char (last batch)")
        if m.get("best_val_bpc") is not None:
            t.add_row("validation", f"{m['last_val_bpc']:.4f} bits/char at the end; best {m['best_val_bpc']:.4f} "
                      f"at step {m['best_step']:,} (the weights "
                      + ("`check` uses)" if ckpt.config.bidirectional else "`sample` and `score` use)"))
            mix = ckpt.mixture("best")
            best = [h for h in hist if h.get("step") == m["best_step"]]
            if ckpt.config.bidirectional and mix is not None and m.get("combine_val_bpc") is not None:
                t.add_row("n-grams", f"combined with a forward, a backward and a two-sided {mix.forward.order}-gram, weights "
                          f"{', '.join(f'{w:.2f}' for w in mix.weights)} (network, forward, backward, unigram, two-sided) fitted "
                          f"on validation lines: {m['combine_val_bpc']:.4f} bits/char given the rest of the line, "
                          f"the network alone {m['combine_net_val_bpc']:.4f}")
            elif mix is not None and best and best[-1].get("net_val_bpc") is not None:
                alone = m.get("ngram_val_bpc")
                t.add_row("n-gram", f"the validation above is the network interpolated with a {mix.ngram.order}-gram, "
                          f"shares fitted on it: network {mix.weight:.2f}, n-gram {1 - mix.weight:.2f}; "
                          f"the network alone {best[-1]['net_val_bpc']:.4f} bits/char at that step"
                          + ("" if alone is None else f", the {mix.ngram.order}-gram alone {alone:.4f}"))
        if baselines:
            t.add_row("baselines", ", ".join(f"{name} {bits:.4f}" for name, bits in baselines.items())
                      + " bits/char on the same validation split")
        t.add_row("checkpoint", self.path)
        self.console.print(t)
        if len(hist) >= 2:
            self.console.print("bits/char against step")
            self.console.print(history_curve(hist), markup=False, highlight=False)
