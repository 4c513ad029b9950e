"""Training on the torch engine: the ordinary checkpoint, exact resume, resume across engines.

One process on the CPU; tiny models (the machine is shared).
"""

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason='needs the torch extra: pip install "charlm[torch]"')

from charlm import checkpoint, model, sample  # noqa: E402
from charlm import score as np_score  # noqa: E402
from charlm.config import Config  # noqa: E402
from charlm.torch_engine import train as ttrain  # noqa: E402
from charlm.torch_engine import score as tscore  # noqa: E402
from charlm.torch_engine.distributed import Group  # noqa: E402
from charlm.dataset import load_corpus  # noqa: E402
from charlm.train import train as np_train  # noqa: E402

TEXT = ("the cat sat on the mat.\nwe ate a pie at tea.\na bird in the hand\n"
        "is worth two in the bush!\nzebras graze; quietly.\n") * 4


def config(**kw) -> Config:
    base = dict(cell="lstm", hidden_size=12, num_layers=2, seq_len=8, batch_size=4, steps=24, lr=5e-3,
                warmup_steps=3, val_fraction=0.1, eval_every=7, save_every=0, seed=3, dtype="float32",
                dropout=0.2, char_dropout=0.05, ngram=3)
    base.update(kw)
    return Config(**base).validate()


def run(cfg, trainer=ttrain.train, resume=None, **kw):
    cfg = dataclasses.replace(cfg)
    data = load_corpus(TEXT.encode(), cfg, name="corpus.txt")
    return trainer(cfg, data, resume=resume, **kw)


def same_arrays(a: dict, b: dict):
    assert set(a) == set(b)
    for k in a:
        if isinstance(a[k], np.ndarray):
            assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), k
        else:
            assert a[k] == b[k], k


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_trains_and_writes_a_checkpoint_numpy_reads(cell, tmp_path):
    """The checkpoint loads and validates with NumPy code; NumPy and torch score it to the same numbers."""
    path = str(tmp_path / "t.npz")
    ckpt, ended = run(config(cell=cell, line_state="reset", lr=2e-2, ema=0.0), save=lambda c: checkpoint.save(c, path))
    assert ended == "done"
    loaded = checkpoint.load(path)
    assert loaded.resumable and loaded.meta["steps"] == 24 and loaded.ngram is not None
    ts = loaded.train_state
    assert ts["history"] and ts["history"][-1]["step"] == 24
    params, mix = loaded.weights("best"), loaded.mixture("best")
    sentences = ["the cat", "zebras graze", "a pie at tea.", "qqq"]
    a = np_score.score_sentences(params, loaded.arch, loaded.vocab, sentences, mix=mix, workers=1)
    b = tscore.score_sentences(params, loaded.arch, loaded.vocab, sentences, Group(), mix=mix)
    for x, y in zip(a, b):
        assert abs(x.log_prob - y.log_prob) < 1e-4 * max(1.0, abs(x.log_prob))
        assert x.num_tokens == y.num_tokens
    # the validation figure torch reported is what NumPy's validation measure gives for the best weights
    val = ttrain.evaluate(params, loaded.arch, load_corpus(TEXT.encode(), loaded.config).val_ids, None, Group())
    from charlm.validation import evaluate as np_evaluate
    ref = np_evaluate(params, loaded.arch, load_corpus(TEXT.encode(), loaded.config).val_ids)
    assert abs(val.net_nats - ref.net_nats) < 1e-5
    # it learned something: the initial weights (the seed's) do worse
    start = model.init_params(loaded.arch, np.random.default_rng(loaded.config.seed), "float32")
    assert ttrain.evaluate(start, loaded.arch, load_corpus(TEXT.encode(), loaded.config).val_ids, None,
                           Group()).net_nats > val.net_nats + 0.05
    # NumPy samples from it, and each sampled token's log-probability is the one torch gives it
    steps = list(sample.generate(params, loaded.arch, np.random.default_rng(0), num=2, length=15,
                                 stop_at_eos=False))
    ids = np.stack([s[0] for s in steps])                  # (15, 2)
    logp_np = np.stack([s[2] for s in steps])
    inputs = np.vstack([np.zeros((1, 2), dtype=np.intp), ids[:-1]])   # the sample starts from input <EOS> (id 0)
    net = tscore.inference_network(params, loaded.arch, "cpu")
    zero = [tuple(torch.zeros(2, 12) for _ in layer) for layer in model.zero_state(loaded.arch, 2, np.float32)]
    logp_t, _ = tscore.token_log_probs(net, inputs, ids, zero)
    assert np.max(np.abs(logp_t - logp_np)) < 1e-4


def test_same_seed_same_model():
    a, _ = run(config(steps=10))
    b, _ = run(config(steps=10))
    same_arrays(a.params, b.params)


def test_resume_is_bit_identical_on_cpu(tmp_path):
    cfg = config(steps=24, save_every=10)
    saved = []
    full, _ = run(cfg, save=lambda c: saved.append(c))
    path = str(tmp_path / "half.npz")
    checkpoint.save(saved[0], path)                    # the one written at step 10
    half = checkpoint.load(path)
    assert half.train_state["step"] == 10
    resumed, _ = run(dataclasses.replace(half.config, steps=24), resume=half)
    same_arrays(full.params, resumed.params)
    same_arrays(full.optim_state, resumed.optim_state)
    same_arrays(full.best_params, resumed.best_params)
    assert full.train_state["rng"] == resumed.train_state["rng"]
    for la, lb in zip(full.carry, resumed.carry):
        for x, y in zip(la, lb):
            assert x.tobytes() == y.tobytes()
    # negative control: another seed is another run
    other, _ = run(config(steps=24, seed=4))
    assert other.params["head.bias"].tobytes() != full.params["head.bias"].tobytes()


@pytest.mark.parametrize("first,second", [(np_train, ttrain.train), (ttrain.train, np_train)])
def test_resume_across_engines(first, second, tmp_path):
    """A run started on one engine continues on the other: step, schedule, moments, average and data position go on."""
    cfg = config(steps=12, optimizer="adam", ema=0.99, workers=1)
    half, _ = run(cfg, trainer=first)
    path = str(tmp_path / "half.npz")
    checkpoint.save(half, path)
    half = checkpoint.load(path)
    done, _ = run(dataclasses.replace(half.config, steps=20), trainer=second, resume=half)
    ts0, ts1 = half.train_state, done.train_state
    assert ts1["step"] == 20 and done.optim_state["step"] == 20
    assert ts1["chunk"] == ts0["chunk"] + 8 or ts1["epoch"] > ts0["epoch"]
    assert ts1["chars_seen"] == ts0["chars_seen"] + 8 * 4 * 8
    # the moments were continued, not restarted: the same 8 steps from zero moments end elsewhere
    fresh = checkpoint.load(path)
    fresh.optim_state = {k: (np.zeros_like(v) if isinstance(v, np.ndarray) and not k.startswith("avg.") else v)
                         for k, v in fresh.optim_state.items()}
    restarted, _ = run(dataclasses.replace(half.config, steps=20), trainer=second, resume=fresh)
    assert np.max(np.abs(restarted.params["head.weight"] - done.params["head.weight"])) > 1e-4
    # and the continued run is close to the run of 20 steps on the first engine alone (not bit-identical:
    # dropout masks are drawn differently)
    checkpoint.save(done, path)
    assert checkpoint.load(path).resumable


def test_numpy_and_torch_runs_agree_without_dropout():
    """Without dropout the two engines compute the same run, up to float rounding (float64)."""
    cfg = config(steps=12, dropout=0.0, char_dropout=0.0, dtype="float64", workers=1)
    a, _ = run(cfg, trainer=np_train)
    b, _ = run(cfg, trainer=ttrain.train)
    for k in a.params:
        assert np.max(np.abs(a.params[k] - b.params[k])) < 1e-8, k
    assert a.train_state["rng"] == b.train_state["rng"]
    # with dropout they differ (the masks are drawn differently): a negative control for the comparison
    c, _ = run(dataclasses.replace(cfg, dropout=0.3), trainer=ttrain.train)
    assert max(np.max(np.abs(a.params[k] - c.params[k])) for k in a.params) > 1e-6
