"""How `charlm check` looks: each line coloured by surprisal, a marker line, the suggestions.

Pure functions from `charlm.check` results to Rich renderables (display only).
"""

from __future__ import annotations

from rich.console import Group
from rich.text import Text

from charlm.cli.render import heat_colour, one_column

MARK = "^"


def check_view(result) -> Group:
    """A checked line: the text coloured by surprisal, `^` under each flagged character, one line per flag."""
    line = Text()
    marks = []
    for c in result.chars:
        line.append(one_column(c.char), style=heat_colour(c.bits))
        marks.append(MARK if c.flagged else " ")
    rows = [line]
    flagged = [c for c in result.chars if c.flagged]
    if flagged:
        rows.append(Text("".join(marks).rstrip(), style="bold red"))
    for c in flagged:
        alts = ", ".join(f"{s!r} {p:.1%}" for s, p in c.suggestions)
        unknown = " (not in the vocabulary: scored as <UNK>)" if c.unknown else ""
        rows.append(Text(f"  column {c.index + 1}: {c.char!r} P = {c.prob:.2%} ({c.bits:.1f} bits){unknown}; "
                         f"expected {alts}"))
    return Group(*rows)


def check_summary(results, threshold: float, how: str) -> str:
    """One line for stderr: how many characters were read and flagged, and how."""
    n = sum(len(r.chars) for r in results)
    flagged = sum(c.flagged for r in results for c in r.chars)
    return (f"{flagged:,} of {n:,} characters flagged (P < {threshold:g}) in {len(results):,} "
            f"line{'' if len(results) == 1 else 's'}; {how}")
