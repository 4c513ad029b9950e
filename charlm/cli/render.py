"""How results look: Rich tables, number formats, and the terminal loss curve.

Pure functions from values to Rich renderables or strings; nothing here
reads files or decides exit codes.
"""

from __future__ import annotations

import math

from rich.table import Table
from rich.text import Text

from charlm.vocab import Vocab, char_name


HUGE = 1e15   # counts and hours from here on are shown as 1.5e+20 (a budget of `--epochs 1e300`), not in 300 digits


def fmt_count(n: float) -> str:
    return f"{n:,.0f}" if n < HUGE else f"{n:.3g}"


def fmt_logprob(logp: float, ntok: int) -> str:
    """A sample's log-probability in nats, and bits per token (`--show-logprob`)."""
    bits = -logp / max(ntok, 1) / math.log(2) + 0.0        # + 0.0: a certain sample is 0.0000, not -0.0000
    return f"log P = {logp + 0.0:.4f} nats over {ntok} token{'' if ntok == 1 else 's'} ({bits:.4f} bits/char)"


def fmt_seconds(s: float) -> str:
    s = max(0.0, s)
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    if s >= HUGE:
        return f"{s / 3600:.3g} h"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def vocab_table(vocab: Vocab, num_chars: int, num_lines: int) -> Table:
    """The build-vocab summary: size, coverage, what became <UNK>."""
    t = Table(title="vocabulary", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    unk = vocab.counts[1] if vocab.counts else 0
    kept = num_chars - unk
    t.add_row("size", f"{len(vocab)} tokens (<EOS>, <UNK> and {counted(len(vocab) - 2, 'character')})")
    t.add_row("corpus", f"{counted(num_chars, 'character')} in {counted(num_lines, 'line')}")
    cover = 100.0 * kept / num_chars if num_chars else 100.0
    t.add_row("coverage", f"{cover:.4f}% of characters are in the vocabulary")
    if vocab.unk_chars:
        items = sorted(vocab.unk_chars.items(), key=lambda kv: (-kv[1], kv[0]))
        shown = ", ".join(f"{char_name(c)!s}×{n}" for c, n in items[:12])
        more = f" and {len(items) - 12} more" if len(items) > 12 else ""
        t.add_row("<UNK>", f"{len(items)} distinct characters, {fmt_count(unk)} occurrences: {shown}{more}")
    else:
        t.add_row("<UNK>", "nothing (every character of the corpus is kept)")
    preview = "".join(vocab.tokens[2:])
    if len(preview) > 70:
        preview = preview[:70] + "…"
    shown = visible_text(preview.replace(" ", SPACE))
    if " " in preview:
        shown.append(f"   ({SPACE} is the space)", style=ESCAPE_STYLE)
    t.add_row("characters", shown if preview else Text("none", style=ESCAPE_STYLE))
    return t


SPACE = "␠"   # the space in a list of characters, where it would not be seen


def counted(n: int, word: str) -> str:
    """'1 line', '2 lines', '1,234 characters'."""
    return f"{fmt_count(n)} {word}{'' if n == 1 else 's'}"


def shared_by(workers: int | None) -> str:
    """' shared by 2 worker processes' where workers share each batch (the start line, `info`); '' otherwise."""
    return f" shared by {workers} worker processes" if (workers or 1) > 1 else ""


ESCAPE_STYLE = "dim"   # how an escaped character (\\x1b, \\t, ...) is set apart from the text around it


def visible_text(text: str) -> Text:
    """`text` for a terminal: every character that does not print is shown as its escape.

    A control character (C0, DEL, C1), a format character (bidirectional
    overrides, zero-width ones), a line or paragraph separator, a space
    other than U+0020, a lone surrogate, an unassigned or private-use code
    point: each is written as Python writes it in a string literal (\\x1b,
    \\t, \\u202e, \\U000e0001), in ESCAPE_STYLE; a byte that did not decode
    (U+DC80..U+DCFF, from --errors surrogateescape) as the byte, \\xff.  So text from a file
    cannot move the cursor, change colours, split a table row or reorder
    what is shown; and it is a `Text`, so "[bold]" in it is shown as
    written, never read as Rich markup.
    """
    if text.isprintable():
        return Text(text)
    out = Text()
    plain = []
    for ch in text:
        if ch.isprintable():
            plain.append(ch)
            continue
        if plain:
            out.append("".join(plain))
            plain.clear()
        undecodable = 0xDC80 <= ord(ch) <= 0xDCFF     # a byte read with --errors surrogateescape: show the byte
        out.append(f"\\x{ord(ch) - 0xDC00:02x}" if undecodable else ascii(ch)[1:-1], style=ESCAPE_STYLE)
    if plain:
        out.append("".join(plain))
    return out


def printable(text: str) -> str:
    """`text` with every non-printing character but the newline shown as its escape (see visible_text)."""
    if text.isprintable():
        return text
    return "\n".join(line if line.isprintable() else visible_text(line).plain for line in text.split("\n"))


def score_table(scores, show_text_width: int = 40) -> Table:
    t = Table(title=None)
    t.add_column("text", overflow="fold", max_width=show_text_width)
    t.add_column("log P (nats)", justify="right")
    t.add_column("bits/char", justify="right")
    t.add_column("perplexity", justify="right")
    t.add_column("tokens", justify="right")
    t.add_column("<UNK>", justify="right")
    for s in scores:
        t.add_row(visible_text(s.text), f"{s.log_prob:.4f}", f"{s.bits_per_char:.4f}", f"{s.perplexity:.3f}",
                  str(s.num_tokens), str(s.num_unk))
    return t


BLOCKS = " ▁▂▃▄▅▆▇█"


def history_curve(history: list[dict], x: str = "step") -> str:
    """Training and validation bits/char of a run's evaluation history, against `x` ("step" or "seconds")."""
    train = [(h[x], h["train_bpc"]) for h in history if h.get("train_bpc") is not None]
    val = [(h[x], h["val_bpc"]) for h in history]
    return curve(train, val)


def curve(points: list[tuple[float, float]], other: list[tuple[float, float]] | None = None,
          width: int = 60, height: int = 12, labels=("train", "val")) -> str:
    """A line chart of y against x drawn with Unicode characters.

    `points` are drawn with '•', `other` with '×'; the y axis is labelled.
    """
    series = [p for p in (points, other or []) if p]
    if not series:
        return "(no points yet)"
    xs = [x for s in series for x, _ in s]
    ys = [y for s in series for _, y in s if y is not None and math.isfinite(y)]
    if not ys:
        return "(no points yet)"
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if y1 - y0 < 1e-9:
        y0, y1 = y0 - 0.5, y1 + 0.5
    if x1 - x0 < 1e-9:
        x1 = x0 + 1
    grid = [[" "] * width for _ in range(height)]
    for mark, s in zip("•×", (points, other or [])):
        for x, y in s:
            if y is None or not math.isfinite(y):
                continue
            col = round((x - x0) / (x1 - x0) * (width - 1))
            row = round((y1 - y) / (y1 - y0) * (height - 1))
            grid[row][col] = mark
    lines = []
    for r, row in enumerate(grid):
        y = y1 - (y1 - y0) * r / (height - 1)
        label = f"{y:6.3f} ┤" if r in (0, height // 2, height - 1) else "       │"
        lines.append(label + "".join(row))
    lines.append("       └" + "─" * width)
    fmt = ".0f" if x1 - x0 >= 10 or float(x1).is_integer() and float(x0).is_integer() else ".3g"   # (seconds < 10)
    lines.append(f"        {x0:<{width // 2}{fmt}}{x1:>{width - width // 2}{fmt}}")
    legend = f"        • {labels[0]}" + (f"   × {labels[1]}" if other else "")
    lines.append(legend)
    return "\n".join(lines)


# surprisal (bits) → colour; the digit under each character is min(9, int(bits))
HEAT = [(1.0, "green"), (2.0, "bright_green"), (4.0, "yellow"), (6.0, "dark_orange"), (8.0, "red"),
        (float("inf"), "bold magenta")]


def heat_colour(bits: float) -> str:
    for limit, colour in HEAT:
        if bits < limit:
            return colour
    return HEAT[-1][1]


def heat_legend():
    from rich.text import Text

    t = Text("surprisal (bits): ")
    lower = 0.0
    for limit, colour in HEAT:
        label = f"{lower:g}–{limit:g}" if limit != float("inf") else f"≥{lower:g}"
        t.append(f" {label} ", style=f"reverse {colour}")
        t.append(" ")
        lower = limit
    t.append("  digit under a character = its surprisal in whole bits (9 = 9 or more)")
    return t


def one_column(ch: str) -> str:
    """One column per character: a character that does not print is shown as ·."""
    return ch if ch.isprintable() else "·"


def heat_map(surprise, worst: int = 3):
    """A sentence coloured by surprisal, a line of digits under it, and the least expected characters."""
    from rich.console import Group
    from rich.text import Text

    line = Text()
    digits = Text(style="dim")
    for tok, b in zip(surprise.tokens, surprise.bits):
        line.append(one_column(tok), style=heat_colour(float(b)))
        digits.append(str(min(9, int(b))))
    rows = [line, digits]
    order = sorted(range(len(surprise.tokens)), key=lambda i: -surprise.bits[i])[:worst]
    for i in order:
        alts = ", ".join(f"{c!r} {p:.1%}" for c, p in surprise.top[i])
        p = 2.0 ** -float(surprise.bits[i])
        rows.append(Text(f"  position {i + 1}: {surprise.tokens[i]!r} P = {p:.2%} "
                         f"({surprise.bits[i]:.2f} bits); the model expected {alts}"))
    return Group(*rows)


def gradcheck_table(title: str, results, tolerance: float) -> Table:
    """One cell's gradient check: per array, how far BPTT is from the finite differences."""
    t = Table(title=title, title_justify="left")
    for name, justify in (("array", "left"), ("shape", "right"), ("checked", "right"),
                          ("difference", "right"), ("max |error|", "right"), ("", "left")):
        t.add_column(name, justify=justify, overflow="fold")
    for r in results:
        good = r.ok(tolerance)
        t.add_row(r.name, "×".join(map(str, r.shape)), f"{r.checked:,}", f"{r.difference:.1e}",
                  f"{r.max_abs_error:.1e}",
                  Text("FAIL", style="bold red") if not good else "ok" if r.difference <= tolerance
                  else "ok (round-off)")
    return t


def gradcheck_report(reports, tolerance: float, epsilon: float, seq_len: int, batch_size: int) -> list:
    """`charlm gradcheck`'s output: what is compared, a table per cell, and (when all pass) a summary line."""
    out = [f"BPTT against finite differences (J(θ + ε) − J(θ − ε)) / 2ε in float64, ε = {epsilon:g}; "
           f"J is the loss summed over {counted(seq_len, 'step')} × {counted(batch_size, 'sequence')}; "
           "difference = ‖approx − bptt‖ / (‖approx‖ + ‖bptt‖)."]
    for arch, results in reports:
        act = f" ({arch.activation})" if arch.cell == "rnn" else ""
        title = (f"{arch.cell}{act}, {counted(arch.num_layers, 'layer')} × {arch.hidden_size} hidden, "
                 f"vocabulary {arch.vocab_size}, "
                 + ("state reset after each <EOS>" if arch.reset_at_eos else "state carried across <EOS>"))
        out.append(gradcheck_table(title, results, tolerance))
    every = [r for _, results in reports for r in results]
    if not all(r.ok(tolerance) for r in every):
        return out
    noisy = [r for r in every if r.difference > tolerance]
    worst = max(r.difference for r in every)
    if not noisy:
        out.append(f"All {len(every)} arrays match: the largest difference is {worst:.1e} (tolerance {tolerance:g}).")
    else:
        clean = max((r.difference for r in every if r.difference <= tolerance), default=0.0)
        out.append(f"All {len(every)} arrays match: {len(every) - len(noisy)} with differences up to {clean:.1e} "
                   f"(tolerance {tolerance:g}), and {len(noisy)} by round-off: their differences reach {worst:.1e}, "
                   f"but no entry is off by more than {max(r.max_abs_error for r in noisy):.1e}, within the "
                   f"round-off of (J(θ + ε) − J(θ − ε)) / 2ε, {noisy[0].noise:.1e}.")
    return out
