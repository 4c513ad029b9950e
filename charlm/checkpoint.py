"""The checkpoint format (version 1): one `.npz`, saved atomically, loaded
without pickle and validated before use.

Keys (every value is a plain array, so `numpy.load(path, allow_pickle=False)`
reads the file):

    format                 0-d str   "charlm-checkpoint"
    version                0-d int   1
    config                 0-d str   JSON of the Config (cell, hidden_size, ...)
    vocab                  1-d str   tokens in id order ("<EOS>", "<UNK>", ...)
    vocab.counts           1-d int64 token counts when the vocabulary was built
    meta                   0-d str   JSON: corpus, steps, time, characters seen, validation (META)
    layers.{l}.weight_ih, layers.{l}.weight_hh, layers.{l}.bias, head.weight, head.bias
    -- only in resumable checkpoints --
    train_state            0-d str   JSON: step, data position, clock, RNG state, history (TRAIN_STATE)
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
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from dataclasses import dataclass, field

import numpy as np

from charlm.files import atomic_write, open_user_file
from charlm.cells import NUM_STATES
from charlm.config import Config
from charlm.errors import CharlmError, CheckpointError
from charlm import ngram as ngrams
from charlm.mixture import Mixture
from charlm.model import Arch, param_shapes
from charlm.ngram import NGram
from charlm.optim import AVERAGE, SLOTS, averaged
from charlm.vocab import Vocab

FORMAT = "charlm-checkpoint"
VERSION = 1
DEFAULT_PATH = "charlm.npz"
ENV_VAR = "CHARLM_CHECKPOINT"
MIX_KEYS = {"last": "mix.weight", "best": "best.mix.weight"}  # the network's share for each set of weights

# The JSON of `meta` and `train_state`, as charlm.train writes it (make_checkpoint, RunState.to_json).
# A dict lists the keys an object must have (and no others), [x] is a list of x, and a string
# names a kind of value (_KINDS), with " or null" if it may be null and ", optional" if it may be left out
# ((schema, "optional"): an object or list that may be left out).
META = {
    "corpus": {"name": "str", "num_chars": "count", "num_lines": "count", "num_tokens": "count",
               "fingerprint": "str", "line_items": "bool",
               "num_files": "count, optional"},     # a corpus of many files (charlm.sources)
    "steps": "count", "train_seconds": "seconds", "chars_seen": "count", "skipped_steps": "count",
    "best_val_bpc": "number or null", "best_step": "count or null", "last_val_bpc": "number or null",
    "last_train_bpc": "number or null",
    "ngram_val_bpc": "number, optional",            # only with an n-gram and validation
    "workers": "count, optional",                  # processes that shared each step (charlm.parallel); older files lack it
    "init_from": ({"path": "str", "corpus": "str or null", "steps": "count", "vocab_size": "count",
                   "added_chars": "count"}, "optional"),   # a fine-tuned run's base (charlm.finetune)
}
TRAIN_STATE = {
    "step": "count", "epoch": "count", "chunk": "count", "offset": "count", "train_seconds": "seconds",
    "chars_seen": "count", "skipped_steps": "count", "bad_streak": "count",
    "best_val": "number or null", "best_step": "count or null", "last_loss": "number or null",
    "last_val": "number or null",
    "rng": {"bit_generator": "PCG64", "state": {"state": "uint128", "inc": "uint128"},
            "has_uint32": "bit", "uinteger": "uint32"},
    "history": [{"step": "count", "seconds": "seconds", "chars": "count", "train_bpc": "number or null",
                 "val_bpc": "number", "net_val_bpc": "number", "mix_weight": "share or null"}],
}
# keys that validation sets together: all null (no validation yet) or none
TOGETHER = {"meta": ("best_val_bpc", "best_step", "last_val_bpc"), "train_state": ("best_val", "best_step", "last_val")}
_KINDS = {  # kind: (JSON type, test of the value, what the value must be)
    "count": (int, lambda v: v >= 0, "a non-negative integer"),
    "bit": (int, lambda v: v in (0, 1), "0 or 1"),
    "uint32": (int, lambda v: 0 <= v < 2 ** 32, "an integer from 0 to 2**32 - 1"),
    "uint128": (int, lambda v: 0 <= v < 2 ** 128, "an integer from 0 to 2**128 - 1"),
    "number": (float, math.isfinite, "a finite number"),
    "seconds": (float, lambda v: 0 <= v < math.inf, "a non-negative finite number"),
    "share": (float, lambda v: 0 <= v <= 1, "a number from 0 to 1"),
    "str": (str, None, "a string"),
    "bool": (bool, None, "true or false"),
    "PCG64": (str, lambda v: v == "PCG64", '"PCG64"'),
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
    ngram: NGram | None = None               # the n-gram the network is interpolated with
    mix_weights: dict = field(default_factory=dict)  # "last"/"best": the network's share λ

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

    def mixture(self, which: str = "best") -> Mixture | None:
        """The interpolation with the n-gram that goes with `weights(which)` (None: the network alone)."""
        weight = self.mix_weights.get(which)
        if self.ngram is None or weight is None:
            return None
        return Mixture(self.ngram, weight)

    @property
    def resumable(self) -> bool:
        return self.train_state is not None and self.optim_state is not None


def arch_of(cfg: Config, vocab_size: int) -> Arch:
    return Arch(cfg.cell, vocab_size, cfg.hidden_size, cfg.num_layers, cfg.activation,
                reset_at_eos=cfg.line_state == "reset")


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


def read_arrays(path: str) -> dict[str, np.ndarray]:
    """Every array of an .npz file, read with allow_pickle=False."""
    with open_user_file(path, "checkpoint", CheckpointError,
                        hint=" (train one with `charlm train CORPUS`, or pass -c PATH)") as f:
        try:
            data = f.read()
        except OSError as e:
            raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror}") from None
    if not data.startswith((b"PK\x03\x04", b"PK\x05\x06")):  # a zip archive (an .npz), or an empty one
        raise CheckpointError(f"{path} is not a charlm checkpoint (not an .npz archive)")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {}
            for name in z.files:
                value = z[name]
                if not isinstance(value, np.ndarray):  # numpy hands back a non-.npy member as raw bytes
                    raise CheckpointError(f"{path} is not a charlm checkpoint (member {name[:60]!r} is not an array)")
                arrays[name] = value
            return arrays
    except CheckpointError:
        raise
    except ValueError as e:
        if "pickle" in str(e).lower() or "object arrays" in str(e).lower():
            raise CheckpointError(f"{path} holds a pickled object array; refusing to load it (pickles can run code)") from None
        raise CheckpointError(f"{path} is damaged: {_short(e)}") from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, MemoryError, TypeError, RuntimeError,
            OverflowError, UnicodeDecodeError, NotImplementedError) as e:
        raise CheckpointError(f"{path} is damaged or truncated: {_short(e)}") from None
    except Exception as e:  # zlib.error and other decoder errors of a damaged archive
        raise CheckpointError(f"{path} is damaged: {_short(e)}") from None


def _short(e: Exception) -> str:
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    return msg[:160]


def _scalar_str(arrays, key) -> str:
    a = arrays.get(key)
    if a is None:
        raise CheckpointError(f"missing key {key!r}")
    if a.shape != () or a.dtype.kind != "U":
        raise CheckpointError(f"key {key!r} must be a 0-d string array")
    return str(a)


def _json(arrays, key) -> dict:
    try:
        value = json.loads(_scalar_str(arrays, key))
    except (ValueError, RecursionError):  # JSONDecodeError, or nesting too deep to parse
        raise CheckpointError(f"key {key!r} is not valid JSON") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"key {key!r} must hold a JSON object")
    return value


def _checked_json(arrays, key, schema) -> dict:
    """The JSON object under `key`, checked against `schema`."""
    value = _json(arrays, key)
    _check(value, schema, key)
    group = TOGETHER[key]
    if len({value[k] is None for k in group}) > 1:
        raise CheckpointError(f"damaged checkpoint: {key}.{', '.join(group)} must all be null or all be set")
    return value


def _check(value, schema, where: str) -> None:
    """CheckpointError naming the field unless `value` fits `schema` (a dict, [item schema] or a kind)."""
    if isinstance(schema, dict):
        if type(value) is not dict:
            raise CheckpointError(f"damaged checkpoint: {where} must be a JSON object, not {_shown(value)}")
        for key, spec in schema.items():
            optional = isinstance(spec, tuple) or isinstance(spec, str) and spec.endswith(", optional")
            if isinstance(spec, tuple):
                spec = spec[0]
            if key in value:
                _check(value[key], spec.removesuffix(", optional") if isinstance(spec, str) else spec, f"{where}.{key}")
            elif not optional:
                raise CheckpointError(f"damaged checkpoint: {where} has no {key!r}")
        extra = sorted(set(value) - set(schema))
        if extra:
            raise CheckpointError(f"damaged checkpoint: {where} has an unexpected key {extra[0][:40]!r}")
    elif isinstance(schema, list):
        if type(value) is not list:
            raise CheckpointError(f"damaged checkpoint: {where} must be a list, not {_shown(value)}")
        for i, item in enumerate(value):
            _check(item, schema[0], f"{where}[{i}]")
    else:
        kind = schema.removesuffix(" or null")
        if value is None and kind != schema:
            return
        json_type, fits, what = _KINDS[kind]
        if type(value) is not json_type or (fits is not None and not fits(value)):
            raise CheckpointError(f"damaged checkpoint: {where} must be {what}{schema[len(kind):]}, not {_shown(value)}")


def _shown(value) -> str:
    """A JSON value in a message: scalars as JSON (cut short), lists and objects by kind."""
    if isinstance(value, (list, dict)):
        return "a list" if isinstance(value, list) else "an object"
    return json.dumps(value)[:40]


def from_arrays(arrays: dict[str, np.ndarray]) -> Checkpoint:
    """Validate the arrays of a checkpoint and build it; CheckpointError if anything is off."""
    if _scalar_str(arrays, "format") != FORMAT:
        raise CheckpointError(f"not a charlm checkpoint (format {str(arrays['format'])[:40]!r})")
    version = arrays.get("version")
    if version is None or version.shape != () or version.dtype.kind not in "iu":
        raise CheckpointError("missing or malformed key 'version'")
    if int(version) != VERSION:
        raise CheckpointError(f"checkpoint format version {int(version)} is not supported (this charlm reads version {VERSION})")
    try:
        cfg = Config.from_dict(_json(arrays, "config"), source="checkpoint config")
    except CharlmError as e:
        raise CheckpointError(f"invalid config: {e}") from None
    for name, unset in RESOLVED.items():
        if getattr(cfg, name) == unset:
            raise CheckpointError(f"invalid config: {name} must hold the value training used, not {_shown(unset)}")
    tokens = arrays.get("vocab")
    if tokens is None or tokens.ndim != 1 or tokens.dtype.kind != "U":
        raise CheckpointError("missing or malformed key 'vocab' (a 1-d string array)")
    counts = arrays.get("vocab.counts")
    if counts is None or counts.shape != tokens.shape or counts.dtype.kind not in "iu":
        raise CheckpointError("missing or malformed key 'vocab.counts'")
    # numpy string arrays drop trailing NULs, so the token U+0000 reads back as "": restore it
    # (every token after the two specials is exactly one character)
    chars = tuple(str(t) if i < 2 or str(t) else "\x00" for i, t in enumerate(tokens))
    try:
        vocab = Vocab(chars, tuple(int(c) for c in counts))
    except CharlmError as e:
        raise CheckpointError(f"invalid vocabulary: {e}") from None
    if 3 * cfg.num_layers > len(arrays):  # cannot all be there; and never loop over a huge layer count
        raise CheckpointError(f"the config has {cfg.num_layers} layers, but the file has too few arrays for them")
    arch = arch_of(cfg, len(vocab))
    shapes = param_shapes(arch)
    dtype = np.dtype(cfg.dtype)
    params = {name: _weights(arrays, name, shape, dtype) for name, shape in shapes.items()}
    known = set(shapes) | {"format", "version", "config", "vocab", "vocab.counts", "meta"}
    ckpt = Checkpoint(cfg, vocab, params, meta=_checked_json(arrays, "meta", META))

    if "train_state" in arrays:
        ckpt.train_state = _checked_json(arrays, "train_state", TRAIN_STATE)
        if ckpt.train_state["offset"] >= cfg.seq_len:
            raise CheckpointError(f"damaged checkpoint: train_state.offset must be less than seq_len ({cfg.seq_len})")
        known.add("train_state")
    optim_keys = [k for k in arrays if k.startswith("optim.")]
    if optim_keys:
        step = arrays.get("optim.step")
        if step is None or step.shape != () or step.dtype.kind not in "iu" or int(step) < 0:
            raise CheckpointError("missing or malformed key 'optim.step'")
        slots = SLOTS[cfg.optimizer]
        if any(k.startswith(f"optim.{AVERAGE}.") for k in arrays):
            slots += (AVERAGE,)
        state = {"step": int(step)}
        for slot in slots:
            for name, shape in shapes.items():
                state[f"{slot}.{name}"] = _weights(arrays, f"optim.{slot}.{name}", shape, dtype)
        ckpt.optim_state = state
        known.update(f"optim.{k}" for k in state)
    carry_keys = [k for k in arrays if k.startswith("carry.")]
    if carry_keys:
        n = NUM_STATES[cfg.cell]
        first = arrays.get("carry.0.0")
        if first is None or first.ndim != 2:
            raise CheckpointError("missing or malformed key 'carry.0.0'")
        shape = (first.shape[0], cfg.hidden_size)
        ckpt.carry = [tuple(_weights(arrays, f"carry.{l}.{k}", shape, dtype) for k in range(n))
                      for l in range(cfg.num_layers)]
        known.update(f"carry.{l}.{k}" for l in range(cfg.num_layers) for k in range(n))
    ckpt.ngram = ngrams.from_arrays(arrays, len(vocab), arch.reset_at_eos)
    if ckpt.ngram is not None:
        known.update(f"ngram.{k}.{part}" for k in range(1, ckpt.ngram.order + 1) for part in ("keys", "counts"))
    for which, key in MIX_KEYS.items():
        if key in arrays:
            w = arrays[key]
            if w.shape != () or w.dtype.kind != "f" or not 0.0 <= float(w) <= 1.0:
                raise CheckpointError(f"{key!r} must be a number from 0 to 1")
            ckpt.mix_weights[which] = float(w)
            known.add(key)
    if any(k.startswith("best.") and k not in known for k in arrays):
        ckpt.best_params = {name: _weights(arrays, f"best.{name}", shape, dtype) for name, shape in shapes.items()}
        known.update(f"best.{name}" for name in shapes)
    unknown = sorted(set(arrays) - known)
    if unknown:
        raise CheckpointError(f"unexpected key {unknown[0]!r}")
    if (ckpt.train_state is None) != (ckpt.optim_state is None):
        raise CheckpointError("incomplete resume state (train_state and optim.* go together)")
    return ckpt


def _weights(arrays, name, shape, dtype) -> np.ndarray:
    a = arrays.get(name)
    if a is None:
        raise CheckpointError(f"missing key {name!r}")
    if a.dtype != dtype:
        raise CheckpointError(f"{name!r} has dtype {a.dtype}, expected {dtype}")
    if a.shape != tuple(shape):
        raise CheckpointError(f"{name!r} has shape {a.shape}, expected {tuple(shape)}")
    if not np.all(np.isfinite(a)):
        raise CheckpointError(f"{name!r} contains NaN or infinite values")
    return np.ascontiguousarray(a)


def load(path: str) -> Checkpoint:
    """Read and validate a checkpoint; every problem is a one-line CheckpointError."""
    arrays = read_arrays(path)
    try:
        return from_arrays(arrays)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
