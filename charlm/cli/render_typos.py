"""How `charlm bench --typos` looks: one table per kind of corruption (display only)."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table

NAMES = {"bidirectional": "bidirectional", "bidirectional-net": "bidirectional, network alone",
         "bayes": "left-to-right, Bayes window", "bayes-net": "left-to-right, Bayes window, network alone",
         "left": "left-to-right, plain surprisal"}


def typo_table(result: dict) -> Group:
    s = result["settings"]
    parts = [f"{s['chars']:,} characters in {s['lines']:,} lines, {s['rate']:.0%} corrupted (seed {s['seed']}); "
             f"flag P < {s['threshold']:g}; Bayes window {s['window']}"]
    for kind, figures in result["kinds"].items():
        t = Table(title=f"{kind}s", title_justify="left")
        for col in ("detector", "AUROC", "precision", "recall", "F0.5", "top-1", "top-3", "chars/s"):
            t.add_column(col, justify="left" if col == "detector" else "right")
        for name, f in figures.items():
            pct = lambda k: f"{f[k]:.1%}" if k in f else "–"
            t.add_row(NAMES[name], f"{f['auroc']:.4f}", pct("precision"), pct("recall"), f"{f['f05']:.3f}",
                      pct("top1"), pct("top3"), f"{f['chars_per_second']:,.0f}")
        parts.append(t)
    return Group(*parts)
