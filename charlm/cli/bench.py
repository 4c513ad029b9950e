"""`charlm bench`: measure speed beside the PyTorch peers, and print the table."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich.markup import escape

from charlm.cli.app import app, handle_errors
from charlm.cli.console import err, out


@app.command(epilog="""**Examples**

```
charlm bench                      # about 3 minutes
charlm bench --quick --seconds 5
charlm bench --repeats 3          # training: medians of 3 turns
charlm bench --peer-python ~/torch-venv/bin/python --json > b.json
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
):
    """Measure training, sampling and scoring speed, beside the peers when they can run."""
    from charlm.bench import run_bench
    from charlm.cli.bench_report import render

    result = run_bench(seconds, data, peer, sample_peer, peer_python, quick,
                       progress=lambda msg: err.print(f"[dim]… {escape(msg)}[/]", markup=True), repeats=repeats)
    if as_json:
        print(json.dumps(result))
    else:
        out.print(render(result))
