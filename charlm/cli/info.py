"""`charlm info`: describe a checkpoint, as tables or as JSON."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from charlm import checkpoint as ckpt_io
from charlm.checkpoint import Checkpoint
from charlm.cli.app import app, handle_errors
from charlm.cli.console import json_line, out
from charlm.cli.options import checkpoint_path
from charlm.cli.render import fmt_count, fmt_seconds, history_curve, shared_by


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
    from charlm.describe import describe

    p = checkpoint_path(path)
    ck = ckpt_io.load(p)
    d = describe(ck, p)
    if as_json:
        if curve:   # the points the curve is drawn from
            d["history"] = (ck.train_state or {}).get("history") or []
        print(json_line(d))
        return
    render_info(out, d, ck, curve)


def render_info(console: Console, d: dict, ck: Checkpoint, show_curve: bool = False) -> None:
    t = Table(title=d["path"], show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    t.add_row("format", f"charlm-checkpoint version {d['format_version']}, {d['dtype']}")
    act = f" ({d['activation']})" if d["cell"] == "rnn" else ""
    both = " each way (bidirectional: for `check`)" if ck.config.bidirectional else ""   # (issue 24)
    t.add_row("model", f"{d['cell']}{act}, {d['num_layers']} layer(s) × {d['hidden_size']} hidden{both}")
    params = d["parameters"]
    t.add_row("parameters", f"{params['total']:,} in all: " + ", ".join(
        f"{k} {v:,}" for k, v in params.items() if k != "total"))
    t.add_row("vocabulary", f"{d['vocab_size']} tokens: <EOS> = 0, <UNK> = 1, then {d['vocab_preview']!r}")
    if d["steps"] is not None:
        t.add_row("training", f"{d['steps']:,} steps, {fmt_seconds(d['train_seconds'] or 0)}, "
                  f"{fmt_count(d['chars_seen'] or 0)} characters seen"
                  + (f", each batch{shared_by(d['workers'])}" if (d["workers"] or 1) > 1 else ""))
    if d["corpus"]:
        c = d["corpus"]
        files = f"{c['num_files']:,} file{'s' if c['num_files'] != 1 else ''}, " if c.get("num_files") else ""
        t.add_row("corpus", f"{c.get('name')}: {files}{fmt_count(c.get('num_chars', 0))} characters, "
                  f"{fmt_count(c.get('num_lines', 0))} lines"
                  + (" (a list of items: samples stop at <EOS>)" if c.get("line_items") else ""))
    if d["best_val_bpc"] is not None:
        t.add_row("validation", f"best {d['best_val_bpc']:.4f} bits/char at step {d['best_step']:,}; "
                  f"last {d['last_val_bpc']:.4f}")
    if d["ngram"]:
        ng = d["ngram"]
        share = ng["network_share"].get("best", ng["network_share"].get("last"))
        both = ng.get("combination", {}).get("best")
        if both:   # a bidirectional model's (charlm.combine)
            t.add_row("n-grams", f"forward, backward and two-sided Kneser-Ney {ng['order']}-grams, combined with "
                      f"the network (weights {', '.join(f'{w:.2f}' for w in both)}: network, forward, backward, "
                      "unigram, two-sided)")
        else:
            t.add_row("n-gram", f"Kneser-Ney {ng['order']}-gram, {ng['grams']:,} grams; interpolated with the network"
                      + ("" if share is None else f" (network {share:.2f}, n-gram {1 - share:.2f})"))
    if d.get("init_from"):
        b = d["init_from"]
        added = f", {b['added_chars']} characters added to its {b['vocab_size']} tokens" if b["added_chars"] else ""
        t.add_row("fine-tuned", f"from {b['path']} ({b['steps']:,} steps on {b['corpus'] or 'an unnamed corpus'}){added}")
    t.add_row("resumable", "yes" if d["resumable"] else "no")
    opts = d["options"]
    t.add_row("options", ", ".join(f"{k}={v}" for k, v in opts.items() if v is not None))
    console.print(t)
    if show_curve:
        hist = (ck.train_state or {}).get("history") or []
        for axis, key in (("step", "step"), ("training seconds", "seconds")):
            console.print(f"bits/char against {axis}")
            console.print(history_curve(hist, key), markup=False, highlight=False)
