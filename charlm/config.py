"""One typed training configuration: defaults, YAML loading, validation.

The configuration is stored (as JSON) in every checkpoint and is enough to
rebuild the model.  Precedence: defaults < YAML file (`--config`) < flags.
YAML is read with `yaml.safe_load`; unknown keys and wrong types are errors
that name the key.  Keys may be written `hidden_size` or `hidden-size`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields

from charlm.cells import ACTIVATIONS, CELLS
from charlm.errors import ConfigError

OPTIMIZERS = ("adam", "sgd", "adagrad")
SCHEDULES = ("cosine", "constant")
LINE_STATES = ("auto", "reset", "carry")
DTYPES = ("float32", "float64")
MAX_NGRAM = 12
DEFAULT_MAX_TIME = 180.0  # seconds, used when no --steps/--epochs/--max-time is given


@dataclass
class Config:
    # model
    cell: str = "gru"               # rnn | gru | lstm (gru: best measured at 120 s and 600 s, see docs/experiments.md)
    hidden_size: int = 256          # H, units per layer
    num_layers: int = 2             # stacked layers
    activation: str = "tanh"        # rnn only: tanh | relu
    dropout: float | None = None    # between layers and before the head (training only); None = auto (see auto_dropout)
    char_dropout: float | None = None  # input characters replaced by <UNK> (training only); None = auto (see auto_char_dropout)
    dtype: str = "float32"          # float32 | float64
    line_state: str = "auto"        # reset: each line its own sequence | carry: state flows across lines | auto
    ngram: int = 7                  # order of the Kneser–Ney n-gram interpolated with the network (0 = the network alone)
    bidirectional: bool = False     # a forward and a backward stack, for `charlm check` (charlm.bidirectional, charlm.combine)
    # data
    seq_len: int = 64               # T, steps of truncated BPTT
    batch_size: int = 32            # B, parallel streams through the corpus
    val_fraction: float = 0.1       # share of the corpus held out, as stretches spread through it (data.split)
    min_count: int = 1              # rarer characters become <UNK> (vocab built from the corpus)
    max_size: int | None = None     # most frequent characters kept, specials included
    encoding: str = "utf-8"
    errors: str = "strict"          # strict | replace | ignore | surrogateescape
    # optimisation
    optimizer: str = "adam"         # adam | sgd | adagrad
    lr: float = 4e-3                # peak learning rate
    momentum: float = 0.9           # sgd only
    weight_decay: float = 0.0       # decoupled (AdamW-style), on weight matrices only
    schedule: str = "cosine"        # cosine (decay to min_lr_ratio·lr at the end) | constant
    warmup_steps: int = 20          # linear warm-up
    min_lr_ratio: float = 0.1       # cosine floor, as a fraction of lr
    clip: float = 5.0               # global gradient-norm clip (0 = off)
    clip_value: float = 0.0         # element-wise gradient clip (0 = off)
    ema: float = 0.999              # decay of the weight average that validation, sample and score use (0 = off)
    # budget
    steps: int | None = None        # total optimizer steps
    epochs: float | None = None     # passes over the training split
    max_time: float | None = None   # seconds of training
    # bookkeeping
    eval_every: int | None = None   # validate every N steps (0 = only at the end); None = auto (see auto_eval_every)
    save_every: int = 500           # checkpoint every N steps (0 = only at the end)
    seed: int = 0
    max_bad_steps: int = 10         # consecutive non-finite steps before giving up
    workers: int | None = None      # processes that share each step's batch (1 = this one alone); None = auto (charlm.workers.train)

    def validate(self) -> "Config":
        """Check every value; raise ConfigError naming the option."""
        def need(cond, option, msg):
            if not cond:
                raise ConfigError(f"--{option.replace('_', '-')} {msg}")

        for name in ("dropout", "char_dropout", "workers"):
            if getattr(self, name) == "auto":
                setattr(self, name, None)

        for f in fields(self):
            v = getattr(self, f.name)
            if v is None:
                if not _optional(f):
                    raise ConfigError(f"--{f.name.replace('_', '-')} has no value (a YAML key needs one, e.g. "
                                      f"{f.name}: {f.default})")
                continue
            kind = _kind(f)
            if kind is bool and not isinstance(v, bool):
                raise ConfigError(f"--{f.name.replace('_', '-')} must be true or false, not {v!r}")
            if kind is float and isinstance(v, str):
                v = _number(v, f.name)
            if kind is int and (isinstance(v, bool) or not isinstance(v, int)):
                raise ConfigError(f"--{f.name.replace('_', '-')} must be an integer, not {v!r}")
            if kind is float:
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise ConfigError(f"--{f.name.replace('_', '-')} must be a number, not {v!r}")
                if not math.isfinite(v):
                    raise ConfigError(f"--{f.name.replace('_', '-')} must be finite, not {v!r}")
                setattr(self, f.name, float(v))
            if kind is str and not isinstance(v, str):
                raise ConfigError(f"--{f.name.replace('_', '-')} must be a string, not {v!r}")
        need(self.cell in CELLS, "cell", f"must be one of {', '.join(CELLS)}, not {self.cell!r}")
        need(self.activation in ACTIVATIONS, "activation", f"must be one of {', '.join(ACTIVATIONS)}")
        need(self.activation == "tanh" or self.cell == "rnn", "activation",
             f"applies to --cell rnn only (the {self.cell.upper()}'s gates use σ and tanh)")
        need(self.optimizer in OPTIMIZERS, "optimizer", f"must be one of {', '.join(OPTIMIZERS)}")
        need(self.schedule in SCHEDULES, "schedule", f"must be one of {', '.join(SCHEDULES)}")
        need(self.dtype in DTYPES, "dtype", f"must be one of {', '.join(DTYPES)}")
        need(self.line_state in LINE_STATES, "line_state", f"must be one of {', '.join(LINE_STATES)}")
        for name in ("hidden_size", "num_layers", "seq_len", "batch_size", "min_count"):
            need(getattr(self, name) >= 1, name, "must be at least 1")
        need(0 <= self.ngram <= MAX_NGRAM, "ngram", f"must be from 0 (off) to {MAX_NGRAM}")
        need(self.max_size is None or self.max_size >= 3, "max_size", "must be at least 3 (<EOS>, <UNK> and a character)")
        need(self.dropout is None or 0.0 <= self.dropout < 1.0, "dropout", "must be in [0, 1) or auto")
        need(self.char_dropout is None or 0.0 <= self.char_dropout < 1.0, "char_dropout", "must be in [0, 1) or auto")
        need(0.0 <= self.val_fraction < 1.0, "val_fraction", "must be in [0, 1)")
        need(self.lr > 0, "lr", "must be positive")
        need(0.0 <= self.momentum < 1.0, "momentum", "must be in [0, 1)")
        need(self.weight_decay >= 0, "weight_decay", "must be non-negative")
        need(self.warmup_steps >= 0, "warmup_steps", "must be non-negative")
        need(0.0 <= self.min_lr_ratio <= 1.0, "min_lr_ratio", "must be in [0, 1]")
        need(self.clip >= 0, "clip", "must be non-negative (0 turns clipping off)")
        need(self.clip_value >= 0, "clip_value", "must be non-negative (0 turns it off)")
        need(0.0 <= self.ema < 1.0, "ema", "must be in [0, 1) (0 turns the weight average off)")
        need(self.steps is None or self.steps >= 1, "steps", "must be at least 1")
        need(self.epochs is None or self.epochs > 0, "epochs", "must be positive")
        need(self.max_time is None or self.max_time > 0, "max_time", "must be positive")
        need(self.eval_every is None or self.eval_every >= 0, "eval_every", "must be non-negative")
        need(self.save_every >= 0, "save_every", "must be non-negative")
        need(self.max_bad_steps >= 1, "max_bad_steps", "must be at least 1")
        need(self.workers is None or self.workers >= 1, "workers", "must be at least 1 (1: no worker processes) or auto")
        need(self.seed >= 0, "seed", "must be non-negative")
        return self

    @property
    def budget_given(self) -> bool:
        return any(v is not None for v in (self.steps, self.epochs, self.max_time))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> "Config":
        return cls().update(data, source).validate()

    def update(self, data: dict, source: str = "config") -> "Config":
        """Set the given keys (hyphens allowed); unknown keys are an error."""
        names = {f.name for f in fields(self)}
        seen: dict[str, object] = {}
        for key, value in data.items():
            name = str(key).replace("-", "_")
            if name not in names:
                if name in COMMAND_LINE_ONLY:
                    raise ConfigError(f"{source}: {key!r} is a command-line option only")
                raise ConfigError(f"{source}: unknown option {key!r}")
            if name in seen:
                raise ConfigError(f"{source}: {name.replace('_', '-')} is given twice (as {seen[name]!r} and {key!r})")
            seen[name] = key
            setattr(self, name, value)
        return self


# Dropout chosen from the budget: how many times training will read the training split.
AUTO_DROPOUT = ((3.0, 0.0), (6.0, 0.1), (12.0, 0.2))  # (fewer passes than, dropout); more: AUTO_DROPOUT_MAX
AUTO_DROPOUT_MAX = 0.3


def auto_dropout(passes: float) -> float:
    """The dropout for a budget of `passes` over the training split.

    Within a few passes a model of the default size cannot memorise the
    text and dropout only slows learning; over many passes it overfits
    without it (measurements in docs/experiments.md).
    """
    for limit, p in AUTO_DROPOUT:
        if passes < limit:
            return p
    return AUTO_DROPOUT_MAX


AUTO_CHAR_DROPOUT = 0.1  # with the largest auto dropout, else none


def auto_char_dropout(dropout: float) -> float:
    """Character dropout for budgets that overfit most (dropout ≥ AUTO_DROPOUT_MAX), else 0.

    On tiny-shakespeare at 10 passes (dropout 0.2) even 0.067 slowed
    learning; on a word list at 27+ passes 0.1 helped (docs/experiments.md).
    """
    return AUTO_CHAR_DROPOUT if dropout >= AUTO_DROPOUT_MAX else 0.0


EVAL_EVERY = 200       # steps between validations, or once per pass over a small training split
MIN_EVAL_EVERY = 10


def auto_eval_every(steps_per_pass: int) -> int:
    """Validate every EVAL_EVERY steps, or every pass if a pass is shorter (a small corpus
    overfits within a few passes, and its validation costs almost nothing)."""
    return min(EVAL_EVERY, max(MIN_EVAL_EVERY, steps_per_pass))


# What each option does, as `charlm train --help` and docs/commands.md say it.  The default that
# follows each text is read from `Config` (or, for the automatic choices, from the rules above), so
# that it is written in one place.
HELP = {
    "cell": "rnn, gru or lstm.",
    "hidden_size": "Hidden units per layer.",
    "num_layers": "Stacked layers.",
    "activation": "rnn activation: tanh or relu.",
    "dropout": "Dropout between layers and before the head.",
    "char_dropout": "Replace each input character (not `<EOS>`) by `<UNK>` with this probability while training.",
    "dtype": "float32 or float64.",
    "line_state": "reset: each line is its own sequence (state restarts after `<EOS>`); carry: the state flows "
                  "across lines; auto: reset for a list of items (no blank lines), else carry.",
    "seq_len": "Time steps of truncated BPTT.",
    "batch_size": "Sequences per batch.",
    "lr": "Peak learning rate.",
    "optimizer": "adam, sgd (with momentum) or adagrad.",
    "momentum": "SGD momentum.",
    "weight_decay": "Decoupled weight decay on weight matrices.",
    "schedule": "cosine or constant learning rate.",
    "warmup_steps": "Linear learning-rate warm-up.",
    "min_lr_ratio": "Cosine floor as a fraction of --lr.",
    "clip": "Clip the global gradient norm to this (0 = off).",
    "clip_value": "Clip each gradient entry to ±this (0 = off).",
    "ngram": "Order of the Kneser-Ney character n-gram that is counted on the training split and interpolated "
             "with the network, its share fitted on validation (0 = the network alone).",
    "ema": "Decay of the exponential moving average of the weights that validation, sample and score use "
           "(0 = off: the weights themselves).",
    "steps": "Total optimizer steps.",
    "epochs": "Passes over the training split.",
    "max_time": f"Seconds of training (default {DEFAULT_MAX_TIME:g} when no --steps/--epochs).",
    "val_fraction": "Share of the corpus held out for validation, as ten stretches spread through it.",
    "eval_every": "Validate every N steps (0 = at the end only).",
    "save_every": "Save a checkpoint every N steps (0 = at the end only).",
    "seed": "Random seed: same seed, corpus and options, same model.",
    "min_count": "Characters rarer than this become `<UNK>`.",
    "max_size": "Keep at most this many tokens in the vocabulary.",
    "max_bad_steps": "Stop after this many non-finite steps in a row.",
    "encoding": "Text encoding of the corpus.",
    "errors": "On undecodable bytes: strict, replace, ignore, surrogateescape.",
    "workers": "Processes that share each step's batch, each on its rows (1: this process alone).",
    "bidirectional": "Train a bidirectional model (a forward and a backward stack; each position given both sides) "
                     "for `charlm check`. It cannot sample or score, and trains in this process alone on the NumPy "
                     "engine (--engine torch: on a GPU or under torchrun); with --ngram it is combined with a "
                     "forward, a backward and a two-sided n-gram, weights fitted on validation. Each line is a "
                     "sequence for a list of items, windows of --seq-len characters for prose.",
}

# The defaults that are rules rather than values (None in `Config`), as the help states them.
AUTO_DEFAULTS = {
    "dropout": f"auto: 0 for a budget of a few passes over the corpus, up to {AUTO_DROPOUT_MAX:g} for many",
    "char_dropout": f"auto: {AUTO_CHAR_DROPOUT:g} with a dropout of {AUTO_DROPOUT_MAX:g} or more, else 0",
    "eval_every": f"{EVAL_EVERY}, or every pass over a small corpus",
    "workers": "auto: 2 when there are two cores and rows enough per worker, else 1",
}


def option_help(name: str) -> str:
    """The help text of option `name`, with its default from `Config` (none for the budget and max_size)."""
    default = AUTO_DEFAULTS.get(name, getattr(Config, name))
    if default is None or isinstance(default, bool):   # (a flag is off unless given)
        return HELP[name]
    shown = f"{default:g}" if isinstance(default, float) else str(default)
    return f"{HELP[name]} [default: {shown}]"


COMMAND_LINE_ONLY = ("checkpoint", "resume", "config")   # `vocab` may be a YAML key: the train command reads it


def _optional(f) -> bool:
    """Whether the field may be None (auto, or not set)."""
    return "None" in str(f.type)


def _number(text: str, name: str) -> float:
    """A number written as a string: YAML reads `1e-3` (no dot) as text."""
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"--{name.replace('_', '-')} must be a number, not {text!r}") from None


def _kind(f) -> type:
    t = str(f.type)
    if t.startswith("bool"):
        return bool
    return int if t.startswith("int") else float if t.startswith("float") else str


MAX_YAML_BYTES = 1 << 20   # a config file of every option is about 1 KB; larger files are refused before parsing


def load_yaml(path: str) -> dict:
    """Read a YAML mapping of options with yaml.safe_load (a file of at most MAX_YAML_BYTES)."""
    import yaml

    from charlm.files import read_capped

    try:
        data = yaml.safe_load(read_capped(path, "config file", ConfigError, MAX_YAML_BYTES, "configuration"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "malformed YAML"
        raise ConfigError(f"{path}: {problem}{where}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of option: value")
    return data


def yaml_path(from_yaml: dict, key: str, source: str | None) -> str | None:
    """A file named in the YAML config (relative to the working directory, as on the command line)."""
    value = from_yaml.get(key)
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{source}: {key} must be a file name, not {value!r}")
    return value


def build_config(yaml_path: str | None, overrides: dict, from_yaml: dict | None = None,
                 base: Config | None = None) -> Config:
    """Defaults (or a copy of `base`: a resumed run's configuration), then the YAML file (read here, or given
    as `from_yaml`), then the flags that were given."""
    cfg = Config() if base is None else dataclasses.replace(base)   # a copy: check_resume compares it with base
    if yaml_path:
        cfg.update(load_yaml(yaml_path) if from_yaml is None else from_yaml, source=yaml_path)
    cfg.update({k: v for k, v in overrides.items() if v is not None}, source="option")
    return cfg.validate()
