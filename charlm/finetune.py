"""Fine-tuning: start a new run from a trained model's weights (`train NEW_CORPUS --init-from BASE.npz`).

The run is new in everything but the weights: a fresh optimizer (zero
moments, step 0), learning-rate schedule, budget, validation split and
n-gram (counted on the new corpus).  The network and its head come from the
base's "best" weights (the ones `sample` and `score` use); the architecture
(cell, hidden size, layers, activation, dtype) is the base's, and an option
that contradicts it is refused, naming the option.

The vocabulary is the base's: characters of the new corpus outside it are
read as `<UNK>`.  With `--extend-vocab` the new characters join it (in
code-point order, as every vocabulary is ordered): each gets a new column of
the input weights `layers.0.weight_ih` and a new row of `head.weight` and
`head.bias`, taken from a freshly initialised model (`model.init_params`:
U(±1) input column, U(±1/√H) head row, zero bias), and every base token
keeps its own weights under its new id.  So the network's hidden states are
unchanged for text of old characters, and its next-character distribution is
the base's scaled by a common factor, 1 − (the new characters' mass):

    P'(c) = P(c) · Z / (Z + Σ_new exp(w_new·h + b_new))      for every old c
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from charlm import checkpoint as ckpt_io
from charlm import optim
from charlm.config import Config
from charlm.errors import CheckpointError, ConfigError
from charlm.vocab import NEWLINE, Vocab, validate_tokens

ARCH_OPTIONS = ("cell", "hidden_size", "num_layers", "activation", "dtype")   # taken from the base


@dataclass(frozen=True)
class Start:
    """Where a fine-tuning run starts: the base's weights and vocabulary, and what `meta.init_from` records."""

    params: dict
    vocab: Vocab
    meta: dict


def load_base(path: str) -> ckpt_io.Checkpoint:
    """The base checkpoint, validated; a one-line CheckpointError naming --init-from otherwise."""
    try:
        return ckpt_io.load(path, hint="")
    except CheckpointError as e:
        raise CheckpointError(f"--init-from: {e}") from None


def adopt_arch(cfg: Config, base: ckpt_io.Checkpoint, given: set, path: str) -> None:
    """Set the architecture options of `cfg` to the base's; ConfigError naming a given option that differs."""
    for name in ARCH_OPTIONS:
        mine, theirs = getattr(cfg, name), getattr(base.config, name)
        if name in given and mine != theirs:
            option = f"--{name.replace('_', '-')}"
            raise ConfigError(f"{option} {mine} contradicts the model in --init-from {path} ({name} {theirs}): "
                              f"the architecture comes from it, so leave {option} out")
        setattr(cfg, name, theirs)


def start(base: ckpt_io.Checkpoint, path: str, vocab: Vocab) -> Start:
    """The Start of a run from `base` whose vocabulary is `vocab` (the base's, or an extension of it)."""
    added = len(vocab) - len(base.vocab)
    meta = {"path": path, "corpus": (base.meta.get("corpus") or {}).get("name"),
            "steps": int(base.meta.get("steps") or 0), "vocab_size": len(base.vocab), "added_chars": added}
    return Start(base.weights("best"), base.vocab, meta)


def extended_vocab(base: Vocab, counts: np.ndarray, min_count: int = 1) -> Vocab:
    """The base vocabulary plus every character of `counts` (dense code-point counts) seen ≥ min_count times."""
    counts = np.asarray(counts, dtype=np.int64)
    seen = np.flatnonzero(counts >= min_count)
    known = {ord(t) for t in base.tokens[2:]}
    new = [int(cp) for cp in seen if cp != NEWLINE and int(cp) not in known]
    chars = sorted(list(base.tokens[2:]) + [chr(cp) for cp in new], key=ord)
    tokens = base.tokens[:2] + tuple(chars)
    validate_tokens(tokens)
    old_counts = dict(zip(base.tokens, base.counts or (0,) * len(base)))
    all_counts = tuple(old_counts.get(t, 0) if t in old_counts else int(counts[ord(t)]) for t in tokens)
    return Vocab(tokens, all_counts)


def token_index(base: Vocab, vocab: Vocab) -> np.ndarray:
    """The id in `vocab` of each base token (the specials keep 0 and 1)."""
    where = {t: i for i, t in enumerate(vocab.tokens)}
    missing = [t for t in base.tokens if t not in where]
    if missing:
        raise ConfigError(f"the vocabulary lacks {len(missing)} of the base model's tokens (e.g. {missing[0]!r})")
    return np.array([where[t] for t in base.tokens], dtype=np.intp)


def start_params(fresh: dict, init: Start, vocab: Vocab) -> dict:
    """The run's first weights: the base's, each base token's column/row moved to its id in `vocab`;
    the rows of new tokens are those of `fresh` (a freshly initialised model of the new size)."""
    index = token_index(init.vocab, vocab)
    params = {}
    for name, w in fresh.items():
        base = init.params[name]
        if name == "layers.0.weight_ih":
            w = w.copy()
            w[:, index] = base
        elif name in ("head.weight", "head.bias"):
            w = w.copy()
            w[index] = base
        else:
            if base.shape != w.shape:
                raise ConfigError(f"the base model's {name} has shape {base.shape}, not {w.shape}")
            w = base.copy()
        params[name] = w.astype(fresh[name].dtype, copy=False)
    return params


def check_options(init_from: str | None, resume: bool, vocab_file: str | None, extend_vocab: bool) -> None:
    """Refuse the options that do not go with fine-tuning (or need it)."""
    if init_from is not None and resume:
        raise ConfigError("--init-from starts a new run and --resume continues one: give one of them")
    if init_from is not None and vocab_file is not None:
        raise ConfigError("--init-from brings the base model's vocabulary: leave --vocab out "
                          "(--extend-vocab adds characters)")
    if extend_vocab and init_from is None:
        raise ConfigError("--extend-vocab extends the vocabulary of the model given with --init-from")


def vocabulary(base: ckpt_io.Checkpoint, extend: bool, min_count: int, given: set):
    """What `load_corpus` takes as the vocabulary of a fine-tuned run (the base's, or a function of the
    corpus's counts that extends it), and a note about the options this makes moot (or None)."""
    ignored = [o for o in ("max_size",) + (() if extend else ("min_count",)) if o in given]
    note = None
    if ignored:
        note = (f"--{ignored[0].replace('_', '-')} is ignored with --init-from: the vocabulary is the base model's"
                + (", extended by every character seen --min-count times" if extend else ""))
    if extend:
        return (lambda counts: extended_vocab(base.vocab, counts, min_count)), note
    return base.vocab, note


def starter(init: Start | None, cfg: Config, vocab: Vocab):
    """What `run.set_up` calls on a new run to give it the base's weights and a fresh optimizer (None: no base)."""
    if init is None:
        return None

    def start(st) -> None:
        st.params = start_params(st.params, init, vocab)
        st.optim_state = optim.init_state(cfg.optimizer, st.params)
    return start


def meta_of(init: Start | None, resume: ckpt_io.Checkpoint | None) -> dict | None:
    """The base a run started from, for its checkpoint's meta.init_from (a resumed run keeps its own)."""
    if init is not None:
        return init.meta
    return resume.meta.get("init_from") if resume is not None else None
