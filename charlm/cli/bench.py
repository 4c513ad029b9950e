"""`charlm bench`: measure speed beside the PyTorch peers, and print the table."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich.markup import escape

from charlm.cli.app import app, handle_errors
from charlm.check import THRESHOLD, WINDOW
from charlm.cli.console import err, fail, out


@app.command(epilog="""**Examples**

```
charlm bench                      # about 3 minutes
charlm bench --quick --seconds 5
charlm bench --repeats 3          # training: medians of 3 turns
charlm bench --peer-python ~/torch-venv/bin/python --json > b.json
charlm bench --typos --data heldout.txt --bi bidi.npz -c ltr.npz
charlm bench --engine torch       # adds the torch engine's rows
```
""")
@handle_errors
def bench(
    seconds: Annotated[float, typer.Option(help="Seconds of training per configuration.")] = 15.0,
    quick: Annotated[bool, typer.Option("--quick", help="Only the first training configuration, fewer scoring sentences and a shorter document, no 7-gram rows.")] = False,
    data: Annotated[Optional[str], typer.Option(help="Text to train and score on (default: seeded synthetic English-like text).", show_default=False)] = None,
    peer: Annotated[Optional[str], typer.Option(help="PyTorch training peer script (default: the one shipped with charlm).", show_default=False)] = None,
    sample_peer: Annotated[Optional[str], typer.Option(help="PyTorch sampling peer script (default: the one shipped with charlm).", show_default=False)] = None,
    peer_python: Annotated[Optional[str], typer.Option(help="A Python that can import torch, to run the peers (default: this one).", show_default=False)] = None,
    repeats: Annotated[int, typer.Option(help="Measure each training configuration and its peer this many times, taking turns; report the medians.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as one JSON object.")] = False,
    engine: Annotated[str, typer.Option(help="torch: also the torch engine beside the NumPy engine, DDP with 2 processes beside 1, and a GPU if there is one.")] = "numpy",
    typos: Annotated[bool, typer.Option("--typos", help="Instead: corrupt the lines of --data (held-out text) and measure how well `check` finds and fixes the errors, with --bi and/or -c.")] = False,
    bi: Annotated[Optional[str], typer.Option("--bi", help="--typos: a bidirectional checkpoint.", show_default=False)] = None,
    checkpoint: Annotated[Optional[str], typer.Option("-c", "--checkpoint", help="--typos: a left-to-right checkpoint (Bayes' rule, and its plain surprisal).", show_default=False)] = None,
    rate: Annotated[float, typer.Option(help="--typos: share of the characters corrupted.")] = 0.05,
    max_chars: Annotated[int, typer.Option(help="--typos: read lines of --data until this many characters.")] = 3000,
    threshold: Annotated[float, typer.Option(help="--typos: flag P < this (as `check --threshold`).")] = THRESHOLD,
    window: Annotated[int, typer.Option(help="--typos: Bayes window of the left-to-right model (as `check --window`).")] = WINDOW,
    seed: Annotated[int, typer.Option(help="--typos: seed of the corruptions.")] = 0,
):
    """Measure training, sampling and scoring speed, beside the peers when they can run."""
    if typos:
        return _typos(data, bi, checkpoint, rate, max_chars, threshold, window, seed, as_json)
    from charlm.bench import run_bench
    from charlm.cli.bench_report import render

    result = run_bench(seconds, data, peer, sample_peer, peer_python, quick,
                       progress=_progress, repeats=repeats,
                       engine=engine)
    if as_json:
        print(json.dumps(result))
    else:
        out.print(render(result))


def _progress(msg: str) -> None:
    """A measurement starting, on standard error."""
    err.print(f"[dim]… {escape(msg)}[/]", markup=True)


def _typos(data, bi, checkpoint, rate, max_chars, threshold, window, seed, as_json):
    """`bench --typos`: the detection and correction figures of `check` on corrupted held-out lines."""
    from charlm.cli.render_typos import typo_table
    from charlm.typos import held_out_lines, load_checkers, run

    if data is None or (bi is None and checkpoint is None):
        fail("--typos needs --data HELD_OUT.txt and a checkpoint: --bi BIDIRECTIONAL.npz and/or -c LEFT_TO_RIGHT.npz")
    if not 0 < rate < 1 or max_chars < 1 or not 0 <= threshold <= 1 or window < 0:
        fail("--typos needs 0 < --rate < 1, --max-chars ≥ 1, 0 ≤ --threshold ≤ 1 and --window ≥ 0")
    bi_ck, l2r_ck = load_checkers(bi, checkpoint)
    lines = held_out_lines(data, max_chars)
    result = run(bi_ck, l2r_ck, lines, rate, seed, threshold, window,
                 progress=_progress)
    if as_json:
        print(json.dumps(result))
    else:
        out.print(typo_table(result))
