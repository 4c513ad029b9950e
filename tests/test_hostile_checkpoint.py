"""Hostile files cost nothing: a checkpoint is refused from its zip directory and .npy headers, before any data.

Each archive is built here, small on disk: a valid checkpoint with one
member changed or added (a compressed gigabyte of zeros, a header that
claims 200000 × 200000 floats or a shape whose size overflows int64, a
directory that lies about a member's size, thousands of members, an
over-large config).  Each must be a one-line CheckpointError naming the
member (or the count), with a peak of Python and NumPy allocations
(tracemalloc) far below what the file claims: the claim is never
allocated.  Valid archives written other ways (deflated, a weight in
Fortran order) still load, and loading one needs about the model's size.
"""

from __future__ import annotations

import io
import os
import tracemalloc
import zipfile
from dataclasses import dataclass

import numpy as np
import pytest

from charlm import checkpoint, checkpoint_layout, model, optim
from charlm.checkpoint import Checkpoint, load, save, to_arrays
from charlm.checkpoint_layout import layout
from charlm.config import Config, ConfigError, load_yaml
from charlm.errors import CheckpointError, VocabError
from charlm.npz import HEADER_LIMIT
from charlm.vocab import Vocab, load_vocab
from conftest import invoke, one_line_error

MiB = 1 << 20
PEAK_LIMIT = 50 * MiB   # what refusing any of these files may allocate at most


def small_checkpoint(hidden=8, layers=2, cell="lstm", chars="abcdefgh") -> Checkpoint:
    """A resumable checkpoint (weights, Adam moments and weight average, carry, best weights), as training saves it."""
    cfg = Config(cell=cell, hidden_size=hidden, num_layers=layers, batch_size=2, seq_len=4, steps=5, dropout=0.0,
                 char_dropout=0.0, eval_every=4, line_state="carry", ngram=0).validate()
    vocab = Vocab(("<EOS>", "<UNK>") + tuple(chars), tuple(range(1, len(chars) + 3)))
    rng = np.random.default_rng(0)
    params = model.init_params(checkpoint.arch_of(cfg, len(vocab)), rng, cfg.dtype)
    state = optim.init_state("adam", params)
    optim.keep_average(state, params, True)
    state["step"] = 5
    carry = [tuple(np.zeros((2, hidden), np.float32) for _ in range(2)) for _ in range(layers)]
    train_state = {"step": 5, "epoch": 0, "chunk": 5, "offset": 1, "train_seconds": 0.5, "chars_seen": 40,
                   "skipped_steps": 0, "bad_streak": 0, "best_val": None, "best_step": None, "last_loss": 2.1,
                   "last_val": None, "rng": rng.bit_generator.state, "history": []}
    meta = {"corpus": {"name": "x", "num_chars": 180, "num_lines": 20, "num_tokens": 200, "fingerprint": "f",
                       "line_items": False},
            "steps": 5, "train_seconds": 0.5, "chars_seen": 40, "skipped_steps": 0, "best_val_bpc": None,
            "best_step": None, "last_val_bpc": None, "last_train_bpc": 3.1}
    best = {k: v + np.float32(0.5) for k, v in params.items()}
    return Checkpoint(cfg, vocab, params, train_state, state, carry, best, meta)


@dataclass
class Member:
    """A hand-made member: a .npy header claiming `dtype` and `shape`, then `data` (bytes, or a size of zeros).

    `listed`: the member's size written in the zip directory, if not the true one.
    `compress_type`: other than deflate, the member is rewritten afterwards (`_recompress`)."""

    name: str
    dtype: str
    shape: tuple
    data: bytes | int = b""
    listed: int | None = None
    compress_type: int = zipfile.ZIP_DEFLATED

    def header(self) -> bytes:
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(self.dtype)),
                                                   "fortran_order": False, "shape": self.shape})
        return buf.getvalue()


def write_npz(path, arrays: dict, members=(), drop=()) -> str:
    """An .npz (deflated) of `arrays` but `drop`, then `members`, written a MiB at a time."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for name, a in arrays.items():
            if name not in drop:
                with z.open(name + ".npy", "w", force_zip64=True) as w:
                    np.lib.format.write_array(w, np.asanyarray(a), allow_pickle=False)
        for m in members:
            with z.open(m.name + ".npy", "w", force_zip64=True) as w:
                w.write(m.header())
                if isinstance(m.data, bytes):
                    w.write(m.data)
                else:
                    zeros = bytes(MiB)
                    for left in range(m.data, 0, -MiB):
                        w.write(zeros[:min(left, MiB)])
            if m.listed is not None:
                z.filelist[-1].file_size = m.listed   # the directory, written at close, now lies
    return str(path)


def peak_of(function):
    """(the exception `function` raised or None, the peak of allocations while it ran, in bytes)."""
    tracemalloc.start()
    try:
        function()
        error = None
    except Exception as e:  # noqa: BLE001 - returned to the test
        error = e
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return error, peak


def refused(path, *needles) -> str:
    """Load `path`: a one-line CheckpointError saying each needle, allocating at most PEAK_LIMIT."""
    error, peak = peak_of(lambda: load(str(path)))
    assert isinstance(error, CheckpointError), repr(error)
    msg = str(error)
    assert "\n" not in msg and len(msg) < 400, msg
    for needle in needles:
        assert needle.lower() in msg.lower(), msg
    assert peak < PEAK_LIMIT, (peak, msg)
    return msg


@pytest.fixture(scope="module")
def arrays():
    return to_arrays(small_checkpoint())


@pytest.fixture(scope="module")
def bomb(tmp_path_factory, arrays):
    """A valid checkpoint plus a member of 1 GiB of zeros, deflated (about 5 MB on disk)."""
    path = write_npz(tmp_path_factory.mktemp("bomb") / "bomb.npz", arrays, [Member("extra", "uint8", (1 << 30,), 1 << 30)])
    return path


def test_the_archives_built_here_load_when_nothing_is_wrong(tmp_path, arrays):
    # the control for every test below: a deflated archive of the arrays, with a hand-made member that is right
    head = arrays["head.bias"]
    path = write_npz(tmp_path / "ok.npz", arrays, [Member("head.bias", "float32", head.shape, head.tobytes())],
                     drop=["head.bias"])
    error, peak = peak_of(lambda: load(path))
    assert error is None, error
    back = load(path)
    assert back.resumable and back.best_params is not None and set(back.optim_state) > {"avg.head.bias"}
    assert np.array_equal(back.params["head.bias"], head)


def test_a_compressed_gigabyte_is_refused_without_being_read(bomb):
    assert os.path.getsize(bomb) < 10 * MiB
    with zipfile.ZipFile(bomb) as z:
        assert z.getinfo("extra.npy").file_size > 1 << 30    # what np.load would decompress
    refused(bomb, "unexpected key 'extra'", "bomb.npz")


def test_charlm_sample_refuses_the_bomb_in_one_line(bomb, monkeypatch):
    monkeypatch.delenv("CHARLM_CHECKPOINT", raising=False)
    monkeypatch.delenv("CHARLM_DEBUG", raising=False)
    one_line_error(invoke("sample", "-c", bomb), "unexpected key 'extra'")


@pytest.mark.parametrize("shape,dtype", [((200000, 200000), "float32"),     # 149 GiB
                                         ((2 ** 40, 2 ** 40), "float64"),   # its size overflows int64
                                         ((2 ** 62, 2 ** 62, 4), "uint8")])
def test_a_header_claiming_a_huge_shape_is_refused(tmp_path, arrays, shape, dtype):
    data = arrays["head.weight"].tobytes()   # the directory's size is the true one: it disagrees with the header
    path = write_npz(tmp_path / "huge.npz", arrays, [Member("head.weight", dtype, shape, data)], drop=["head.weight"])
    refused(path, "'head.weight'", "zip directory", str(shape))


def test_a_huge_shape_is_refused_even_when_the_directory_agrees(tmp_path, arrays):
    member = Member("head.weight", "float32", (200000, 200000), arrays["head.weight"].tobytes())
    member.listed = len(member.header()) + 200000 * 200000 * 4
    path = write_npz(tmp_path / "agreeing.npz", arrays, [member], drop=["head.weight"])
    with zipfile.ZipFile(path) as z:
        assert z.getinfo("head.weight.npy").file_size == member.listed
    refused(path, "'head.weight' has shape (200000, 200000), expected (10, 8)")
    # the same claim under a name no checkpoint has
    member.name = "extra"
    refused(write_npz(tmp_path / "extra.npz", arrays, [member]), "unexpected key 'extra'")


@pytest.mark.parametrize("change", ["larger", "smaller"])
def test_a_directory_that_lies_about_a_size_is_refused(tmp_path, arrays, change):
    # (40 KB of data: zip itself reads the first 4 KB of a member at once, and checks its CRC if that is all)
    member = Member("head.bias", "float32", (10_000,), bytes(40_000))
    true_size = len(member.header()) + 40_000
    member.listed = true_size + 1000 if change == "larger" else true_size - 8
    path = write_npz(tmp_path / "lying.npz", arrays, [member], drop=["head.bias"])
    refused(path, "'head.bias'", f"{member.listed:,} bytes in the zip directory", f"describes {true_size:,}")


def test_a_stream_longer_than_its_directory_entry_is_read_no_further(tmp_path, arrays):
    # the header and data are right, the directory agrees with them, but 64 MiB of zeros follow in the stream
    bias = arrays["head.bias"]
    member = Member("head.bias", "float32", bias.shape, bias.tobytes() + bytes(64 * MiB))
    member.listed = len(member.header()) + bias.nbytes
    path = write_npz(tmp_path / "long.npz", arrays, [member], drop=["head.bias"])
    refused(path, "'head.bias'", "damaged", "crc")


@pytest.mark.parametrize("extra,needles", [(5000, ["lists 5,0", "members", "4,096"]),
                                           (3000, ["unexpected key 'x"])])
def test_thousands_of_members_are_refused(tmp_path, arrays, extra, needles):
    path = write_npz(tmp_path / "many.npz", arrays, [Member(f"x{i}", "float64", (1,), bytes(8)) for i in range(extra)])
    assert os.path.getsize(path) < 5 * MiB
    refused(path, *needles)


def test_an_over_large_config_is_refused_before_it_is_parsed(tmp_path, arrays):
    padded = str(arrays["config"]) + " " * (2 * MiB)      # valid JSON of 8 MiB as a NumPy string
    path = write_npz(tmp_path / "config.npz", {**arrays, "config": np.array(padded)})
    assert os.path.getsize(path) < 5 * MiB
    refused(path, "'config'", "characters")
    # a claim of 2 GB that the directory agrees with
    member = Member("config", "<U500000000", (), b"")
    member.listed = len(member.header()) + 2_000_000_000
    refused(write_npz(tmp_path / "claim.npz", arrays, [member], drop=["config"]), "'config'", "500,000,000 characters")


@pytest.mark.parametrize("member,needles", [
    (Member("meta", "O", (1,), bytes(8)), ["'meta'", "pickle"]),
    (Member("head.bias", "float32", (10,), bytes(40), compress_type=zipfile.ZIP_BZIP2), ["'head.bias", "compression"]),
    (Member("head.bias", "float32", (-1, 10), b""), ["'head.bias'", "negative"]),
])
def test_members_refused_from_their_header_or_directory_entry(tmp_path, arrays, member, needles):
    path = write_npz(tmp_path / "bad.npz", arrays, [member], drop=[member.name])
    if member.compress_type != zipfile.ZIP_DEFLATED:
        _recompress(path, member.name + ".npy", member.compress_type)
    refused(path, *needles)


def _recompress(path, name, compress_type):
    """Rewrite one member of an archive with another compression method."""
    with zipfile.ZipFile(path) as z:
        contents = [(info.filename, z.read(info)) for info in z.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for filename, data in contents:
            z.writestr(filename, data, compress_type=compress_type if filename == name else zipfile.ZIP_DEFLATED)


def test_a_header_longer_than_numpy_reads_is_refused(tmp_path, arrays):
    path = tmp_path / "long_header.npz"
    write_npz(path, arrays, drop=["head.bias"])
    with zipfile.ZipFile(path, "a") as z:   # a version 2.0 header whose length field claims 4 GB
        z.writestr("head.bias.npy", b"\x93NUMPY\x02\x00" + (2 ** 32 - 1).to_bytes(4, "little") + b"{" * 100)
    refused(path, "'head.bias'", f"{2 ** 32 - 1:,} bytes", f"{HEADER_LIMIT:,}")


# ---------------------------------------------------------------------------
# valid files: other writers, and what loading costs
# ---------------------------------------------------------------------------

def test_checkpoints_written_other_ways_still_load(tmp_path, arrays):
    ck = small_checkpoint()
    with open(tmp_path / "compressed.npz", "wb") as f:
        np.savez_compressed(f, **arrays)
    fortran = dict(arrays, **{"head.weight": np.asfortranarray(arrays["head.weight"])})
    with open(tmp_path / "fortran.npz", "wb") as f:
        np.savez(f, **fortran)
    with zipfile.ZipFile(tmp_path / "fortran.npz") as z, z.open("head.weight.npy") as member:
        np.lib.format.read_magic(member)
        assert np.lib.format.read_array_header_1_0(member)[1]   # stored in Fortran order
    for name in ("compressed.npz", "fortran.npz"):
        back = load(str(tmp_path / name))
        for k, v in ck.params.items():
            assert np.array_equal(back.params[k], v) and back.params[k].flags.c_contiguous, (name, k)


def test_loading_allocates_about_the_size_of_the_model(tmp_path):
    ck = small_checkpoint(hidden=384, layers=2, chars="".join(map(chr, range(33, 127))))
    path = str(tmp_path / "m.npz")
    save(ck, path)
    data_bytes = sum(a.nbytes for a in to_arrays(ck).values())
    assert data_bytes > 20 * MiB and os.path.getsize(path) > data_bytes
    error, peak = peak_of(lambda: load(path))
    assert error is None, error
    assert peak < 1.15 * data_bytes + 4 * MiB, (peak, data_bytes)    # the arrays, once, and small change


def test_the_layout_follows_the_model_parameters(tmp_path, monkeypatch):
    # a parameter the model gains (a backward stack, say) is expected in every group without a second list
    shapes = checkpoint.param_shapes

    def with_backward(arch):
        return {**shapes(arch), "back.layers.0.weight_hh": (3, 4)}
    monkeypatch.setattr(checkpoint, "param_shapes", with_backward)          # the parameters it reads
    monkeypatch.setattr(checkpoint_layout, "param_shapes", with_backward)   # the members it expects
    ck = small_checkpoint()
    names = layout(ck.config, len(ck.vocab), to_arrays(small_checkpoint()))
    for prefix in ("", "optim.m.", "optim.v.", "optim.avg.", "best."):
        assert names[f"{prefix}back.layers.0.weight_hh"].shape == (3, 4)
    extra = np.ones((3, 4), np.float32)
    ck.params["back.layers.0.weight_hh"] = ck.best_params["back.layers.0.weight_hh"] = extra
    for slot in ("m", "v", "avg"):
        ck.optim_state[f"{slot}.back.layers.0.weight_hh"] = extra
    save(ck, str(tmp_path / "b.npz"))
    back = load(str(tmp_path / "b.npz"))
    assert np.array_equal(back.best_params["back.layers.0.weight_hh"], extra)
    assert np.array_equal(back.optim_state["avg.back.layers.0.weight_hh"], extra)
    arrays = to_arrays(ck)
    del arrays["optim.v.back.layers.0.weight_hh"]
    with pytest.raises(CheckpointError, match="missing key 'optim.v.back.layers.0.weight_hh'"):
        checkpoint.from_arrays(arrays)


# ---------------------------------------------------------------------------
# the other inputs: a vocabulary file and a YAML config are bounded before parsing
# ---------------------------------------------------------------------------

def test_an_over_large_vocabulary_file_is_refused_before_parsing(tmp_path, monkeypatch):
    monkeypatch.setattr("charlm.vocab.MAX_FILE_BYTES", MiB)
    path = tmp_path / "v.json"
    path.write_bytes(b"[" * (2 * MiB))    # if it were parsed: "nested too deeply"
    with pytest.raises(VocabError) as e:
        load_vocab(str(path))
    assert "larger than 1 MiB" in str(e.value) and "\n" not in str(e.value)


def test_an_over_large_yaml_config_is_refused_before_parsing(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("hidden_size: 8\n" + "#" * (1 << 20) + "\n")
    with pytest.raises(ConfigError) as e:
        load_yaml(str(path))
    assert "larger than 1 MiB" in str(e.value) and "\n" not in str(e.value)
    path.write_text("hidden_size: 8\n" + "#" * 1000 + "\n")   # the control: a small file loads
    assert load_yaml(str(path)) == {"hidden_size": 8}
