"""The terminal: the two consoles, one-line errors and warnings, and a standard output that never crashes.

stdout carries only the product (samples, scores, JSON); progress, warnings
and summaries go to stderr.  A reader that goes away (`charlm sample |
head -1`) ends the output quietly; text that stdout cannot encode is
written so that it never raises.
"""

from __future__ import annotations

import codecs
import io
import json
import os
import sys

import typer
from rich.console import Console
from rich.markup import escape

from charlm.cli.render import printable
from charlm.errors import CharlmError


class _Console(Console):
    """A rich Console whose reader may go away (`charlm sample | head -1`, `charlm train 2>&1 | head`).

    rich's own answer is to exit with 1 from inside whatever was printing;
    here the stream goes quiet (its descriptor now points at /dev/null) and
    `reader_gone` is set.  On stdout, whose text is the product, that ends
    the command (BrokenPipeError, exit 0); on stderr the command goes on,
    and `train` stops as on Ctrl-C, saving its checkpoint.
    """

    reader_gone = False

    def render_str(self, text: str, **kwargs):
        """Every string printed (a message, a table cell, a title) with its control characters shown as escapes.

        Messages carry file names and user text, and a name like
        $'x\\e[31m.txt' must not colour or move the terminal.
        """
        return super().render_str(printable(text), **kwargs)

    def on_broken_pipe(self) -> None:
        self.quiet = True
        self.reader_gone = True
        to_devnull(self.file)
        if not self.stderr:
            raise BrokenPipeError


# markup and emoji codes off: messages hold file names and user text ("[b]notes.txt", ":x:.txt"); the few
# styled messages ask for markup
err = _Console(stderr=True, highlight=False, soft_wrap=True, markup=False, emoji=False)
out = _Console(highlight=False, soft_wrap=True, markup=False, emoji=False)


def quiet_console() -> Console:
    """A console that prints nothing (a torchrun rank other than 0 trains silently)."""
    return _Console(stderr=True, quiet=True)


def error_line(message: str, label: str = "error") -> None:
    """`error: message` on stderr, the label in bold red (the message itself never read as markup)."""
    err.print(f"[bold red]{label}:[/] {escape(message)}", markup=True, highlight=False, soft_wrap=True)


def fail(message: str, code: int = 1):
    error_line(message)
    raise typer.Exit(code)


def warn(message: str):
    err.print(f"[yellow]warning:[/] {escape(message)}", markup=True, soft_wrap=True)


def _output_errors(e: UnicodeEncodeError):
    """Encoding errors on stdout: undecodable input bytes (lone surrogates U+DC80..U+DCFF, as read with
    --errors surrogateescape or from argv) go out as the same bytes; anything else unencodable as '?'."""
    bad = e.object[e.start:e.end]
    if all(0xDC80 <= ord(c) <= 0xDCFF for c in bad):
        return bytes(ord(c) - 0xDC00 for c in bad), e.end
    return "?" * len(bad), e.end


codecs.register_error("charlm.stdout", _output_errors)


CLOSED_STDOUT = "standard output is closed: there is nowhere to print the result"


class ClosedStdout:
    """Stands in for a standard output that was closed before charlm started: writing to it is an error.

    Commands whose product goes to stdout (sample, score, info, build-vocab -o -)
    then fail in one line with exit 1; `train`, which prints to stderr, runs.
    """

    encoding = "utf-8"

    def write(self, text: str) -> int:
        raise CharlmError(CLOSED_STDOUT)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def safe_stdout():
    """Never crash writing text to stdout (a strict UTF-8 stdout refuses lone surrogates)."""
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        try:
            reconfigure(errors="charlm.stdout")
        except (ValueError, OSError, io.UnsupportedOperation):
            pass


def json_line(obj) -> str:
    """One JSON object on one line; escaped as ASCII if stdout cannot encode it as is (lone surrogates)."""
    text = json.dumps(obj, ensure_ascii=False)
    try:
        text.encode(getattr(sys.stdout, "encoding", None) or "utf-8")
    except (UnicodeEncodeError, LookupError):
        text = json.dumps(obj, ensure_ascii=True)
    return text


def quiet_broken_pipe():
    """The reader went away (e.g. `charlm sample | head -1`): send the rest of stdout nowhere."""
    to_devnull(sys.stdout)


def to_devnull(stream) -> None:
    """Point the stream's file descriptor at /dev/null (nothing more reaches the reader that went away)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):  # no real descriptor (a test runner)
        pass
