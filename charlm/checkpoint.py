"""The checkpoint format (version 1): one `.npz`, saved atomically, loaded
without pickle and validated before use.

Keys (every value is a plain array, so `numpy.load(path, allow_pickle=False)`
reads the file):

    format                 0-d str   "charlm-checkpoint"
    version                0-d int   1
    config                 0-d str   JSON of the Config (cell, hidden_size, ...)
    vocab                  1-d str   tokens in id order ("<EOS>", "<UNK>", ...)
    vocab.counts           1-d int64 token counts when the vocabulary was built
    meta                   0-d str   JSON: corpus, steps, time, characters seen, validation (charlm.schema.META)
    layers.{l}.weight_ih, layers.{l}.weight_hh, layers.{l}.bias, head.weight, head.bias
    backward.layers.{l}.*  -- config.bidirectional only -- the right-to-left stack (head.weight is then (V, 2H));
                           every weight key and shape comes from `model.param_shapes`
    -- only in resumable checkpoints --
    train_state            0-d str   JSON: step, data position, clock, RNG state, history (charlm.schema.TRAIN_STATE)
    optim.step             0-d int   optimizer steps taken
    optim.{slot}.{param}   optimizer moments (Adam m/v, SGD v, Adagrad g2) and,
                           with --ema, the average of the weights (slot avg)
    carry.{l}.{k}          hidden state carried between chunks (k = 0: h, 1: c)
    best.{param}           weights with the best validation loss so far
    -- only when trained with an n-gram (--ngram N > 0) and validation --
    ngram.{k}.keys         1-d int64, sorted: the order-k grams (see charlm.ngram)
    ngram.{k}.counts       1-d uint32: their (continuation) counts
    mix.weight             0-d float64: the network's share λ for the last weights
    best.mix.weight        0-d float64: the same for the best weights
    -- config.bidirectional with an n-gram and validation (charlm.combine): ngram.{k}.* as above, and --
    backward.ngram.{k}.*, two_sided.ngram.{k}.*   the same tables: the reversed text's, both sides' as history
    combine.last, .best    1-d float64 (5,): the experts' weights (network, forward, backward, unigram, two-sided)

Loading reads every member's name, dtype and shape first (`read_arrays`,
charlm.npz) and checks them against `layout` before reading any array.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass, field

import numpy as np

from charlm import npz, schema
from charlm.files import atomic_write, open_user_file
from charlm.cells import NUM_STATES
from charlm.config import Config
from charlm.errors import CharlmError, CheckpointError
from charlm import ngram as ngrams
from charlm import combine
from charlm.combine import Combination
from charlm.mixture import Mixture
from charlm.model import Arch, param_shapes
from charlm.ngram import NGram
from charlm.optim import AVERAGE, SLOTS, averaged
from charlm.vocab import EOS, Vocab

FORMAT = "charlm-checkpoint"
VERSION = 1
DEFAULT_PATH = "charlm.npz"
ENV_VAR = "CHARLM_CHECKPOINT"
MIX_KEYS = {"last": "mix.weight", "best": "best.mix.weight"}  # the network's share for each set of weights
MAX_MEMBERS = 4096      # members of an archive at most (a checkpoint of 200 layers has 3,444)
FINITE_BLOCK = 1 << 20  # values checked for NaN and infinities at once
TOKEN_BYTES = 4 * len(EOS)   # the longest token, "<EOS>", in a NumPy string (4 bytes a character)
MAX_VOCAB = 0x110000 + 1     # every code point but the newline, and the two specials
MISSING_HINT = " (train one with `charlm train CORPUS`, or pass -c PATH)"   # after "checkpoint ... not found"
# The members read before the others are checked: the format, and the config and vocabulary that the
# other members' names and shapes follow from (`layout`); the JSON of meta and train_state.  Each is
# checked against its spec here, and so held within its cap, before it is read.
SMALL = {
    "format": npz.Spec("str", (), 4 * 64),
    "version": npz.Spec("int", ()),
    "config": npz.Spec("str", (), 1 << 20),     # 1 MiB (the JSON is about 1 KB)
    "vocab": npz.Spec("str", (range(MAX_VOCAB + 1),), TOKEN_BYTES),
    "vocab.counts": npz.Spec("int", (range(MAX_VOCAB + 1),)),
    "meta": npz.Spec("str", (), 1 << 20),       # 1 MiB (the JSON is about 500 bytes and the corpus name)
    "train_state": npz.Spec("str", (), 1 << 26),  # 64 MiB: its history grows by about 160 characters a validation
}

# options that training resolves before it saves (None and "auto" are for a run not yet started)
RESOLVED = {"dropout": None, "char_dropout": None, "eval_every": None, "line_state": "auto"}


@dataclass
class Checkpoint:
    config: Config
    vocab: Vocab
    params: dict
    train_state: dict | None = None          # resume information
    optim_state: dict | None = None
    carry: list | None = None                # per layer: tuple of (B, H) arrays
    best_params: dict | None = None
    meta: dict = field(default_factory=dict)  # corpus, steps, time, validation figures
    ngram: NGram | None = None               # the n-gram the network is interpolated with (bidirectional: forward)
    mix_weights: dict = field(default_factory=dict)  # "last"/"best": the network's share λ
    backward_ngram: NGram | None = None      # bidirectional: the n-gram of the reversed text (charlm.combine)
    two_sided_ngram: NGram | None = None     # bidirectional: the n-gram of both sides (charlm.combine)
    combine_weights: dict = field(default_factory=dict)  # bidirectional, "last"/"best": the experts' weights

    @property
    def arch(self) -> Arch:
        return arch_of(self.config, len(self.vocab))

    def weights(self, which: str = "best") -> dict:
        """The parameters to use: "best" or "last".

        best: the weights with the best validation (of the weight average,
        when training kept one); without validation, the weight average at
        the end, if kept.  last: the weights at the end of training.
        """
        if which not in ("best", "last"):
            raise CharlmError(f"--weights must be best or last, not {which!r}")
        if which == "last":
            return self.params
        if self.best_params is not None:
            return self.best_params
        return averaged(self.optim_state or {}, self.params)

    def mixture(self, which: str = "best") -> Mixture | Combination | None:
        """The interpolation with the n-gram that goes with `weights(which)` (None: the network alone);
        for a bidirectional model, its combination with the three n-grams."""
        if self.config.bidirectional:
            w = self.combine_weights.get(which)
            if any(x is None for x in (self.ngram, self.backward_ngram, self.two_sided_ngram, w)):
                return None
            return Combination(self.ngram, self.backward_ngram, self.two_sided_ngram, w)
        weight = self.mix_weights.get(which)
        if self.ngram is None or weight is None:
            return None
        return Mixture(self.ngram, weight)

    @property
    def resumable(self) -> bool:
        return self.train_state is not None and self.optim_state is not None


def arch_of(cfg: Config, vocab_size: int) -> Arch:
    return Arch(cfg.cell, vocab_size, cfg.hidden_size, cfg.num_layers, cfg.activation,
                reset_at_eos=cfg.line_state == "reset",
                bidirectional=cfg.bidirectional)   # (issue 24) config.bidirectional: absent in older files = False


def default_path() -> str:
    return os.environ.get(ENV_VAR) or DEFAULT_PATH


def to_arrays(ckpt: Checkpoint) -> dict[str, np.ndarray]:
    arrays = {
        "format": np.array(FORMAT),
        "version": np.array(VERSION, dtype=np.int64),
        "config": np.array(json.dumps(ckpt.config.to_dict(), sort_keys=True)),
        "vocab": np.array(list(ckpt.vocab.tokens)),
        "vocab.counts": np.array(ckpt.vocab.counts or [0] * len(ckpt.vocab), dtype=np.int64),
        "meta": np.array(json.dumps(ckpt.meta, sort_keys=True)),
    }
    arrays.update(ckpt.params)
    if ckpt.train_state is not None:
        arrays["train_state"] = np.array(json.dumps(ckpt.train_state, sort_keys=True))
    if ckpt.optim_state is not None:
        arrays["optim.step"] = np.array(ckpt.optim_state["step"], dtype=np.int64)
        for k, v in ckpt.optim_state.items():
            if k != "step":
                arrays[f"optim.{k}"] = v
    if ckpt.carry is not None:
        for l, state in enumerate(ckpt.carry):
            for k, a in enumerate(state):
                arrays[f"carry.{l}.{k}"] = a
    if ckpt.best_params is not None:
        for k, v in ckpt.best_params.items():
            arrays[f"best.{k}"] = v
    if ckpt.ngram is not None:
        arrays.update(ngrams.to_arrays(ckpt.ngram))
    for which, key in MIX_KEYS.items():
        if ckpt.mix_weights.get(which) is not None:
            arrays[key] = np.array(ckpt.mix_weights[which], dtype=np.float64)
    arrays.update(combine.to_arrays(ckpt.backward_ngram, ckpt.two_sided_ngram, ckpt.combine_weights))
    return arrays


def save(ckpt: Checkpoint, path: str) -> None:
    """Write the checkpoint atomically (temporary file, fsync, rename), if `load` would accept it.

    The arrays go through the same checks as a file being loaded
    (`from_arrays`), so nothing is written that `load` would refuse.
    """
    arrays = to_arrays(ckpt)
    for name, a in arrays.items():
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise CharlmError(f"refusing to save a checkpoint with non-finite values in {name}")
    try:
        from_arrays(arrays)
    except CheckpointError as e:
        raise CharlmError(f"refusing to save a checkpoint that could not be loaded: {e}") from None
    atomic_write(path, lambda f: np.savez(f, **arrays))


def looks_like_checkpoint(path: str) -> bool:
    """Whether a file is an .npz archive with a checkpoint's `format` member (a quick look, not a validation)."""
    try:
        with zipfile.ZipFile(path) as z:
            return "format.npy" in z.namelist()
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def read_arrays(path: str, hint: str = MISSING_HINT) -> dict[str, np.ndarray]:
    """The arrays of a checkpoint file, header-first: nothing is read that the checkpoint does not need.

    charlm.npz reads the archive's directory and every member's .npy header;
    then the small members (`SMALL`, each within its cap) give the config and
    vocabulary, every member is checked against what they imply (`layout`),
    and only then are the arrays read, each into the memory its shape needs.
    """
    with open_user_file(path, "checkpoint", CheckpointError, hint=hint) as f:
        try:
            if not f.seekable():   # a pipe: read it whole, as before
                f = io.BytesIO(f.read())
            if f.read(4) not in (b"PK\x03\x04", b"PK\x05\x06"):   # a zip archive (an .npz), or an empty one
                raise CheckpointError(f"{path} is not a charlm checkpoint (not an .npz archive)")
            f.seek(0)
        except OSError as e:
            raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror}") from None
        try:
            with npz.Archive(f, CheckpointError, MAX_MEMBERS) as archive:
                small = {name: archive.read(name) for name in _checked_small(archive.headers)}
                cfg, vocab = _config_and_vocab(small)
                npz.check_all(archive.headers, layout(cfg, len(vocab), archive.headers), CheckpointError)
                return {name: small[name] if name in small else archive.read(name) for name in archive.headers}
        except CheckpointError as e:
            raise CheckpointError(f"{path}: {e}") from None


def _scalar_str(arrays, key) -> str:
    if key not in arrays:
        raise CheckpointError(f"missing key {key!r}")
    return str(arrays[key])   # (a 0-d string array: checked against SMALL)


def _json(arrays, key) -> dict:
    try:
        value = json.loads(_scalar_str(arrays, key))
    except (ValueError, RecursionError):  # JSONDecodeError, or nesting too deep to parse
        raise CheckpointError(f"key {key!r} is not valid JSON") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"key {key!r} must hold a JSON object")
    return value


def _checked_json(arrays, key, spec) -> dict:
    """The JSON object under `key`, checked against its schema `spec`."""
    value = _json(arrays, key)
    try:
        schema.check(value, spec, key)
    except schema.SchemaError as e:
        raise CheckpointError(f"damaged checkpoint: {e}") from None
    group = schema.TOGETHER[key]
    if len({value[k] is None for k in group}) > 1:
        raise CheckpointError(f"damaged checkpoint: {key}.{', '.join(group)} must all be null or all be set")
    return value


def _checked_small(headers: dict[str, npz.Header]) -> list[str]:
    """The members of SMALL that are present, each checked against its spec (and so its cap)."""
    for name, spec in SMALL.items():
        if name in headers:
            npz.check(name, headers[name], spec, CheckpointError)
    return [name for name in SMALL if name in headers]


def _config_and_vocab(arrays) -> tuple[Config, Vocab]:
    """The format, version, config and vocabulary: what the other members' names and shapes follow from."""
    if _scalar_str(arrays, "format") != FORMAT:
        raise CheckpointError(f"not a charlm checkpoint (format {str(arrays['format'])[:40]!r})")
    if (version := int(arrays["version"]) if "version" in arrays else None) != VERSION:
        raise CheckpointError("missing key 'version'" if version is None else f"checkpoint format version {version} "
                              f"is not supported (this charlm reads version {VERSION})")
    try:
        cfg = Config.from_dict(_json(arrays, "config"), source="checkpoint config")
    except CharlmError as e:
        raise CheckpointError(f"invalid config: {e}") from None
    for name, unset in RESOLVED.items():
        if getattr(cfg, name) == unset:
            raise CheckpointError(f"invalid config: {name} must hold the value training used, not {schema.shown(unset)}")
    tokens, counts = arrays.get("vocab"), arrays.get("vocab.counts")
    if tokens is None:
        raise CheckpointError("missing key 'vocab' (a 1-d string array)")
    if counts is None or counts.shape != tokens.shape:
        raise CheckpointError("missing or malformed key 'vocab.counts'")
    # numpy string arrays drop trailing NULs, so the token U+0000 reads back as "": restore it
    # (every token after the two specials is exactly one character)
    chars = tuple(str(t) if i < 2 or str(t) else "\x00" for i, t in enumerate(tokens))
    try:
        return cfg, Vocab(chars, tuple(int(c) for c in counts))
    except CharlmError as e:
        raise CheckpointError(f"invalid vocabulary: {e}") from None


def layout(cfg: Config, vocab_size: int, names) -> dict[str, npz.Spec]:
    """What each member of a checkpoint with this config and vocabulary must be, in the order checked.

    The parameters are `model.param_shapes`; the optimizer's slots, the
    weight average, the best weights and the carried state follow from
    them, so a parameter the model gains is expected in every group with
    no change here.  An optional group is expected when `names` (the
    members present) has one of its members: train_state, optim.*,
    carry.*, best.*, the n-gram tables of orders 1, 2, ... (at most the
    config's order), the mixture weights.
    """
    names = set(names)
    if 3 * cfg.num_layers > len(names):  # cannot all be there; and never loop over a huge layer count
        raise CheckpointError(f"the config has {cfg.num_layers} layers, but the file has too few arrays for them")
    V = vocab_size
    shapes = param_shapes(arch_of(cfg, V))

    def weights(prefix: str = "") -> dict[str, npz.Spec]:
        return {prefix + name: npz.Spec(cfg.dtype, shape) for name, shape in shapes.items()}

    def has(prefix: str) -> bool:
        return any(n.startswith(prefix) and n not in MIX_KEYS.values() for n in names)

    specs = {**SMALL, "vocab": npz.Spec("str", (V,), TOKEN_BYTES), "vocab.counts": npz.Spec("int", (V,))}
    if "train_state" not in names:
        del specs["train_state"]
    specs.update(weights())
    if has("optim."):
        specs["optim.step"] = npz.Spec("int", ())
        for slot in SLOTS[cfg.optimizer] + ((AVERAGE,) if has(f"optim.{AVERAGE}.") else ()):
            specs.update(weights(f"optim.{slot}."))
    if has("carry."):
        specs.update({f"carry.{l}.{k}": npz.Spec(cfg.dtype, (cfg.batch_size, cfg.hidden_size))
                      for l in range(cfg.num_layers) for k in range(NUM_STATES[cfg.cell])})
    if has("best."):
        specs.update(weights("best."))
    extra = combine.layout(names, V, cfg.ngram) if cfg.bidirectional else {}   # its backward n-gram and weights
    specs.update({k: npz.Spec(*v) for k, v in {**ngrams.layout(names, V, cfg.ngram), **extra}.items()})
    specs.update({key: npz.Spec("float", ()) for key in MIX_KEYS.values() if key in names and not cfg.bidirectional})
    return specs


def from_arrays(arrays: dict[str, np.ndarray]) -> Checkpoint:
    """Validate the arrays of a checkpoint and build it; CheckpointError if anything is off.

    Names, dtypes and shapes are checked as a file's headers are (`read_arrays`), then the values.
    """
    headers = {name: npz.header_of(a) for name, a in arrays.items()}
    _checked_small(headers)
    cfg, vocab = _config_and_vocab(arrays)
    specs = layout(cfg, len(vocab), arrays)
    npz.check_all(headers, specs, CheckpointError)
    arch = arch_of(cfg, len(vocab))
    params = {name: _finite(arrays, name) for name in param_shapes(arch)}
    ckpt = Checkpoint(cfg, vocab, params, meta=_checked_json(arrays, "meta", schema.META))
    if "train_state" in arrays:
        ckpt.train_state = _checked_json(arrays, "train_state", schema.TRAIN_STATE)
        if ckpt.train_state["offset"] >= cfg.seq_len:
            raise CheckpointError(f"damaged checkpoint: train_state.offset must be less than seq_len ({cfg.seq_len})")
    if "optim.step" in arrays:
        if int(arrays["optim.step"]) < 0:
            raise CheckpointError("malformed key 'optim.step' (a negative step count)")
        ckpt.optim_state = {"step": int(arrays["optim.step"])}
        ckpt.optim_state.update({k.removeprefix("optim."): _finite(arrays, k) for k in specs
                                 if k.startswith("optim.") and k != "optim.step"})
    if "carry.0.0" in arrays:
        ckpt.carry = [tuple(_finite(arrays, f"carry.{l}.{k}") for k in range(NUM_STATES[cfg.cell]))
                      for l in range(cfg.num_layers)]
    ckpt.ngram = ngrams.from_arrays(arrays, len(vocab), arch.reset_at_eos)
    if cfg.bidirectional:
        ckpt.backward_ngram, ckpt.two_sided_ngram, ckpt.combine_weights = combine.from_arrays(arrays, len(vocab),
                                                                                               arch.reset_at_eos)
    for which, key in MIX_KEYS.items():
        if key in arrays:
            if not 0.0 <= float(arrays[key]) <= 1.0:
                raise CheckpointError(f"{key!r} must be a number from 0 to 1")
            ckpt.mix_weights[which] = float(arrays[key])
    best = {k.removeprefix("best."): _finite(arrays, k) for k in specs if k.startswith("best.") and k not in MIX_KEYS.values()}
    ckpt.best_params = best or None
    if (ckpt.train_state is None) != (ckpt.optim_state is None):
        raise CheckpointError("incomplete resume state (train_state and optim.* go together)")
    return ckpt


def _finite(arrays, name) -> np.ndarray:
    """The array under `name` (its dtype and shape already checked), if every value is finite."""
    a = arrays[name]
    flat = a.ravel(order="K")   # (a view: checked FINITE_BLOCK values at a time, no array of a's size made)
    if not all(np.isfinite(flat[i:i + FINITE_BLOCK]).all() for i in range(0, flat.size, FINITE_BLOCK)):
        raise CheckpointError(f"{name!r} contains NaN or infinite values")
    return np.ascontiguousarray(a)


def load(path: str, hint: str = MISSING_HINT) -> Checkpoint:
    """Read and validate a checkpoint; every problem is a one-line CheckpointError (`hint`: after "not found")."""
    arrays = read_arrays(path, hint)
    try:
        return from_arrays(arrays)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
