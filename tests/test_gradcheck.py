"""`charlm gradcheck` and charlm.gradcheck: the learners' gradient check.

The finite differences are tested on a function whose derivative is known,
the check on every cell, and its verdict by a negative control: a
backward pass made wrong in one array must fail there, and only there.
(tests/test_gradients.py checks BPTT itself with its own, independent
finite differences.)
"""

import json

import numpy as np
import pytest

from charlm import gradcheck
from charlm.model import Arch, param_shapes
from conftest import invoke, ok, one_line_error


def test_finite_differences_of_a_known_function():
    a = np.array([[0.5, -1.0, 2.0], [0.0, 3.0, -0.25]])
    before = a.copy()
    approx = gradcheck.finite_differences(lambda: float(np.sum(a ** 3)), a, np.arange(a.size), 1e-5)
    assert np.allclose(approx, 3 * before.reshape(-1) ** 2, rtol=1e-8, atol=1e-8)
    assert np.array_equal(a, before)                          # every entry restored


@pytest.mark.parametrize("cell,activation,reset", [("rnn", "tanh", False), ("rnn", "relu", True),
                                                   ("gru", "tanh", False), ("gru", "tanh", True),
                                                   ("lstm", "tanh", False), ("lstm", "tanh", True)])
def test_every_array_of_every_cell_matches(cell, activation, reset):
    arch = Arch(cell, 7, 4, 2, activation, reset)
    p = gradcheck.make_problem(arch, 5, 3, seed=1)
    saved = {k: v.copy() for k, v in gradcheck.arrays_of(p).items()}
    results = gradcheck.check(p)
    states = [f"state.{l}.{n}" for l in range(2) for n in (("h", "c") if cell == "lstm" else ("h",))]
    assert [r.name for r in results] == list(param_shapes(arch)) + states
    assert all(r.checked == np.prod(r.shape) for r in results)
    assert max(r.difference for r in results) < 1e-7
    assert all(np.array_equal(saved[k], v) for k, v in gradcheck.arrays_of(p).items())   # the model is left as it was


def test_a_wrong_gradient_fails_where_it_is_wrong(monkeypatch):
    real = gradcheck.backward

    def broken(*args, **kwargs):
        grads, dstate0 = real(*args, **kwargs)
        grads["layers.1.weight_hh"] = grads["layers.1.weight_hh"] * 1.01     # 1 % off
        return grads, dstate0

    monkeypatch.setattr(gradcheck, "backward", broken)
    results = gradcheck.check(gradcheck.make_problem(Arch("lstm", 7, 4, 2), 5, 3, seed=0))
    assert [r.name for r in results if not r.ok(1e-6)] == ["layers.1.weight_hh"]
    r = invoke("gradcheck", "--cell", "lstm")
    assert r.exit_code == 1
    assert r.stderr.startswith("error: 1 gradient differs from finite differences by more than 1e-06: "
                               "lstm layers.1.weight_hh (") and len(r.stderr.strip().splitlines()) == 1
    failing = [line for line in r.stdout.splitlines() if "FAIL" in line]
    assert len(failing) == 1 and "layers.1.weight_hh" in failing[0]


def test_entries_checks_a_random_sample_of_each_array():
    p = gradcheck.make_problem(Arch("gru", 30, 8, 1), 4, 2, seed=0)
    results = gradcheck.check(p, entries=5)
    assert all(r.checked == min(5, int(np.prod(r.shape))) for r in results)
    assert max(r.difference for r in results) < 1e-7


def test_cli_tables_json_and_exit_codes():
    r = ok(invoke("gradcheck"))
    for cell in ("rnn (tanh)", "gru", "lstm"):
        assert f"{cell}, 2 layers × 4 hidden" in r.stdout
    assert "All 32 arrays match" in r.stdout                   # 10 (rnn) + 10 (gru) + 12 (lstm)
    d = json.loads(ok(invoke("gradcheck", "--cell", "gru", "--batch-size", "1", "--vocab-size", "200",
                             "--entries", "3", "--line-state", "reset", "--json")).stdout)
    assert d["ok"] is True and [c["cell"] for c in d["cells"]] == ["gru"]
    arrays = d["cells"][0]["arrays"]
    assert arrays[0] == {**arrays[0], "name": "layers.0.weight_ih", "shape": [12, 200], "checked": 3, "ok": True}
    assert d["largest_difference"] == max(a["difference"] for a in arrays) < d["tolerance"]


@pytest.mark.parametrize("args,message", [(["--cell", "transformer"], "--cell must be one of"),
                                          (["--hidden-size", "0"], "--hidden-size must be at least 1"),
                                          (["--epsilon", "0"], "--epsilon must be in"),
                                          (["--activation", "sigmoid"], "--activation must be one of"),
                                          (["--line-state", "auto"], "--line-state must be carry or reset")])
def test_cli_bad_options_are_one_line_errors(args, message):
    one_line_error(invoke("gradcheck", *args), message)


def test_tiny_gradients_pass_by_round_off_and_a_wrong_tiny_one_still_fails(monkeypatch):
    """The lower layers of a deep LSTM have gradients of 1e-5: the relative difference is then round-off,
    which used to fail correct gradients; a 1 % error in such a gradient must still fail."""
    p = gradcheck.make_problem(Arch("lstm", 7, 4, 8), 5, 3, seed=0)
    results = {r.name: r for r in gradcheck.check(p)}
    low = results["layers.0.weight_hh"]
    assert low.difference > 1e-6 and low.within_roundoff and low.ok(1e-6)      # right, but tiny
    real = gradcheck.backward

    def broken(*args, **kwargs):
        grads, dstate0 = real(*args, **kwargs)
        grads["layers.0.weight_hh"] = grads["layers.0.weight_hh"] * 1.01
        return grads, dstate0

    monkeypatch.setattr(gradcheck, "backward", broken)
    results = {r.name: r for r in gradcheck.check(p)}
    assert not results["layers.0.weight_hh"].ok(1e-6)
    assert all(r.ok(1e-6) for name, r in results.items() if name != "layers.0.weight_hh")


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_with_resets_every_sequence_has_an_eos_input_and_a_backward_that_ignores_them_fails(cell, monkeypatch):
    """A random input need not hold <EOS> (QA: a backward without its reset passed); now every sequence has one."""
    from charlm import cells
    p = gradcheck.make_problem(Arch(cell, 200, 2, 1, "tanh", True), 6, 3, seed=1)
    assert all((p.x[1:, b] == 0).any() for b in range(3))
    assert all(r.ok(1e-6) for r in gradcheck.check(p))
    real = cells.BACKWARD[cell]                      # every cell's cache ends with `keep`, the resets

    def without_resets(dhs, dstate_final, cache):
        return real(dhs, dstate_final, cache[:-1] + (None,))

    if cell == "rnn":
        monkeypatch.setattr(cells, "rnn_backward", without_resets)
    else:
        monkeypatch.setitem(cells.BACKWARD, cell, without_resets)
    assert not all(r.ok(1e-6) for r in gradcheck.check(p))


def test_activation_is_for_the_vanilla_rnn_only():
    one_line_error(invoke("gradcheck", "--cell", "gru", "--activation", "relu"), "applies to --cell rnn only")
    d = json.loads(ok(invoke("gradcheck", "--activation", "relu", "--json")).stdout)
    assert [(c["cell"], c["activation"]) for c in d["cells"]] == [("rnn", "relu"), ("gru", "tanh"), ("lstm", "tanh")]
