"""Reading corpora: decode a file in chunks, count characters, encode to ids.

A corpus is read as text in the given encoding (UTF-8 by default) with
universal newlines (`\\r\\n` and `\\r` become `\\n`).  It is processed in chunks
of a few MB, so the memory needed is the compact id array plus one chunk,
never the whole text as a Python string.  `-` means standard input.

Every line ends with `<EOS>`; a last line without a newline gets one.
"""

from __future__ import annotations

import codecs
import io
import sys
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from charlm.errors import CorpusError
from charlm.files import open_user_file
from charlm.vocab import EOS_ID, Vocab, code_points, count_code_points

CHUNK_BYTES = 1 << 20
ERRORS_CHOICES = ("strict", "replace", "ignore", "surrogateescape")


def _open_binary(path, what: str):
    if isinstance(path, (bytes, bytearray, memoryview)):  # the bytes of stdin, read by the caller
        return io.BytesIO(bytes(path)), True
    if path == "-":
        return sys.stdin.buffer, False
    return open_user_file(path, what, CorpusError), True


def _text_decoder(encoding: str, errors: str):
    """An incremental decoder of bytes to text; refuses unknown values and bytes-to-bytes codecs (base64, rot13)."""
    if errors not in ERRORS_CHOICES:
        raise CorpusError(f"unknown --errors value {errors!r} (choose from {', '.join(ERRORS_CHOICES)})")
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        raise CorpusError(f"unknown encoding {encoding!r}") from None
    if not getattr(info, "_is_text_encoding", True):
        raise CorpusError(f"{encoding!r} is not a text encoding (it does not turn bytes into characters)")
    return info.incrementaldecoder(errors)


def _line_ends(data: bytes, after_cr: bool) -> int:
    """Universal line ends (\\n, \\r\\n, \\r) in `data`; `after_cr`: the bytes before
    it ended with \\r, so a leading \\n completes that \\r\\n (already counted)."""
    n = data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")
    if after_cr and data.startswith(b"\n"):
        n -= 1
    return n


def iter_text(path: str, encoding: str = "utf-8", errors: str = "strict",
              chunk_bytes: int = CHUNK_BYTES, what: str = "corpus") -> Iterator[str]:
    """Yield the decoded text of `path` in chunks, with universal newlines; `what` names it in messages."""
    decoder = _text_decoder(encoding, errors)
    f, close = _open_binary(path, what)
    name = "standard input" if isinstance(path, (bytes, bytearray, memoryview)) or path == "-" else path
    consumed = 0  # bytes handed to the decoder before this chunk
    lines_before = 0
    raw_ended_cr = False  # the bytes read so far end with \r
    carry_cr = False
    bom = codecs.lookup(encoding).name == "utf-8"   # a UTF-8 file may start with a byte-order mark: not text
    try:
        while True:
            try:
                raw = f.read(chunk_bytes)
            except OSError as e:
                raise CorpusError(f"cannot read {what} {name}: {e.strerror}") from None
            final = not raw
            try:
                text = decoder.decode(raw, final=final)
            except UnicodeError as e:
                if not isinstance(e, UnicodeDecodeError):   # e.g. UTF-16 with an odd number of bytes
                    raise CorpusError(f"{name} is not valid {encoding}: {e}") from None
                pending = len(decoder.getstate()[0]) if hasattr(decoder, "getstate") else 0
                offset = consumed - pending + e.start
                bad = e.object[e.start:e.start + 1]
                line = lines_before + _line_ends(e.object[:e.start], raw_ended_cr) + 1
                raise CorpusError(
                    f"{name} is not valid {encoding}: byte 0x{bad.hex()} at offset {offset} (line {line}); "
                    f"use --encoding to name the right encoding, or --errors replace"
                ) from None
            consumed += len(raw)
            lines_before += _line_ends(raw, raw_ended_cr)
            raw_ended_cr = raw.endswith(b"\r") if raw else raw_ended_cr
            if carry_cr:
                text = "\r" + text
                carry_cr = False
            if text.endswith("\r") and not final:
                text, carry_cr = text[:-1], True
            if "\r" in text:
                text = text.replace("\r\n", "\n").replace("\r", "\n")
            if bom and text:
                text, bom = text.removeprefix("\ufeff"), False
            if text:
                yield text
            if final:
                return
    finally:
        if close:
            f.close()


@dataclass
class CorpusStats:
    """Dense code-point counts of a corpus, and its size in characters and lines."""

    counts: np.ndarray
    num_chars: int  # characters excluding line ends
    num_lines: int
    num_empty_lines: int
    num_inner_empty_lines: int = 0  # those between two non-empty lines (not the blank lines an editor leaves at the end)


def count_corpus(path: str, encoding: str = "utf-8", errors: str = "strict") -> CorpusStats:
    """Count every character of a corpus; `counts[10]` is the number of lines."""
    counts = None
    num_chars = num_lines = num_empty = 0
    inner = pending = 0     # empty lines between non-empty ones; empty lines since the last non-empty one
    seen_text = False
    prev_is_newline = True  # an empty first line counts as empty
    for text in iter_text(path, encoding, errors):
        cps = code_points(text)
        counts = count_code_points(cps, counts)
        newline = cps == 10
        prev = np.concatenate(([prev_is_newline], newline[:-1]))
        empty_at = np.flatnonzero(newline & prev)        # where each empty line ends
        num_empty += len(empty_at)
        num_lines += int(np.count_nonzero(newline))
        num_chars += len(cps) - int(np.count_nonzero(newline))
        prev_is_newline = bool(newline[-1])
        text_at = np.flatnonzero(~newline)
        if len(text_at) == 0:
            pending += len(empty_at)
            continue
        first, last = text_at[0], text_at[-1]
        if seen_text:                                    # the empty lines before this chunk's first text are inner
            inner += pending + int(np.count_nonzero(empty_at < first))
        inner += int(np.count_nonzero((empty_at > first) & (empty_at < last)))
        pending = int(np.count_nonzero(empty_at > last))
        seen_text = True
    if counts is None:
        counts = np.zeros(0, dtype=np.int64)
    if not prev_is_newline:  # the last line ends without a newline: still a line
        counts = count_code_points(np.array([10], dtype=np.uint32), counts)
        num_lines += 1
    return CorpusStats(counts, num_chars, num_lines, num_empty, inner)


def encode_corpus(path: str, vocab: Vocab, encoding: str = "utf-8", errors: str = "strict",
                  num_tokens: int | None = None, what: str = "corpus", out: np.ndarray | None = None) -> np.ndarray:
    """The whole corpus as one compact id array, each line ending in `<EOS>`.

    With `num_tokens` (characters + lines, as `count_corpus` found them) the
    array is allocated once and filled chunk by chunk, so encoding needs the
    id array plus one chunk of memory; `out` (num_tokens long) is filled
    instead of a new array (a slice of a many-file corpus's array).
    """
    if out is None and num_tokens is not None:
        out = np.empty(num_tokens, dtype=vocab.dtype)
    parts = []
    filled = 0
    last_is_eos = True
    for text in iter_text(path, encoding, errors, what=what):
        ids = vocab.encode(text)
        if out is not None and filled + len(ids) <= len(out):
            out[filled:filled + len(ids)] = ids
        else:  # no size hint (or the source changed under us): collect the pieces
            parts.append(ids)
        filled += len(ids)
        last_is_eos = text.endswith("\n")
    if filled and not last_is_eos:  # the last line ends without a newline: still an <EOS>
        if out is not None and not parts and filled < len(out):
            out[filled] = EOS_ID
        else:
            parts.append(np.array([EOS_ID], dtype=vocab.dtype))
        filled += 1
    if out is not None and not parts and filled == len(out):
        return out
    pieces = ([out[:min(filled, len(out))]] if out is not None else []) + parts
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=vocab.dtype)


def read_lines(path: str, encoding: str = "utf-8", errors: str = "strict", what: str = "file") -> list[str]:
    """The lines of a text file (without their line ends)."""
    text = "".join(iter_text(path, encoding, errors, what=what))
    if not text:
        return []
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    return lines
