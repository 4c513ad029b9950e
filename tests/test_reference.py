"""charlm.reference, the plain float64 reference, and the fast path held to it.

(a) The reference's own gradients against centered finite differences in
    float64, CS231n style: every step function with a random upstream
    gradient, and the whole stack (1 and 2 layers, dropout masks, a loss
    mask, <EOS> resets, a random gradient on the final states) for every
    parameter and initial state.  Negative controls show that a wrong
    gradient fails the check.
(b) The fast path (`charlm.model` over `charlm.cells`) computes the same
    numbers as the reference on the same weights: loss, logits, final
    states and every gradient agree to FAST_TOL (relative to the array's
    largest entry), for each cell and activation, 1 and 2 layers, with and
    without resets, through both ways the first layer reads its input.
"""

import numpy as np
import pytest

from charlm import inference, model, reference
from charlm.gradcheck import finite_differences
from charlm.model import Arch
from charlm.reference import gru, lstm, params as ref_params, rnn, stack

FD_EPS = 1e-5      # centered differences: truncation ~ε², round-off ~1e-16/ε; both ≲ 1e-10
FD_TOL = 1e-7      # relative error a correct gradient stays under (measured: ≤ 1.3e-8, on the smallest gradients)
FAST_TOL = 1e-12   # fast path vs reference, max |fast − ref| / max |ref| (measured: ≲ 1e-15)

CASES = [("rnn", "tanh"), ("rnn", "relu"), ("gru", "tanh"), ("lstm", "tanh")]


def rel_error(a, b):
    """‖a − b‖ / (‖a‖ + ‖b‖), the gradient-check measure of the course notes (0 when both are 0)."""
    scale = np.linalg.norm(a) + np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / scale) if scale > 0 else 0.0


def numeric_gradient(J, array, eps=FD_EPS):
    """(J(θ + ε·e_i) − J(θ − ε·e_i)) / 2ε for every entry i of `array` (charlm.gradcheck's differences)."""
    return finite_differences(J, array, range(array.size), eps).reshape(array.shape)


def random_step_params(keys, D, H, rng):
    """W_?a (H, H), W_?x (H, D), b_? (H,) for every key."""
    shape = {"a": (H, H), "x": (H, D)}
    return {k: rng.standard_normal(shape[k[-1]] if k.startswith("W_") else (H,)) * 0.5 for k in keys}


# ---------------------------------------------------------------------------
# (a) the reference against finite differences
# ---------------------------------------------------------------------------

def step_problem(cell, activation, seed=0, N=3, D=5, H=4):
    """A step function with its inputs and a random upstream gradient: (J, backward(), arrays by name)."""
    rng = np.random.default_rng(seed)
    x, a_prev, c_prev = rng.standard_normal((N, D)), rng.standard_normal((N, H)), rng.standard_normal((N, H))
    da_up, dc_up = rng.standard_normal((N, H)), rng.standard_normal((N, H))
    if cell == "rnn":
        p = random_step_params(rnn.KEYS, D, H, rng)
        J = lambda: float(np.sum(rnn.rnn_step_forward(x, a_prev, p, activation)[0] * da_up))

        def grads():
            dx, da_prev, g = rnn.rnn_step_backward(da_up, rnn.rnn_step_forward(x, a_prev, p, activation)[1])
            return {"x": dx, "a_prev": da_prev, **g}
        return J, grads, {"x": x, "a_prev": a_prev, **p}
    if cell == "gru":
        p = random_step_params(gru.KEYS, D, H, rng)
        J = lambda: float(np.sum(gru.gru_step_forward(x, a_prev, p)[0] * da_up))

        def grads():
            dx, da_prev, g = gru.gru_step_backward(da_up, gru.gru_step_forward(x, a_prev, p)[1])
            return {"x": dx, "a_prev": da_prev, **g}
        return J, grads, {"x": x, "a_prev": a_prev, **p}
    p = random_step_params(lstm.KEYS, D, H, rng)

    def J():
        a_next, c_next, _ = lstm.lstm_step_forward(x, a_prev, c_prev, p)
        return float(np.sum(a_next * da_up) + np.sum(c_next * dc_up))

    def grads():
        dx, da_prev, dc_prev, g = lstm.lstm_step_backward(da_up, dc_up, lstm.lstm_step_forward(x, a_prev, c_prev, p)[2])
        return {"x": dx, "a_prev": da_prev, "c_prev": dc_prev, **g}
    return J, grads, {"x": x, "a_prev": a_prev, "c_prev": c_prev, **p}


@pytest.mark.parametrize("cell,activation", CASES)
def test_every_step_backward_matches_finite_differences(cell, activation):
    J, grads, arrays = step_problem(cell, activation)
    g = grads()
    assert set(g) == set(arrays)
    for name, array in arrays.items():
        assert g[name].shape == array.shape, name
        assert rel_error(g[name], numeric_gradient(J, array)) < FD_TOL, name


def stack_problem(cell, activation, layers, reset, dropout, seed=0, T=5, N=3, V=7, H=4):
    """A small stack with random weights, inputs, states, masks and upstream gradients on the final states."""
    rng = np.random.default_rng(seed)
    arch = Arch(cell, V, H, layers, activation, reset)
    params = reference.from_charlm({k: rng.standard_normal(s) * 0.5 for k, s in model.param_shapes(arch).items()},
                                   cell)
    x, y = rng.integers(0, V, size=(T, N)), rng.integers(0, V, size=(T, N))
    if reset:
        x[0, 2] = x[2, 0] = x[3, 1] = 0                          # <EOS> inputs, one at the first step
    state0 = [tuple(rng.standard_normal((N, H)) * 0.5 for _ in s) for s in model.zero_state(arch, N, np.float64)]
    dfinal = [tuple(rng.standard_normal((N, H)) for _ in s) for s in state0]
    masks = [(rng.random((T, N, H)) < 0.7) / 0.7 for _ in range(layers)] if dropout else None
    mask = (rng.random((T, N)) < 0.8).astype(np.float64)
    return params, x, y, state0, dfinal, masks, mask


def stack_objective(cell, activation, reset, params, x, y, state0, dfinal, masks, mask):
    """J = the summed loss + Σ final state · its random upstream gradient."""
    logits, final, _ = reference.forward(params, cell, x, state0, activation, reset, masks)
    loss, _, _ = reference.softmax_loss(logits, y, mask)
    return loss + sum(float(np.sum(s * d)) for fs, ds in zip(final, dfinal) for s, d in zip(fs, ds))


def stack_gradients(cell, activation, reset, params, x, y, state0, dfinal, masks, mask):
    logits, _, cache = reference.forward(params, cell, x, state0, activation, reset, masks)
    _, dlogits, _ = reference.softmax_loss(logits, y, mask)
    return reference.backward(dlogits, cache, dfinal)


def named_arrays(params, state0):
    """Every array J depends on, by name (the same objects, so perturbing one changes J)."""
    arrays = {f"layers.{l}.{k}": v for l, p in enumerate(params["layers"]) for k, v in p.items()}
    arrays.update({"W_ya": params["W_ya"], "b_y": params["b_y"]})
    arrays.update({f"state.{l}.{k}": s for l, layer in enumerate(state0) for k, s in enumerate(layer)})
    return arrays


@pytest.mark.parametrize("cell,activation", CASES)
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("reset,dropout", [(False, False), (True, True)])
def test_stack_bptt_matches_finite_differences(cell, activation, layers, reset, dropout):
    problem = stack_problem(cell, activation, layers, reset, dropout)
    params, x, y, state0, dfinal, masks, mask = problem
    grads, dstate0 = stack_gradients(cell, activation, reset, *problem)
    J = lambda: stack_objective(cell, activation, reset, *problem)
    exact = named_arrays(grads, dstate0)
    arrays = named_arrays(params, state0)
    assert set(exact) == set(arrays)
    for name, array in arrays.items():
        assert rel_error(exact[name], numeric_gradient(J, array)) < FD_TOL, name
    if reset:                                 # row 2 restarts at t = 0: its initial state gets no gradient
        assert all(np.all(d[2] == 0) for layer in dstate0 for d in layer)


def test_negative_control_a_perturbed_gradient_fails_the_check():
    problem = stack_problem("gru", "tanh", 2, True, True, seed=1)
    params, *_ = problem
    grads, _ = stack_gradients("gru", "tanh", True, *problem)
    J = lambda: stack_objective("gru", "tanh", True, *problem)
    W = params["layers"][0]["W_ra"]
    num = numeric_gradient(J, W)
    exact = grads["layers"][0]["W_ra"]
    assert rel_error(exact, num) < FD_TOL
    assert rel_error(exact * 1.01, num) > 1e-3                       # 1 % off everywhere
    wrong = exact.copy()
    wrong[1, 2] += 1e-3 * np.abs(exact).max()                         # one entry a little off
    assert rel_error(wrong, num) > FD_TOL


def test_negative_control_a_backward_that_drops_the_cell_state_path_fails(monkeypatch):
    """An LSTM backward that passes no gradient to c<t-1> (BPTT cut on the cell state) must be caught."""
    problem = stack_problem("lstm", "tanh", 1, False, False, seed=2)
    params, *_ = problem
    J = lambda: stack_objective("lstm", "tanh", False, *problem)
    num = numeric_gradient(J, params["layers"][0]["W_fa"])
    real = stack.lstm_step_backward

    def cut(da_next, dc_next, cache):
        dx, da_prev, dc_prev, g = real(da_next, dc_next, cache)
        return dx, da_prev, np.zeros_like(dc_prev), g

    monkeypatch.setattr(stack, "lstm_step_backward", cut)
    grads, _ = stack_gradients("lstm", "tanh", False, *problem)
    assert rel_error(grads["layers"][0]["W_fa"], num) > 1e-3


# ---------------------------------------------------------------------------
# the conversion and the initial weights
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("cell,activation", CASES)
def test_conversion_round_trips_and_names_each_gate(cell, activation):
    arch = Arch(cell, 6, 3, 2, activation)
    params = model.init_params(arch, np.random.default_rng(0), dtype="float64")
    ref = reference.from_charlm(params, cell)
    back = reference.to_charlm(ref, cell)
    assert set(back) == set(params) and all(np.array_equal(back[k], params[k]) for k in params)
    gates = ref_params.GATES[cell]
    keys = {"rnn": rnn.KEYS, "gru": gru.KEYS, "lstm": lstm.KEYS}[cell]
    assert len(ref["layers"]) == 2 and all(set(p) == set(keys) for p in ref["layers"])
    k = gates[-1]                                                  # the last gate block: rows (G−1)·H:
    np.testing.assert_array_equal(ref["layers"][1][f"W_{k}x"], params["layers.1.weight_ih"][-3:])
    assert ref["layers"][0][f"W_{k}x"].shape == (3, 6) and ref["layers"][1][f"W_{k}a"].shape == (3, 3)


def test_lstm_forget_gate_bias_starts_at_one_and_the_initial_loss_is_about_ln_v():
    """From charlm's initial weights the reference predicts almost uniformly (min-char-rnn's sanity anchor):
    the expected loss of a random target, −mean(log ŷ), is within 0.12 nats of ln V (as in test_model)."""
    V, H, T, N = 40, 32, 64, 8
    arch = Arch("lstm", V, H, 2)
    ref = reference.from_charlm(model.init_params(arch, np.random.default_rng(1), dtype="float64"), "lstm")
    for p in ref["layers"]:
        assert np.all(p["b_f"] == 1.0) and all(np.all(p[f"b_{k}"] == 0.0) for k in "igo")
    x = np.random.default_rng(2).integers(0, V, size=(T, N))
    state0 = [(np.zeros((N, H)), np.zeros((N, H)))] * 2
    logits, _, _ = reference.forward(ref, "lstm", x, state0)
    expected_loss = -model.log_softmax(logits).mean()
    assert abs(expected_loss - np.log(V)) < 0.12, expected_loss - np.log(V)


# ---------------------------------------------------------------------------
# (b) the fast path against the reference
# ---------------------------------------------------------------------------

def assert_agrees(fast, ref, what):
    fast, ref = np.asarray(fast), np.asarray(ref)
    assert fast.shape == ref.shape, what
    assert np.max(np.abs(fast - ref)) <= FAST_TOL * max(np.max(np.abs(ref)), 1e-300), what


def fast_problem(cell, activation, layers, reset, seed=0, T=7, B=3, V=7, H=4):
    """charlm float64 weights (random, not initial), inputs with <EOS>, states, dropout and loss masks."""
    rng = np.random.default_rng(seed)
    arch = Arch(cell, V, H, layers, activation, reset)
    params = {k: rng.standard_normal(s) * 0.5 for k, s in model.param_shapes(arch).items()}
    x, y = rng.integers(0, V, size=(T, B)), rng.integers(0, V, size=(T, B))
    x[2, 0] = x[5, B - 1] = x[0, B // 2] = 0                       # <EOS> inputs, one at the first step
    state0 = [tuple(rng.standard_normal((B, H)) * 0.5 for _ in s) for s in model.zero_state(arch, B, np.float64)]
    dfinal = [tuple(rng.standard_normal((B, H)) for _ in s) for s in state0]
    masks = [(rng.random((T, H, B)) < 0.7) / 0.7 for _ in range(layers)]    # (T, H, B), as model.dropout_masks
    mask = (rng.random((T, B)) < 0.8).astype(np.float64)
    return arch, params, x, y, state0, dfinal, masks, mask


@pytest.fixture(params=["one-hot input", "looked-up input"])
def first_layer_input(request, monkeypatch):
    """Both ways the gated cells' first layer reads its input (V = 7 > H = 4 takes the lookup when the limit is 0)."""
    if request.param == "looked-up input":
        monkeypatch.setattr(model, "ONEHOT_VOCAB", 0)
    return request.param


def compare_forward_backward(arch, params, x, y, state0, dfinal, masks, mask):
    """model.forward / cross_entropy / backward against reference.forward / softmax_loss / backward."""
    cell = arch.cell
    logits, final, cache = model.forward(params, arch, x, state0, masks)
    loss, dlogits, count = model.cross_entropy(logits, y, mask)
    grads, dstate0 = model.backward(params, arch, dlogits, cache, dfinal)

    ref = reference.from_charlm(params, cell)
    r_logits, r_final, r_cache = reference.forward(ref, cell, x, state0, arch.activation, arch.reset_at_eos,
                                                   reference.masks_from_charlm(masks))
    r_loss, r_dlogits, r_count = reference.softmax_loss(r_logits, y, mask)
    # charlm's loss is the mean over counted positions: L / count, and so is its gradient
    r_grads, r_dstate0 = reference.backward(r_dlogits / r_count, r_cache, dfinal)
    r_grads = reference.to_charlm(r_grads, cell)

    assert count == r_count
    assert abs(loss - r_loss / r_count) <= FAST_TOL * abs(loss)
    assert_agrees(logits, r_logits, "logits")
    assert_agrees(dlogits, r_dlogits / r_count, "dlogits")
    assert set(grads) == set(r_grads) == set(params)
    for name in params:
        assert_agrees(grads[name], r_grads[name], name)
    for l in range(arch.num_layers):
        assert len(final[l]) == len(r_final[l]) == len(dstate0[l]) == len(r_dstate0[l])
        for k in range(len(final[l])):
            assert_agrees(final[l][k], r_final[l][k], f"final state {l}.{k}")
            assert_agrees(dstate0[l][k], r_dstate0[l][k], f"initial state gradient {l}.{k}")


@pytest.mark.parametrize("cell,activation", CASES)
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("reset", [False, True])
def test_fast_path_agrees_with_the_reference(cell, activation, layers, reset, first_layer_input):
    arch, params, x, y, state0, dfinal, masks, mask = fast_problem(cell, activation, layers, reset)
    assert model.concatenated(arch, 0, x.shape[1]) == (first_layer_input == "one-hot input" and cell != "rnn")
    compare_forward_backward(arch, params, x, y, state0, dfinal, masks, mask)
    compare_forward_backward(arch, params, x, y, state0, None, None, None)      # no dropout, masks or dfinal


@pytest.mark.parametrize("cell,activation", CASES)
@pytest.mark.parametrize("reset", [False, True])
def test_a_single_sequence_agrees_with_the_reference(cell, activation, reset):
    """Batch 1 runs every gated layer with its input projection before the loop (see model.concatenated)."""
    arch, params, x, y, state0, dfinal, masks, mask = fast_problem(cell, activation, 2, reset, seed=3, B=1)
    assert not any(model.concatenated(arch, l, 1) for l in range(2))
    compare_forward_backward(arch, params, x, y, state0, dfinal, masks, mask)


@pytest.mark.parametrize("cell,activation", CASES)
def test_loss_and_grads_is_the_reference_mean(cell, activation):
    arch, params, x, y, state0, _, masks, mask = fast_problem(cell, activation, 2, True, seed=4)
    loss, grads, final = model.loss_and_grads(params, arch, x, y, state0, mask, masks)
    r_loss, r_grads, r_final, count = reference.loss_and_grads(
        reference.from_charlm(params, cell), cell, x, y, state0, activation, True, mask,
        reference.masks_from_charlm(masks))
    assert abs(loss - r_loss / count) <= FAST_TOL * abs(loss)
    r_grads = reference.to_charlm(r_grads, cell)
    for name in params:
        assert_agrees(grads[name], r_grads[name] / count, name)
    for l in range(2):
        for k in range(len(final[l])):
            assert_agrees(final[l][k], r_final[l][k], f"final state {l}.{k}")


@pytest.mark.parametrize("cell,activation", CASES)
@pytest.mark.parametrize("reset", [False, True])
def test_inference_paths_agree_with_the_reference(cell, activation, reset):
    """inference.infer (feature-major, no cache) and inference.step (one token at a time) give the reference's logits."""
    arch, params, x, _, state0, _, _, _ = fast_problem(cell, activation, 2, reset, seed=5)
    r_logits, r_final, _ = reference.forward(reference.from_charlm(params, cell), cell, x, state0, activation, reset)
    logits, final = inference.infer(params, arch, x, state0)
    assert_agrees(np.swapaxes(logits, 1, 2), r_logits, "infer logits")
    state = state0
    for t in range(len(x)):
        step_logits, state = inference.step(params, arch, x[t], state)
        assert_agrees(step_logits, r_logits[t], f"step {t}")
    for l in range(2):
        for k in range(len(final[l])):
            assert_agrees(final[l][k], r_final[l][k], f"infer final state {l}.{k}")
            assert_agrees(state[l][k], r_final[l][k], f"step final state {l}.{k}")


def test_negative_control_the_comparison_catches_a_wrong_gate_order(monkeypatch):
    """Read with the LSTM's g and o blocks swapped, the same weights give other numbers: the comparison fails."""
    arch, params, x, y, state0, dfinal, masks, mask = fast_problem("lstm", "tanh", 1, False, seed=6)
    compare_forward_backward(arch, params, x, y, state0, dfinal, masks, mask)
    monkeypatch.setitem(ref_params.GATES, "lstm", ("i", "f", "o", "g"))
    with pytest.raises(AssertionError):
        compare_forward_backward(arch, params, x, y, state0, dfinal, masks, mask)
