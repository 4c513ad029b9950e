"""Fuzzing checkpoint.load: every damaged file loads to a valid checkpoint or is a CheckpointError.

From one small valid checkpoint (hidden 8, vocabulary of 10), thousands of
mutants are built with a fixed seed: bytes flipped, inserted or deleted,
truncations, arrays swapped between keys, arrays replaced by other dtypes
and shapes (object arrays too), keys removed or added, and the JSON of the
config / meta / train state rewritten with odd values.  Nothing but
CheckpointError may escape, and no file may take long.
"""

import io
import json
import time

import numpy as np

from charlm import model, ngram, optim
from charlm.checkpoint import Checkpoint, load, param_shapes, save, to_arrays
from charlm.config import Config
from charlm.errors import CheckpointError
from charlm.vocab import Vocab

SEED = 20240607


def small_checkpoint() -> Checkpoint:
    cfg = Config(cell="lstm", hidden_size=8, num_layers=2, dtype="float32", batch_size=2, seq_len=4, steps=5,
                 dropout=0.1, char_dropout=0.0, eval_every=4, line_state="carry").validate()  # resolved, as training saves it
    vocab = Vocab(("<EOS>", "<UNK>", "\x00", " ", "a", "b", "c", "é", "☃", "🙂"), tuple(range(1, 11)))
    rng = np.random.default_rng(0)
    arch = model.Arch("lstm", len(vocab), 8, 2)
    params = model.init_params(arch, rng, "float32")
    state = optim.init_state("adam", params)
    state["step"] = 5
    for k in state:
        if k != "step":
            state[k] = rng.random(state[k].shape).astype(np.float32)
    carry = [tuple(rng.standard_normal((2, 8)).astype(np.float32) for _ in range(2)) for _ in range(2)]
    best = {k: v + np.float32(0.5) for k, v in params.items()}
    train_state = {"step": 5, "epoch": 0, "chunk": 5, "offset": 1, "train_seconds": 0.5, "chars_seen": 40,
                   "skipped_steps": 0, "bad_streak": 0, "best_val": 2.0, "best_step": 4, "last_loss": 2.1,
                   "last_val": 2.0, "rng": rng.bit_generator.state,
                   "history": [{"step": 4, "seconds": 0.4, "chars": 32, "train_bpc": 3.1, "val_bpc": 2.9,
                                "net_val_bpc": 3.0, "mix_weight": 0.7}]}
    ng = ngram.fit(rng.integers(0, len(vocab), size=200), len(vocab), 3, reset_at_eos=False)
    return Checkpoint(cfg, vocab, params, train_state, state, carry, best, dict(META),
                      ngram=ng, mix_weights={"last": 0.6, "best": 0.7})


META = {"corpus": {"name": "x", "num_chars": 180, "num_lines": 20, "num_tokens": 200, "fingerprint": "0123-|u1",
                   "line_items": False},
        "steps": 5, "train_seconds": 0.5, "chars_seen": 40, "skipped_steps": 0, "best_val_bpc": 2.9, "best_step": 4,
        "last_val_bpc": 2.9, "last_train_bpc": 3.1, "ngram_val_bpc": 3.5}


def npz_bytes(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def odd_arrays(rng, like: np.ndarray):
    """Replacements of another dtype or shape than `like`."""
    size = max(int(like.size), 1)
    choices = [
        lambda: like.astype(np.float64) if like.dtype != np.float64 else like.astype(np.float32),
        lambda: like.astype(np.int32) if like.dtype.kind == "f" else np.zeros(3, dtype=np.int64),
        lambda: np.zeros(like.shape + (1,), dtype=like.dtype),
        lambda: np.zeros((0,) + like.shape[1:], dtype=like.dtype),
        lambda: np.array(3.5),
        lambda: np.array(7),
        lambda: np.array(True),
        lambda: np.array("a string"),
        lambda: np.array(["<EOS>", "<UNK>", "z"]),
        lambda: np.zeros(size, dtype=np.complex64),
        lambda: np.full(like.shape, np.nan, dtype=like.dtype) if like.dtype.kind == "f" else np.array(np.nan),
        lambda: np.zeros((2, 3, 4, 5), dtype=np.uint8),
        lambda: np.array([b"bytes", b"here"]),
        lambda: np.array([{"object": 1}], dtype=object),
        lambda: np.arange(size, dtype=np.float16),
        lambda: np.array(2 ** 62, dtype=np.int64),
        lambda: np.array(-1, dtype=np.int64),
        lambda: np.zeros((), dtype=[("a", "i4"), ("b", "f4")]),
    ]
    return choices[int(rng.integers(len(choices)))]()


ODD_JSON_VALUES = [None, -1, 0, 1, 2, 3, 10 ** 9, 10 ** 30, 1e308, -0.5, 0.5, "lstm", "gru", "", "x" * 300,
                   [], {}, [1, 2], True, False, "float16", "relu", "adam"]


def mutate_json(rng, arrays: dict):
    key = ["config", "meta", "train_state"][int(rng.integers(3))]
    try:
        data = json.loads(str(arrays[key]))
    except Exception:
        data = {}
    choice = int(rng.integers(5))
    if choice == 0 and isinstance(data, dict) and data:
        k = list(data)[int(rng.integers(len(data)))]
        data[k] = ODD_JSON_VALUES[int(rng.integers(len(ODD_JSON_VALUES)))]
    elif choice == 1 and isinstance(data, dict) and data:
        data.pop(list(data)[int(rng.integers(len(data)))])
    elif choice == 2:
        data = ODD_JSON_VALUES[int(rng.integers(len(ODD_JSON_VALUES)))]
    elif choice == 3 and isinstance(data, dict):
        data["unknown_" + str(int(rng.integers(100)))] = 1
    else:
        text = json.dumps(data)
        cut = int(rng.integers(len(text) + 1))
        arrays[key] = np.array(text[:cut] + "}" * int(rng.integers(3)))
        return
    arrays[key] = np.array(json.dumps(data))


def array_mutant(rng, base: dict) -> bytes:
    arrays = dict(base)
    keys = sorted(arrays)
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.integers(6))
        a, b = (keys[int(i)] for i in rng.integers(len(keys), size=2))
        if kind == 0:    # swap two arrays between keys
            if a in arrays and b in arrays:
                arrays[a], arrays[b] = arrays[b], arrays[a]
        elif kind == 1:  # another dtype or shape
            if a in arrays:
                arrays[a] = odd_arrays(rng, arrays[a])
        elif kind == 2:  # a key removed
            arrays.pop(a, None)
        elif kind == 3:  # a key added (known-looking or not)
            name = ["layers.5.bias", "optim.x.head.bias", "carry.0.9", "best.zzz", "extra", "format.npy"][
                int(rng.integers(6))]
            arrays[name] = arrays.get(b, np.zeros(2))
        elif kind == 4:
            mutate_json(rng, arrays)
        else:            # a value changed in place (NaN, huge, sign)
            if a in arrays and arrays[a].dtype.kind == "f" and arrays[a].size:
                arr = arrays[a].copy()
                arr.flat[int(rng.integers(arr.size))] = [np.nan, np.inf, -np.inf, 1e30, -0.0][int(rng.integers(5))]
                arrays[a] = arr
    return npz_bytes(arrays)


def byte_mutant(rng, data: bytes) -> bytes:
    buf = bytearray(data)
    kind = int(rng.integers(5))
    if kind == 0:    # flip bits
        for _ in range(int(rng.integers(1, 5))):
            buf[int(rng.integers(len(buf)))] ^= 1 << int(rng.integers(8))
    elif kind == 1:  # random bytes
        for _ in range(int(rng.integers(1, 5))):
            buf[int(rng.integers(len(buf)))] = int(rng.integers(256))
    elif kind == 2:  # truncation
        buf = buf[: int(rng.integers(len(buf)))]
    elif kind == 3:  # insertion / deletion
        pos = int(rng.integers(len(buf)))
        if rng.random() < 0.5:
            buf[pos:pos] = rng.integers(0, 256, size=int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
        else:
            del buf[pos: pos + int(rng.integers(1, 9))]
    else:            # a patched header: flipped bytes with the CRC fixed up, past zip's own check
        buf = bytearray(crc_fixed_mutant(rng, data))
    return bytes(buf)


def crc_fixed_mutant(rng, data: bytes) -> bytes:
    """Change a byte inside one stored .npy member and rewrite the archive (new CRCs), so
    the damage reaches numpy's parser and charlm's validation instead of zip's CRC check."""
    import zipfile

    src = zipfile.ZipFile(io.BytesIO(data))
    infos = src.infolist()
    target = infos[int(rng.integers(len(infos)))]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as dst:
        for info in infos:
            content = bytearray(src.read(info.filename))
            if info.filename == target.filename and content:
                # mostly the header (magic, dict, shape); sometimes the data
                limit = min(len(content), 128) if rng.random() < 0.8 else len(content)
                for _ in range(int(rng.integers(1, 3))):
                    pos = int(rng.integers(limit))
                    content[pos] = int(rng.choice([ord(c) for c in "0123456789(), '<>fiuUb|{}:"]
                                                  + [int(rng.integers(256))]))
            dst.writestr(info.filename, bytes(content))
    return out.getvalue()


def check_valid(ck: Checkpoint):
    shapes = param_shapes(ck.arch)
    assert set(ck.params) == set(shapes)
    dtype = np.dtype(ck.config.dtype)
    for k, shape in shapes.items():
        assert ck.params[k].shape == shape and ck.params[k].dtype == dtype
        assert np.all(np.isfinite(ck.params[k]))
    assert ck.vocab.tokens[:2] == ("<EOS>", "<UNK>")
    assert isinstance(ck.meta, dict)
    if ck.optim_state is not None:
        assert ck.train_state is not None and isinstance(ck.optim_state["step"], int)
    if ck.carry is not None:
        assert len(ck.carry) == ck.config.num_layers
    if ck.best_params is not None:
        assert set(ck.best_params) == set(shapes)


def test_fuzz_load_only_ever_raises_checkpoint_error(tmp_path):
    rng = np.random.default_rng(SEED)
    ck = small_checkpoint()
    good_path = str(tmp_path / "good.npz")
    save(ck, good_path)
    check_valid(load(good_path))
    with open(good_path, "rb") as f:
        good = f.read()
    base = to_arrays(ck)

    n_cases = 1200
    outcomes = {"loaded": 0, "refused": 0}
    escaped = []
    slowest = 0.0
    t_start = time.perf_counter()
    path = tmp_path / "mutant.npz"
    for case in range(n_cases):
        data = array_mutant(rng, base) if case % 3 == 0 else byte_mutant(rng, good)
        path.write_bytes(data)
        t0 = time.perf_counter()
        try:
            loaded = load(str(path))
        except CheckpointError as e:
            outcomes["refused"] += 1
            assert "\n" not in str(e)
        except BaseException as e:  # noqa: BLE001 - anything else is a bug
            escaped.append((case, type(e).__name__, str(e)[:200]))
            if isinstance(e, KeyboardInterrupt):
                raise
        else:
            outcomes["loaded"] += 1
            check_valid(loaded)
        slowest = max(slowest, time.perf_counter() - t0)
    elapsed = time.perf_counter() - t_start
    assert not escaped, f"{len(escaped)} mutants escaped with other exceptions, e.g. {escaped[:5]}"
    assert outcomes["refused"] > n_cases // 2      # the mutations do damage
    assert outcomes["loaded"] > 0                  # and some harmless ones still load
    assert slowest < 2.0, slowest
    assert elapsed < 60.0, elapsed  # (about 6 s on an idle machine)
