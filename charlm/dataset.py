"""A training corpus: read once (one file, stdin, or many files), its vocabulary, encoded to ids, split.

The held-out split is drawn across the whole corpus (`charlm.data.split`);
the fingerprint that `--resume` checks covers every token (and, for many
files, their names, sizes and the characters the ids stand for).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from charlm import data as batches
from charlm import sources
from charlm.config import Config
from charlm.corpus import encode_corpus
from charlm.errors import CorpusError
from charlm.vocab import Vocab, build_vocab


@dataclass
class Corpus:
    """A corpus encoded once: the id array split for training and validation."""

    vocab: Vocab
    train_ids: np.ndarray
    val_ids: np.ndarray
    info: dict  # name, characters, lines, fingerprint, line_items


def load_corpus(source, cfg: Config, vocab=None, name: str | None = None) -> Corpus:
    """Read a corpus (path, "-", bytes, or a `sources.FileSet` of many files), build or apply the vocabulary,
    encode, split.

    `vocab`: None builds one from the corpus; a Vocab is applied; a function of
    the corpus's code-point counts returns the Vocab to apply (`--extend-vocab`).
    """
    files = source if isinstance(source, sources.FileSet) else None
    stats = sources.count(source, cfg.encoding, cfg.errors)
    label = name or (files.label if files else source if isinstance(source, str) else "<stdin>")
    if stats.num_chars == 0:
        what = "only empty lines" if stats.num_lines else "no text"
        raise CorpusError(f"corpus {label} is empty ({what}); it needs at least one character")
    if vocab is None:
        vocab = build_vocab(stats.counts, cfg.min_count, cfg.max_size)
    elif callable(vocab):
        vocab = vocab(stats.counts)
    if files:
        ids = sources.encode(files, vocab, cfg.encoding, cfg.errors)
        digest = sources.fingerprint(ids, files, vocab)
    else:
        ids = encode_corpus(source, vocab, cfg.encoding, cfg.errors, num_tokens=stats.num_chars + stats.num_lines)
        digest = hashlib.sha256(memoryview(np.ascontiguousarray(ids)).cast("B")).hexdigest()[:16] + f"-{ids.dtype.str}"
    info = {
        "name": label,
        "num_chars": stats.num_chars,
        "num_lines": stats.num_lines,
        "num_tokens": int(len(ids)),
        "fingerprint": digest,
        # a list of items (names, words): no blank lines; samples then stop at <EOS>
        # (blank lines before the first line and after the last do not count: editors leave them)
        "line_items": stats.num_inner_empty_lines == 0 and stats.num_lines > 1,
    }
    if files:
        info["num_files"] = len(files.paths)
    train_ids, val_ids = batches.split(ids, cfg.val_fraction)   # consumes ids
    return Corpus(vocab, train_ids, val_ids, info)
