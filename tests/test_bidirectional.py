"""The bidirectional model: gradients against finite differences and against the float64 reference,
that no position sees itself, padding, training windows, training and exact resume, the checkpoint."""

import dataclasses

import numpy as np
import pytest

from charlm import bidirectional as bd
from charlm import checkpoint, model
from charlm.reference import bidirectional as ref
from charlm.config import Config
from charlm.errors import CharlmError
from charlm.dataset import load_corpus
from charlm.run import check_resume
from charlm.train import train
from charlm.vocab import EOS_ID

CELLS = [("rnn", "tanh"), ("rnn", "relu"), ("gru", "tanh"), ("lstm", "tanh")]


def problem(cell, activation, layers, reset=False, V=5, H=3, T=6, B=2, seed=0):
    """A float64 bidirectional model with weights moved off their initial values, a batch, a loss mask."""
    arch = model.Arch(cell, V, H, layers, activation, reset, bidirectional=True)
    rng = np.random.default_rng(seed)
    params = model.init_params(arch, rng, "float64")
    for k in params:
        params[k] += rng.normal(0.0, 0.2, params[k].shape)
    seq = rng.integers(0, V, (T, B))
    if reset:
        seq[2, 0] = seq[4, 1] = EOS_ID
    mask = (rng.random((T, B)) < 0.8).astype(np.float64)
    return arch, params, seq, mask


def loss_of(params, arch, seq, mask):
    logits, _ = bd.forward(params, arch, seq)
    return model.cross_entropy(logits, seq, mask)[0]


def max_relative_difference(params, arch, seq, mask, grads, eps=1e-6):
    """The largest ‖numeric − analytic‖ / (‖numeric‖ + ‖analytic‖) over the parameter arrays (every entry)."""
    worst = 0.0
    for name, p in params.items():
        numeric = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + eps
            up = loss_of(params, arch, seq, mask)
            p[i] = old - eps
            down = loss_of(params, arch, seq, mask)
            p[i] = old
            numeric[i] = (up - down) / (2 * eps)
        diff = np.linalg.norm(numeric - grads[name]) / (np.linalg.norm(numeric) + np.linalg.norm(grads[name]) + 1e-30)
        worst = max(worst, diff)
    return worst


@pytest.mark.parametrize("cell,activation", CELLS)
@pytest.mark.parametrize("layers", [1, 2])
def test_gradients_match_finite_differences_for_every_parameter_of_both_directions(cell, activation, layers):
    arch, params, seq, mask = problem(cell, activation, layers, reset=layers == 2)
    loss, grads = bd.loss_and_grads(params, arch, seq, seq, mask)
    assert set(grads) == set(params) and any(k.startswith("backward.") for k in grads)
    assert all(np.any(g != 0) for k, g in grads.items() if not k.endswith("weight_ih") or "layers.0" not in k)
    assert max_relative_difference(params, arch, seq, mask, grads) < 1e-6


def test_negative_control_a_backward_stack_gradient_left_in_reading_order_fails_the_check():
    arch, params, seq, mask = problem("gru", "tanh", 1)
    logits, (top, idx, cache_f, cache_b) = bd.forward(params, arch, seq)
    _, dlogits, _ = model.cross_entropy(logits, seq, mask)
    identity = np.broadcast_to(np.arange(len(seq))[:, None], idx.shape)
    wrong = bd.backward(params, arch, dlogits, (top, identity, cache_f, cache_b))   # the outputs not turned around
    assert max_relative_difference(params, arch, seq, mask, wrong) > 1e-2
    right = bd.backward(params, arch, dlogits, (top, idx, cache_f, cache_b))
    assert max_relative_difference(params, arch, seq, mask, right) < 1e-6


@pytest.mark.parametrize("cell,activation", CELLS)
@pytest.mark.parametrize("layers,reset", [(1, False), (2, False), (2, True)])
def test_fast_path_agrees_with_the_float64_reference(cell, activation, layers, reset):
    arch, params, seq, mask = problem(cell, activation, layers, reset, V=6, H=4, T=7, B=3, seed=1)
    logits, _ = bd.forward(params, arch, seq)
    loss, grads = bd.loss_and_grads(params, arch, seq, seq, mask)
    count = mask.sum()
    J, G = 0.0, {k: np.zeros_like(v) for k, v in params.items()}
    for b in range(seq.shape[1]):
        ref_logits, _ = ref.forward(params, arch, seq[:, b])
        np.testing.assert_allclose(logits[:, b], ref_logits, rtol=1e-10, atol=1e-12)
        j, g = ref.loss_and_grads(params, arch, seq[:, b], mask[:, b])
        J += j
        for k in G:
            G[k] += g[k]
    assert loss == pytest.approx(J / count, rel=1e-12)
    for k in G:
        np.testing.assert_allclose(grads[k], G[k] / count, rtol=1e-8, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_no_position_sees_its_own_character_but_each_sees_both_sides(cell):
    arch, params, seq, _ = problem(cell, "tanh", 2, T=7, B=1)
    logits, _ = bd.forward(params, arch, seq)
    t = 3
    changed = seq.copy()
    changed[t, 0] = (seq[t, 0] + 1) % arch.vocab_size
    other, _ = bd.forward(params, arch, changed)
    np.testing.assert_array_equal(other[t], logits[t])                     # x<t> never reaches ŷ<t>
    assert not np.allclose(other[t - 1], logits[t - 1])                     # the backward stack reads it
    assert not np.allclose(other[t + 1], logits[t + 1])                     # the forward stack reads it


def test_padded_columns_give_the_numbers_of_each_sequence_alone():
    arch, params, _, _ = problem("lstm", "tanh", 2, V=7, H=4)
    rng = np.random.default_rng(5)
    seqs = [rng.integers(0, 7, n) for n in (5, 1, 8, 3, 0)]
    together = bd.log_probs(params, arch, seqs, max_tokens=16)
    for q, lp in zip(seqs, together):
        assert lp.shape == (len(q), 7)
        if len(q):
            alone, _ = bd.forward(params, arch, q[:, None])
            np.testing.assert_allclose(lp, model.log_softmax(alone[:, 0]), rtol=1e-12, atol=1e-12)


def test_the_reading_order_turns_each_column_around_and_is_its_own_inverse():
    idx = bd.reading_order(5, 3, [5, 2, 0])
    assert idx[:, 0].tolist() == [4, 3, 2, 1, 0]
    assert idx[:, 1].tolist() == [1, 0, 2, 3, 4]
    assert idx[:, 2].tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(np.take_along_axis(idx, idx, 0), np.broadcast_to(np.arange(5)[:, None], (5, 3)))


def test_window_mask_counts_the_characters_of_whole_lines_only():
    # stream: "ab⏎cde⏎f⏎gh" with ⏎ = <EOS> (0); ids 2.. are characters
    ids = np.array([2, 3, 0, 4, 5, 6, 0, 7, 0, 8, 9])
    pos = np.array([[1, 2, 3, 4, 5, 6, 7, 8, 9]]).T          # one window starting inside "ab"
    mask = bd.window_mask(ids, pos, np.float64)[:, 0]
    # "b" (cut), ⏎, c d e, ⏎, f, ⏎, g (cut): only c d e and f count
    assert mask.tolist() == [0, 0, 1, 1, 1, 0, 1, 0, 0]
    whole = bd.window_mask(ids, np.arange(0, 9)[:, None], np.float64)[:, 0]   # from the stream's start: "ab" counts
    assert whole.tolist() == [1, 1, 0, 1, 1, 1, 0, 1, 0]


def test_param_shapes_is_the_one_place_of_the_keys():
    arch = model.Arch("gru", 9, 4, 2, bidirectional=True)
    shapes = model.param_shapes(arch)
    uni = model.param_shapes(dataclasses.replace(arch, bidirectional=False))
    assert shapes["head.weight"] == (9, 8) and uni["head.weight"] == (9, 4)
    assert {k.removeprefix("backward.") for k in shapes if k.startswith("backward.")} == \
        {k for k in uni if k.startswith("layers.")}
    params = model.init_params(arch, np.random.default_rng(0))
    assert {k: v.shape for k, v in params.items()} == shapes
    # the unidirectional initialisation is unchanged by the bidirectional option
    a = model.init_params(dataclasses.replace(arch, bidirectional=False), np.random.default_rng(0))
    b = model.init_params(model.Arch("gru", 9, 4, 2), np.random.default_rng(0))
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_refuse_names_check():
    with pytest.raises(CharlmError, match="bidirectional.*charlm check"):
        bd.refuse(model.Arch("gru", 5, 3, 1, bidirectional=True), "sample")
    bd.refuse(model.Arch("gru", 5, 3, 1), "score")        # a left-to-right model passes


# ---------------------------------------------------------------------------
# training and the checkpoint
# ---------------------------------------------------------------------------

PROSE = ("the cat sat on the mat.\nwe ate a pie at tea.\na bird in the hand\n"
         "is worth two in the bush!\n\nzebras graze; quietly.\n") * 3
ITEMS = "\n".join(["anna", "bob", "carla", "dave", "eve", "frank", "gina", "hal"] * 6) + "\n"


def config(**kw) -> Config:
    base = dict(cell="gru", hidden_size=8, num_layers=2, seq_len=8, batch_size=4, steps=16, lr=5e-3,
                warmup_steps=2, val_fraction=0.1, eval_every=5, save_every=0, seed=3, bidirectional=True)
    base.update(kw)
    return Config(**base).validate()


def run(cfg, text, **kw):
    cfg = dataclasses.replace(cfg)
    return train(cfg, load_corpus(text.encode(), cfg, name="c.txt"), **kw)


@pytest.mark.parametrize("text,line_state", [(PROSE, "carry"), (ITEMS, "reset")])
def test_training_lowers_the_loss_and_saves_a_loadable_bidirectional_checkpoint(tmp_path, text, line_state):
    cfg = config(steps=40, dropout=0.1, char_dropout=0.05, ngram=0)
    ck, ended = run(cfg, text)
    assert ended == "done" and ck.config.bidirectional and ck.config.ngram == 0 and ck.ngram is None
    assert ck.backward_ngram is None and ck.combine_weights == {} and ck.mixture("best") is None
    assert ck.config.line_state == line_state
    history = ck.train_state["history"]
    assert history[-1]["val_bpc"] < history[0]["val_bpc"]
    path = str(tmp_path / "bi.npz")
    checkpoint.save(ck, path)
    loaded = checkpoint.load(path)
    assert loaded.arch.bidirectional and loaded.params["head.weight"].shape == (len(loaded.vocab), 16)
    assert set(loaded.params) == set(model.param_shapes(loaded.arch))


def test_interrupted_and_resumed_bidirectional_run_equals_one_run(tmp_path):
    cfg = config(dropout=0.2, char_dropout=0.1)
    whole, _ = run(cfg, PROSE)
    steps = []
    first, ended = run(cfg, PROSE, should_stop=lambda: len(steps) >= 7,
                       on_event=lambda kind, info: steps.append(1) if kind == "step" else None)
    assert ended == "interrupted"
    path = str(tmp_path / "half.npz")
    checkpoint.save(first, path)
    loaded = checkpoint.load(path)
    cfg2 = dataclasses.replace(loaded.config)
    corpus = load_corpus(PROSE.encode(), cfg2, name="c.txt")
    check_resume(cfg2, loaded, corpus, given=set())
    second, ended = train(cfg2, corpus, resume=loaded)
    assert ended == "done"
    for k in whole.params:
        assert whole.params[k].tobytes() == second.params[k].tobytes(), k
    assert whole.train_state["rng"] == second.train_state["rng"]


def test_resume_refuses_to_change_direction(tmp_path):
    ck, _ = run(config(steps=3), PROSE)
    cfg = dataclasses.replace(ck.config, bidirectional=False)
    from charlm.errors import ConfigError

    with pytest.raises(ConfigError, match="bidirectional"):
        check_resume(cfg, ck, load_corpus(PROSE.encode(), cfg, name="c.txt"), given=set())


def test_a_checkpoint_config_without_the_key_loads_as_left_to_right(tmp_path):
    cfg = Config(hidden_size=4, num_layers=1, seq_len=4, batch_size=2, steps=2, ngram=0, eval_every=0).validate()
    ck, _ = run(cfg, PROSE)
    arrays = checkpoint.to_arrays(ck)
    import json

    conf = json.loads(str(arrays["config"]))
    del conf["bidirectional"]                                    # as files written before the option existed
    arrays["config"] = np.array(json.dumps(conf))
    loaded = checkpoint.from_arrays(arrays)
    assert not loaded.config.bidirectional and not loaded.arch.bidirectional


def test_config_bidirectional_must_be_a_boolean():
    from charlm.errors import ConfigError

    with pytest.raises(ConfigError, match="bidirectional must be true or false"):
        Config(bidirectional="yes").validate()
    assert Config(bidirectional=True, ngram=5).validate().ngram == 5     # a forward and a backward 5-gram (combine)
