"""`charlm train`: read the options, train, report progress and the summary, save on a signal."""

from __future__ import annotations

import os
import shlex
import signal
from typing import Annotated, Optional

import typer

from charlm import checkpoint as ckpt_io
from charlm.cli.app import app, handle_errors
from charlm.cli.console import err, quiet_console, warn
from charlm.cli.options import CheckpointOpt, DeviceOpt, EngineOpt, checkpoint_path, one_stdin
from charlm.config import option_help
from charlm.errors import CharlmError


def _opt(name: str, kind):
    """The option for Config field `name`: its help and default text come from `charlm.config`."""
    return Annotated[Optional[kind], typer.Option(help=option_help(name), show_default=False)]


class _Stop:
    """SIGINT/SIGTERM: the first asks the loop to stop and save; a second quits at once."""

    def __init__(self):
        self.signum = None

    def __call__(self, signum, frame):
        if self.signum is not None:
            os._exit(128 + signum)  # the last good checkpoint is untouched (writes are atomic)
        self.signum = signum
        name = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
        err.print(f"\n{name}: saving a resumable checkpoint after this step (press Ctrl-C again to quit at once)")

    def __bool__(self):
        return self.signum is not None


@app.command(epilog="""**Examples**

```
charlm train corpora/names.txt --max-time 60
charlm train input.txt --cell gru --hidden-size 512 --steps 5000
charlm train input.txt --config run.yaml --seed 3 -c run.npz
charlm train input.txt --steps 20000 --resume        # continue the same run
charlm train input.txt --bidirectional -c bidi.npz   # for `charlm check`
charlm train poems/ --max-time 600        # every file of a folder
charlm train mine.txt --init-from base.npz --extend-vocab -c mine.npz
charlm train input.txt --engine torch --device cuda  # PyTorch, on a GPU
torchrun --nproc-per-node 2 -m charlm train input.txt --engine torch
```
""")
@handle_errors
def train(
    corpus: Annotated[list[str], typer.Argument(help="Training text (UTF-8), one sequence per line: a file, several files, or a folder (read recursively); - for stdin.", show_default=False)],
    checkpoint: CheckpointOpt = None,
    init_from: Annotated[Optional[str], typer.Option(help="Start from this trained model's weights and architecture (fine-tuning), with a fresh optimizer, schedule and budget.", show_default=False)] = None,
    extend_vocab: Annotated[bool, typer.Option("--extend-vocab", help="With --init-from: add the corpus's characters that the base model lacks (else they are read as `<UNK>`).")] = False,
    config: Annotated[Optional[str], typer.Option(help="YAML file of options (flags override it).", show_default=False)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run saved in the checkpoint (same options; --steps counts the run's total).")] = False,
    vocab: Annotated[Optional[str], typer.Option(help="Vocabulary JSON (default: built from the corpus).", show_default=False)] = None,
    cell: _opt("cell", str) = None,
    hidden_size: _opt("hidden_size", int) = None,
    num_layers: _opt("num_layers", int) = None,
    activation: _opt("activation", str) = None,
    dropout: _opt("dropout", float) = None,
    char_dropout: _opt("char_dropout", float) = None,
    dtype: _opt("dtype", str) = None,
    line_state: _opt("line_state", str) = None,
    seq_len: _opt("seq_len", int) = None,
    batch_size: _opt("batch_size", int) = None,
    lr: _opt("lr", float) = None,
    optimizer: _opt("optimizer", str) = None,
    momentum: _opt("momentum", float) = None,
    weight_decay: _opt("weight_decay", float) = None,
    schedule: _opt("schedule", str) = None,
    warmup_steps: _opt("warmup_steps", int) = None,
    min_lr_ratio: _opt("min_lr_ratio", float) = None,
    clip: _opt("clip", float) = None,
    clip_value: _opt("clip_value", float) = None,
    ngram: _opt("ngram", int) = None,
    ema: _opt("ema", float) = None,
    steps: _opt("steps", int) = None,
    epochs: _opt("epochs", float) = None,
    max_time: _opt("max_time", float) = None,
    val_fraction: _opt("val_fraction", float) = None,
    eval_every: _opt("eval_every", int) = None,
    save_every: _opt("save_every", int) = None,
    seed: _opt("seed", int) = None,
    min_count: _opt("min_count", int) = None,
    max_size: _opt("max_size", int) = None,
    max_bad_steps: _opt("max_bad_steps", int) = None,
    encoding: _opt("encoding", str) = None,
    errors: _opt("errors", str) = None,
    workers: _opt("workers", int) = None,
    bidirectional: Annotated[Optional[bool], typer.Option("--bidirectional", help=option_help("bidirectional"),
                                                          show_default=False)] = None,
    engine: EngineOpt = "numpy",
    device: DeviceOpt = "auto",
):
    """Train a character language model with truncated backpropagation through time.

    Saves the checkpoint at the end, every `--save-every` steps, and on
    Ctrl-C (exit 130; resume with `--resume`).
    """
    from charlm import finetune, sources
    from charlm.cli.progress import TrainReporter
    from charlm.config import DEFAULT_MAX_TIME, Config, build_config, load_yaml, yaml_path
    from charlm.files import check_writable
    from charlm.validation import baselines
    from charlm.preflight import corpus_warnings
    from charlm.dataset import load_corpus
    from charlm.run import check_resume
    from charlm.torch_engine import is_leader, trainer
    from charlm.vocab import load_vocab

    run_training = trainer(engine, device)     # --engine torch: PyTorch (one-line error without it)
    if engine == "torch" and workers is not None:
        warn("--workers shares the NumPy engine's steps; the torch engine ignores it "
             "(torchrun --nproc-per-node N runs N processes)")
    flags = dict(cell=cell, hidden_size=hidden_size, num_layers=num_layers, activation=activation, dropout=dropout,
                 char_dropout=char_dropout, dtype=dtype, line_state=line_state, seq_len=seq_len,
                 batch_size=batch_size, lr=lr, optimizer=optimizer, momentum=momentum, weight_decay=weight_decay,
                 schedule=schedule, warmup_steps=warmup_steps, min_lr_ratio=min_lr_ratio, clip=clip,
                 clip_value=clip_value, ema=ema, ngram=ngram, steps=steps, epochs=epochs, max_time=max_time,
                 val_fraction=val_fraction, eval_every=eval_every, save_every=save_every, seed=seed,
                 min_count=min_count, max_size=max_size, max_bad_steps=max_bad_steps, encoding=encoding,
                 errors=errors, workers=workers, bidirectional=bidirectional)
    inputs, corpus = corpus, " ".join(corpus)      # the paths; the corpus as named in messages
    one_stdin(corpus="-" if "-" in inputs else None, config_file=config, vocabulary=vocab, init_from=init_from)
    path = checkpoint_path(checkpoint)
    # before training, not after it: a run must not be lost for want of a directory
    check_writable(path, {"corpus": inputs, "config file": config, "vocabulary": vocab, "base model": init_from},
                   replaces=None if resume else ("checkpoint", "-c", ckpt_io.looks_like_checkpoint))
    finetune.check_options(init_from, resume, vocab, extend_vocab)
    from_yaml = load_yaml(config) if config else {}
    if vocab is None:
        vocab = yaml_path(from_yaml, "vocab", config)
        one_stdin(corpus=corpus, vocabulary=vocab)          # (a `vocab: -` in the YAML file)
    from_yaml.pop("vocab", None)
    from_flags = {k: v for k, v in flags.items() if v is not None}
    named = {str(k).replace("-", "_") for k in from_yaml} | set(from_flags)   # the options the user gave
    previous = None
    if resume:
        previous = ckpt_io.load(path)
        if not previous.resumable:
            raise CharlmError(f"{path} holds no resume state (it was not saved by `charlm train`)")
    cfg = build_config(config, from_flags, from_yaml, base=previous.config if previous is not None else None)
    base = None
    if init_from is not None:   # fine-tuning: the base's architecture
        base = finetune.load_base(init_from)
        finetune.adopt_arch(cfg, base, named, init_from)
    if not cfg.budget_given:
        cfg.max_time = DEFAULT_MAX_TIME
        err.print(f"No --steps, --epochs or --max-time given: training for {DEFAULT_MAX_TIME:.0f} seconds.")
    voc = load_vocab(vocab) if vocab else (previous.vocab if previous is not None else None)
    if base is not None:   # fine-tuning: the base's vocabulary, or an extension of it
        voc, note = finetune.vocabulary(base, extend_vocab, cfg.min_count, named)
        if note:
            warn(note)
    source = sources.open_corpus(inputs, cfg.encoding, cfg.errors, on_skip=lambda p, why: warn(f"skipped {p}: {why}"))
    data = load_corpus(source, cfg, voc, name=corpus if corpus != "-" else "<stdin>")
    start = None
    if base is not None:
        start = finetune.start(base, init_from, data.vocab)
        if start.meta["added_chars"]:
            err.print(f"--extend-vocab: {start.meta['added_chars']} new characters join the base model's "
                      f"{len(base.vocab)} tokens")
    for note in corpus_warnings(cfg, data, vocab, named, base_path=init_from):
        warn(note)
    notes = []
    if previous is not None:
        notes = [f"resume: {change}" for change in check_resume(cfg, previous, data, named)]
    elif os.path.exists(path) and not os.path.isdir(path):
        warn(f"{path} exists and will be overwritten (use --resume to continue that run)")

    stop = _Stop()
    old_int = signal.signal(signal.SIGINT, stop)
    old_term = signal.signal(signal.SIGTERM, stop)
    # under torchrun the ranks other than 0 train silently (rank 0 reports and writes the checkpoint)
    reporter = TrainReporter(err if is_leader() else quiet_console(), cfg, data, path, notes=notes)
    try:
        with reporter:
            result, ended = run_training(cfg, data, resume=previous, save=lambda c: ckpt_io.save(c, path),
                                         on_event=reporter.on_event,
                                         should_stop=lambda: bool(stop) or err.reader_gone, init=start)
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
    reporter.summary(result, ended, baselines(data.train_ids, data.val_ids, len(data.vocab), cfg.ngram or Config.ngram,
                                              result.arch.reset_at_eos))
    if ended == "interrupted" and stop:
        err.print(f"Saved a resumable checkpoint to {path} at step {result.train_state['step']}. "
                  f"Resume with: charlm train {' '.join(map(shlex.quote, inputs))} --resume"
                  + (f" -c {shlex.quote(path)}" if checkpoint else ""))
        raise typer.Exit(128 + stop.signum)
