"""The JSON fields of a checkpoint (`meta`, `train_state`, `config`) are checked on load, each named in the refusal.

Before these checks a crafted file got past the loader and failed later
inside `sample`, `info` or `train --resume` with an internal error.
"""

import json

import numpy as np
import pytest

from test_checkpoint import mutated, refuse, trained


@pytest.fixture(scope="module")
def ckpt():
    return trained()


def _set(key, path, value):
    def change(arrays):
        obj = json.loads(str(arrays[key]))
        inner = obj
        for k in path[:-1]:
            inner = inner[k]
        if value is KeyError:
            del inner[path[-1]]
        else:
            inner[path[-1]] = value
        arrays[key] = np.array(json.dumps(obj))
    return change


@pytest.mark.parametrize("key, path, value, needle", [
    ("meta", ("corpus",), 5, "meta.corpus"),
    ("meta", ("corpus", "line_items"), KeyError, "line_items"),
    ("meta", ("best_step",), None, "must all be null"),
    ("meta", ("steps",), -1, "meta.steps"),
    ("meta", ("train_seconds",), "x", "meta.train_seconds"),
    ("train_state", ("rng", "state", "inc"), -1, "train_state.rng.state.inc"),
    ("train_state", ("step",), True, "train_state.step"),
    ("train_state", ("history",), {}, "train_state.history"),
    ("train_state", ("offset",), 10 ** 6, "offset"),
    ("config", ("dropout",), None, "dropout"),
    ("config", ("ema",), None, "ema"),
])
def test_a_malformed_json_field_is_refused_by_name(tmp_path, ckpt, key, path, value, needle):
    refuse(mutated(tmp_path, ckpt, _set(key, path, value)), needle)


def test_an_unexpected_meta_key_is_refused(tmp_path, ckpt):
    refuse(mutated(tmp_path, ckpt, _set("meta", ("surprise",), 1)), "surprise")
