"""The checkpoint file: exact round trip, plain-numpy readability, validation, atomic saves."""

import json
import os
import time
import zipfile

import numpy as np
import pytest

from charlm.checkpoint import Checkpoint, load, save, to_arrays
from charlm.config import Config
from charlm.errors import CharlmError, CheckpointError
from charlm.dataset import Corpus
from charlm.train import train
from charlm.vocab import build_vocab, code_points, count_code_points

TEXT = "abc ab\nbca cab\n\x00zé\n" * 8  # a NUL character is an ordinary token


def trained(cell="lstm", dtype="float64", layers=2, text=TEXT, n_val=20, **kw):
    """A real resumable checkpoint: params, Adam moments, carry, best weights, history."""
    vocab = build_vocab(count_code_points(code_points(text)))
    ids = vocab.encode(text)
    info = {"name": "t.txt", "num_chars": len(text) - text.count("\n"), "num_lines": text.count("\n"),
            "num_tokens": len(ids), "fingerprint": "f00", "line_items": False}  # as load_corpus describes it
    corpus = Corpus(vocab, ids[:len(ids) - n_val], ids[len(ids) - n_val:], info)
    cfg = Config(cell=cell, hidden_size=8, num_layers=layers, seq_len=8, batch_size=2, steps=6, eval_every=2,
                 save_every=0, dtype=dtype, val_fraction=0.1, seed=1, warmup_steps=0, **kw).validate()
    ckpt, _ = train(cfg, corpus)
    return ckpt


@pytest.fixture(scope="module")
def ckpt():
    return trained()


def arrays_equal_bitwise(a: dict, b: dict):
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert a[k].shape == b[k].shape, k
        assert a[k].tobytes() == b[k].tobytes(), k


@pytest.mark.parametrize("cell,dtype", [("lstm", "float64"), ("gru", "float32"), ("rnn", "float32")])
def test_round_trip_is_bit_identical(tmp_path, cell, dtype):
    ck = trained(cell, dtype)
    assert ck.resumable and ck.best_params is not None and ck.carry is not None
    path = str(tmp_path / "m.npz")
    save(ck, path)
    back = load(path)
    arrays_equal_bitwise(to_arrays(ck), to_arrays(back))
    arrays_equal_bitwise(ck.params, back.params)
    arrays_equal_bitwise(ck.best_params, back.best_params)
    assert set(ck.optim_state) == set(back.optim_state)
    assert back.optim_state["step"] == ck.optim_state["step"] == 6
    arrays_equal_bitwise({k: v for k, v in ck.optim_state.items() if k != "step"},
                         {k: v for k, v in back.optim_state.items() if k != "step"})
    for la, lb in zip(ck.carry, back.carry):
        assert len(la) == len(lb) == (2 if cell == "lstm" else 1)
        for a, b in zip(la, lb):
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    assert back.train_state == json.loads(json.dumps(ck.train_state))
    assert back.train_state["rng"] == ck.train_state["rng"]
    assert back.meta == json.loads(json.dumps(ck.meta))
    assert back.config == ck.config
    assert back.vocab.tokens == ck.vocab.tokens and back.vocab.counts == ck.vocab.counts
    assert "\x00" in back.vocab.tokens


def test_plain_numpy_reads_the_file_without_pickle(tmp_path, ckpt):
    path = str(tmp_path / "m.npz")
    save(ckpt, path)
    with np.load(path, allow_pickle=False) as z:
        files = set(z.files)
        assert str(z["format"]) == "charlm-checkpoint"
        assert int(z["version"]) == 1
        cfg = json.loads(str(z["config"]))
        assert cfg["cell"] == "lstm" and cfg["hidden_size"] == 8
        assert z["vocab"][0] == "<EOS>" and z["vocab"][1] == "<UNK>"
        for name, arr in ckpt.params.items():
            assert np.array_equal(z[name], arr)
        assert all(z[k].dtype != object for k in z.files)
    assert {"train_state", "optim.step", "carry.0.0", "carry.1.1", "best.head.weight",
            "optim.m.head.weight", "optim.v.layers.1.bias", "meta", "vocab.counts"} <= files


def test_a_checkpoint_without_resume_state_loads(tmp_path, ckpt):
    light = Checkpoint(ckpt.config, ckpt.vocab, ckpt.params, meta=ckpt.meta)
    path = str(tmp_path / "w.npz")
    save(light, path)
    back = load(path)
    assert not back.resumable and back.carry is None and back.best_params is None
    assert back.meta == json.loads(json.dumps(ckpt.meta))
    arrays_equal_bitwise(back.params, ckpt.params)


# ---------------------------------------------------------------------------
# refusing bad files
# ---------------------------------------------------------------------------

def write_arrays(path, arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def refuse(path, *needles):
    with pytest.raises(CheckpointError) as e:
        load(str(path))
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 400
    for needle in needles:
        assert needle.lower() in msg.lower(), msg
    return msg


def test_pickled_object_array_is_refused(tmp_path, ckpt):
    arrays = to_arrays(ckpt)
    arrays["meta"] = np.array([{"evil": "payload"}], dtype=object)
    path = tmp_path / "pickled.npz"
    write_arrays(path, arrays)
    with pytest.raises(ValueError):  # sanity: numpy itself would need pickle for this file
        np.load(path, allow_pickle=False)["meta"]
    refuse(path, "pickle")


def test_missing_file_and_directory(tmp_path):
    refuse(tmp_path / "nope.npz", "not found")
    refuse(tmp_path, "directory")


def test_truncated_files(tmp_path, ckpt):
    good = tmp_path / "good.npz"
    save(ckpt, str(good))
    data = good.read_bytes()
    for n in (0, 1, 2, 10, 100, len(data) // 3, len(data) // 2, len(data) - 22, len(data) - 1):
        p = tmp_path / f"cut{n}.npz"
        p.write_bytes(data[:n])
        refuse(p)


def test_random_bytes_and_other_files(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "random.npz"
    p.write_bytes(rng.integers(0, 256, size=5000, dtype=np.uint8).tobytes())
    refuse(p, "not a charlm checkpoint")
    p.write_bytes(b"PK" + rng.integers(0, 256, size=5000, dtype=np.uint8).tobytes())
    refuse(p)
    p.write_text("just text\n")
    refuse(p)
    np.save(tmp_path / "single.npy", np.zeros(3))
    refuse(tmp_path / "single.npy")


def test_a_zip_that_is_not_ours(tmp_path):
    p = tmp_path / "other.zip"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("readme.txt", "hello")
    refuse(p)
    p2 = tmp_path / "other.npz"
    write_arrays(p2, {"x": np.arange(3), "y": np.ones((2, 2))})
    refuse(p2, "format")
    # members named like ours but not .npy arrays
    p3 = tmp_path / "raw.npz"
    with zipfile.ZipFile(p3, "w") as z:
        z.writestr("format", "charlm-checkpoint")
        z.writestr("version.npy", "1")
    refuse(p3)


def mutated(tmp_path, ckpt, change, name="bad.npz"):
    arrays = to_arrays(ckpt)
    change(arrays)
    path = tmp_path / name
    write_arrays(path, arrays)
    return path


def test_wrong_format_and_version(tmp_path, ckpt):
    refuse(mutated(tmp_path, ckpt, lambda a: a.update(format=np.array("other-thing"))), "not a charlm checkpoint")
    refuse(mutated(tmp_path, ckpt, lambda a: a.update(format=np.array([1, 2]))), "format")
    refuse(mutated(tmp_path, ckpt, lambda a: a.update(version=np.array(2))), "version 2")
    refuse(mutated(tmp_path, ckpt, lambda a: a.update(version=np.array("1"))), "version")
    refuse(mutated(tmp_path, ckpt, lambda a: a.update(version=np.array(1.0))), "version")


@pytest.mark.parametrize("key", ["format", "version", "config", "vocab", "vocab.counts", "layers.0.weight_ih",
                                 "layers.1.bias", "head.weight", "head.bias", "optim.step", "optim.m.head.bias",
                                 "optim.v.layers.0.weight_hh", "carry.1.1", "carry.0.0", "best.layers.0.bias",
                                 "train_state", "meta"])
def test_missing_key(tmp_path, ckpt, key):
    refuse(mutated(tmp_path, ckpt, lambda a: a.pop(key)))


@pytest.mark.parametrize("key", ["layers.0.weight_ih", "head.bias", "optim.m.layers.1.weight_hh", "carry.1.0",
                                 "best.head.weight"])
def test_wrong_shape_dtype_and_nan(tmp_path, ckpt, key):
    def reshape(a):
        a[key] = np.zeros(a[key].shape + (1,), dtype=a[key].dtype)
    refuse(mutated(tmp_path, ckpt, reshape), key, "shape")

    def transpose(a):  # same size, other shape
        a[key] = np.ascontiguousarray(np.atleast_2d(a[key]).T)
    refuse(mutated(tmp_path, ckpt, transpose), key, "shape")

    def retype(a):
        a[key] = a[key].astype(np.float32)
    refuse(mutated(tmp_path, ckpt, retype), key, "dtype")

    def to_int(a):
        a[key] = a[key].astype(np.int64)
    refuse(mutated(tmp_path, ckpt, to_int), key, "dtype")

    for bad in (np.nan, np.inf, -np.inf):
        def poison(a, bad=bad):
            a[key] = a[key].copy()
            a[key].flat[0] = bad
        refuse(mutated(tmp_path, ckpt, poison), key, "nan or infinite")


def test_unexpected_extra_key(tmp_path, ckpt):
    refuse(mutated(tmp_path, ckpt, lambda a: a.update({"layers.9.weight_ih": np.zeros(3)})), "unexpected key")
    refuse(mutated(tmp_path, ckpt, lambda a: a.update({"hello": np.zeros(3)})), "unexpected key 'hello'")
    refuse(mutated(tmp_path, ckpt, lambda a: a.update({"optim.w.head.bias": a["head.bias"]})), "unexpected key")
    refuse(mutated(tmp_path, ckpt, lambda a: a.update({"carry.2.0": a["carry.0.0"]})), "unexpected key")


def test_inconsistent_contents(tmp_path, ckpt):
    def cfg_change(**kw):
        def change(a):
            cfg = json.loads(str(a["config"]))
            cfg.update(kw)
            a["config"] = np.array(json.dumps(cfg))
        return change
    refuse(mutated(tmp_path, ckpt, cfg_change(hidden_size=9)), "shape")
    refuse(mutated(tmp_path, ckpt, cfg_change(num_layers=1)), "unexpected key")
    refuse(mutated(tmp_path, ckpt, cfg_change(num_layers=3)), "missing key")
    t0 = time.perf_counter()
    refuse(mutated(tmp_path, ckpt, cfg_change(num_layers=10 ** 9)), "layers")  # refused at once, no huge loop
    assert time.perf_counter() - t0 < 2.0
    refuse(mutated(tmp_path, ckpt, cfg_change(hidden_size=10 ** 12)), "shape")
    refuse(mutated(tmp_path, ckpt, cfg_change(cell="gru")), "shape")
    refuse(mutated(tmp_path, ckpt, cfg_change(dtype="float32")), "dtype")
    refuse(mutated(tmp_path, ckpt, cfg_change(cell="transformer")), "cell")
    refuse(mutated(tmp_path, ckpt, cfg_change(bogus=1)), "bogus")
    refuse(mutated(tmp_path, ckpt, lambda a: a.update(config=np.array("{not json"))), "config")
    refuse(mutated(tmp_path, ckpt, lambda a: a.update(config=np.array("[1, 2]"))), "config")
    refuse(mutated(tmp_path, ckpt, lambda a: a.update(meta=np.array("[" * 100000 + "]" * 100000))), "meta")
    refuse(mutated(tmp_path, ckpt, lambda a: a.update(train_state=np.array("null"))), "train_state")
    # the vocabulary: size, order, specials, counts
    refuse(mutated(tmp_path, ckpt, lambda a: a.update({"vocab": a["vocab"][:-1], "vocab.counts": a["vocab.counts"][:-1]})),
           "shape")
    refuse(mutated(tmp_path, ckpt, lambda a: a.update(vocab=a["vocab"][::-1].copy())), "vocabulary")
    refuse(mutated(tmp_path, ckpt, lambda a: a.update({"vocab.counts": a["vocab.counts"][:-1]})), "vocab.counts")
    refuse(mutated(tmp_path, ckpt, lambda a: a.update({"vocab": np.array([t.encode("utf-8") for t in a["vocab"]])})),
           "vocab")
    refuse(mutated(tmp_path, ckpt, lambda a: a.update({"vocab": np.array(ckpt.vocab.tokens)[:, None]})), "vocab")
    refuse(mutated(tmp_path, ckpt, lambda a: a.update({"optim.step": np.array(-1)})), "optim.step")
    # resume state must be complete
    refuse(mutated(tmp_path, ckpt, lambda a: [a.pop(k) for k in list(a) if k.startswith("optim.")]), "train_state")


def json_changed(key, path, value):
    """Set (or, with value KeyError, delete) the field at `path` of the JSON under `key`."""
    def change(a):
        data = json.loads(str(a[key]))
        *outer, last = path
        d = data
        for k in outer:
            d = d[k]
        if value is KeyError:
            del d[last]
        else:
            d[last] = value
        a[key] = np.array(json.dumps(data))
    return change


# (key, path, bad value or KeyError to delete it, what the message must say); each loaded before
# meta and train_state were checked, and then failed in sample, score, info or train --resume
BAD_JSON = [
    ("meta", ["corpus"], 5, ["meta.corpus", "object"]),
    ("meta", ["corpus"], KeyError, ["meta", "'corpus'"]),
    ("meta", ["corpus", "line_items"], "yes", ["meta.corpus.line_items", "true or false"]),
    ("meta", ["corpus", "num_chars"], -1, ["meta.corpus.num_chars", "non-negative integer"]),
    ("meta", ["best_step"], None, ["meta.best_val_bpc", "best_step", "null"]),
    ("meta", ["best_step"], "x", ["meta.best_step", "integer", '"x"']),
    ("meta", ["best_step"], 1.5, ["meta.best_step", "integer"]),
    ("meta", ["last_val_bpc"], None, ["meta.", "last_val_bpc"]),
    ("meta", ["best_val_bpc"], float("nan"), ["meta.best_val_bpc", "finite"]),
    ("meta", ["train_seconds"], "x", ["meta.train_seconds", "number"]),
    ("meta", ["steps"], True, ["meta.steps", "integer", "true"]),     # a bool is not an integer
    ("meta", ["chars_seen"], -10 ** 20, ["meta.chars_seen", "non-negative"]),
    ("meta", ["ngram_val_bpc"], [], ["meta.ngram_val_bpc", "a list"]),
    ("meta", ["surprise"], 1, ["meta", "unexpected key 'surprise'"]),
    ("train_state", ["step"], 1.5, ["train_state.step", "integer"]),
    ("train_state", ["offset"], 10 ** 6, ["train_state.offset", "seq_len"]),
    ("train_state", ["chars_seen"], KeyError, ["train_state", "chars_seen"]),
    ("train_state", ["best_step"], None, ["train_state.best_val", "best_step"]),
    ("train_state", ["best_val"], "x", ["train_state.best_val", "number"]),
    ("train_state", ["last_loss"], float("inf"), ["train_state.last_loss", "finite"]),
    ("train_state", ["train_seconds"], -1.0, ["train_state.train_seconds", "non-negative"]),
    ("train_state", ["history"], "x", ["train_state.history", "list"]),
    ("train_state", ["history", 0, "val_bpc"], "x", ["train_state.history[0].val_bpc", "number"]),
    ("train_state", ["history", 1, "mix_weight"], 1.5, ["train_state.history[1].mix_weight", "from 0 to 1"]),
    ("train_state", ["rng"], {}, ["train_state.rng", "bit_generator"]),
    ("train_state", ["rng", "bit_generator"], "MT19937", ["train_state.rng.bit_generator", "PCG64"]),
    ("train_state", ["rng", "state", "inc"], -1, ["train_state.rng.state.inc", "2**128"]),
    ("train_state", ["rng", "state", "state"], 2 ** 128, ["train_state.rng.state.state", "2**128"]),
    ("train_state", ["rng", "uinteger"], 10 ** 30, ["train_state.rng.uinteger", "2**32"]),
    ("train_state", ["rng", "has_uint32"], 2, ["train_state.rng.has_uint32", "0 or 1"]),
    # a saved config holds what training used: None ("auto") is only for a run not yet started
    ("config", ["dropout"], None, ["config", "dropout"]),
    ("config", ["char_dropout"], None, ["config", "char_dropout"]),
    ("config", ["eval_every"], None, ["config", "eval_every"]),
    ("config", ["line_state"], "auto", ["config", "line_state"]),
    ("config", ["ema"], None, ["config", "ema"]),
]


@pytest.mark.parametrize("key,path,value,needles", BAD_JSON,
                         ids=[f"{k}.{'.'.join(map(str, p))}" + ("-deleted" if v is KeyError else f"={v!r}"[:30])
                              for k, p, v, _ in BAD_JSON])
def test_wrong_types_and_ranges_in_the_json_are_refused(tmp_path, ckpt, key, path, value, needles):
    refuse(mutated(tmp_path, ckpt, json_changed(key, path, value)), *needles)


def test_a_checkpoint_without_meta_is_refused(tmp_path, ckpt):
    # (with no meta, sampling would no longer stop at <EOS> on a list of items)
    refuse(mutated(tmp_path, ckpt, lambda a: a.pop("meta")), "missing key 'meta'")


def test_the_json_of_every_kind_of_trained_checkpoint_loads(tmp_path):
    with_ngram = trained("gru", "float32", layers=1)                     # validation and an n-gram
    assert "ngram_val_bpc" in with_ngram.meta and with_ngram.meta["best_step"] is not None
    no_validation = trained("rnn", "float32", layers=1, n_val=0, ngram=0)  # the validation figures are null
    assert "ngram_val_bpc" not in no_validation.meta and no_validation.meta["best_val_bpc"] is None
    assert no_validation.train_state["best_val"] is None and no_validation.train_state["history"] == []
    for ck in (with_ngram, no_validation):
        path = str(tmp_path / "m.npz")
        save(ck, path)
        back = load(path)
        assert back.meta == json.loads(json.dumps(ck.meta))
        assert back.train_state == json.loads(json.dumps(ck.train_state))


def test_the_message_names_the_path(tmp_path, ckpt):
    path = mutated(tmp_path, ckpt, lambda a: a.pop("head.bias"), name="named.npz")
    msg = refuse(path, "head.bias")
    assert str(path) in msg


# ---------------------------------------------------------------------------
# atomic saves
# ---------------------------------------------------------------------------

def leftovers(directory):
    return sorted(n for n in os.listdir(directory) if n.endswith(".tmp") or n.startswith(".m.npz"))


def test_failed_write_keeps_the_previous_file(tmp_path, ckpt, monkeypatch):
    path = tmp_path / "m.npz"
    save(ckpt, str(path))
    before = path.read_bytes()

    def broken_savez(f, **arrays):
        f.write(b"PK\x03\x04 partial garbage" * 100)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", broken_savez)
    other = trained("gru", "float32")
    with pytest.raises(CharlmError) as e:
        save(other, str(path))
    assert "No space left on device" in str(e.value)
    assert path.read_bytes() == before
    assert leftovers(tmp_path) == []
    monkeypatch.undo()
    arrays_equal_bitwise(load(str(path)).params, ckpt.params)


def test_failed_rename_keeps_the_previous_file(tmp_path, ckpt, monkeypatch):
    path = tmp_path / "m.npz"
    save(ckpt, str(path))
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(CharlmError):
        save(trained("rnn", "float32"), str(path))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert leftovers(tmp_path) == []


def test_save_into_a_missing_directory_or_onto_a_directory(tmp_path, ckpt):
    with pytest.raises(CharlmError):
        save(ckpt, str(tmp_path / "no" / "such" / "dir" / "m.npz"))
    (tmp_path / "d.npz").mkdir()
    with pytest.raises(CharlmError, match="directory"):
        save(ckpt, str(tmp_path / "d.npz"))
    assert os.listdir(tmp_path / "d.npz") == []


def test_save_overwrites_atomically_and_leaves_no_temp(tmp_path, ckpt):
    path = tmp_path / "m.npz"
    save(ckpt, str(path))
    other = trained("gru", "float32")
    save(other, str(path))
    assert load(str(path)).config.cell == "gru"
    assert leftovers(tmp_path) == [] and os.listdir(tmp_path) == ["m.npz"]


@pytest.mark.parametrize("where", ["params", "optim", "carry", "best"])
def test_saving_non_finite_values_is_refused(tmp_path, ckpt, where):
    path = tmp_path / "m.npz"
    bad = trained()
    if where == "params":
        bad.params["layers.0.weight_hh"][0, 0] = np.nan
    elif where == "optim":
        bad.optim_state["v.head.bias"][1] = np.inf
    elif where == "carry":
        bad.carry[1][1][0, 0] = -np.inf
    else:
        bad.best_params["head.weight"][0, 0] = np.nan
    with pytest.raises(CharlmError, match="non-finite"):
        save(bad, str(path))
    assert not path.exists() and os.listdir(tmp_path) == []


def test_without_best_weights_best_means_the_weight_average(tmp_path, ckpt):
    state = dict(ckpt.optim_state)
    state.update({f"avg.{k}": v + 1.0 for k, v in ckpt.params.items()})
    no_best = Checkpoint(ckpt.config, ckpt.vocab, ckpt.params, ckpt.train_state, state, ckpt.carry, None, ckpt.meta)
    path = str(tmp_path / "avg.npz")
    save(no_best, path)
    back = load(path)
    arrays_equal_bitwise(back.weights("best"), {k: v + 1.0 for k, v in ckpt.params.items()})
    arrays_equal_bitwise(back.weights("last"), ckpt.params)
    plain = Checkpoint(ckpt.config, ckpt.vocab, ckpt.params, meta={})
    assert plain.weights("best") is plain.params
