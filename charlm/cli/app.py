"""The Typer app, its global options, and the mapping of errors to exit codes.

Every error the user can cause is one line on stderr and a non-zero exit code:

    0  success          1  bad input or failure
    2  usage error      130 / 143  interrupted by SIGINT / SIGTERM (state saved)
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from typing import Annotated, Optional

import typer

from charlm import __version__
from charlm.allocator import keep_freed_memory
from charlm.cli.console import (CLOSED_STDOUT, ClosedStdout, err, error_line, fail, quiet_broken_pipe,
                                safe_stdout)
from charlm.errors import CharlmError
from charlm.files import forget_stdin

app = typer.Typer(
    name="charlm",
    add_completion=True,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)

PRINTS_RESULTS = ("sample", "score", "info", "bench", "gradcheck", "check")   # (build-vocab only with -o -)


def handle_errors(command):
    """Turn a CharlmError raised inside a command into one line on stderr and exit 1."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except CharlmError as e:
            fail(str(e))
        except BrokenPipeError:  # the reader went away (`charlm sample | head`): not an error
            quiet_broken_pipe()
            raise typer.Exit(0)
    return wrapper


def _version(value: bool):
    if value:
        print(f"charlm {__version__}")
        raise typer.Exit(0)


@app.callback()
def main_options(
    ctx: typer.Context,
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
):
    """Character-level language models (RNN, GRU, LSTM) in NumPy: build a vocabulary, train, sample, score.

    **Examples**

    ```
    charlm train corpora/names.txt --max-time 60
    charlm sample --num 5 --temperature 0.8
    charlm score "Anna" "Xqzzt" --json
    charlm gradcheck --cell lstm
    ```
    """
    forget_stdin()        # each invocation reads its own standard input (matters when run in-process)
    if sys.stdout is None:   # the shell closed it (`charlm sample >&-`): Python gives None, and text would vanish
        sys.stdout = ClosedStdout()
        if ctx.invoked_subcommand in PRINTS_RESULTS:   # say so now, not after minutes of work (bench, gradcheck)
            fail(CLOSED_STDOUT)
    safe_stdout()
    keep_freed_memory()   # a training step then reuses the last step's buffers instead of faulting fresh pages in


def _interrupted(signum, frame):
    """Ctrl-C outside training: stop at once with the conventional code 130."""
    try:
        sys.stdout.flush()
    except Exception:
        pass
    err.print("\ninterrupted")
    os._exit(128 + signum)


def main():
    """Entry point: run the app; errors become one line on stderr, never a traceback."""
    signal.signal(signal.SIGINT, _interrupted)
    try:
        app()  # usage errors exit 2; typer.Exit carries its own code
    except CharlmError as e:
        error_line(str(e))
        sys.exit(1)
    except BrokenPipeError:
        quiet_broken_pipe()
        sys.exit(0)
    except MemoryError as e:  # sizes the machine cannot hold (--num, --hidden-size, --batch-size, ...)
        error_line(f"not enough memory{': ' + str(e) if str(e) else ''} (try smaller sizes)")
        sys.exit(1)
    except OSError as e:  # the system refused: a full disk, a closed or failing output
        if os.environ.get("CHARLM_DEBUG"):
            raise
        where = f" ({e.filename})" if e.filename else ""
        error_line(f"{e.strerror or e}{where}")
        sys.exit(1)
    except Exception as e:  # anything else is a bug in charlm
        if os.environ.get("CHARLM_DEBUG"):
            raise
        error_line(f"{type(e).__name__}: {e} (set CHARLM_DEBUG=1 for a traceback)", "internal error")
        sys.exit(1)
