"""Through the command line: a checkpoint whose meta / train_state / config JSON is malformed is one
`error:` line (exit 1) in every command that loads it, never an internal error later on.

The cases are ones a QA fuzzer found: each loaded, then failed inside `sample`, `score`, `info` or
`train --resume` with a TypeError, AttributeError, OverflowError or IndexError (or, with `meta`
deleted, sampling quietly stopped ending samples at <EOS>).
"""

import json

import numpy as np
import pytest

from conftest import invoke, one_line_error


pytestmark = pytest.mark.usefixtures("no_env_checkpoint")


@pytest.fixture(scope="module")
def saved(trained):
    """conftest's tiny trained model: its corpus, and its checkpoint's arrays."""
    _, corpus, ck = trained
    with np.load(ck, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return corpus, arrays


CASES = [  # (key, path, value; path None: the key deleted), what the error line says
    ("meta", ["corpus"], 5, ["damaged checkpoint", "meta.corpus"]),
    ("meta", ["best_step"], "x", ["damaged checkpoint", "meta.best_step"]),
    ("meta", ["best_val_bpc"], "x", ["damaged checkpoint", "meta.best_val_bpc"]),
    ("meta", None, None, ["missing key 'meta'"]),
    ("train_state", ["rng", "state", "inc"], -1, ["damaged checkpoint", "train_state.rng.state.inc"]),
    ("train_state", ["history"], "x", ["damaged checkpoint", "train_state.history"]),
    ("config", ["dropout"], None, ["invalid config", "dropout"]),
]


def crafted(arrays, key, path, value):
    arrays = dict(arrays)
    if path is None:
        del arrays[key]
        return arrays
    data = json.loads(str(arrays[key]))
    d = data
    for k in path[:-1]:
        d = d[k]
    d[path[-1]] = value
    arrays[key] = np.array(json.dumps(data))
    return arrays


@pytest.mark.parametrize("key,path,value,needles", CASES, ids=[f"{c[0]}.{'.'.join(c[1] or ['deleted'])}" for c in CASES])
def test_every_command_refuses_it_in_one_line(tmp_path, saved, key, path, value, needles):
    corpus, arrays = saved
    ck = tmp_path / "crafted.npz"
    np.savez(ck, **crafted(arrays, key, path, value))
    for args in (["sample", "-c", ck, "--length", "20"], ["score", "-c", ck, "anna"], ["info", ck],
                 ["info", "--json", ck], ["train", corpus, "--resume", "-c", ck, "--steps", "40"]):
        one_line_error(invoke(*args), *needles)
