"""What each member of a checkpoint (`charlm.checkpoint`, format version 1) must be.

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

The small members (`SMALL`) are checked and read first: the format, and
the config and vocabulary that every other member's name, dtype and shape
follow from (`layout`); then every member's header is checked against
its spec (`member_specs`), before any large array is read.
"""

from __future__ import annotations

import json

from charlm import combine, npz, schema
from charlm import ngram as ngrams
from charlm.cells import NUM_STATES
from charlm.config import Config
from charlm.errors import CharlmError, CheckpointError
from charlm.model import Arch, param_shapes
from charlm.optim import AVERAGE, SLOTS
from charlm.vocab import EOS, Vocab

FORMAT = "charlm-checkpoint"
VERSION = 1
MIX_KEYS = {"last": "mix.weight", "best": "best.mix.weight"}  # the network's share for each set of weights
TOKEN_BYTES = 4 * len(EOS)   # the longest token, "<EOS>", in a NumPy string (4 bytes a character)
MAX_VOCAB = 0x110000 + 1     # every code point but the newline, and the two specials
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


def arch_of(cfg: Config, vocab_size: int) -> Arch:
    return Arch(cfg.cell, vocab_size, cfg.hidden_size, cfg.num_layers, cfg.activation,
                reset_at_eos=cfg.line_state == "reset",
                bidirectional=cfg.bidirectional)   # (issue 24) config.bidirectional: absent in older files = False


def member_specs(headers: dict[str, npz.Header], small) -> tuple[Config, Vocab, dict[str, npz.Spec]]:
    """The config and vocabulary in `small` (the SMALL members, their headers already checked), and
    every member's spec (`layout`), each member's header checked against it."""
    cfg, vocab = _config_and_vocab(small)
    specs = layout(cfg, len(vocab), headers)
    npz.check_all(headers, specs, CheckpointError)
    return cfg, vocab, specs


def _scalar_str(arrays, key) -> str:
    if key not in arrays:
        raise CheckpointError(f"missing key {key!r}")
    return str(arrays[key])   # (a 0-d string array: checked against SMALL)


def _json_object(arrays, key) -> dict:
    try:
        value = json.loads(_scalar_str(arrays, key))
    except (ValueError, RecursionError):  # JSONDecodeError, or nesting too deep to parse
        raise CheckpointError(f"key {key!r} is not valid JSON") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"key {key!r} must hold a JSON object")
    return value


def checked_json(arrays, key, spec) -> dict:
    """The JSON object under `key`, checked against its schema `spec`."""
    value = _json_object(arrays, key)
    try:
        schema.check(value, spec, key)
    except schema.SchemaError as e:
        raise CheckpointError(f"damaged checkpoint: {e}") from None
    group = schema.TOGETHER[key]
    if len({value[k] is None for k in group}) > 1:
        raise CheckpointError(f"damaged checkpoint: {key}.{', '.join(group)} must all be null or all be set")
    return value


def checked_small(headers: dict[str, npz.Header]) -> list[str]:
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
        cfg = Config.from_dict(_json_object(arrays, "config"), source="checkpoint config")
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
