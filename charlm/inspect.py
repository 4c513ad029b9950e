"""`charlm info`: what a checkpoint holds, as a dict (for --json) and as tables."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from charlm.checkpoint import VERSION, Checkpoint
from charlm.model import num_params
from charlm.render import fmt_count, fmt_seconds, history_curve, shared_by


def describe(ck: Checkpoint, path: str) -> dict:
    cfg = ck.config
    per_layer = {}
    for name, p in ck.params.items():
        group = name.rsplit(".", 1)[0]
        per_layer[group] = per_layer.get(group, 0) + int(p.size)
    m = ck.meta
    return {
        "path": path,
        "format_version": VERSION,
        "cell": cfg.cell,
        "num_layers": cfg.num_layers,
        "hidden_size": cfg.hidden_size,
        "activation": cfg.activation,
        "dtype": cfg.dtype,
        "parameters": {"total": num_params(ck.params), **per_layer},
        "vocab_size": len(ck.vocab),
        "vocab_specials": {"<EOS>": 0, "<UNK>": 1},
        "vocab_preview": "".join(ck.vocab.tokens[2:])[:80],
        "steps": m.get("steps"),
        "train_seconds": m.get("train_seconds"),
        "chars_seen": m.get("chars_seen"),
        "workers": m.get("workers"),     # processes that shared each step (None: written before charlm had workers)
        "best_val_bpc": m.get("best_val_bpc"),
        "best_step": m.get("best_step"),
        "last_val_bpc": m.get("last_val_bpc"),
        "corpus": m.get("corpus"),
        "init_from": m.get("init_from"),  # the base model a fine-tuned run started from (None: a fresh start)
        "resumable": ck.resumable,
        "has_best_weights": ck.best_params is not None,
        "ngram": None if ck.ngram is None else {
            "order": ck.ngram.order,
            "grams": int(sum(len(k) for k in ck.ngram.keys)),
            "network_share": dict(ck.mix_weights),
        },
        "options": cfg.to_dict(),
    }


def render_info(console: Console, d: dict, ck: Checkpoint, show_curve: bool = False) -> None:
    t = Table(title=d["path"], show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    t.add_row("format", f"charlm-checkpoint version {d['format_version']}, {d['dtype']}")
    act = f" ({d['activation']})" if d["cell"] == "rnn" else ""
    t.add_row("model", f"{d['cell']}{act}, {d['num_layers']} layer(s) × {d['hidden_size']} hidden")
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
