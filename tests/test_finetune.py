"""Fine-tuning (charlm.finetune, `train --init-from`): the base's weights and architecture, a fresh run,
the vocabulary kept or extended, and meta.init_from."""

import json

import numpy as np
import pytest

from charlm import checkpoint as ckpt_io
from charlm import finetune, model, ngram
from charlm.config import Config
from charlm.errors import CheckpointError, ConfigError
from charlm.model import Arch
from charlm.dataset import load_corpus
from charlm.vocab import Vocab

from conftest import invoke, ok, one_line_error

BASE_VOCAB = Vocab(("<EOS>", "<UNK>", " ", "a", "m", "z"), (3, 0, 1, 2, 3, 4))


def test_extended_vocab_keeps_code_point_order_and_every_base_token():
    counts = np.zeros(200, dtype=np.int64)
    for ch, n in (("a", 5), ("b", 2), ("~", 1), ("z", 1), ("\n", 4)):
        counts[ord(ch)] = n
    v = finetune.extended_vocab(BASE_VOCAB, counts)
    assert v.tokens == ("<EOS>", "<UNK>", " ", "a", "b", "m", "z", "~")
    assert v.counts[v.tokens.index("b")] == 2 and v.counts[v.tokens.index("m")] == 3   # new: the corpus's; old: the base's
    assert finetune.extended_vocab(BASE_VOCAB, counts, min_count=2).tokens == ("<EOS>", "<UNK>", " ", "a", "b", "m", "z")
    index = finetune.token_index(BASE_VOCAB, v)
    assert [v.tokens[i] for i in index] == list(BASE_VOCAB.tokens)
    with pytest.raises(ConfigError):
        finetune.token_index(v, BASE_VOCAB)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_extended_model_predicts_as_the_base_up_to_the_new_characters_mass(cell):
    base_arch = Arch(cell, len(BASE_VOCAB), 8, 2)
    base_params = model.init_params(base_arch, np.random.default_rng(0), "float64")
    base_params["head.bias"] += np.random.default_rng(1).normal(0, 1, len(BASE_VOCAB))   # a trained-looking head
    counts = np.zeros(200, dtype=np.int64)
    counts[[ord("b"), ord("~")]] = 1
    vocab = finetune.extended_vocab(BASE_VOCAB, counts)
    arch = Arch(cell, len(vocab), 8, 2)
    fresh = model.init_params(arch, np.random.default_rng(5), "float64")
    init = finetune.Start(base_params, BASE_VOCAB, {})
    params = finetune.start_params(fresh, init, vocab)
    new = [vocab.tokens.index("b"), vocab.tokens.index("~")]
    # the new rows are a fresh model's: U(±1) input column, U(±1/√H) head row, zero bias
    assert np.array_equal(params["layers.0.weight_ih"][:, new], fresh["layers.0.weight_ih"][:, new])
    assert np.array_equal(params["head.weight"][new], fresh["head.weight"][new])
    assert np.all(params["head.bias"][new] == 0)
    assert np.array_equal(params["layers.1.weight_hh"], base_params["layers.1.weight_hh"])
    text = "am z\nmaza a"
    old_ids = BASE_VOCAB.encode(text).astype(np.intp)[:, None]
    new_ids = vocab.encode(text).astype(np.intp)[:, None]
    zero = model.zero_state(base_arch, 1, np.float64)
    lp_old = model.log_softmax(model.forward(base_params, base_arch, old_ids, zero)[0][:, 0])
    lp_new = model.log_softmax(model.forward(params, arch, new_ids, zero)[0][:, 0])
    index = finetune.token_index(BASE_VOCAB, vocab)
    shift = lp_new[:, index] - lp_old                  # log P'(c) − log P(c), every old c, every position
    assert np.allclose(shift, shift[:, :1], atol=1e-12)   # one common factor per position ...
    new_mass = np.exp(lp_new[:, new]).sum(axis=1)
    assert np.allclose(np.exp(shift[:, 0]), 1 - new_mass, atol=1e-12)   # ... which is 1 − the new characters' mass
    assert np.all(new_mass > 1e-4)                     # (a control: the new characters do take some)


def test_adopt_arch_takes_the_base_and_names_a_contradicting_option():
    base = ckpt_io.Checkpoint(Config(cell="lstm", hidden_size=32, num_layers=3, dtype="float64",
                                     dropout=0.0, char_dropout=0.0, eval_every=0, line_state="carry"),
                              BASE_VOCAB, {})
    cfg = Config(hidden_size=64, lr=0.01).validate()
    finetune.adopt_arch(cfg, base, {"lr"}, "base.npz")
    assert (cfg.cell, cfg.hidden_size, cfg.num_layers, cfg.dtype, cfg.lr) == ("lstm", 32, 3, "float64", 0.01)
    cfg = Config(hidden_size=64).validate()
    with pytest.raises(ConfigError, match="--hidden-size 64 contradicts"):
        finetune.adopt_arch(cfg, base, {"hidden_size"}, "base.npz")
    cfg = Config(cell="lstm").validate()
    finetune.adopt_arch(cfg, base, {"cell"}, "base.npz")   # the same value given: fine


def test_load_base_errors_name_init_from(tmp_path):
    with pytest.raises(CheckpointError, match="^--init-from: checkpoint not found"):
        finetune.load_base(str(tmp_path / "nope.npz"))


# ---------------------------------------------------------------------------
# through train (the command line)
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def base(trained):
    """The module's tiny trained model (conftest.trained) as a base, and a new corpus with characters it lacks."""
    d, _, ck = trained
    new = d / "new.txt"
    new.write_text("Zoe\nXavier\nYves\nanna\nbob\n" * 30, encoding="utf-8")   # Z, X, Y, v, ... are new
    return d, ck, new


def test_init_from_starts_at_the_base_weights_with_a_fresh_optimizer(base, tmp_path):
    d, ck, new = base
    out = tmp_path / "ft.npz"
    r = ok(invoke("train", new, "--init-from", ck, "--steps", "1", "--lr", "1e-30", "--batch-size", "4",
                  "--seq-len", "8", "-c", out))
    warning = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    unknown = sum(new.read_text().count(c) for c in set(new.read_text()) - set(ckpt_io.load(str(ck)).vocab.tokens) - {"\n"})
    assert len(warning) == 1 and f"{unknown:,} characters" in warning[0] and "--extend-vocab" in warning[0]
    b, f = ckpt_io.load(str(ck)), ckpt_io.load(str(out))
    assert f.vocab.tokens == b.vocab.tokens and f.arch == b.arch
    for name, w in b.weights("best").items():                # one step at lr 1e-30: still the base's weights
        assert np.allclose(f.params[name], w, atol=1e-6), name
    assert f.optim_state["step"] == 1 and f.train_state["step"] == 1     # a fresh optimizer and run
    assert f.meta["init_from"] == {"path": str(ck), "corpus": b.meta["corpus"]["name"], "steps": b.meta["steps"],
                                   "vocab_size": len(b.vocab), "added_chars": 0}
    assert f.meta["corpus"]["name"] == str(new)
    # the n-gram is counted on the new corpus
    data = load_corpus(str(new), f.config, f.vocab)
    counted = ngram.fit(np.concatenate([data.train_ids, data.val_ids]), len(f.vocab), f.config.ngram,
                        f.arch.reset_at_eos)
    assert all(np.array_equal(a, c) for a, c in zip(f.ngram.keys, counted.keys))
    assert "fine-tuned" in ok(invoke("info", out)).stdout
    assert json.loads(ok(invoke("info", out, "--json")).stdout)["init_from"]["path"] == str(ck)
    # resuming the fine-tuned run keeps where it started from
    ok(invoke("train", new, "--steps", "2", "--resume", "-c", out))
    assert ckpt_io.load(str(out)).meta["init_from"]["path"] == str(ck)


def test_extend_vocab_adds_the_new_characters(base, tmp_path):
    d, ck, new = base
    out = tmp_path / "ft.npz"
    r = ok(invoke("train", new, "--init-from", ck, "--extend-vocab", "--steps", "2", "--batch-size", "4",
                  "--seq-len", "8", "-c", out))
    assert "warning" not in r.stderr
    b, f = ckpt_io.load(str(ck)), ckpt_io.load(str(out))
    added = sorted(set(new.read_text()) - set(b.vocab.tokens) - {"\n"})
    assert set(f.vocab.tokens) == set(b.vocab.tokens) | set(added)
    assert f.meta["init_from"]["added_chars"] == len(added) > 0
    assert f.params["head.weight"].shape[0] == len(b.vocab) + len(added)
    s = json.loads(ok(invoke("score", "-c", out, "Xavier", "--json")).stdout)
    assert s["num_unk"] == 0


@pytest.mark.parametrize("args, needle", [
    (["--init-from", "{d}/nope.npz"], "--init-from: checkpoint not found"),
    (["--init-from", "{new}"], "not a charlm checkpoint"),
    (["--init-from", "{ck}", "--hidden-size", "99"], "--hidden-size 99 contradicts"),
    (["--init-from", "{ck}", "--cell", "lstm"], "--cell lstm contradicts"),
    (["--init-from", "{ck}", "--resume"], "--init-from starts a new run"),
    (["--init-from", "{ck}", "--vocab", "{d}/v.json"], "leave --vocab out"),
    (["--extend-vocab"], "--extend-vocab extends"),
])
def test_init_from_bad_input_is_one_line(base, tmp_path, args, needle):
    d, ck, new = base
    args = [a.format(d=d, ck=ck, new=new) for a in args]
    one_line_error(invoke("train", new, *args, "--steps", "1", "-c", tmp_path / "out.npz"), needle)


def test_checkpoint_validation_accepts_init_from_and_refuses_a_damaged_one(base):
    d, ck, new = base
    arrays = ckpt_io.read_arrays(str(ck))
    assert "init_from" not in ckpt_io.from_arrays(arrays).meta          # a checkpoint from before still loads
    meta = json.loads(str(arrays["meta"]))
    meta["init_from"] = {"path": "b.npz", "corpus": None, "steps": 3, "vocab_size": 9, "added_chars": 0}
    arrays["meta"] = np.array(json.dumps(meta))
    assert ckpt_io.from_arrays(arrays).meta["init_from"]["steps"] == 3
    meta["init_from"]["steps"] = -1
    arrays["meta"] = np.array(json.dumps(meta))
    with pytest.raises(CheckpointError, match="init_from.steps"):
        ckpt_io.from_arrays(arrays)
    meta["init_from"] = "b.npz"
    arrays["meta"] = np.array(json.dumps(meta))
    with pytest.raises(CheckpointError, match="init_from"):
        ckpt_io.from_arrays(arrays)



def test_the_benchmarks_default_target_is_stdlib_prose_within_its_size():
    from charlm.bench.finetune import stdlib_prose

    text = stdlib_prose(20_000)
    assert 10_000 < len(text) <= 20_000 + 1 and text == stdlib_prose(20_000)
    assert "\n\n" in text and text.endswith("\n")
