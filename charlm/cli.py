"""The `charlm` command line: parse options, call the library, render, exit.

stdout carries only the product (samples, scores, JSON); progress, warnings
and summaries go to stderr.  Every error the user can cause is one line on
stderr and a non-zero exit code:

    0  success          1  bad input or failure
    2  usage error      130 / 143  interrupted by SIGINT / SIGTERM (state saved)
"""

from __future__ import annotations

import codecs
import dataclasses
import io
import json
import math
import os
import shlex
import signal
import sys
from typing import Annotated, Optional

import numpy as np
import typer
from rich.markup import escape
from rich.console import Console

from charlm import __version__
from charlm import checkpoint as ckpt_io
from charlm.allocator import keep_freed_memory
from charlm.errors import CharlmError
from charlm.files import forget_stdin
from charlm.render import printable

app = typer.Typer(
    name="charlm",
    add_completion=True,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)

class _Console(Console):
    """A rich Console whose reader may go away (`charlm sample | head -1`, `charlm train 2>&1 | head`).

    rich's own answer is to exit with 1 from inside whatever was printing;
    here the stream goes quiet (its descriptor now points at /dev/null) and
    `reader_gone` is set.  On stdout, whose text is the product, that ends
    the command (BrokenPipeError, exit 0); on stderr the command goes on,
    and `train` stops as on Ctrl-C, saving its checkpoint.
    """

    reader_gone = False

    def render_str(self, text: str, **kwargs):
        """Every string printed (a message, a table cell, a title) with its control characters shown as escapes.

        Messages carry file names and user text, and a name like
        $'x\\e[31m.txt' must not colour or move the terminal.
        """
        return super().render_str(printable(text), **kwargs)

    def on_broken_pipe(self) -> None:
        self.quiet = True
        self.reader_gone = True
        _to_devnull(self.file)
        if not self.stderr:
            raise BrokenPipeError


# markup and emoji codes off: messages hold file names and user text ("[b]notes.txt", ":x:.txt"); the few
# styled messages ask for markup
err = _Console(stderr=True, highlight=False, soft_wrap=True, markup=False, emoji=False)
out = _Console(highlight=False, soft_wrap=True, markup=False, emoji=False)


def handle_errors(command):
    """Turn a CharlmError raised inside a command into one line on stderr and exit 1."""
    import functools

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except CharlmError as e:
            fail(str(e))
        except BrokenPipeError:  # the reader went away (`charlm sample | head`): not an error
            _quiet_broken_pipe()
            raise typer.Exit(0)
    return wrapper


def error_line(message: str, label: str = "error") -> None:
    """`error: message` on stderr, the label in bold red (the message itself never read as markup)."""
    err.print(f"[bold red]{label}:[/] {escape(message)}", markup=True, highlight=False, soft_wrap=True)


def fail(message: str, code: int = 1):
    error_line(message)
    raise typer.Exit(code)


def warn(message: str):
    err.print(f"[yellow]warning:[/] {escape(message)}", markup=True, soft_wrap=True)


def _version(value: bool):
    if value:
        print(f"charlm {__version__}")
        raise typer.Exit(0)


@app.callback()
def main_options(
    ctx: typer.Context,
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
):
    """Character-level language models (RNN, GRU, LSTM) in NumPy: build a vocabulary, train, sample, score.

    **Examples**

    ```
    charlm train corpora/names.txt --max-time 60
    charlm sample --num 5 --temperature 0.8
    charlm score "Anna" "Xqzzt" --json
    charlm gradcheck --cell lstm
    ```
    """
    forget_stdin()        # each invocation reads its own standard input (matters when run in-process)
    if sys.stdout is None:   # the shell closed it (`charlm sample >&-`): Python gives None, and text would vanish
        sys.stdout = _ClosedStdout()
        if ctx.invoked_subcommand in PRINTS_RESULTS:   # say so now, not after minutes of work (bench, gradcheck)
            fail(CLOSED_STDOUT)
    _safe_stdout()
    keep_freed_memory()   # a training step then reuses the last step's buffers instead of faulting fresh pages in


def _output_errors(e: UnicodeEncodeError):
    """Encoding errors on stdout: undecodable input bytes (lone surrogates U+DC80..U+DCFF, as read with
    --errors surrogateescape or from argv) go out as the same bytes; anything else unencodable as '?'."""
    bad = e.object[e.start:e.end]
    if all(0xDC80 <= ord(c) <= 0xDCFF for c in bad):
        return bytes(ord(c) - 0xDC00 for c in bad), e.end
    return "?" * len(bad), e.end


codecs.register_error("charlm.stdout", _output_errors)


PRINTS_RESULTS = ("sample", "score", "info", "bench", "gradcheck")   # (build-vocab only with -o -)
CLOSED_STDOUT = "standard output is closed: there is nowhere to print the result"


class _ClosedStdout:
    """Stands in for a standard output that was closed before charlm started: writing to it is an error.

    Commands whose product goes to stdout (sample, score, info, build-vocab -o -)
    then fail in one line with exit 1; `train`, which prints to stderr, runs.
    """

    encoding = "utf-8"

    def write(self, text: str) -> int:
        raise CharlmError(CLOSED_STDOUT)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def _safe_stdout():
    """Never crash writing text to stdout (a strict UTF-8 stdout refuses lone surrogates)."""
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        try:
            reconfigure(errors="charlm.stdout")
        except (ValueError, OSError, io.UnsupportedOperation):
            pass


def _json_line(obj) -> str:
    """One JSON object on one line; escaped as ASCII if stdout cannot encode it as is (lone surrogates)."""
    text = json.dumps(obj, ensure_ascii=False)
    try:
        text.encode(getattr(sys.stdout, "encoding", None) or "utf-8")
    except (UnicodeEncodeError, LookupError):
        text = json.dumps(obj, ensure_ascii=True)
    return text


EncodingOpt = Annotated[Optional[str], typer.Option(
    help="Text encoding of the files read. [default: the one the model was trained with]", show_default=False)]
ErrorsOpt = Annotated[Optional[str], typer.Option(
    help="On undecodable bytes: strict, replace, ignore, surrogateescape. [default: as in training]", show_default=False)]

# --engine / --device (train, score): the torch engine lives in charlm/torch_engine, imported only when asked for
EngineOpt = Annotated[str, typer.Option(
    help="numpy: this process's CPU cores; torch: PyTorch (a GPU, or many processes under torchrun), "
         'needs pip install "charlm[torch]".')]
DeviceOpt = Annotated[str, typer.Option(help="With --engine torch: auto (a GPU if any), cpu, cuda or cuda:N.")]

CheckpointOpt = Annotated[Optional[str], typer.Option(
    "-c", "--checkpoint", help="Checkpoint file (default: $CHARLM_CHECKPOINT or charlm.npz).", show_default=False)]


def checkpoint_path(path: Optional[str]) -> str:
    return path or ckpt_io.default_path()


def one_stdin(**inputs) -> None:
    """Fail if more than one input is - (standard input can be read only once)."""
    dashes = [name.replace("_", " ") for name, value in inputs.items() if value == "-"]
    if len(dashes) > 1:
        fail(f"only one input can come from standard input (-), not the {' and the '.join(dashes)}")


# ---------------------------------------------------------------------------
# build-vocab
# ---------------------------------------------------------------------------

@app.command("build-vocab", epilog="""**Examples**

```
charlm build-vocab corpora/names.txt -o names.vocab.json
charlm build-vocab big.txt --min-count 5 --max-size 120
cat notes.txt | charlm build-vocab - -o notes.vocab.json
```
""")
@handle_errors
def build_vocab_cmd(
    corpus: Annotated[str, typer.Argument(help="Text file (UTF-8), one sequence per line; - for stdin.")],
    output: Annotated[str, typer.Option("-o", "--output", help="Where to write the vocabulary JSON (- for stdout).")] = "vocab.json",
    min_count: Annotated[int, typer.Option(help="Characters seen fewer times become `<UNK>`.")] = 1,
    max_size: Annotated[Optional[int], typer.Option(help="Keep at most this many tokens (`<EOS>` and `<UNK>` included), the most frequent.", show_default=False)] = None,
    encoding: Annotated[str, typer.Option(help="Text encoding of the corpus.")] = "utf-8",
    errors: Annotated[str, typer.Option(help="On undecodable bytes: strict (stop), replace, ignore, surrogateescape.")] = "strict",
):
    """Build a character vocabulary: `<EOS>` = 0, `<UNK>` = 1, then the kept characters in code-point order."""
    from charlm.corpus import count_corpus
    from charlm.render import vocab_table
    from charlm.vocab import build_vocab, looks_like_vocab, save_vocab, vocab_json

    if min_count < 1:
        fail("--min-count must be at least 1")
    if max_size is not None and max_size < 3:
        fail("--max-size must be at least 3 (<EOS>, <UNK> and a character)")
    if output != "-":
        _check_writable(output, {"corpus": corpus}, replaces=("vocabulary", "-o", looks_like_vocab))
    stats = count_corpus(read_source(corpus, "corpus"), encoding, errors)
    if stats.num_chars == 0:
        fail(f"corpus {corpus} is empty: it has no characters")
    vocab = build_vocab(stats.counts, min_count, max_size)
    err.print(vocab_table(vocab, stats.num_chars, stats.num_lines))
    if len(vocab) == 2:
        warn(f"no character is seen {min_count:,} times: the vocabulary is only <EOS> and <UNK>, "
             "and a model trained with it would read every character as <UNK>")
    if output == "-":
        sys.stdout.write(vocab_json(vocab))
        sys.stdout.flush()
        return
    save_vocab(vocab, output)
    err.print(f"wrote {output}")


def read_source(path: str, what: str):
    """A text source: a path, or its bytes when it can be read only once.

    "-" is standard input (read once, for one input: `what`); a pipe or FIFO
    (`charlm train <(zcat corpus.gz)`) is read into memory here, since
    training reads its corpus twice (to count, then to encode).
    """
    from charlm.files import open_user_file, read_stdin

    if path == "-":
        return read_stdin(what)
    if os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path):
        with open_user_file(path, what) as f:
            return f.read()
    return path


# ---------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------

def _check_writable(path: str, inputs: Optional[dict[str, Optional[str]]] = None, replaces=None) -> None:
    """Fail now if the output could not be written at the end (or would replace one of the `inputs`).

    `replaces` = (what, option, test): an existing file may be replaced only
    if `test(path)` says it is such a file (a checkpoint, a vocabulary).
    """
    from charlm.files import check_output_path, same_file

    check_output_path(path)
    for what, source in (inputs or {}).items():
        if source and source != "-" and same_file(path, source):
            fail(f"{path} is the {what}: refusing to write over it (name another output file)")
    directory = os.path.dirname(os.path.abspath(os.path.realpath(path)))
    if not os.path.isdir(directory):
        fail(f"cannot write {path}: directory {os.path.dirname(path) or directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        fail(f"cannot write {path}: directory {os.path.dirname(path) or directory} is not writable")
    if replaces is not None and os.path.isfile(path) and not replaces[2](path):
        what, option, _ = replaces
        fail(f"{path} exists and is not a charlm {what}: refusing to overwrite it (name another {option}, or remove it)")


def _yaml_path(from_yaml: dict, key: str, source: Optional[str]) -> Optional[str]:
    """A file named in the YAML config (relative to the working directory, as on the command line)."""
    value = from_yaml.get(key)
    if value is not None and not isinstance(value, str):
        fail(f"{source}: {key} must be a file name, not {value!r}")
    return value


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
charlm train input.txt --engine torch --device cuda  # PyTorch, on a GPU
torchrun --nproc-per-node 2 -m charlm train input.txt --engine torch
```
""")
@handle_errors
def train(
    corpus: Annotated[str, typer.Argument(help="Training text (UTF-8), one sequence per line; - for stdin.")],
    checkpoint: CheckpointOpt = None,
    config: Annotated[Optional[str], typer.Option(help="YAML file of options (flags override it).", show_default=False)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run saved in the checkpoint (same options; --steps counts the run's total).")] = False,
    vocab: Annotated[Optional[str], typer.Option(help="Vocabulary JSON (default: built from the corpus).", show_default=False)] = None,
    cell: Annotated[Optional[str], typer.Option(help="rnn, gru or lstm. [default: gru]", show_default=False)] = None,
    hidden_size: Annotated[Optional[int], typer.Option(help="Hidden units per layer. [default: 256]", show_default=False)] = None,
    num_layers: Annotated[Optional[int], typer.Option(help="Stacked layers. [default: 2]", show_default=False)] = None,
    activation: Annotated[Optional[str], typer.Option(help="rnn activation: tanh or relu. [default: tanh]", show_default=False)] = None,
    dropout: Annotated[Optional[float], typer.Option(help="Dropout between layers and before the head. [default: auto: 0 for a budget of a few passes over the corpus, up to 0.3 for many]", show_default=False)] = None,
    char_dropout: Annotated[Optional[float], typer.Option(help="Replace each input character (not `<EOS>`) by `<UNK>` with this probability while training. [default: auto: 0.1 with a dropout of 0.3 or more, else 0]", show_default=False)] = None,
    dtype: Annotated[Optional[str], typer.Option(help="float32 or float64. [default: float32]", show_default=False)] = None,
    line_state: Annotated[Optional[str], typer.Option(help="reset: each line is its own sequence (state restarts after `<EOS>`); carry: the state flows across lines; auto: reset for a list of items (no blank lines), else carry. [default: auto]", show_default=False)] = None,
    seq_len: Annotated[Optional[int], typer.Option(help="Time steps of truncated BPTT. [default: 64]", show_default=False)] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Sequences per batch. [default: 32]", show_default=False)] = None,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate. [default: 0.004]", show_default=False)] = None,
    optimizer: Annotated[Optional[str], typer.Option(help="adam, sgd (with momentum) or adagrad. [default: adam]", show_default=False)] = None,
    momentum: Annotated[Optional[float], typer.Option(help="SGD momentum. [default: 0.9]", show_default=False)] = None,
    weight_decay: Annotated[Optional[float], typer.Option(help="Decoupled weight decay on weight matrices. [default: 0]", show_default=False)] = None,
    schedule: Annotated[Optional[str], typer.Option(help="cosine or constant learning rate. [default: cosine]", show_default=False)] = None,
    warmup_steps: Annotated[Optional[int], typer.Option(help="Linear learning-rate warm-up. [default: 20]", show_default=False)] = None,
    min_lr_ratio: Annotated[Optional[float], typer.Option(help="Cosine floor as a fraction of --lr. [default: 0.1]", show_default=False)] = None,
    clip: Annotated[Optional[float], typer.Option(help="Clip the global gradient norm to this (0 = off). [default: 5]", show_default=False)] = None,
    clip_value: Annotated[Optional[float], typer.Option(help="Clip each gradient entry to ±this (0 = off). [default: 0]", show_default=False)] = None,
    ngram: Annotated[Optional[int], typer.Option(help="Order of the Kneser-Ney character n-gram that is counted on the training split and interpolated with the network, its share fitted on validation (0 = the network alone). [default: 7]", show_default=False)] = None,
    ema: Annotated[Optional[float], typer.Option(help="Decay of the exponential moving average of the weights that validation, sample and score use (0 = off: the weights themselves). [default: 0.999]", show_default=False)] = None,
    steps: Annotated[Optional[int], typer.Option(help="Total optimizer steps.", show_default=False)] = None,
    epochs: Annotated[Optional[float], typer.Option(help="Passes over the training split.", show_default=False)] = None,
    max_time: Annotated[Optional[float], typer.Option(help="Seconds of training (default 180 when no --steps/--epochs).", show_default=False)] = None,
    val_fraction: Annotated[Optional[float], typer.Option(help="Share of the corpus held out for validation, as ten stretches spread through it. [default: 0.1]", show_default=False)] = None,
    eval_every: Annotated[Optional[int], typer.Option(help="Validate every N steps (0 = at the end only). [default: 200, or every pass over a small corpus]", show_default=False)] = None,
    save_every: Annotated[Optional[int], typer.Option(help="Save a checkpoint every N steps (0 = at the end only). [default: 500]", show_default=False)] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed: same seed, corpus and options, same model. [default: 0]", show_default=False)] = None,
    min_count: Annotated[Optional[int], typer.Option(help="Characters rarer than this become `<UNK>`. [default: 1]", show_default=False)] = None,
    max_size: Annotated[Optional[int], typer.Option(help="Keep at most this many tokens in the vocabulary.", show_default=False)] = None,
    max_bad_steps: Annotated[Optional[int], typer.Option(help="Stop after this many non-finite steps in a row. [default: 10]", show_default=False)] = None,
    encoding: Annotated[Optional[str], typer.Option(help="Text encoding of the corpus. [default: utf-8]", show_default=False)] = None,
    errors: Annotated[Optional[str], typer.Option(help="On undecodable bytes: strict, replace, ignore, surrogateescape. [default: strict]", show_default=False)] = None,
    workers: Annotated[Optional[int], typer.Option(help="Processes that share each step's batch, each on its rows (1: this process alone). [default: auto: 2 when there are two cores and rows enough per worker, else 1]", show_default=False)] = None,
    engine: EngineOpt = "numpy",
    device: DeviceOpt = "auto",
):
    """Train a character language model with truncated backpropagation through time.

    Saves the checkpoint at the end, every `--save-every` steps, and on
    Ctrl-C (exit 130; resume with `--resume`).
    """
    from charlm.config import DEFAULT_MAX_TIME, build_config
    from charlm.torch_engine import is_leader, trainer
    from charlm.train import check_resume, load_corpus
    from charlm.vocab import load_vocab

    run_training = trainer(engine, device)     # --engine torch: PyTorch (one-line error without it)

    flags = dict(cell=cell, hidden_size=hidden_size, num_layers=num_layers, activation=activation, dropout=dropout, char_dropout=char_dropout,
                 dtype=dtype, line_state=line_state, seq_len=seq_len, batch_size=batch_size, lr=lr, optimizer=optimizer, momentum=momentum,
                 weight_decay=weight_decay, schedule=schedule, warmup_steps=warmup_steps, min_lr_ratio=min_lr_ratio,
                 clip=clip, clip_value=clip_value, ema=ema, ngram=ngram, steps=steps, epochs=epochs, max_time=max_time,
                 val_fraction=val_fraction, eval_every=eval_every, save_every=save_every, seed=seed,
                 min_count=min_count, max_size=max_size, max_bad_steps=max_bad_steps, encoding=encoding, errors=errors,
                 workers=workers)
    one_stdin(corpus=corpus, config_file=config, vocabulary=vocab)
    path = checkpoint_path(checkpoint)
    # before training, not after it: a run must not be lost for want of a directory
    _check_writable(path, {"corpus": corpus, "config file": config, "vocabulary": vocab},
                    replaces=None if resume else ("checkpoint", "-c", ckpt_io.looks_like_checkpoint))
    from charlm.config import load_yaml

    from_yaml = load_yaml(config) if config else {}
    if vocab is None:
        vocab = _yaml_path(from_yaml, "vocab", config)
        one_stdin(corpus=corpus, vocabulary=vocab)          # (a `vocab: -` in the YAML file)
    from_yaml.pop("vocab", None)
    from_flags = {k: v for k, v in flags.items() if v is not None}
    named = {str(k).replace("-", "_") for k in from_yaml} | set(from_flags)   # the options the user gave
    previous = None
    if resume:
        previous = ckpt_io.load(path)
        if not previous.resumable:
            fail(f"{path} holds no resume state (it was not saved by `charlm train`)")
        cfg = dataclasses.replace(previous.config)  # a copy: check_resume compares it with the saved one
        cfg.update(from_yaml, source=config or "config")
        cfg.update(from_flags, source="option")  # flags override the file
        cfg.validate()
    else:
        cfg = build_config(config, flags, from_yaml)
    if not cfg.budget_given:
        cfg.max_time = DEFAULT_MAX_TIME
        err.print(f"No --steps, --epochs or --max-time given: training for {DEFAULT_MAX_TIME:.0f} seconds.")
    voc = load_vocab(vocab) if vocab else (previous.vocab if previous is not None else None)
    if vocab and {"min_count", "max_size"} & named:
        warn("--min-count and --max-size shape a vocabulary built from the corpus; with --vocab they are ignored")
    data = load_corpus(read_source(corpus, "corpus"), cfg, voc, name=corpus if corpus != "-" else "<stdin>")
    if len(data.vocab) == 2:
        warn("the vocabulary is only <EOS> and <UNK>" + ("" if vocab else f" (no character is seen --min-count "
             f"{cfg.min_count:,} times)") + ": the model reads every character as <UNK>")
    elif vocab:   # a vocabulary file: say how much of this corpus it leaves to <UNK>
        from charlm.vocab import UNK_ID

        unknown = sum(int(np.count_nonzero(ids == UNK_ID)) for ids in (data.train_ids, data.val_ids))
        total = len(data.train_ids) + len(data.val_ids)
        if total and unknown > total // 10:
            warn(f"{vocab} leaves {unknown / total:.1%} of this corpus's tokens to <UNK>")
    from charlm.ngram import max_order

    k = max_order(len(data.vocab))
    if cfg.ngram and cfg.ngram > k:
        warn(f"over {len(data.vocab):,} tokens an n-gram can be at most a {k}-gram here (its keys are 64-bit "
             f"integers): counting {k}-grams, not {cfg.ngram}-grams")
    if cfg.ngram and len(data.val_ids) == 0:
        why = ("--val-fraction 0" if cfg.val_fraction == 0 else
               f"the corpus, {len(data.train_ids):,} tokens, is too small to hold out any")
        warn(f"no validation text ({why}): the n-gram's share cannot be fitted, so the model is the network alone")
    notes = []
    if previous is not None:
        notes = [f"resume: {change}" for change in check_resume(cfg, previous, data, named)]
    elif os.path.exists(path) and not os.path.isdir(path):
        warn(f"{path} exists and will be overwritten (use --resume to continue that run)")

    stop = _Stop()
    old_int = signal.signal(signal.SIGINT, stop)
    old_term = signal.signal(signal.SIGTERM, stop)
    from charlm.progress import TrainReporter

    # under torchrun the ranks other than 0 train silently (rank 0 reports and writes the checkpoint)
    reporter = TrainReporter(err if is_leader() else _Console(stderr=True, quiet=True), cfg, data, path, notes=notes)
    try:
        with reporter:
            result, ended = run_training(cfg, data, resume=previous, save=lambda c: ckpt_io.save(c, path),
                                         on_event=reporter.on_event,
                                         should_stop=lambda: bool(stop) or err.reader_gone)
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
    from charlm.baselines import baselines

    reporter.summary(result, ended, baselines(data.train_ids, data.val_ids, len(data.vocab)))
    if ended == "interrupted" and stop:
        err.print(f"Saved a resumable checkpoint to {path} at step {result.train_state['step']}. "
                  f"Resume with: charlm train {shlex.quote(corpus)} --resume"
                  + (f" -c {shlex.quote(path)}" if checkpoint else ""))
        raise typer.Exit(128 + stop.signum)


# ---------------------------------------------------------------------------
# sample
# ---------------------------------------------------------------------------

@app.command(epilog="""**Examples**

```
charlm sample                                  # one sample from charlm.npz
charlm sample --num 10 --temperature 0.8
charlm sample --greedy --prime "ROMEO:" --length 300 --no-stop-at-eos
charlm sample -c names.npz --top-k 5 --seed 7 --show-logprob
```
""")
@handle_errors
def sample(
    checkpoint: CheckpointOpt = None,
    length: Annotated[int, typer.Option("-n", "--length", help="Maximum characters per sample.")] = 200,
    temperature: Annotated[Optional[float], typer.Option("-t", "--temperature", help="Softmax temperature (0 = greedy; <1 safer, >1 wilder). [default: 1]", show_default=False)] = None,
    greedy: Annotated[bool, typer.Option("--greedy", help="Always take the most likely character (same as --temperature 0).")] = False,
    top_k: Annotated[int, typer.Option(help="Sample only from the k most likely characters (0 = all).")] = 0,
    top_p: Annotated[float, typer.Option(help="Sample from the smallest set of characters with this much probability (1 = all).")] = 1.0,
    prime: Annotated[Optional[str], typer.Option(help="Text the model reads first (printed before the sample).", show_default=False)] = None,
    prime_file: Annotated[Optional[str], typer.Option(help="Read the prime from a file (- for stdin).", show_default=False)] = None,
    echo_prime: Annotated[bool, typer.Option("--echo-prime/--no-echo-prime", help="Print the prime before each sample.")] = True,
    num: Annotated[int, typer.Option(help="Number of independent samples (generated as one batch).")] = 1,
    seed: Annotated[Optional[int], typer.Option(help="Random seed (same seed, same text). [default: random]", show_default=False)] = None,
    stop_at_eos: Annotated[Optional[bool], typer.Option("--stop-at-eos/--no-stop-at-eos", help="End a sample at `<EOS>` (end of line). [default: on for a list of items (no blank lines), off for prose]", show_default=False)] = None,
    show_logprob: Annotated[bool, typer.Option("--show-logprob", help="After each sample, print its log-probability under the model (to stderr).")] = False,
    weights: Annotated[str, typer.Option(help="best: the (averaged) weights with the best validation loss; last: the weights at the end of training.")] = "best",
    network_only: Annotated[bool, typer.Option("--network-only", help="Use the network alone, without the n-gram it was interpolated with in training.")] = False,
    encoding: EncodingOpt = None,
    errors: ErrorsOpt = None,
):
    """Generate text from a trained model, greedily or by sampling the softmax."""
    from charlm.render import fmt_logprob
    from charlm.sample import generate

    if length < 1:
        fail("--length must be at least 1")
    if greedy and temperature not in (None, 0):
        fail("give --greedy or --temperature, not both (--greedy is --temperature 0)")
    temperature = 1.0 if temperature is None else temperature
    if temperature < 0 or not math.isfinite(temperature):
        fail("--temperature must be a finite number ≥ 0 (0 means greedy)")
    if num < 1:
        fail("--num must be at least 1")
    if top_k < 0:
        fail("--top-k must be ≥ 0 (0 = no limit)")
    if not (0 < top_p <= 1):
        fail("--top-p must be in (0, 1]")
    if seed is not None and seed < 0:
        fail("--seed must be non-negative")
    if prime is not None and prime_file is not None:
        fail("give --prime or --prime-file, not both")
    one_stdin(checkpoint=checkpoint_path(checkpoint), prime_file=prime_file)
    ck = ckpt_io.load(checkpoint_path(checkpoint))
    V = len(ck.vocab)
    if top_k > V:
        fail(f"--top-k {top_k} is larger than the vocabulary ({V} tokens)")
    _check_batch_fits(num, V, ck.arch, length, len(prime or "") if prime_file is None else 0)
    if prime_file is not None:
        from charlm.corpus import iter_text
        prime = "".join(iter_text(read_source(prime_file, "prime file"), encoding or ck.config.encoding, errors or ck.config.errors,
                                  what="prime file"))
    params = ck.weights(weights)
    mix = None if network_only else ck.mixture(weights)
    prime_ids = None
    if prime:
        prime_ids = ck.vocab.encode(prime)
        unknown = sorted({c for c, i in zip(prime, prime_ids) if i == 1 and c != "\n"})
        if unknown:
            warn(f"the prime has characters outside the vocabulary, read as <UNK>: {' '.join(map(repr, unknown))}")
    if stop_at_eos is None:
        stop_at_eos = bool(ck.meta.get("corpus", {}).get("line_items", False))
    rng = np.random.default_rng(seed)
    T = 0.0 if greedy else temperature
    vocab = ck.vocab
    stream = out.file
    texts = [""] * num
    logps = np.zeros(num)
    ntoks = [0] * num        # tokens generated (a final <EOS> included), which logps sums over
    head = (prime or "") if echo_prime else ""
    live = num == 1
    if live and head:
        stream.write(head)
        stream.flush()
    for ids, active, lp in generate(params, ck.arch, rng, num, length, T, top_k, top_p, prime_ids, stop_at_eos, mix):
        for n in np.flatnonzero(active):
            tok = int(ids[n])
            logps[n] += lp[n]
            ntoks[n] += 1
            if stop_at_eos and tok == 0:
                continue
            ch = vocab.decode([tok])
            texts[n] += ch
            if live:
                stream.write(ch)
                stream.flush()
    for n in range(num):
        if not live:
            stream.write(head + texts[n])
        if not (head + texts[n]).endswith("\n"):
            stream.write("\n")
        if not stop_at_eos and num > 1 and n < num - 1:
            stream.write("\n")
        stream.flush()
        if show_logprob:
            err.print(f"sample {n + 1}: {fmt_logprob(logps[n], ntoks[n])}")


def _check_batch_fits(num: int, V: int, arch, length: int, prime_chars: int) -> None:
    """Refuse, before allocating, a --num whose batch could not fit in this machine's memory.

    A generous estimate per sample: the float64 distributions of a step and
    their sorted copies (8·V), the forward pass over the prime (3 arrays of
    every layer's gates per prime character) and the text.  Without it a
    huge --num only failed once the machine had swapped its way to a
    MemoryError (15 GB here for --num 1000000000).
    """
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):   # (not on Windows: the MemoryError handler remains)
        return
    gates = {"lstm": 4, "gru": 3}.get(arch.cell, 1) * arch.hidden_size * arch.num_layers
    need = num * (8 * (8 * V + 3 * gates * (prime_chars + 1) + 2 * length) + 200)
    if need > 0.8 * memory:
        fail(f"not enough memory: {num:,} samples at once would need about {need / 2**30:,.1f} GiB, and this machine "
             f"has {memory / 2**30:,.1f} GiB (ask for fewer with --num)")


# ---------------------------------------------------------------------------
# score
# ---------------------------------------------------------------------------

@app.command(epilog="""**Examples**

```
charlm score "Anna" "Zxqv"                    # a table of log-likelihoods
charlm score --file sentences.txt --json | jq .bits_per_char
charlm score --document --file val.txt    # the file as one sequence
echo "hello world" | charlm score -
charlm score --file big.txt --json --engine torch --device cuda
```
""")
@handle_errors
def score(
    sentences: Annotated[Optional[list[str]], typer.Argument(help="Sentences to score; - reads one per line from stdin.", show_default=False)] = None,
    checkpoint: CheckpointOpt = None,
    file: Annotated[Optional[str], typer.Option("-f", "--file", help="Score each line of this file (- for stdin).", show_default=False)] = None,
    document: Annotated[bool, typer.Option("--document", help="Score the whole --file as one sequence (state carried over lines) and report totals.")] = False,
    exact: Annotated[bool, typer.Option("--exact", help="With --document: read the file strictly in order, one character at a time (slower; the default reads it in checked pieces and gives the same number).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line, per sentence.")] = False,
    show: Annotated[bool, typer.Option("--show", help="Show each sentence coloured by surprisal, with the least expected characters and the model's alternatives.")] = False,
    weights: Annotated[str, typer.Option(help="best: the (averaged) weights with the best validation loss; last: the weights at the end of training.")] = "best",
    batch_size: Annotated[int, typer.Option(help="Sentences scored together.")] = 256,  # score.BATCH_SIZE
    network_only: Annotated[bool, typer.Option("--network-only", help="Use the network alone, without the n-gram it was interpolated with in training.")] = False,
    workers: Annotated[Optional[int], typer.Option(help="Processes that read the batches of sentences, one batch each at a time (1: this process alone; --document reads in this one). [default: auto: 2 when there are two cores and enough to read, else 1]", show_default=False)] = None,
    engine: EngineOpt = "numpy",
    device: DeviceOpt = "auto",
    encoding: EncodingOpt = None,
    errors: ErrorsOpt = None,
):
    """Score text: log P(text) = Σ log P(char | previous chars), including the final `<EOS>`.

    Reports the log-likelihood in nats, bits per character (`<EOS>` counted
    as a character), perplexity, and how many characters were `<UNK>`.
    """
    from charlm.corpus import encode_corpus, read_lines
    from charlm.score import score_document, score_sentences

    if batch_size < 1:
        fail("--batch-size must be at least 1")
    if workers is not None and workers < 1:
        fail("--workers must be at least 1 (1: no worker processes); leave it out for auto")
    if workers is not None and workers > 1 and os.name != "posix":
        fail("--workers above 1 needs a POSIX system (Linux, macOS); use --workers 1")
    if show and as_json:
        fail("give --show (a picture) or --json (for scripts), not both")
    if show and document:
        fail("--show explains sentences; it does not combine with --document")
    if exact and not document:
        fail("--exact applies to --document only (sentences are always scored exactly)")
    if (sentences or []).count("-") > 1:
        fail("standard input is read once: give - once among the sentences")
    if engine != "numpy":   # --engine torch: PyTorch reads the network of sentences (one-line error without it)
        from charlm.torch_engine import check_engine, require_torch

        check_engine(engine)
        require_torch()
        if document or show:
            fail("--engine torch scores sentences; --document and --show read with --engine numpy")
    elif device != "auto":
        fail("--device applies to --engine torch")
    one_stdin(checkpoint=checkpoint_path(checkpoint), file=file, sentences="-" if "-" in (sentences or []) else None)
    ck = ckpt_io.load(checkpoint_path(checkpoint))
    params = ck.weights(weights)
    mix = None if network_only else ck.mixture(weights)
    sentences_given = sentences
    sentences = list(sentences or [])
    decoding = (encoding or ck.config.encoding, errors or ck.config.errors)
    if document:
        if file is None:
            fail("--document needs --file FILE (or --file - for stdin)")
        if sentences:
            fail("--document scores --file; do not also give sentences")
        ids = encode_corpus(read_source(file, "file"), ck.vocab, *decoding, what="file")
        if len(ids) == 0:
            fail(f"{file} is empty")
        results = [score_document(params, ck.arch, ck.vocab, ids, file, exact=exact, mix=mix)]
    else:
        if "-" in sentences:   # a lone - among the sentences: the lines of stdin, in its place
            at = sentences.index("-")
            sentences[at:at + 1] = read_lines(read_source("-", "sentences"), *decoding, what="standard input")
        if file is not None:
            sentences += read_lines(read_source(file, "file"), *decoding)
        if not sentences:
            given = (f"{file} has no lines" if file is not None else "standard input has no lines"
                     if "-" in (sentences_given or []) else "give sentences, --file FILE, or - to read stdin")
            fail(f"nothing to score: {given}")
        if engine != "numpy":   # under torchrun the ranks share the batches; rank 0 prints
            from charlm.torch_engine.score import score_on_engine

            results, leader = score_on_engine(params, ck.arch, ck.vocab, sentences, device, batch_size, mix)
            if not leader:
                return
        else:
            results = score_sentences(params, ck.arch, ck.vocab, sentences, batch_size=batch_size, mix=mix, workers=workers,
                                      on_failure=lambda msg: warn(f"scoring workers: {msg}; this process reads the "
                                                                  "remaining batches (--workers 1 does so from the start)"))
    if as_json:
        for r in results:
            print(_json_line(r.to_json()))
        return
    from charlm.render import heat_legend, heat_map, score_table

    out.print(score_table(results))
    if show:
        from charlm.score import explain

        out.print(heat_legend())
        for r in results:
            out.print(heat_map(explain(params, ck.arch, ck.vocab, r.text, mix=mix)))
    if document:
        r = results[0]
        by = "" if mix is None else f", by the network interpolated with its {mix.ngram.order}-gram (network share {mix.weight:.2f})"
        err.print(f"{r.num_tokens:,} tokens ({r.num_eos:,} <EOS>, {r.num_unk:,} <UNK>) scored as one sequence{by}")
    elif any(r.num_unk for r in results):
        err.print("characters outside the vocabulary were scored as <UNK>")


# ---------------------------------------------------------------------------
# info
# ---------------------------------------------------------------------------

@app.command(epilog="""**Examples**

```
charlm info
charlm info run.npz --json | jq .parameters.total
charlm info --curve
```
""")
@handle_errors
def info(
    path: Annotated[Optional[str], typer.Argument(help="Checkpoint (default: $CHARLM_CHECKPOINT or charlm.npz).", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    curve: Annotated[bool, typer.Option("--curve", help="Draw the training and validation bits/char against step (with --json: add the evaluation history).")] = False,
):
    """Describe a checkpoint: model, vocabulary, training, validation."""
    from charlm.inspect import describe, render_info

    p = checkpoint_path(path)
    ck = ckpt_io.load(p)
    d = describe(ck, p)
    if as_json:
        if curve:   # the points the curve is drawn from
            d["history"] = (ck.train_state or {}).get("history") or []
        print(_json_line(d))
        return
    render_info(out, d, ck, curve)


@app.command(epilog="""**Examples**

```
charlm bench                      # about 3 minutes
charlm bench --quick --seconds 5
charlm bench --repeats 3          # training: medians of 3 turns
charlm bench --peer-python ~/torch-venv/bin/python --json > b.json
charlm bench --engine torch       # adds the torch engine's rows
```
""")
@handle_errors
def bench(
    seconds: Annotated[float, typer.Option(help="Seconds of training per configuration.")] = 15.0,
    quick: Annotated[bool, typer.Option("--quick", help="Only the first training configuration, fewer scoring sentences and a shorter document, no 7-gram rows.")] = False,
    data: Annotated[Optional[str], typer.Option(help="Text to train on (default: tinyshakespeare if found, else synthetic).", show_default=False)] = None,
    peer: Annotated[Optional[str], typer.Option(help="PyTorch training peer script (default: shared/peers/torch_charlm.py if found).", show_default=False)] = None,
    sample_peer: Annotated[Optional[str], typer.Option(help="PyTorch sampling peer script (default: shared/peers/torch_sample.py if found).", show_default=False)] = None,
    peer_python: Annotated[Optional[str], typer.Option(help="A Python that can import torch, to run the peers (default: this one).", show_default=False)] = None,
    repeats: Annotated[int, typer.Option(help="Measure each training configuration and its peer this many times, taking turns; report the medians.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as one JSON object.")] = False,
    engine: Annotated[str, typer.Option(help="torch: also the torch engine beside the NumPy engine, DDP with 2 processes beside 1, and a GPU if there is one.")] = "numpy",
):
    """Measure training, sampling and scoring speed, beside the peers when they can run."""
    from charlm.bench import render, run_bench
    from charlm.torch_engine import check_engine, require_torch

    if check_engine(engine) == "torch":
        require_torch()
    result = run_bench(seconds, data, peer, sample_peer, peer_python, quick,
                       progress=lambda msg: err.print(f"[dim]… {escape(msg)}[/]", markup=True), repeats=repeats,
                       engine=engine)
    if as_json:
        print(json.dumps(result))
    else:
        out.print(render(result))


@app.command(epilog="""**Examples**

```
charlm gradcheck                  # rnn, gru and lstm, 2 layers each
charlm gradcheck --cell lstm --num-layers 3 --seq-len 8
charlm gradcheck --cell rnn --activation relu --line-state reset
charlm gradcheck --cell gru --hidden-size 32 --entries 20 --json
```
""")
@handle_errors
def gradcheck(
    cell: Annotated[str, typer.Option(help="rnn, gru, lstm, or all three.")] = "all",
    num_layers: Annotated[int, typer.Option(help="Stacked layers.")] = 2,
    hidden_size: Annotated[int, typer.Option(help="Hidden units per layer.")] = 4,
    activation: Annotated[str, typer.Option(help="The vanilla RNN's g: tanh or relu.")] = "tanh",
    line_state: Annotated[str, typer.Option(help="carry: the state flows through `<EOS>`; reset: it restarts from zero after each `<EOS>` in the input.")] = "carry",
    vocab_size: Annotated[int, typer.Option(help="Tokens in the (random) vocabulary.")] = 7,
    seq_len: Annotated[int, typer.Option(help="Time steps T that BPTT goes back through.")] = 5,
    batch_size: Annotated[int, typer.Option(help="Sequences B in the batch.")] = 3,
    seed: Annotated[int, typer.Option(help="Random seed for the weights, inputs, targets and initial state.")] = 0,
    epsilon: Annotated[float, typer.Option(help="The step ε of the differences.")] = 1e-5,
    tolerance: Annotated[float, typer.Option(help="The largest difference ‖approx − bptt‖ / (‖approx‖ + ‖bptt‖) that passes.")] = 1e-6,
    entries: Annotated[int, typer.Option(help="Check this many random entries of each array (0 = every entry).")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object instead of the tables.")] = False,
):
    """Check BPTT's gradients against finite differences in float64, on a small random model.

    For every weight, bias and initial state: (J(θ + ε) − J(θ − ε)) / 2ε for each entry, with J the loss summed
    over all steps, against the gradient backpropagation through time computes. Exit code 1 if any differs.
    """
    from charlm.cells import ACTIVATIONS, CELLS
    import time

    from charlm.gradcheck import arrays_of, check, gradcheck_json, make_problem, summed_loss
    from charlm.model import Arch
    from charlm.render import gradcheck_report

    cells = list(CELLS) if cell == "all" else [cell]
    if cell != "all" and cell not in CELLS:
        fail(f"--cell must be one of {', '.join(CELLS)} or all, not {cell!r}")
    if activation not in ACTIVATIONS:
        fail(f"--activation must be one of {', '.join(ACTIVATIONS)}, not {activation!r}")
    if activation != "tanh" and cell in ("gru", "lstm"):
        fail(f"--activation applies to --cell rnn only (the {cell.upper()}'s gates use σ and tanh)")
    if line_state not in ("carry", "reset"):
        fail(f"--line-state must be carry or reset, not {line_state!r}")
    for name, value, least in (("--num-layers", num_layers, 1), ("--hidden-size", hidden_size, 1),
                               ("--vocab-size", vocab_size, 2), ("--seq-len", seq_len, 1),
                               ("--batch-size", batch_size, 1), ("--entries", entries, 0), ("--seed", seed, 0)):
        if value < least:
            fail(f"{name} must be at least {least}")
    if not (0 < epsilon <= 0.1):
        fail("--epsilon must be in (0, 0.1]")
    if not (0 < tolerance < 1):
        fail("--tolerance must be in (0, 1)")
    reports, failed = [], []
    for c in cells:
        arch = Arch(c, vocab_size, hidden_size, num_layers, activation if c == "rnn" else "tanh",
                    line_state == "reset")
        problem = make_problem(arch, seq_len, batch_size, seed)
        perturbed = sum(a.size if not entries else min(entries, a.size) for a in arrays_of(problem).values())
        t0 = time.perf_counter()
        summed_loss(problem)
        expected = 2 * perturbed * (time.perf_counter() - t0)
        if expected > 5:
            warn(f"{c}: {perturbed:,} entries to perturb, two forward passes each: about {expected:.0f} s "
                 "(--entries N checks N of each array)")
        results = check(problem, epsilon, entries, seed)
        failed += [(c, r) for r in results if not r.ok(tolerance)]
        reports.append((arch, results))
    if as_json:
        print(_json_line(gradcheck_json(reports, tolerance, epsilon=epsilon, seq_len=seq_len,
                                        batch_size=batch_size, seed=seed)))
    else:
        for renderable in gradcheck_report(reports, tolerance, epsilon, seq_len, batch_size):
            out.print(renderable)
    if failed:
        names = ", ".join(f"{c} {r.name} ({r.difference:.1e})" for c, r in failed[:4])
        more = f" and {len(failed) - 4} more" if len(failed) > 4 else ""
        fail(f"{len(failed)} gradient{'s differ' if len(failed) != 1 else ' differs'} from finite differences by more "
             f"than {tolerance:g}: {names}{more}")


def _interrupted(signum, frame):
    """Ctrl-C outside training: stop at once with the conventional code 130."""
    try:
        sys.stdout.flush()
    except Exception:
        pass
    err.print("\ninterrupted")
    os._exit(128 + signum)


def main():
    """Entry point: run the app; errors become one line on stderr, never a traceback."""
    signal.signal(signal.SIGINT, _interrupted)
    try:
        app()  # usage errors exit 2; typer.Exit carries its own code
    except CharlmError as e:
        error_line(str(e))
        sys.exit(1)
    except BrokenPipeError:
        _quiet_broken_pipe()
        sys.exit(0)
    except MemoryError as e:  # sizes the machine cannot hold (--num, --hidden-size, --batch-size, ...)
        error_line(f"not enough memory{': ' + str(e) if str(e) else ''} (try smaller sizes)")
        sys.exit(1)
    except OSError as e:  # the system refused: a full disk, a closed or failing output
        if os.environ.get("CHARLM_DEBUG"):
            raise
        where = f" ({e.filename})" if e.filename else ""
        error_line(f"{e.strerror or e}{where}")
        sys.exit(1)
    except Exception as e:  # anything else is a bug in charlm
        if os.environ.get("CHARLM_DEBUG"):
            raise
        error_line(f"{type(e).__name__}: {e} (set CHARLM_DEBUG=1 for a traceback)", "internal error")
        sys.exit(1)


def _quiet_broken_pipe():
    """The reader went away (e.g. `charlm sample | head -1`): send the rest of stdout nowhere."""
    _to_devnull(sys.stdout)


def _to_devnull(stream) -> None:
    """Point the stream's file descriptor at /dev/null (nothing more reaches the reader that went away)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):  # no real descriptor (a test runner)
        pass
