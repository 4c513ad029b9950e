"""A corpus of many files: a folder (read recursively) or several paths.

The files are read in a stable order: the inputs in the order given, and
the files inside a folder sorted by their path relative to it (hidden
files and folders, whose names start with ".", are left out).  The corpus
is their concatenation, each file ending with `<EOS>` (a last line without
a newline gets one), so no two files are ever joined inside a line.

A file that is not text in the chosen encoding (undecodable bytes under
`--errors strict`, or a NUL character, which no text file holds) is
skipped, and `on_skip(path, reason)` hears of it once.  A folder with no
text file left is an error.

Memory stays flat: each file is counted, then encoded straight into its
slice of one id array allocated for all of them (`charlm.corpus` reads a
file in chunks), so many files cost what one file of the same size costs.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from charlm.corpus import CorpusStats, _text_decoder, count_corpus, encode_corpus
from charlm.errors import CorpusError
from charlm.vocab import Vocab


@dataclass
class FileSet:
    """The files of a corpus, in reading order, with what counting them found."""

    paths: list[str]                 # the files to read
    names: list[str]                 # each as recorded in the fingerprint (relative to its folder)
    sizes: list[int]                 # bytes
    stats: list[CorpusStats]         # per file
    label: str                       # the inputs, as the user named them

    @property
    def num_tokens(self) -> int:
        return sum(s.num_chars + s.num_lines for s in self.stats)


def is_many(inputs: list[str]) -> bool:
    """Whether the inputs are read as a FileSet: several paths, or one folder."""
    return len(inputs) > 1 or (len(inputs) == 1 and os.path.isdir(inputs[0]))


def walk(inputs: list[str]) -> list[tuple[str, str]]:
    """(path, name) of every file the inputs name, in reading order, each file once.

    A folder contributes its files (recursively, hidden ones left out),
    sorted by their path relative to it; `name` is that relative path
    (the file's base name for a file given directly).
    """
    found, seen = [], set()
    for given in inputs:
        if given == "-":
            raise CorpusError("standard input (-) cannot be read together with other files")
        if os.path.isdir(given):
            members = []
            for root, dirs, files in os.walk(given):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                members += [os.path.join(root, f) for f in files if not f.startswith(".")]
            items = sorted((os.path.relpath(p, given).replace(os.sep, "/"), p) for p in members)
            items = [(p, name) for name, p in items if os.path.isfile(p)]
        elif os.path.exists(given):
            items = [(given, os.path.basename(given))]
        else:
            raise CorpusError(f"corpus {given} does not exist")
        for path, name in items:
            key = os.path.realpath(path)
            if key not in seen:
                seen.add(key)
                found.append((path, name))
    return found


def scan(inputs: list[str], encoding: str = "utf-8", errors: str = "strict",
         on_skip: Callable[[str, str], None] = lambda path, why: None) -> FileSet:
    """Count every file of the inputs, skipping those that are not text; CorpusError if none is left."""
    _text_decoder(encoding, errors)          # a wrong --encoding or --errors is an error, not a reason to skip
    files = walk(inputs)
    label = " ".join(inputs)
    kept = FileSet([], [], [], [], label)
    for path, name in files:
        try:
            stats = count_corpus(path, encoding, errors)
        except CorpusError as e:
            why = str(e).removeprefix(f"{path} ")
            on_skip(path, why)
            continue
        if len(stats.counts) > 0 and stats.counts[0]:
            why = "holds NUL characters (not text)"
            on_skip(path, why)
            continue
        kept.paths.append(path)
        kept.names.append(name)
        kept.sizes.append(os.path.getsize(path))
        kept.stats.append(stats)
    if not kept.paths:
        what = ("holds no files (a directory is read with the files in it, recursively; hidden ones are left out)"
                if not files else f"has no text file in {encoding} among its {len(files):,} files")
        raise CorpusError(f"corpus {label} {what}")
    return kept


def merged_stats(files: FileSet) -> CorpusStats:
    """The counts of all the files together."""
    size = max(len(s.counts) for s in files.stats)
    counts = np.zeros(size, dtype=np.int64)
    for s in files.stats:
        counts[:len(s.counts)] += s.counts
    return CorpusStats(counts, sum(s.num_chars for s in files.stats), sum(s.num_lines for s in files.stats),
                       sum(s.num_empty_lines for s in files.stats),
                       sum(s.num_inner_empty_lines for s in files.stats))


def count(source, encoding: str = "utf-8", errors: str = "strict") -> CorpusStats:
    """The counts of a corpus as `open_corpus` gives it: a FileSet's (already counted), or one text source's."""
    return merged_stats(source) if isinstance(source, FileSet) else count_corpus(source, encoding, errors)


def encode(files: FileSet, vocab: Vocab, encoding: str = "utf-8", errors: str = "strict") -> np.ndarray:
    """One id array of every file in order, each ending with `<EOS>`, filled file by file in place."""
    out = np.empty(files.num_tokens, dtype=vocab.dtype)
    at = 0
    for path, stats in zip(files.paths, files.stats):
        n = stats.num_chars + stats.num_lines
        ids = encode_corpus(path, vocab, encoding, errors, num_tokens=n, out=out[at:at + n])
        if len(ids) != n:
            raise CorpusError(f"{path} changed while it was being read (it had {n:,} tokens, now {len(ids):,})")
        at += n
    return out


def fingerprint(ids: np.ndarray, files: FileSet, vocab: Vocab) -> str:
    """A digest of the files' names and sizes, and of their text (the ids and the characters they stand for):
    what --resume compares."""
    h = hashlib.sha256()
    for name, size in zip(files.names, files.sizes):
        h.update(f"{name}\0{size}\0".encode("utf-8", "surrogateescape"))
    h.update("\0".join(vocab.tokens).encode("utf-8", "surrogatepass"))
    h.update(memoryview(np.ascontiguousarray(ids)).cast("B"))
    return h.hexdigest()[:16] + f"-{ids.dtype.str}-{len(files.paths)}f"


def open_corpus(inputs: list[str], encoding: str = "utf-8", errors: str = "strict", what: str = "corpus",
                on_skip: Callable[[str, str], None] = lambda path, why: None):
    """What the corpus `inputs` is read from: one path as `files.text_source` gives it (a path, or the bytes
    of stdin or a pipe), several paths or a folder as a `FileSet` (`on_skip(path, why)` hears of each file
    that is not text)."""
    from charlm.files import text_source

    if not is_many(inputs):
        return text_source(inputs[0], what)
    return scan(inputs, encoding, errors, on_skip=on_skip)
