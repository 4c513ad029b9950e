"""Clipping, the learning-rate schedule, and one optimizer step against hand-written formulas."""

import math

import numpy as np
import pytest

from charlm import optim
from charlm.config import Config


def copy(grads):
    """apply_update consumes the gradients (uses them as scratch): hand it a copy."""
    return {k: v.copy() for k, v in grads.items()}


def grads_of(seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return {"a.weight": rng.standard_normal((3, 4)) * scale, "a.bias": rng.standard_normal(4) * scale}


def norm_of(grads):
    return math.sqrt(sum(float((g ** 2).sum()) for g in grads.values()))


def test_clip_by_global_norm_rescales_to_exactly_the_max_norm():
    g = grads_of(scale=10.0)
    before = {k: v.copy() for k, v in g.items()}
    n0 = norm_of(g)
    assert n0 > 5.0
    returned = optim.clip_by_global_norm(g, 5.0)
    assert returned == pytest.approx(n0, rel=1e-12)  # the norm before clipping
    assert norm_of(g) == pytest.approx(5.0, rel=1e-12)
    for k in g:  # same direction: every entry scaled by the same factor
        np.testing.assert_allclose(g[k], before[k] * (5.0 / n0), rtol=1e-12)


def test_clip_by_global_norm_leaves_small_gradients_alone():
    g = grads_of(scale=0.01)
    before = {k: v.copy() for k, v in g.items()}
    n0 = norm_of(g)
    assert optim.clip_by_global_norm(g, 5.0) == pytest.approx(n0, rel=1e-12)
    assert all(np.array_equal(g[k], before[k]) for k in g)
    # 0 turns clipping off
    big = grads_of(scale=100.0)
    before = {k: v.copy() for k, v in big.items()}
    optim.clip_by_global_norm(big, 0.0)
    assert all(np.array_equal(big[k], before[k]) for k in big)


def test_clip_by_global_norm_float32_and_non_finite():
    g = {k: v.astype(np.float32) for k, v in grads_of(scale=50.0).items()}
    optim.clip_by_global_norm(g, 1.0)
    assert all(v.dtype == np.float32 for v in g.values())
    assert norm_of(g) == pytest.approx(1.0, rel=1e-6)
    bad = grads_of()
    bad["a.bias"][0] = np.nan
    assert math.isnan(optim.clip_by_global_norm(bad, 1.0))
    inf = grads_of()
    inf["a.weight"][1, 1] = np.inf
    assert optim.clip_by_global_norm(inf, 1.0) == math.inf


def test_clip_by_value():
    g = {"w": np.array([-3.0, -0.5, 0.0, 0.7, 9.0])}
    optim.clip_by_value(g, 1.0)
    assert g["w"].tolist() == [-1.0, -0.5, 0.0, 0.7, 1.0]


def params_of(seed=1):
    rng = np.random.default_rng(seed)
    return {"a.weight": rng.standard_normal((3, 4)), "a.bias": rng.standard_normal(4)}


def cfg_for(optimizer, **kw):
    return Config(optimizer=optimizer, dtype="float64", **kw).validate()


def test_sgd_momentum_two_steps():
    p, g1, g2 = params_of(), grads_of(2), grads_of(3)
    p0 = {k: v.copy() for k, v in p.items()}
    cfg = cfg_for("sgd", momentum=0.8)
    state = optim.init_state("sgd", p)
    optim.apply_update(cfg, p, copy(g1), state, 0.1)
    optim.apply_update(cfg, p, copy(g2), state, 0.05)
    for k in p:
        v1 = g1[k]
        v2 = 0.8 * v1 + g2[k]
        np.testing.assert_allclose(p[k], p0[k] - 0.1 * v1 - 0.05 * v2, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(state[f"v.{k}"], v2, rtol=1e-13)
    assert state["step"] == 2


def test_adagrad_two_steps():
    p, g1, g2 = params_of(), grads_of(2), grads_of(3)
    p0 = {k: v.copy() for k, v in p.items()}
    cfg = cfg_for("adagrad")
    state = optim.init_state("adagrad", p)
    optim.apply_update(cfg, p, copy(g1), state, 0.1)
    optim.apply_update(cfg, p, copy(g2), state, 0.1)
    for k in p:
        G1 = g1[k] ** 2
        G2 = G1 + g2[k] ** 2
        expected = p0[k] - 0.1 * g1[k] / (np.sqrt(G1) + 1e-8) - 0.1 * g2[k] / (np.sqrt(G2) + 1e-8)
        np.testing.assert_allclose(p[k], expected, rtol=1e-13, atol=1e-15)


def test_adam_three_steps_with_bias_correction():
    p = params_of()
    p0 = {k: v.copy() for k, v in p.items()}
    gs = [grads_of(s) for s in (2, 3, 4)]
    lrs = [1e-2, 2e-2, 3e-3]
    cfg = cfg_for("adam")
    state = optim.init_state("adam", p)
    for g, lr in zip(gs, lrs):
        optim.apply_update(cfg, p, {k: v.copy() for k, v in g.items()}, state, lr)
    b1, b2, eps = 0.9, 0.999, 1e-8
    for k in p:
        m = np.zeros_like(p0[k])
        v = np.zeros_like(p0[k])
        x = p0[k].copy()
        for t, (g, lr) in enumerate(zip(gs, lrs), start=1):
            m = b1 * m + (1 - b1) * g[k]
            v = b2 * v + (1 - b2) * g[k] ** 2
            m_hat = m / (1 - b1 ** t)
            v_hat = v / (1 - b2 ** t)
            x = x - lr * m_hat / (np.sqrt(v_hat) + eps)
        np.testing.assert_allclose(p[k], x, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(state[f"m.{k}"], m, rtol=1e-12)
        np.testing.assert_allclose(state[f"v.{k}"], v, rtol=1e-12)
    assert state["step"] == 3


def test_adam_first_step_moves_each_weight_by_about_lr():
    p = params_of()
    p0 = {k: v.copy() for k, v in p.items()}
    state = optim.init_state("adam", p)
    optim.apply_update(cfg_for("adam"), p, grads_of(5), state, 1e-3)
    for k in p:  # at t = 1, m̂ = g and v̂ = g²: the step is lr·g/(|g| + ε) ≈ lr·sign(g)
        g = grads_of(5)[k]
        np.testing.assert_allclose(p0[k] - p[k], 1e-3 * g / (np.abs(g) + 1e-8), rtol=1e-9)


def test_decoupled_weight_decay_skips_biases():
    p = params_of()
    p0 = {k: v.copy() for k, v in p.items()}
    zero = {k: np.zeros_like(v) for k, v in p.items()}
    cfg = cfg_for("sgd", weight_decay=0.5, momentum=0.0)
    optim.apply_update(cfg, p, zero, optim.init_state("sgd", p), 0.1)
    np.testing.assert_allclose(p["a.weight"], p0["a.weight"] * (1 - 0.1 * 0.5), rtol=1e-14)
    assert np.array_equal(p["a.bias"], p0["a.bias"])
    assert optim.is_decayed("layers.0.weight_ih") and optim.is_decayed("head.weight")
    assert not optim.is_decayed("layers.0.bias") and not optim.is_decayed("head.bias")


def test_updates_keep_float32():
    p = {k: v.astype(np.float32) for k, v in params_of().items()}
    g = {k: v.astype(np.float32) for k, v in grads_of().items()}
    for name in ("adam", "sgd", "adagrad"):
        q = {k: v.copy() for k, v in p.items()}
        state = optim.init_state(name, q)
        optim.apply_update(Config(optimizer=name, weight_decay=0.01).validate(), q, g, state, 1e-2)
        assert all(v.dtype == np.float32 for v in q.values())
        assert all(v.dtype == np.float32 for k, v in state.items() if k != "step")
        assert not all(np.array_equal(q[k], p[k]) for k in p)


# ---------------------------------------------------------------------------
# learning-rate schedule
# ---------------------------------------------------------------------------

def test_warmup_is_linear():
    cfg = Config(lr=1.0, warmup_steps=4, schedule="constant").validate()
    assert [optim.learning_rate(cfg, 0.0, s) for s in range(6)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])
    no_warmup = Config(lr=0.3, warmup_steps=0, schedule="constant").validate()
    assert optim.learning_rate(no_warmup, 0.0, 0) == pytest.approx(0.3)


def test_cosine_endpoints_and_midpoint():
    cfg = Config(lr=2.0, warmup_steps=0, schedule="cosine", min_lr_ratio=0.1).validate()
    assert optim.learning_rate(cfg, 0.0, 0) == pytest.approx(2.0)
    assert optim.learning_rate(cfg, 1.0, 100) == pytest.approx(0.2)
    assert optim.learning_rate(cfg, 0.5, 50) == pytest.approx(2.0 * (0.1 + 0.9 * 0.5))
    assert optim.learning_rate(cfg, 0.25, 25) == pytest.approx(2.0 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4))))
    assert optim.learning_rate(cfg, 1.7, 170) == pytest.approx(0.2)  # progress is clamped
    values = [optim.learning_rate(cfg, p / 20, p) for p in range(21)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # non-increasing
    zero_floor = Config(lr=1.0, warmup_steps=0, min_lr_ratio=0.0).validate()
    assert optim.learning_rate(zero_floor, 1.0, 10) == pytest.approx(0.0, abs=1e-15)


def test_warmup_and_cosine_combine():
    cfg = Config(lr=1.0, warmup_steps=10, schedule="cosine", min_lr_ratio=0.0).validate()
    assert optim.learning_rate(cfg, 0.5, 4) == pytest.approx(0.5 * 0.5)


# ---------------------------------------------------------------------------
# the weight average (--ema)
# ---------------------------------------------------------------------------

def test_average_decay_warms_up_then_holds_the_decay():
    assert optim.average_decay(0.999, 0) == pytest.approx(0.1)
    assert optim.average_decay(0.999, 90) == pytest.approx(0.91)
    assert optim.average_decay(0.999, 10**6) == 0.999
    assert optim.average_decay(0.5, 30) == 0.5


def test_update_average_follows_the_recurrence():
    params = grads_of(seed=1)
    state = optim.init_state("adam", params)
    optim.keep_average(state, params, True)
    expected = {k: v.copy() for k, v in params.items()}
    rng = np.random.default_rng(5)
    for n in range(1, 40):
        for p in params.values():
            p += rng.standard_normal(p.shape)
        state["step"] = n
        beta = min(0.95, (1 + n) / (10 + n))
        for k, p in params.items():
            expected[k] = beta * expected[k] + (1 - beta) * p
        optim.update_average(state, params, 0.95)
    for k in params:
        np.testing.assert_allclose(state[f"avg.{k}"], expected[k], rtol=1e-12, atol=1e-12)
        assert not np.allclose(state[f"avg.{k}"], params[k])
    assert optim.averaged(state, params)["a.weight"] is state["avg.a.weight"]


def test_keep_average_adds_a_copy_and_drops_it():
    params = grads_of(seed=2)
    state = optim.init_state("sgd", params)
    assert optim.averaged(state, params) is params
    optim.keep_average(state, params, True)
    assert np.array_equal(state["avg.a.bias"], params["a.bias"]) and state["avg.a.bias"] is not params["a.bias"]
    before = state["avg.a.bias"]
    optim.keep_average(state, params, True)          # already there: kept as it is
    assert state["avg.a.bias"] is before
    optim.keep_average(state, params, False)
    assert not any(k.startswith("avg.") for k in state) and "v.a.bias" in state
