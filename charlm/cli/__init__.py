"""The `charlm` command line: parse options, call the library, render, exit.

`app` is the Typer application (`charlm.cli.app`, with the mapping of
errors to exit codes); each command lives in a module of its own and
registers itself on import, in the order `--help` lists them.
"""

from charlm.cli.app import app, main
from charlm.cli import build_vocab, train, sample, score, check, info, bench, gradcheck  # noqa: F401  (registers the commands)

__all__ = ["app", "main"]
