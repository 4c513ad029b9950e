"""What the benchmark measures, and the checks of what the user gives before the first measurement.

The training configurations of the performance table, the scoring sizes
(the full 10,000 sentences and 1 M characters, or fewer with --quick), and
the text: the user's file, or seeded English-like text.  A text is refused
when it cannot be read as UTF-8 or is too short for the largest batch.
"""

from __future__ import annotations

import math

import numpy as np

from charlm.errors import CharlmError
from charlm.files import open_user_file
from charlm.score import MAX_PIECES, PIECE_TOKENS

TRAIN_CONFIGS = [
    # cell, hidden, layers, batch, seq_len, optimizer
    ("lstm", 256, 2, 32, 64, "adam"),
    ("gru", 256, 2, 32, 64, "adam"),
    ("rnn", 256, 1, 32, 64, "adam"),
    ("lstm", 512, 2, 64, 100, "adam"),
]
MINCHAR = ("rnn", 100, 1, 1, 25, "adagrad")
TRAIN_FRACTION = 0.9           # the first 90 % trains, as in the PyTorch peer
SYNTHETIC_CHARS = 1_115_394    # the synthetic text is as long as tinyshakespeare
SCORE_SENTENCES = 10_000       # `score --file` lines (the performance table)
SCORE_DOCUMENT = 1_000_000     # `score --document` characters (the performance table)
QUICK_SENTENCES_PER_SECOND = 1_000   # --quick: sentences and document characters per --seconds,
QUICK_DOCUMENT_PER_SECOND = 50_000   # about a second of scoring each per --seconds (the document at least
                                     # score.MAX_PIECES × score.PIECE_TOKENS, read side by side as 1 M is)


def read_text(path: str, what: str = "--data file") -> str:
    """A UTF-8 text file the benchmark reads (newlines as `open` reads them); one-line errors naming it."""
    try:
        with open_user_file(path, what) as f:
            raw = f.read()
    except OSError as e:
        raise CharlmError(f"cannot read {what} {path}: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CharlmError(f"{what} {path} is not UTF-8 text: byte 0x{raw[e.start:e.start + 1].hex()} "
                          f"at offset {e.start}") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def synthetic_text(size: int = SYNTHETIC_CHARS) -> str:
    """Seeded random English-like text: letters, punctuation and newlines drawn with falling frequencies."""
    rng = np.random.default_rng(0)
    letters = np.array(list("etaoinshrdlucmfwypvbgkjqxz ETAOINSHR,.;:!?'\n"))
    weights = np.linspace(2.0, 0.2, len(letters))
    return "".join(rng.choice(letters, size=size, p=weights / weights.sum()))


def bench_text(path: str | None) -> tuple[str, str, str | None]:
    """Benchmark text: the given file, else seeded English-like text.

    Returns (text, where it came from, the file it is in or None).  A file
    given that cannot be read as UTF-8 text is a CharlmError.
    """
    if path is not None:
        return read_text(path), path, (path if path != "-" else None)
    return synthetic_text(), "synthetic text (give --data for a real one)", None


def min_chars(configs) -> tuple[int, tuple]:
    """The fewest characters the training measurements need, and the configuration that needs them.

    Each configuration trains on the first 90 % of the text, which must hold
    one batch of B × T characters and one sequence more (else the trainer
    would shrink the batch and the figure would not be the labelled one; the
    PyTorch peer draws windows of T + 1 from the same 90 %).  The
    min-char-rnn loop needs T + 2 characters, the scoring rows cycle the
    text's lines and characters to their sizes, and validation is not used.
    """
    worst = max(configs, key=lambda c: c[3] * c[4] + c[4])
    need = worst[3] * worst[4] + worst[4]
    n = math.ceil(need / TRAIN_FRACTION)
    while int(TRAIN_FRACTION * n) < need:
        n += 1
    return n, worst


def check_text(text: str, source: str, configs) -> None:
    """Refuse, before measuring anything, a text too short for the measurements."""
    need, (cell, H, L, B, T, _) = min_chars(configs)
    if len(text) < need:
        raise CharlmError(
            f"{source} is too short for the benchmark: {len(text):,} characters; it needs at least {need:,} "
            f"(90 % of them train, and must hold one batch of {B}×{T} characters and {T} more for {cell} {L}×{H})")
    if not any(text.split("\n")):
        raise CharlmError(f"{source} has no line with text in it, for the scoring measurement")


def check_seconds(seconds: float) -> None:
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
        raise CharlmError(f"--seconds must be a finite number above 0 (got {seconds})")


def check_repeats(repeats: int) -> None:
    if not isinstance(repeats, int) or repeats < 1:
        raise CharlmError(f"--repeats must be at least 1 (got {repeats})")


def score_sizes(quick: bool, seconds: float) -> tuple[int, int]:
    """(sentences, document characters) scored: the full 10,000 and 1 M, or fewer with --quick.

    With --quick, about a second of scoring each per --seconds; the document
    is still long enough to be read in as many pieces side by side as 1 M
    characters are (`score.document_log_prob`), so its chars/s is of the same kind.
    """
    if not quick:
        return SCORE_SENTENCES, SCORE_DOCUMENT
    return (min(SCORE_SENTENCES, max(100, round(QUICK_SENTENCES_PER_SECOND * seconds))),
            min(SCORE_DOCUMENT, max(MAX_PIECES * PIECE_TOKENS, round(QUICK_DOCUMENT_PER_SECOND * seconds))))
