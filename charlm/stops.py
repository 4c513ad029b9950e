"""Stop texts (`sample --stop TEXT`): a sample ends as soon as its generated text ends with one of them.

The stop text is part of the sample (it is printed, and its characters
count in the log-probability).  Only the generated text is searched, not
the prime.  `<EOS>` reads as a newline here, so `--stop "\\n\\n"` ends a
sample at its first blank line when samples run over lines
(`--no-stop-at-eos`).  On the command line `\\n`, `\\t` and `\\\\` in a stop
text are a newline, a tab and a backslash.
"""

from __future__ import annotations

import numpy as np

from charlm.errors import CharlmError
from charlm.vocab import Vocab

ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}


def parse(text: str) -> str:
    """A stop text as given on the command line, its escapes \\n, \\t and \\\\ read; an error if empty."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in ESCAPES:
            out.append(ESCAPES[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    if not out:
        raise CharlmError("--stop needs a text (an empty one would end every sample at once)")
    return "".join(out)


class Stops:
    """The stop texts, and the tail of each sample's text that is enough to find them."""

    def __init__(self, texts: list[str]):
        self.texts = tuple(texts)
        self.keep = max((len(t) for t in self.texts), default=0)   # characters of tail worth keeping

    def __bool__(self) -> bool:
        return bool(self.texts)

    def grow(self, tail: str, char: str) -> tuple[str, bool]:
        """The tail after `char` is produced, and whether the text now ends with a stop text."""
        tail = (tail + char)[-self.keep:]
        return tail, any(tail.endswith(t) for t in self.texts)


class Matcher:
    """For `sample.generate`: which of N samples, each one token further, now end with a stop text."""

    def __init__(self, stops: Stops, vocab: Vocab, num: int):
        self.stops, self.vocab = stops, vocab
        self.tails = [""] * num

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        hit = np.zeros(len(ids), dtype=bool)
        for n, tok in enumerate(ids.tolist()):
            self.tails[n], hit[n] = self.stops.grow(self.tails[n], self.vocab.decode([tok]))
        return hit
