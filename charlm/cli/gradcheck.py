"""`charlm gradcheck`: BPTT's gradients against finite differences, as tables or JSON; exit 1 if any differs."""

from __future__ import annotations

from typing import Annotated

import typer

from charlm.cli.app import app, handle_errors
from charlm.cli.console import fail, json_line, out, warn


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

    from charlm.gradcheck import check_cells, gradcheck_json
    from charlm.cli.render import gradcheck_report

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
    reports = check_cells(cells, num_layers, hidden_size, activation, line_state == "reset", vocab_size, seq_len,
                          batch_size, seed, epsilon, entries, on_slow=warn)
    failed = [(arch.cell, r) for arch, results in reports for r in results if not r.ok(tolerance)]
    if as_json:
        print(json_line(gradcheck_json(reports, tolerance, epsilon=epsilon, seq_len=seq_len,
                                        batch_size=batch_size, seed=seed)))
    else:
        for renderable in gradcheck_report(reports, tolerance, epsilon, seq_len, batch_size):
            out.print(renderable)
    if failed:
        names = ", ".join(f"{c} {r.name} ({r.difference:.1e})" for c, r in failed[:4])
        more = f" and {len(failed) - 4} more" if len(failed) > 4 else ""
        fail(f"{len(failed)} gradient{'s differ' if len(failed) != 1 else ' differs'} from finite differences by more "
             f"than {tolerance:g}: {names}{more}")
