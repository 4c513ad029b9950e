"""The model's exact equations, against the plain per-step reference (charlm.reference)."""

import math
import time

import numpy as np
import pytest

from charlm import inference, model, reference
from charlm.config import Config
from charlm.model import Arch, init_params, param_shapes
from charlm.score import document_log_prob
from charlm.dataset import Corpus
from charlm.train import train
from charlm.vocab import build_vocab, code_points, count_code_points


def sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def one_hot(i, V):
    v = np.zeros(V)
    v[i] = 1.0
    return v


def ref_forward(params, arch, tokens, state0):
    """Logits (T, V) of one sequence and the final state, from the plain reference (charlm.reference)."""
    s0 = [tuple(s[None] for s in layer) for layer in state0]                 # a batch of one
    logits, final, _ = reference.forward(reference.from_charlm(params, arch.cell), arch.cell, tokens[:, None], s0,
                                         arch.activation, arch.reset_at_eos)
    return logits[:, 0], [tuple(s[0] for s in layer) for layer in final]


CASES = [("rnn", "tanh"), ("rnn", "relu"), ("gru", "tanh"), ("lstm", "tanh")]


def random_setup(cell, activation, layers, V=7, H=5, T=6, B=3, seed=0):
    rng = np.random.default_rng(seed)
    arch = Arch(cell, V, H, layers, activation)
    params = {k: rng.standard_normal(s) * 0.6 for k, s in param_shapes(arch).items()}
    x = rng.integers(0, V, size=(T, B))
    state0 = [tuple(rng.standard_normal((B, H)) * 0.5 for _ in s) for s in model.zero_state(arch, B, np.float64)]
    return arch, params, x, state0


@pytest.mark.parametrize("cell,activation", CASES)
@pytest.mark.parametrize("layers", [1, 2])
def test_forward_matches_the_reference_equations(cell, activation, layers):
    arch, params, x, state0 = random_setup(cell, activation, layers)
    logits, final, _ = model.forward(params, arch, x, state0)
    T, B = x.shape
    assert logits.shape == (T, B, arch.vocab_size)
    for b in range(B):
        s0 = [tuple(s[b] for s in layer) for layer in state0]
        ref_logits, ref_state = ref_forward(params, arch, x[:, b], s0)
        np.testing.assert_allclose(logits[:, b], ref_logits, rtol=1e-12, atol=1e-12)
        for l in range(layers):
            assert len(final[l]) == len(ref_state[l])
            for k in range(len(final[l])):
                np.testing.assert_allclose(final[l][k][b], ref_state[l][k], rtol=1e-12, atol=1e-12)


def test_reference_detects_a_pytorch_style_gru():
    """Negative control: the reset gate applied after the matmul gives other numbers."""
    arch, params, x, state0 = random_setup("gru", "tanh", 1, seed=3)
    logits, _, _ = model.forward(params, arch, x, state0)
    H = arch.hidden_size
    W_ih, W_hh, b = params["layers.0.weight_ih"], params["layers.0.weight_hh"], params["layers.0.bias"]
    h = state0[0][0][0]
    xv = one_hot(x[0, 0], arch.vocab_size)
    r = sig(W_ih[:H] @ xv + W_hh[:H] @ h + b[:H])
    z = sig(W_ih[H:2 * H] @ xv + W_hh[H:2 * H] @ h + b[H:2 * H])
    n_after = np.tanh(W_ih[2 * H:] @ xv + r * (W_hh[2 * H:] @ h) + b[2 * H:])
    h_after = (1 - z) * n_after + z * h
    wrong = params["head.weight"] @ h_after + params["head.bias"]
    assert not np.allclose(logits[0, 0], wrong, atol=1e-6)


def test_lstm_gate_order_is_i_f_g_o():
    """With W_hh = 0 and a zero state, each gate can be driven by its own bias block."""
    V, H = 3, 2
    arch = Arch("lstm", V, H, 1)
    params = {k: np.zeros(s) for k, s in param_shapes(arch).items()}
    params["head.weight"] = np.eye(V, H)
    bias = params["layers.0.bias"]
    bias[:H] = 100.0         # i: open
    bias[H:2 * H] = -100.0   # f: closed
    bias[2 * H:3 * H] = 0.5  # g
    bias[3 * H:] = 100.0     # o: open
    state = [(np.full((1, H), 9.0), np.full((1, H), 9.0))]
    _, final, _ = model.forward(params, arch, np.zeros((1, 1), dtype=np.intp), state)
    h, c = final[0]
    np.testing.assert_allclose(c, np.tanh(0.5), rtol=1e-12)  # old c forgotten, c = tanh(g)
    np.testing.assert_allclose(h, np.tanh(np.tanh(0.5)), rtol=1e-12)


@pytest.mark.parametrize("cell,activation", CASES)
@pytest.mark.parametrize("layers", [1, 2])
def test_step_agrees_with_forward(cell, activation, layers):
    arch, params, x, state0 = random_setup(cell, activation, layers, seed=5)
    logits, final, _ = model.forward(params, arch, x, state0)
    state = state0
    for t in range(x.shape[0]):
        step_logits, state = inference.step(params, arch, x[t], state)
        np.testing.assert_allclose(step_logits, logits[t], rtol=1e-12, atol=1e-12)
    for l in range(layers):
        for a, b in zip(state[l], final[l]):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cell,activation", CASES)
@pytest.mark.parametrize("layers", [1, 3])
def test_parameter_shapes(cell, activation, layers):
    V, H = 11, 6
    G = {"rnn": 1, "gru": 3, "lstm": 4}[cell]
    arch = Arch(cell, V, H, layers, activation)
    params = init_params(arch, np.random.default_rng(0), dtype="float64")
    expected = {}
    for l in range(layers):
        expected[f"layers.{l}.weight_ih"] = (G * H, V if l == 0 else H)
        expected[f"layers.{l}.weight_hh"] = (G * H, H)
        expected[f"layers.{l}.bias"] = (G * H,)
    expected["head.weight"] = (V, H)
    expected["head.bias"] = (V,)
    assert {k: v.shape for k, v in params.items()} == expected
    assert all(v.dtype == np.float64 for v in params.values())
    assert model.num_params(params) == sum(int(np.prod(s)) for s in expected.values())
    p32 = init_params(arch, np.random.default_rng(0))
    assert all(v.dtype == np.float32 for v in p32.values())


def test_init_is_reproducible_and_seed_dependent():
    arch = Arch("lstm", 9, 8, 2)
    a = init_params(arch, np.random.default_rng(1))
    b = init_params(arch, np.random.default_rng(1))
    c = init_params(arch, np.random.default_rng(2))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["layers.0.weight_ih"], c["layers.0.weight_ih"])


@pytest.mark.parametrize("cell,activation", CASES)
@pytest.mark.parametrize("layers", [1, 2])
def test_initial_loss_is_close_to_ln_v(cell, activation, layers):
    """A fresh model predicts almost uniformly: the expected loss of a random
    target, -mean(log p), is within ~0.1 nats of ln V (the LSTM sits closest
    to the bound: its h is the largest at init, logit variance ≈ E[h²]/3)."""
    V, H, T, B = 40, 32, 64, 8
    arch = Arch(cell, V, H, layers, activation)
    rng = np.random.default_rng(11)
    params = init_params(arch, rng, dtype="float64")
    x = rng.integers(0, V, size=(T, B))
    logits, _, _ = model.forward(params, arch, x, model.zero_state(arch, B, np.float64))
    expected_loss = -model.log_softmax(logits).mean()
    assert abs(expected_loss - math.log(V)) < 0.12, expected_loss - math.log(V)
    y = rng.integers(0, V, size=(T, B))  # and the loss of actual random targets
    loss, _, _ = model.cross_entropy(logits, y)
    assert abs(loss - math.log(V)) < 0.2, loss - math.log(V)


def test_cross_entropy_and_log_softmax():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((3, 2, 5)) * 3
    y = rng.integers(0, 5, size=(3, 2))
    ref = -np.mean([logits[t, b, y[t, b]] - math.log(np.exp(logits[t, b]).sum())
                    for t in range(3) for b in range(2)])
    loss, dlogits, count = model.cross_entropy(logits, y)
    assert count == 6 and abs(loss - ref) < 1e-12
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    onehot = np.eye(5)[y]
    np.testing.assert_allclose(dlogits, (p - onehot) / 6, atol=1e-14)
    # a masked position neither counts nor gets a gradient
    mask = np.ones((3, 2))
    mask[2, 1] = 0
    loss_m, d_m, count_m = model.cross_entropy(logits, y, mask)
    assert count_m == 5
    assert np.all(d_m[2, 1] == 0)
    # stable for huge logits
    big = np.array([[[1e300, 0.0, -1e300]]])
    lp = model.log_softmax(big)
    assert np.all(np.isfinite(lp)) and lp[0, 0, 0] == 0.0 and lp[0, 0, 1] == -1e300


def corpus_of(text):
    vocab = build_vocab(count_code_points(code_points(text)))
    ids = vocab.encode(text)
    return Corpus(vocab, ids, ids[:0], {"name": "test", "fingerprint": "x"})


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_training_on_a_tiny_corpus_drives_the_loss_down(cell):
    text = "the quick brown fox jumps over the lazy dog.\n" * 20
    corpus = corpus_of(text)
    V = len(corpus.vocab)
    cfg = Config(cell=cell, hidden_size=32, num_layers=1, seq_len=32, batch_size=8, steps=300, lr=1e-2,
                 warmup_steps=10, val_fraction=0.0, eval_every=0, save_every=0, dtype="float32", seed=0).validate()
    t0 = time.perf_counter()
    ckpt, ended = train(cfg, corpus)
    elapsed = time.perf_counter() - t0
    assert ended == "done" and ckpt.train_state["step"] == 300
    log_prob, n = document_log_prob(ckpt.params, ckpt.arch, corpus.train_ids)
    nats = -log_prob / n
    assert nats < 0.3 * math.log(V), (nats, math.log(V))
    assert elapsed < 10


@pytest.mark.parametrize("V", [7, 300])
def test_lookup_gradient_is_the_scatter_add_of_the_rows(V):
    """Both ways of computing dW_ih (one-hot product for small V, sort + reduceat for large V)."""
    from charlm.model import lookup_gradient

    rng = np.random.default_rng(V)
    ids = rng.integers(0, V, size=(6, 5))
    ids[0, 0] = V - 1
    dgx = rng.standard_normal((6, 5, 8))
    expected = np.zeros((8, V))
    for (t, b), v in np.ndenumerate(ids):
        expected[:, v] += dgx[t, b]
    np.testing.assert_allclose(lookup_gradient(ids, dgx, V), expected, rtol=1e-12, atol=1e-12)


def test_drop_characters_replaces_inputs_by_unk_but_never_eos():
    from charlm.vocab import EOS_ID, UNK_ID
    rng = np.random.default_rng(0)
    x = rng.integers(0, 30, size=(200, 50)).astype(np.uint8)
    assert model.drop_characters(x, 0.0, rng) is x
    y = model.drop_characters(x, 0.3, np.random.default_rng(1))
    assert y.dtype == x.dtype and y.shape == x.shape
    changed = y != x
    assert np.all(y[changed] == UNK_ID)
    assert np.all(y[x == EOS_ID] == EOS_ID)
    droppable = (x != EOS_ID) & (x != UNK_ID)
    assert abs(changed[droppable].mean() - 0.3) < 0.02
    assert np.array_equal(y, model.drop_characters(x, 0.3, np.random.default_rng(1)))  # the rng decides


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("reset", [False, True])
@pytest.mark.parametrize("onehot_limit", [model.ONEHOT_VOCAB, 0])   # 0: V = 7 > H = 5 looks layer 0's input up
def test_inference_forward_equals_the_training_forward(cell, reset, onehot_limit, monkeypatch):
    """`infer` (feature-major, no cache) computes the same logits and final states as `forward`."""
    from charlm.model import forward
    from charlm.inference import infer

    monkeypatch.setattr(model, "ONEHOT_VOCAB", onehot_limit)
    arch = Arch(cell, 7, 5, 3, reset_at_eos=reset)
    params = init_params(arch, np.random.default_rng(1), "float64")
    rng = np.random.default_rng(2)
    x = rng.integers(0, 7, size=(9, 4))
    state = [tuple(rng.standard_normal((4, 5)) for _ in s) for s in model.zero_state(arch, 4, np.float64)]
    logits, final, _ = forward(params, arch, x, state)
    logits_fm, final_fm = infer(params, arch, x, state)
    np.testing.assert_allclose(np.swapaxes(logits_fm, 1, 2), logits, rtol=1e-12, atol=1e-12)
    for a, b in zip(final, final_fm):
        for u, v in zip(a, b):
            np.testing.assert_allclose(v, u, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.intp])
def test_forward_takes_token_ids_of_any_integer_type(dtype):
    """Corpora store ids compactly (uint8 for small vocabularies); the one-hot rows must not overflow them."""
    arch = Arch("lstm", 7, 300, 1)
    params = init_params(arch, np.random.default_rng(1), "float64")
    x = np.random.default_rng(2).integers(0, 7, size=(5, 3))
    state = model.zero_state(arch, 3, np.float64)
    expected, _, _ = model.forward(params, arch, x.astype(np.intp), state)
    logits, _, _ = model.forward(params, arch, x.astype(dtype), state)
    np.testing.assert_array_equal(logits, expected)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_a_single_sequence_reads_its_input_before_the_loop_and_agrees_with_a_batch(cell):
    """Batch 1 projects its inputs before the loop, a batch inside each step's matmul: the same sequence gets the same logits."""
    arch = Arch(cell, 7, 5, 2)
    params = init_params(arch, np.random.default_rng(1), "float64")
    x = np.random.default_rng(2).integers(0, 7, size=(9, 3))
    assert not model.concatenated(arch, 0, 1) and model.concatenated(arch, 0, 3)
    batch, _, _ = model.forward(params, arch, x, model.zero_state(arch, 3, np.float64))
    for b in range(3):
        alone, _, _ = model.forward(params, arch, x[:, b:b + 1], model.zero_state(arch, 1, np.float64))
        np.testing.assert_allclose(alone[:, 0], batch[:, b], rtol=1e-12, atol=1e-12)
