"""Gradient checks: BPTT against centered finite differences, in float64.

Every parameter and the initial state of every layer is checked for every
cell (rnn with tanh and relu, gru, lstm), with 1 and 2 layers, through full
BPTT over several steps, with and without dropout masks and a loss mask.
A negative control shows that the check catches a wrong gradient.
"""

import numpy as np
import pytest

from charlm import cells, model
from charlm.model import Arch, backward, cross_entropy, forward, init_params, zero_state

TOL = 1e-6


def rel_error(a, b):
    """‖a − b‖ / (‖a‖ + ‖b‖), the gradient-check measure of the course notes."""
    return np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-12)


def loss_fn(params, arch, x, y, state, mask=None, masks=None):
    """The summed (not mean) loss, so gradients are O(1) and the check is sharp."""
    logits, _, _ = forward(params, arch, x, state, masks)
    loss, _, count = cross_entropy(logits, y, mask)
    return loss * count


def summed_dlogits(logits, y, mask=None):
    _, dlogits, count = cross_entropy(logits, y, mask)
    return dlogits * count


def random_state(arch, B, rng):
    return [tuple(rng.standard_normal((B, arch.hidden_size)) * 0.5 for _ in s)
            for s in zero_state(arch, B, np.float64)]


def numeric_grad(f, array, h=1e-4):
    """Centered finite differences, fourth order:
    f'(x) ≈ (-f(x+2h) + 8 f(x+h) - 8 f(x-h) + f(x-2h)) / 12h,
    whose truncation error (h⁴) and round-off (1e-16/h) are both ~1e-12."""
    grad = np.zeros_like(array)
    it = np.nditer(array, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = array[i]
        values = []
        for step in (2 * h, h, -h, -2 * h):
            array[i] = old + step
            values.append(f())
        array[i] = old
        # differences first, so an unaffected entry gives exactly 0
        grad[i] = (8 * (values[1] - values[2]) - (values[0] - values[3])) / (12 * h)
    return grad


def setup(cell, layers, activation="tanh", T=5, B=3, V=7, H=4, seed=0):
    rng = np.random.default_rng(seed)
    arch = Arch(cell, V, H, layers, activation)
    params = init_params(arch, rng, dtype="float64")
    # random (not initial) weights, so every path carries gradient
    for k in params:
        params[k] = rng.standard_normal(params[k].shape) * 0.5
    x = rng.integers(0, V, size=(T, B))
    y = rng.integers(0, V, size=(T, B))
    state = random_state(arch, B, rng)
    return rng, arch, params, x, y, state


def check_bptt(params, arch, x, y, state):
    """Assert that BPTT's gradient of every parameter and initial state matches finite differences.

    Returns (dstate0, the numeric gradients of the states) for further checks.
    """
    logits, _, cache = forward(params, arch, x, state)
    grads, dstate0 = backward(params, arch, summed_dlogits(logits, y), cache)
    assert set(grads) == set(params)
    f = lambda: loss_fn(params, arch, x, y, state)
    for name in params:
        assert rel_error(grads[name], numeric_grad(f, params[name])) < TOL, name
    num_state = [[numeric_grad(f, s) for s in layer] for layer in state]
    for l, layer in enumerate(num_state):
        for k, num in enumerate(layer):
            assert rel_error(dstate0[l][k], num) < TOL, f"state {l}.{k}"
    return dstate0, num_state


CASES = [("rnn", "tanh"), ("rnn", "relu"), ("gru", "tanh"), ("lstm", "tanh")]


@pytest.fixture(params=["one-hot input", "looked-up input"])
def first_layer_input(request, monkeypatch):
    """Both ways the gated cells' first layer reads its input (V = 7 > H = 4 takes the lookup when the limit is 0)."""
    if request.param == "looked-up input":
        monkeypatch.setattr(model, "ONEHOT_VOCAB", 0)
    return request.param


@pytest.mark.parametrize("cell,activation", CASES)
@pytest.mark.parametrize("layers", [1, 2])
def test_bptt_gradients_match_finite_differences(cell, activation, layers, first_layer_input):
    rng, arch, params, x, y, state = setup(cell, layers, activation)
    assert model.concatenated(arch, 0, x.shape[1]) == (first_layer_input == "one-hot input" and cell != "rnn")
    check_bptt(params, arch, x, y, state)


@pytest.mark.parametrize("cell,activation", CASES)
def test_gradients_with_dropout_and_loss_mask(cell, activation):
    rng, arch, params, x, y, state = setup(cell, 2, activation, seed=1)
    T, B = x.shape
    masks = [(rng.random((T, arch.hidden_size, B)) < 0.7) / 0.7 for _ in range(2)]  # (T, H, B), as dropout_masks
    mask = (rng.random((T, B)) < 0.8).astype(np.float64)
    logits, _, cache = forward(params, arch, x, state, masks)
    dlogits = summed_dlogits(logits, y, mask)
    grads, _ = backward(params, arch, dlogits, cache)
    f = lambda: loss_fn(params, arch, x, y, state, mask, masks)
    for name in params:
        assert rel_error(grads[name], numeric_grad(f, params[name])) < TOL, name


def test_gradient_of_the_final_state_flows_back_rnn():
    """rnn_backward accepts an upstream gradient on the final state (a loss on h<T>)."""
    rng = np.random.default_rng(3)
    T, B, H = 4, 2, 3
    gx = rng.standard_normal((T, B, H))
    W = rng.standard_normal((H, H)) * 0.5
    s0 = (rng.standard_normal((B, H)),)
    w_final = [rng.standard_normal((B, H))]
    w_hs = rng.standard_normal((T, B, H))

    def f():
        hs, final, _ = cells.rnn_forward(gx, s0, W)
        return float((hs * w_hs).sum() + sum((a * b).sum() for a, b in zip(final, w_final)))

    _, _, cache = cells.rnn_forward(gx, s0, W)
    dgx, ds0, dW = cells.rnn_backward(w_hs, tuple(w_final), cache)
    assert rel_error(dgx, numeric_grad(f, gx)) < TOL
    assert rel_error(dW, numeric_grad(f, W)) < TOL
    assert rel_error(ds0[0], numeric_grad(f, s0[0])) < TOL


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("with_gx", [False, True])
@pytest.mark.parametrize("with_keep", [False, True])
def test_gated_cell_gradients_of_w_inputs_added_preactivations_and_states(cell, with_gx, with_keep):
    """The gated cells' own interface: a<t> = W [h<t-1>; u<t>] (+ gx<t>), a loss on every h<t> and on the final state.

    dW, the gradient of gx (returned batch-major as da), and those of the
    initial states all match finite differences, with and without resets.
    """
    rng = np.random.default_rng(3)
    T, B, H, E = 5, 2, 3, 4
    G = cells.NUM_GATES[cell] * H
    W = rng.standard_normal((G, H + E)) * 0.5
    u = rng.standard_normal((T, E, B))
    gx = rng.standard_normal((T, G, B)) if with_gx else None
    keep = (rng.random((T, 1, B)) < 0.7).astype(float) if with_keep else None
    s0 = tuple(rng.standard_normal((H, B)) for _ in cells.zero_state(cell, B, H, float))
    w_final = [rng.standard_normal((H, B)) for _ in s0]
    w_hs = rng.standard_normal((T, H, B))

    def run(cache=True):
        xh = np.empty((T + 1, H + E, B))
        xh[:T, H:] = u
        return cells.FORWARD[cell](xh, W, s0, keep, None if gx is None else gx.copy(), cache)

    def f():
        hs, final, _ = run()
        return float((hs * w_hs).sum() + sum((a * b).sum() for a, b in zip(final, w_final)))

    hs, final, cache = run()
    hs2, final2, none = run(cache=False)                     # inference computes the same
    assert none is None and np.array_equal(hs, hs2) and all(np.array_equal(a, b) for a, b in zip(final, final2))
    da, ds0, dW = cells.BACKWARD[cell](w_hs, tuple(w_final), cache)
    assert rel_error(dW, numeric_grad(f, W)) < TOL
    if with_gx:
        assert rel_error(np.swapaxes(da, 1, 2), numeric_grad(f, gx)) < TOL
    for k in range(len(s0)):
        assert rel_error(ds0[k], numeric_grad(f, s0[k])) < TOL


def test_negative_control_a_broken_gradient_fails_the_check():
    """The check has teeth: dropping the recurrent path of BPTT must be caught."""
    rng, arch, params, x, y, state = setup("lstm", 1)
    original = cells.BACKWARD["lstm"]

    def truncated_backward(dhs, dstate_final, cache):
        # wrong on purpose: no gradient through time (each step treated alone)
        *before, W, keep = cache
        da, ds0, dW = original(dhs, dstate_final, cache)
        zero_hh = W.copy()
        zero_hh[:, : W.shape[0] // 4] = 0.0
        da2, _, dW2 = original(dhs, dstate_final, (*before, zero_hh, keep))
        return da2, ds0, dW2

    logits, _, cache = forward(params, arch, x, state)
    dlogits = summed_dlogits(logits, y)
    cells.BACKWARD["lstm"] = truncated_backward
    try:
        grads, _ = backward(params, arch, dlogits, cache)
    finally:
        cells.BACKWARD["lstm"] = original
    num = numeric_grad(lambda: loss_fn(params, arch, x, y, state), params["layers.0.weight_hh"])
    assert rel_error(grads["layers.0.weight_hh"], num) > 1e-3


def test_negative_control_a_scaled_gradient_fails_the_check():
    rng, arch, params, x, y, state = setup("gru", 2)
    logits, _, cache = forward(params, arch, x, state)
    dlogits = summed_dlogits(logits, y)
    grads, _ = backward(params, arch, dlogits, cache)
    num = numeric_grad(lambda: loss_fn(params, arch, x, y, state), params["head.weight"])
    assert rel_error(grads["head.weight"], num) < TOL
    assert rel_error(grads["head.weight"] * 1.01, num) > 1e-3


@pytest.mark.parametrize("cell,activation", CASES)
def test_gradients_with_the_state_reset_at_eos(cell, activation, first_layer_input):
    """Lines as independent sequences: the state restarts at every <EOS> input; BPTT must agree."""
    rng, arch, params, x, y, state = setup(cell, 2, activation, T=7, seed=2)
    arch = Arch(cell, arch.vocab_size, arch.hidden_size, 2, activation, reset_at_eos=True)
    x[2, 0] = x[5, 1] = x[0, 2] = 0  # <EOS> inputs at various places, including the first step
    dstate0, num_state = check_bptt(params, arch, x, y, state)
    for l in range(2):
        for k, num in enumerate(num_state[l]):
            assert np.all(num[2] == 0) and np.all(dstate0[l][k][2] == 0)  # batch row 2 restarts at t = 0


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("reset", [False, True])
def test_gradients_of_a_single_sequence(cell, reset):
    """Batch 1 runs every gated layer with its input projection before the loop (see model.concatenated)."""
    rng, arch, params, x, y, state = setup(cell, 2, B=1, T=6, seed=4)
    arch = Arch(cell, arch.vocab_size, arch.hidden_size, 2, reset_at_eos=reset)
    x[3, 0] = 0                                  # an <EOS> input (a reset, where lines are sequences)
    assert not any(model.concatenated(arch, l, 1) for l in range(2))
    check_bptt(params, arch, x, y, state)
