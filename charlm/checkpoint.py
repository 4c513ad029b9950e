"""The checkpoint format (version 1): one `.npz`, saved atomically, loaded
without pickle and validated before use.

The members and what each must be: `charlm.checkpoint_layout`.

Loading reads every member's name, dtype and shape first (`read_arrays`,
charlm.npz) and checks them against what the config and vocabulary imply
(`charlm.checkpoint_layout`) before reading any array;
then the values (`from_arrays`).
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass, field

import numpy as np

from charlm import combine, npz, schema
from charlm import ngram as ngrams
from charlm.cells import NUM_STATES
from charlm.checkpoint_layout import FORMAT, MIX_KEYS, VERSION, arch_of, checked_json, checked_small, member_specs
from charlm.combine import Combination
from charlm.config import Config
from charlm.errors import CharlmError, CheckpointError
from charlm.files import atomic_write, open_user_file
from charlm.mixture import Mixture
from charlm.model import Arch, param_shapes
from charlm.ngram import NGram
from charlm.optim import averaged
from charlm.vocab import Vocab

DEFAULT_PATH = "charlm.npz"
ENV_VAR = "CHARLM_CHECKPOINT"
MAX_MEMBERS = 4096      # members of an archive at most (a checkpoint of 200 layers has 3,444)
FINITE_BLOCK = 1 << 20  # values checked for NaN and infinities at once
MISSING_HINT = " (train one with `charlm train CORPUS`, or pass -c PATH)"   # after "checkpoint ... not found"


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
    """The arrays of a checkpoint file, header-first: nothing is read that the checkpoint does not need."""
    return _read(path, hint)[0]


def _read(path: str, hint: str) -> tuple[dict[str, np.ndarray], tuple]:
    """The arrays of a checkpoint file, and what `member_specs` found in their headers.

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
                small = {name: archive.read(name) for name in checked_small(archive.headers)}
                checked = member_specs(archive.headers, small)
                return {name: small[name] if name in small else archive.read(name) for name in archive.headers}, checked
        except CheckpointError as e:
            raise CheckpointError(f"{path}: {e}") from None


def from_arrays(arrays: dict[str, np.ndarray], checked: tuple | None = None) -> Checkpoint:
    """Validate the arrays of a checkpoint and build it; CheckpointError if anything is off.

    Names, dtypes and shapes are checked as a file's headers are (`read_arrays`; `checked`: what
    that found, for arrays it read), then the values.
    """
    if checked is None:
        headers = {name: npz.header_of(a) for name, a in arrays.items()}
        checked_small(headers)
        checked = member_specs(headers, arrays)
    cfg, vocab, specs = checked
    arch = arch_of(cfg, len(vocab))
    params = {name: _finite(arrays, name) for name in param_shapes(arch)}
    ckpt = Checkpoint(cfg, vocab, params, meta=checked_json(arrays, "meta", schema.META))
    if "train_state" in arrays:
        ckpt.train_state = checked_json(arrays, "train_state", schema.TRAIN_STATE)
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
    arrays, checked = _read(path, hint)
    try:
        return from_arrays(arrays, checked)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
