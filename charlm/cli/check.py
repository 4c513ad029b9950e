"""`charlm check`: the characters that do not belong in each line, and what should be there."""

from __future__ import annotations

import math
from typing import Annotated, Optional

import typer

from charlm import checkpoint as ckpt_io
from charlm.check import THRESHOLD, TOP, WINDOW
from charlm.cli.app import app, handle_errors
from charlm.cli.console import err, fail, json_line, out
from charlm.cli.options import CheckpointOpt, EncodingOpt, ErrorsOpt, WeightsOpt, checkpoint_path, one_stdin


@app.command("check", epilog="""**Examples**

```
charlm check "Thou art a villian." -c bidi.npz
charlm check --file draft.txt --json | jq '.chars[] | select(.flagged)'
charlm check --fix - < draft.txt > fixed.txt
charlm check "Anna" "Jhon" -c names.npz --window 4 --top 5
```
""")
@handle_errors
def check_cmd(
    texts: Annotated[Optional[list[str]], typer.Argument(help="Lines to check; - reads one per line from stdin.", show_default=False)] = None,
    checkpoint: CheckpointOpt = None,
    file: Annotated[Optional[str], typer.Option("-f", "--file", help="Check each line of this file (- for stdin).", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line: its text and, per character, prob, bits, flagged and suggestions.")] = False,
    threshold: Annotated[float, typer.Option(help="Flag a character whose probability given the rest of its line is below this.")] = THRESHOLD,
    top: Annotated[int, typer.Option(help="Suggestions (the most likely characters) per flagged character.")] = TOP,
    fix: Annotated[bool, typer.Option("--fix", help="Print each line with its flagged characters replaced by the best suggestion (with --json: add a \"fixed\" key).")] = False,
    window: Annotated[int, typer.Option(help="Left-to-right models: characters to the right that Bayes' rule reads for each position (a bidirectional model reads the whole line).")] = WINDOW,
    weights: WeightsOpt = "best",
    network_only: Annotated[bool, typer.Option("--network-only", help="Use the network alone, without the n-gram it was interpolated with in training (bidirectional: the three n-grams it was combined with).")] = False,
    encoding: EncodingOpt = None,
    errors: ErrorsOpt = None,
):
    """Find the characters that do not belong: P(each character | the rest of its line), and what should be there.

    A bidirectional model (`train --bidirectional`) reads both sides at
    once; a left-to-right model gets the same conditional by Bayes' rule
    over a window of --window characters to the right (with its n-gram, as
    `score` uses it).  A bidirectional model trained with n-grams is combined
    with a forward and a backward n-gram, their weights fitted in training.  Characters outside the vocabulary are scored as `<UNK>`.
    """
    from charlm.check import check_lines
    from charlm.cli.render import heat_legend
    from charlm.cli.render_check import check_summary, check_view
    from charlm.corpus import read_lines
    from charlm.files import text_source

    if not (0.0 <= threshold <= 1.0) or not math.isfinite(threshold):
        fail("--threshold must be a probability, from 0 to 1")
    if top < 1:
        fail("--top must be at least 1")
    if window < 0:
        fail("--window must be at least 0 (0: the left side only)")
    if (texts or []).count("-") > 1:
        fail("standard input is read once: give - once among the lines")
    one_stdin(checkpoint=checkpoint_path(checkpoint), file=file, texts="-" if "-" in (texts or []) else None)
    ck = ckpt_io.load(checkpoint_path(checkpoint))
    decoding = (encoding or ck.config.encoding, errors or ck.config.errors)
    lines: list[str] = []
    for text in texts or []:
        lines += read_lines(text_source("-", "lines"), *decoding, what="standard input") if text == "-" else text.split("\n")
    if file is not None:
        lines += read_lines(text_source(file, "file"), *decoding)
    if not lines:
        fail("nothing to check: give lines, --file FILE, or - to read stdin")
    mix = None if network_only else ck.mixture(weights)
    results = check_lines(ck.weights(weights), ck.arch, ck.vocab, lines, threshold, top, window, mix)
    if as_json:
        for r in results:
            print(json_line(r.to_json(fix)))
        return
    if fix:
        for r in results:
            out.file.write(r.fixed() + "\n")
        out.file.flush()
        return
    out.print(heat_legend())
    for r in results:
        out.print(check_view(r))
    grams = "" if mix is None else (f" with its three {mix.forward.order}-grams" if ck.config.bidirectional
                                    else f" with its {mix.ngram.order}-gram")
    how = (f"the bidirectional network{grams}" if ck.config.bidirectional else
           f"the left-to-right network{grams} by Bayes' rule over {window} character{'' if window == 1 else 's'} to the right")
    err.print(check_summary(results, threshold, how))
