"""Characters <-> ids, the `<EOS>` / `<UNK>` policy, and the vocabulary file.

Tokens are Unicode code points.  Each line of a text is a sequence whose end
is the `<EOS>` token (the newline character itself is never a token).

Ids are fixed by a rule, so the same counts always give the same vocabulary:

    0            <EOS>
    1            <UNK>
    2, 3, ...    the kept characters, in code-point order

A character below `min_count`, beyond `max_size`, or never seen maps to
`<UNK>`.  Encoding is vectorised: the text becomes an array of code points,
and a binary search in the sorted kept code points gives each id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from charlm.errors import VocabError

EOS, UNK = "<EOS>", "<UNK>"
EOS_ID, UNK_ID = 0, 1
SPECIALS = (EOS, UNK)
NEWLINE = 0x0A
UNK_DISPLAY = "\ufffd"  # how <UNK> is written when ids are decoded to text
VOCAB_FORMAT = "charlm-vocab"
VOCAB_VERSION = 1   # the version of the vocabulary file this charlm writes and reads


def code_points(text: str) -> np.ndarray:
    """The code points of `text` as a uint32 array (lone surrogates allowed)."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def id_dtype(size: int) -> np.dtype:
    """The smallest unsigned integer dtype that holds ids below `size`."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    raise VocabError(f"a vocabulary of {size} tokens is too large")


def char_name(ch: str) -> str:
    """A printable form of one character, e.g. for listing what became <UNK>."""
    if ch.isprintable() and not ch.isspace():
        return ch
    return ascii(ch)[1:-1] if ord(ch) < 0xD800 or ord(ch) > 0xDFFF else f"\\u{ord(ch):04x}"


@dataclass(frozen=True)
class Vocab:
    """A character vocabulary: `tokens[i]` is the token with id i.

    `counts[i]` is how often token i was seen when the vocabulary was built
    (for `<EOS>` the number of lines, for `<UNK>` the characters it absorbed);
    `unk_chars` maps each character that was folded into `<UNK>` to its count.
    """

    tokens: tuple[str, ...]
    counts: tuple[int, ...] = ()
    unk_chars: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        validate_tokens(self.tokens)
        if self.counts and len(self.counts) != len(self.tokens):
            raise VocabError("the vocabulary has a different number of counts and tokens")
        kept = np.array([ord(t) for t in self.tokens[2:]], dtype=np.uint32)
        object.__setattr__(self, "_kept", kept)

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def dtype(self) -> np.dtype:
        return id_dtype(len(self.tokens))

    def encode_code_points(self, cps: np.ndarray) -> np.ndarray:
        """Ids of an array of code points; newline is `<EOS>`, unknowns `<UNK>`."""
        pos = np.searchsorted(self._kept, cps)
        pos_c = np.minimum(pos, max(len(self._kept) - 1, 0))
        if len(self._kept):
            found = self._kept[pos_c] == cps
        else:
            found = np.zeros(cps.shape, dtype=bool)
        ids = np.where(found, pos_c + 2, UNK_ID)
        ids[cps == NEWLINE] = EOS_ID
        return ids.astype(self.dtype)

    def encode(self, text: str) -> np.ndarray:
        """Ids of the characters of `text` (a newline in it is `<EOS>`)."""
        return self.encode_code_points(code_points(text))

    def decode(self, ids) -> str:
        """Text of a sequence of ids: `<EOS>` is a newline, `<UNK>` is U+FFFD."""
        out = []
        for i in ids:
            i = int(i)
            out.append("\n" if i == EOS_ID else UNK_DISPLAY if i == UNK_ID else self.tokens[i])
        return "".join(out)

    def token_text(self, i: int) -> str:
        """A display form of token i (specials by name)."""
        return self.tokens[i] if i < 2 else char_name(self.tokens[i])

    def to_json(self) -> dict:
        return {
            "format": VOCAB_FORMAT,
            "version": VOCAB_VERSION,
            "tokens": list(self.tokens),
            "counts": list(self.counts),
            "unk_chars": self.unk_chars,
        }


def validate_tokens(tokens) -> None:
    """Refuse a token list that breaks the id rule (specials first, then sorted characters, each once)."""
    tokens = list(tokens)
    if tokens[:2] != [EOS, UNK]:
        raise VocabError('a vocabulary must start with "<EOS>" (id 0) and "<UNK>" (id 1)')
    first: dict[str, int] = {}
    for i, tok in enumerate(tokens[2:], start=2):
        if not isinstance(tok, str) or len(tok) != 1:
            raise VocabError(f"vocabulary token {i} ({tok!r}) is not a single character")
        if ord(tok) == NEWLINE:
            raise VocabError("the newline character cannot be a token (line ends are <EOS>)")
        if tok in first:   # (before the order check: a repeat further on also looks out of order)
            raise VocabError(f"vocabulary token {i} ({_named(tok)}) is a duplicate of token {first[tok]}")
        first[tok] = i
    prev = -1
    for i, tok in enumerate(tokens[2:], start=2):
        if ord(tok) < prev:
            raise VocabError(f"vocabulary token {i} ({_named(tok)}) is out of code-point order")
        prev = ord(tok)


def _named(ch: str) -> str:
    """A character for a message: its printable form and its code point, e.g. 'a' (U+0061)."""
    return f"'{char_name(ch)}' (U+{ord(ch):04X})"


def count_code_points(cps: np.ndarray, counts: np.ndarray | None = None) -> np.ndarray:
    """Add the occurrences of each code point in `cps` to a dense count array."""
    fresh = np.bincount(cps, minlength=0)
    if counts is None:
        return fresh
    if len(fresh) > len(counts):
        fresh[: len(counts)] += counts
        return fresh
    counts[: len(fresh)] += fresh
    return counts


def build_vocab(counts: np.ndarray, min_count: int = 1, max_size: int | None = None) -> Vocab:
    """The vocabulary of a dense code-point count array.

    Keeps characters seen at least `min_count` times; if `max_size` (which
    includes the two specials) is given, keeps only the most frequent ones
    (ties broken by code point).  The newline count becomes `<EOS>`'s.
    """
    if min_count < 1:
        raise VocabError("--min-count must be at least 1")
    if max_size is not None and max_size < 2:
        raise VocabError("--max-size must be at least 2 (<EOS> and <UNK>)")
    counts = np.asarray(counts, dtype=np.int64)
    n_lines = int(counts[NEWLINE]) if len(counts) > NEWLINE else 0
    seen = np.flatnonzero(counts)
    seen = seen[seen != NEWLINE]
    keep = seen[counts[seen] >= min_count]
    if max_size is not None and len(keep) > max_size - 2:
        order = np.lexsort((keep, -counts[keep]))  # most frequent first, then code point
        keep = np.sort(keep[order[: max_size - 2]])
    dropped = np.setdiff1d(seen, keep)
    unk_chars = {chr(int(cp)): int(counts[cp]) for cp in dropped}
    tokens = (EOS, UNK) + tuple(chr(int(cp)) for cp in keep)
    all_counts = (n_lines, int(sum(unk_chars.values()))) + tuple(int(counts[cp]) for cp in keep)
    return Vocab(tokens, all_counts, unk_chars)


def vocab_json(vocab: Vocab) -> str:
    """The vocabulary file's text: JSON, ASCII only."""
    return json.dumps(vocab.to_json(), ensure_ascii=True, indent=1) + "\n"


def save_vocab(vocab: Vocab, path: str) -> None:
    """Write the vocabulary as JSON, atomically."""
    from charlm.files import atomic_write_bytes

    atomic_write_bytes(path, vocab_json(vocab).encode("ascii"))


VOCAB_KEYS = ("format", "version", "tokens", "counts", "unk_chars")
MAX_COUNT = 2 ** 63 - 1           # counts are stored as int64 in a checkpoint
MAX_NUMBER_DIGITS = 30            # longer integers in the file are refused while parsing
MAX_FILE_BYTES = 64 << 20         # larger files are refused before parsing (every code point, as save_vocab writes it: 43 MiB)


def _shown(value, limit: int = 40) -> str:
    """A JSON value for a one-line message, cut short."""
    text = json.dumps(value, ensure_ascii=True)
    return text if len(text) <= limit else text[:limit] + "…"


def _is_count(c) -> bool:
    return type(c) is int and 0 <= c <= MAX_COUNT     # (not a bool: true is no count)


def vocab_from_json(data) -> Vocab:
    """Build a vocabulary from parsed JSON, refusing anything malformed.

    The file must hold what `save_vocab` writes: "format": "charlm-vocab",
    "version": 1 and "tokens"; "counts" and "unk_chars" may be left out;
    no other key.
    """
    if not isinstance(data, dict):
        raise VocabError("a vocabulary file must hold a JSON object")
    if "format" not in data:
        raise VocabError(f'not a charlm vocabulary: no "format" key (a vocabulary from build-vocab has '
                         f'"format": "{VOCAB_FORMAT}")')
    if data["format"] != VOCAB_FORMAT:
        raise VocabError(f'not a charlm vocabulary (format {_shown(data["format"])}, expected "{VOCAB_FORMAT}")')
    if "version" not in data:
        raise VocabError(f'the vocabulary has no "version" key (this charlm reads version {VOCAB_VERSION})')
    version = data["version"]
    if type(version) is not int:
        raise VocabError(f'the vocabulary\'s "version" must be an integer, not {_shown(version)} '
                         f'(this charlm reads version {VOCAB_VERSION})')
    if version != VOCAB_VERSION:
        raise VocabError(f"vocabulary format version {_shown(version)} is not supported: "
                         f"this charlm reads version {VOCAB_VERSION}")
    unknown = [k for k in data if k not in VOCAB_KEYS]
    if unknown:
        raise VocabError(f"unexpected key {_shown(unknown[0])} in the vocabulary (known: {', '.join(VOCAB_KEYS)})")
    tokens = data.get("tokens")
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise VocabError('a vocabulary file needs "tokens": a list of strings')
    counts = data.get("counts", [])
    if not isinstance(counts, list):
        raise VocabError('"counts" must be a list of non-negative integers')
    for i, c in enumerate(counts):
        if not _is_count(c):
            raise VocabError(f'"counts" must be a list of non-negative integers below 2^63: '
                             f"entry {i} is {_shown(c)}")
    unk_chars = data.get("unk_chars", {})
    if not isinstance(unk_chars, dict):
        raise VocabError('"unk_chars" must be an object')
    vocab = Vocab(tuple(tokens), tuple(counts))
    kept = set(tokens[2:])
    for ch, c in unk_chars.items():
        problem = ("is not a single character" if len(ch) != 1 else "is the newline (line ends are <EOS>)"
                   if ord(ch) == NEWLINE else "is a token of the vocabulary" if ch in kept else None)
        if problem:
            raise VocabError(f'"unk_chars" maps the characters folded into <UNK> to their counts: key {_shown(ch)} {problem}')
        if not _is_count(c):
            raise VocabError(f'"unk_chars" must map characters to non-negative integer counts below 2^63: '
                             f"{_shown(ch)} has {_shown(c)}")
    return Vocab(vocab.tokens, vocab.counts, dict(unk_chars))


class _LongNumber(Exception):
    """An integer in the file too long to be a count (raised while parsing)."""


def _parse_int(text: str) -> int:
    if len(text) > MAX_NUMBER_DIGITS:   # before Python's own limit (4300 digits) turns it into a ValueError
        raise _LongNumber(len(text.lstrip("-")))
    return int(text)


def looks_like_vocab(path: str) -> bool:
    """Whether a file is a JSON object with a vocabulary's `format` (a quick look, not a validation)."""
    from charlm.files import read_capped

    try:
        text = read_capped(path, "vocabulary file", VocabError, MAX_FILE_BYTES, "vocabulary")
        data = json.loads(text.decode("utf-8"), parse_int=_parse_int)
    except (OSError, ValueError, VocabError, _LongNumber, RecursionError):
        return False
    return isinstance(data, dict) and data.get("format") == VOCAB_FORMAT


def load_vocab(path: str) -> Vocab:
    """Read and validate a vocabulary JSON file."""
    from charlm.files import read_capped

    try:
        text = read_capped(path, "vocabulary file", VocabError, MAX_FILE_BYTES, "vocabulary")
        data = json.loads(text.decode("utf-8"), parse_int=_parse_int)
    except UnicodeDecodeError as e:
        raise VocabError(f"vocabulary file {path} is not UTF-8 text (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise VocabError(f"vocabulary file {path} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except _LongNumber as e:
        raise VocabError(f"vocabulary file {path} is not a valid vocabulary: it holds an integer of {e.args[0]:,} "
                         f"digits (counts are below 2^63)") from None
    except RecursionError:
        raise VocabError(f"vocabulary file {path} is not a valid vocabulary: its JSON is nested too deeply") from None
    except ValueError as e:   # (anything else json.loads refuses)
        raise VocabError(f"vocabulary file {path} is not valid JSON: {str(e).splitlines()[0][:120]}") from None
    except OSError as e:
        raise VocabError(f"cannot read vocabulary file {path}: {e.strerror}") from None
    try:
        return vocab_from_json(data)
    except VocabError as e:
        raise VocabError(f"{path}: {e}") from None
