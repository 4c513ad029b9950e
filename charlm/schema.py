"""Checking a parsed JSON value against a small schema (the JSON a checkpoint stores).

A schema is a dict, a list or a string.  A dict lists the keys an object
must have (and no others); [x] is a list whose items are each x; a string
names a kind of value (`KINDS`), with " or null" if it may be null and
", optional" (as a dict's value) if the key may be left out.  Example:

    {"step": "count", "best": "number or null", "history": [{"loss": "number"}],
     "workers": "count, optional"}

`check` raises SchemaError naming the field, e.g. `meta.corpus.num_chars
must be a non-negative integer, not -1`.
"""

from __future__ import annotations

import json
import math

KINDS = {  # kind: (JSON type, test of the value, what the value must be)
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


class SchemaError(ValueError):
    """A JSON value does not fit its schema (the message names the field)."""


def check(value, schema, where: str) -> None:
    """SchemaError naming the field unless `value` fits `schema` (a dict, [item schema] or a kind)."""
    if isinstance(schema, dict):
        if type(value) is not dict:
            raise SchemaError(f"{where} must be a JSON object, not {shown(value)}")
        for key, spec in schema.items():
            optional = isinstance(spec, tuple) or isinstance(spec, str) and spec.endswith(", optional")
            if isinstance(spec, tuple):     # (schema, "optional"): an object or list that may be left out
                spec = spec[0]
            if key in value:
                check(value[key], spec.removesuffix(", optional") if isinstance(spec, str) else spec, f"{where}.{key}")
            elif not optional:
                raise SchemaError(f"{where} has no {key!r}")
        extra = sorted(set(value) - set(schema))
        if extra:
            raise SchemaError(f"{where} has an unexpected key {extra[0][:40]!r}")
    elif isinstance(schema, list):
        if type(value) is not list:
            raise SchemaError(f"{where} must be a list, not {shown(value)}")
        for i, item in enumerate(value):
            check(item, schema[0], f"{where}[{i}]")
    else:
        kind = schema.removesuffix(" or null")
        if value is None and kind != schema:
            return
        json_type, fits, what = KINDS[kind]
        if type(value) is not json_type or (fits is not None and not fits(value)):
            raise SchemaError(f"{where} must be {what}{schema[len(kind):]}, not {shown(value)}")


def shown(value) -> str:
    """A JSON value in a message: scalars as JSON (cut short), lists and objects by kind."""
    if isinstance(value, (list, dict)):
        return "a list" if isinstance(value, list) else "an object"
    return json.dumps(value)[:40]


# The JSON of `meta` and `train_state`, as charlm.train writes it (make_checkpoint, RunState.to_json).
# A dict lists the keys an object must have (and no others), [x] is a list of x, and a string
# names a kind of value (charlm.schema.KINDS), with " or null" if it may be null and ", optional" if it may be left out
# ((schema, "optional"): an object or list that may be left out).
META = {
    "corpus": {"name": "str", "num_chars": "count", "num_lines": "count", "num_tokens": "count",
               "fingerprint": "str", "line_items": "bool",
               "num_files": "count, optional"},     # a corpus of many files (charlm.sources)
    "steps": "count", "train_seconds": "seconds", "chars_seen": "count", "skipped_steps": "count",
    "best_val_bpc": "number or null", "best_step": "count or null", "last_val_bpc": "number or null",
    "last_train_bpc": "number or null",
    "ngram_val_bpc": "number, optional",            # only with an n-gram and validation
    "combine_val_bpc": "number, optional",          # bidirectional with n-grams: the combination (charlm.combine) ...
    "combine_net_val_bpc": "number, optional",      # ... and the network alone, on the validation lines it was fitted on
    "workers": "count, optional",                  # processes that shared each step (charlm.workers.train); older files lack it
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
