"""The training loop: determinism, exact resume, non-finite steps, resume checks, tiny corpora."""

import dataclasses
import math

import numpy as np
import pytest

from charlm import checkpoint, model, ngram, validation
from charlm.config import Config
from charlm.errors import ConfigError, CorpusError, TrainingDiverged
from charlm.dataset import load_corpus
from charlm.run import check_resume
from charlm.train import train

TEXT = ("the cat sat on the mat.\nwe ate a pie at tea.\na bird in the hand\n"
        "is worth two in the bush!\nzebras graze; quietly.\n") * 2


def config(**kw) -> Config:
    base = dict(cell="lstm", hidden_size=16, num_layers=2, seq_len=8, batch_size=4, steps=30, lr=5e-3,
                warmup_steps=3, val_fraction=0.1, eval_every=7, save_every=0, seed=3, dtype="float32")
    base.update(kw)
    return Config(**base).validate()


def corpus_for(cfg, text=TEXT, name="corpus.txt"):
    return load_corpus(text.encode("utf-8"), cfg, name=name)


def run(cfg, text=TEXT, **kw):
    cfg = dataclasses.replace(cfg)
    return train(cfg, corpus_for(cfg, text), **kw)


def assert_bit_identical(a: dict, b: dict, what):
    assert set(a) == set(b), what
    for k in a:
        if isinstance(a[k], np.ndarray):
            assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, (what, k)
            assert a[k].tobytes() == b[k].tobytes(), (what, k)
        else:
            assert a[k] == b[k], (what, k)


def assert_same_run(a, b):
    assert_bit_identical(a.params, b.params, "params")
    assert_bit_identical(a.optim_state, b.optim_state, "optimizer state")
    assert a.train_state["rng"] == b.train_state["rng"]
    for key in ("step", "epoch", "chunk", "offset", "chars_seen", "skipped_steps", "best_val", "best_step",
                "last_loss", "last_val"):
        assert a.train_state[key] == b.train_state[key], key
    assert len(a.carry) == len(b.carry)
    for la, lb in zip(a.carry, b.carry):
        for x, y in zip(la, lb):
            assert x.tobytes() == y.tobytes()
    assert (a.best_params is None) == (b.best_params is None)
    if a.best_params is not None:
        assert_bit_identical(a.best_params, b.best_params, "best params")
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in a.train_state["history"]] == \
           [{k: v for k, v in h.items() if k != "seconds"} for h in b.train_state["history"]]


# ---------------------------------------------------------------------------
# determinism and exact resume
# ---------------------------------------------------------------------------

def test_same_seed_same_corpus_same_options_give_bit_identical_runs():
    cfg = config(dropout=0.2)
    a, ended_a = run(cfg)
    b, ended_b = run(cfg)
    assert ended_a == ended_b == "done"
    assert a.train_state["step"] == 30 and a.optim_state["step"] == 30
    assert_same_run(a, b)
    c, _ = run(config(dropout=0.2, seed=4))
    assert not np.array_equal(a.params["head.weight"], c.params["head.weight"])


def interrupted_then_resumed(cfg, k, tmp_path, text=TEXT):
    steps = []
    cfg1 = dataclasses.replace(cfg)
    first, ended = train(cfg1, corpus_for(cfg1, text), should_stop=lambda: len(steps) >= k,
                         on_event=lambda kind, info: steps.append(info["step"]) if kind == "step" else None)
    assert ended == "interrupted"
    assert first.train_state["step"] == k and first.resumable
    path = str(tmp_path / f"interrupted-{k}.npz")
    checkpoint.save(first, path)
    loaded = checkpoint.load(path)
    cfg2 = dataclasses.replace(loaded.config)
    corpus = corpus_for(cfg2, text)
    check_resume(cfg2, loaded, corpus, given=set())
    events = []
    second, ended = train(cfg2, corpus, resume=loaded, on_event=lambda kind, info: events.append(kind))
    assert ended == "done" and second.train_state["step"] == cfg.steps
    assert events.count("step") == cfg.steps - k
    assert "adapted" not in events
    return second


@pytest.mark.parametrize("cell,dropout,k", [("lstm", 0.0, 13), ("gru", 0.0, 7), ("lstm", 0.3, 11),
                                            ("gru", 0.25, 9), ("rnn", 0.1, 1)])
def test_interrupted_and_resumed_run_equals_one_run(tmp_path, cell, dropout, k):
    cfg = config(cell=cell, dropout=dropout)
    whole, _ = run(cfg)
    assert whole.train_state["epoch"] >= 1  # the run crosses epoch boundaries (new offsets, zero state)
    resumed = interrupted_then_resumed(cfg, k, tmp_path)
    assert_same_run(whole, resumed)


def test_resume_across_an_epoch_boundary_and_with_sgd(tmp_path):
    cfg = config(cell="gru", optimizer="sgd", lr=0.05, weight_decay=1e-3, clip_value=0.5, dropout=0.1,
                 dtype="float64", num_layers=1)
    epochs = {}
    whole, _ = run(cfg, on_event=lambda kind, info: epochs.__setitem__(info["step"], info["epoch"])
                   if kind == "step" else None)
    # interrupt right at the end of the first epoch: the resumed run starts a new one
    per_epoch = min(step for step, epoch in epochs.items() if epoch == 1) - 1
    assert 1 <= per_epoch < 29
    resumed = interrupted_then_resumed(cfg, per_epoch, tmp_path)
    assert_same_run(whole, resumed)


def test_interrupt_before_the_first_step(tmp_path):
    cfg = config(cell="lstm", steps=5)
    ck, ended = run(cfg, should_stop=lambda: True)
    assert ended == "interrupted" and ck.train_state["step"] == 0
    resumed = interrupted_then_resumed(cfg, 0, tmp_path)
    whole, _ = run(cfg)
    assert_same_run(whole, resumed)


# ---------------------------------------------------------------------------
# non-finite steps
# ---------------------------------------------------------------------------

def all_finite(ck) -> bool:
    return all(np.all(np.isfinite(a)) for a in checkpoint.to_arrays(ck).values() if a.dtype.kind == "f")


def nan_loss_on(monkeypatch, bad_calls):
    """Make model.loss_and_grads report NaN (with NaN gradients) on the given call numbers."""
    original = model.loss_and_grads
    calls = {"n": 0}

    def patched(*args, **kw):
        loss, grads, final = original(*args, **kw)
        calls["n"] += 1
        if calls["n"] in bad_calls:
            grads = {k: np.full_like(g, np.nan) for k, g in grads.items()}
            final = [tuple(np.full_like(s, np.nan) for s in layer) for layer in final]
            return float("nan"), grads, final
        return loss, grads, final

    monkeypatch.setattr(model, "loss_and_grads", patched)
    return calls


def test_non_finite_steps_are_skipped_and_counted(monkeypatch, tmp_path):
    cfg = config(steps=12, save_every=1, max_bad_steps=4, eval_every=0, val_fraction=0.0)
    nan_loss_on(monkeypatch, {4, 5, 6, 9})
    snapshots, skipped, saved = [], [], []

    def on_event(kind, info):
        if kind == "step":
            snapshots.append(None)
        if kind == "skipped":
            skipped.append(info)

    def save(ck):
        assert all_finite(ck)
        checkpoint.save(ck, str(tmp_path / "m.npz"))  # refuses non-finite values itself
        saved.append({k: v.copy() for k, v in ck.params.items()})

    ck, ended = run(cfg, on_event=on_event, save=save)
    assert ended == "done"
    assert [s["step"] for s in skipped] == [3, 4, 5, 8]
    assert [s["streak"] for s in skipped] == [1, 2, 3, 1]
    assert all(not math.isfinite(s["loss"]) for s in skipped)
    assert ck.train_state["skipped_steps"] == 4 and ck.meta["skipped_steps"] == 4
    assert ck.optim_state["step"] == 8  # only good steps reach the optimizer
    assert all_finite(ck)
    # a skipped step leaves the weights exactly as they were
    for bad in (3, 4, 5, 8):
        assert_bit_identical(saved[bad - 1], saved[bad], f"step {bad + 1}")
    assert not np.array_equal(saved[1]["head.weight"], saved[2]["head.weight"])


def test_too_many_bad_steps_in_a_row_raise_training_diverged(monkeypatch, tmp_path):
    cfg = config(steps=50, save_every=1, max_bad_steps=3, eval_every=0, val_fraction=0.0)
    nan_loss_on(monkeypatch, set(range(6, 100)))
    saved = {}

    def save(ck):
        assert all_finite(ck)
        saved[ck.train_state["step"]] = {k: v.copy() for k, v in ck.params.items()}
        checkpoint.save(ck, str(tmp_path / "m.npz"))

    with pytest.raises(TrainingDiverged) as e:
        run(cfg, save=save)
    assert "3 steps in a row" in str(e.value)
    # steps 6 and 7 were skipped (and saved, unchanged); the third bad step in a row raised
    assert sorted(saved) == [1, 2, 3, 4, 5, 6, 7]
    last = checkpoint.load(str(tmp_path / "m.npz"))  # the last saved checkpoint is intact and finite
    assert last.train_state["step"] == 7 and last.train_state["skipped_steps"] == 2 and all_finite(last)
    assert_bit_identical(last.params, saved[5], "weights of the last good step")


@pytest.mark.parametrize("optimizer,lr,cell,expect_skips", [
    ("adam", 1e4, "rnn", True),      # finite weights, then non-finite losses: skipped, then diverged
    ("sgd", 1e12, "rnn", True),
    ("adam", 1e38, "lstm", False),   # the very first update overflows the weights
    ("adagrad", 1e36, "gru", False),
])
def test_a_huge_learning_rate_never_saves_non_finite_weights(tmp_path, optimizer, lr, cell, expect_skips):
    cfg = config(steps=40, save_every=1, optimizer=optimizer, lr=lr, warmup_steps=0, clip=0.0,
                 max_bad_steps=3, eval_every=0, val_fraction=0.0, cell=cell,
                 activation="relu" if cell == "rnn" else "tanh")
    events, saves = [], []

    def save(ck):
        assert all_finite(ck)
        checkpoint.save(ck, str(tmp_path / "m.npz"))
        saves.append(ck.train_state["step"])

    with np.errstate(all="ignore"), pytest.raises(TrainingDiverged):
        run(cfg, save=save, on_event=lambda kind, info: events.append((kind, info)))
    skipped = [info for kind, info in events if kind == "skipped"]
    assert bool(skipped) == expect_skips
    for info in skipped:
        assert not (math.isfinite(info["loss"]) and math.isfinite(info["grad_norm"]))
    if expect_skips:
        assert len(skipped) == 3 and [s["streak"] for s in skipped] == [1, 2, 3]
    if saves:
        assert all_finite(checkpoint.load(str(tmp_path / "m.npz")))


# ---------------------------------------------------------------------------
# resume checks
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def finished():
    cfg = config(steps=3, eval_every=0)
    ck, _ = run(cfg)
    return ck


@pytest.mark.parametrize("option,value,flag", [("cell", "gru", "--cell"), ("hidden_size", 32, "--hidden-size"),
                                               ("num_layers", 1, "--num-layers"), ("dtype", "float64", "--dtype"),
                                               ("seq_len", 16, "--seq-len"), ("seed", 9, "--seed"),
                                               ("optimizer", "sgd", "--optimizer")])
def test_check_resume_refuses_changed_options(finished, option, value, flag):
    cfg = dataclasses.replace(finished.config, **{option: value})
    with pytest.raises(ConfigError) as e:
        check_resume(cfg, finished, corpus_for(cfg), given={option})
    assert flag in str(e.value)


def test_check_resume_refuses_another_corpus(finished):
    cfg = dataclasses.replace(finished.config)
    other = TEXT.replace("cat", "bat")
    with pytest.raises(ConfigError, match="corpus"):
        check_resume(cfg, finished, corpus_for(cfg, other), given=set())
    with pytest.raises(ConfigError, match="vocabulary"):
        check_resume(cfg, finished, corpus_for(cfg, TEXT + "xyzQ\n"), given=set())


def test_check_resume_with_odd_meta(finished):
    cfg = dataclasses.replace(finished.config)
    for meta in ({}, {"corpus": "not a dict"}, {"corpus": None}, {"corpus": {"name": "x"}}):
        odd = dataclasses.replace(finished, meta=meta)
        assert check_resume(cfg, odd, corpus_for(cfg), given=set()) == []


@pytest.mark.parametrize("change", [{"rng": None}, {"rng": {"bit_generator": "MT19937"}}, {"step": "x"},
                                    {"history": 5}])
def test_a_damaged_resume_state_is_a_clean_error(finished, change):
    from charlm.errors import CharlmError

    odd = dataclasses.replace(finished, train_state={**finished.train_state, **change},
                              params={k: v.copy() for k, v in finished.params.items()})
    cfg = dataclasses.replace(finished.config, steps=6)
    with pytest.raises(CharlmError, match="resume state is damaged"):
        train(cfg, corpus_for(cfg), resume=odd)


def test_check_resume_allows_budget_and_lr_changes(finished):
    cfg = dataclasses.replace(finished.config, steps=10, lr=1e-4, clip=1.0)
    changes = check_resume(cfg, finished, corpus_for(cfg), given={"steps", "lr"})
    assert any(c.startswith("steps: 3 -> 10") for c in changes)
    assert any(c.startswith("lr:") for c in changes)
    assert cfg.clip == finished.config.clip  # not given: the checkpoint's value is kept
    assert cfg.steps == 10


# ---------------------------------------------------------------------------
# tiny corpora and loading
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["ab", "abc\n", "hi\nyo\n", "x\n\n\ny"])
def test_tiny_corpus_adapts_batch_and_sequence_and_trains(text):
    cfg = config(steps=25, batch_size=32, seq_len=64, val_fraction=0.0, eval_every=0, lr=2e-2, num_layers=1)
    events = []
    ck, ended = run(cfg, text=text, on_event=lambda kind, info: events.append((kind, info)))
    adapted = [info for kind, info in events if kind == "adapted"]
    assert len(adapted) == 1
    B, T = adapted[0]["batch_size"], adapted[0]["seq_len"]
    assert 1 <= B <= 32 and 1 <= T <= 64 and (B, T) != (32, 64)
    assert B * T <= adapted[0]["N"]
    assert ended == "done" and ck.train_state["step"] == 25
    assert (ck.config.batch_size, ck.config.seq_len) == (B, T)
    assert all_finite(ck)
    losses = [info["loss"] for kind, info in events if kind == "step"]
    assert losses[-1] < losses[0]


def test_a_validation_fraction_near_one_still_leaves_something_to_train_on():
    cfg = config(steps=4, val_fraction=0.95, eval_every=0)
    ck, ended = run(cfg, text="abcd\n")
    assert ended == "done" and ck.train_state["step"] == 4 and all_finite(ck)
    assert ck.meta["last_val_bpc"] is not None and math.isfinite(ck.meta["last_val_bpc"])


def test_load_corpus_from_bytes_and_path(tmp_path):
    cfg = config()
    p = tmp_path / "c.txt"
    p.write_bytes(TEXT.encode())
    from_path = load_corpus(str(p), cfg)
    from_bytes = load_corpus(TEXT.encode(), cfg, name="<stdin>")
    assert from_path.vocab.tokens == from_bytes.vocab.tokens
    assert np.array_equal(from_path.train_ids, from_bytes.train_ids)
    assert np.array_equal(from_path.val_ids, from_bytes.val_ids)
    assert from_path.info["fingerprint"] == from_bytes.info["fingerprint"]
    assert from_bytes.info["name"] == "<stdin>"
    n = len(from_path.train_ids) + len(from_path.val_ids)
    assert n == len(TEXT) and len(from_path.val_ids) == round(n * 0.1)
    assert from_path.info["line_items"] is True


@pytest.mark.parametrize("data,needle", [(b"", "no text"), (b"\n\n\r\n", "only empty lines")])
def test_empty_corpus_is_refused(data, needle):
    with pytest.raises(CorpusError, match=needle):
        load_corpus(data, config())


def test_epochs_budget():
    cfg = config(steps=None, epochs=2.0, eval_every=0, val_fraction=0.0, batch_size=2, seq_len=16)
    ck, _ = run(cfg)
    N = len(TEXT)
    per_epoch = (N // 2) // 16
    assert ck.train_state["step"] == math.ceil(2.0 * per_epoch)


def test_auto_dropout_follows_the_passes_the_budget_allows():
    from charlm.config import AUTO_DROPOUT_MAX, auto_dropout

    assert auto_dropout(0.5) == 0.0 == auto_dropout(2.9)
    choices = [auto_dropout(p) for p in (1, 3, 5, 8, 15, 100, math.inf)]
    assert choices == sorted(choices) and choices[-1] == AUTO_DROPOUT_MAX
    assert Config.from_dict({"dropout": "auto"}).dropout is None
    with pytest.raises(ConfigError, match="--dropout must be in"):
        Config(dropout=1.5).validate()


@pytest.mark.parametrize("steps, expected", [(2, 0.0), (200, None)])
def test_training_resolves_auto_dropout_from_a_steps_budget_and_says_so(steps, expected):
    from charlm.config import AUTO_DROPOUT_MAX

    events = []
    cfg = config(steps=steps, dropout=None)
    corpus = corpus_for(cfg)
    ck, _ = train(cfg, corpus, on_event=lambda kind, info: events.append((kind, info)))
    passes = steps * cfg.batch_size * cfg.seq_len / len(corpus.train_ids)
    auto = [info for kind, info in events if kind == "auto"]
    assert len(auto) == 1 and auto[0]["passes"] == pytest.approx(passes)
    assert ck.config.dropout == auto[0]["dropout"] == (AUTO_DROPOUT_MAX if expected is None else expected)
    assert ck.config.char_dropout == auto[0]["char_dropout"] == (0.1 if expected is None else 0.0)
    # the resolved number is what the checkpoint keeps, and what a resume goes on with
    assert checkpoint.from_arrays(checkpoint.to_arrays(ck)).config.dropout == ck.config.dropout


def test_a_time_budget_measures_the_speed_to_choose_dropout():
    ticks = iter(range(10**6))
    events = []
    cfg = config(steps=None, max_time=1e9, dropout=None)
    # a fake clock advancing one second per reading: the timed step takes 1 s, so B·T chars/s
    ck, _ = train(cfg, corpus_for(cfg), clock=lambda: float(next(ticks)), should_stop=lambda: len(events) > 40,
                  on_event=lambda kind, info: events.append((kind, info)))
    auto = [info for kind, info in events if kind == "auto"]
    N = len(corpus_for(cfg).train_ids)
    assert auto[0]["passes"] == pytest.approx(cfg.batch_size * cfg.seq_len * 1e9 / N)
    assert ck.config.dropout == auto[0]["dropout"]
    explicit = config(steps=3, dropout=0.05)
    events.clear()
    ck, _ = train(explicit, corpus_for(explicit), on_event=lambda kind, info: events.append((kind, info)))
    assert ck.config.dropout == 0.05 and not [1 for kind, _ in events if kind == "auto"]


def test_auto_eval_every_validates_each_pass_over_a_small_corpus():
    from charlm.config import auto_eval_every
    from charlm.data import BatchPlan

    assert auto_eval_every(3) == 10 and auto_eval_every(57) == 57 and auto_eval_every(5000) == 200
    text = "".join(f"line {i} of a corpus with some words in it\n" for i in range(120))
    cfg = config(steps=400, eval_every=None)
    corpus = corpus_for(cfg, text)
    per_pass = BatchPlan(len(corpus.train_ids), cfg.batch_size, cfg.seq_len, 0).steps
    ck, _ = train(cfg, corpus)
    every = ck.config.eval_every
    assert every == max(10, per_pass) < 200
    assert [h["step"] for h in ck.train_state["history"]] == list(range(every, 401, every)) + ([400] if 400 % every else [])


# ---------------------------------------------------------------------------
# the weight average (--ema)
# ---------------------------------------------------------------------------

def test_validation_and_the_best_weights_are_the_weight_average():
    from charlm.validation import evaluate
    cfg = config(cell="gru", ema=0.9, eval_every=0)      # validated once, at the end
    ck, _ = run(cfg)
    avg = {k: ck.optim_state[f"avg.{k}"] for k in ck.params}
    assert_bit_identical(ck.best_params, avg, "best = average")
    assert not np.array_equal(avg["head.weight"], ck.params["head.weight"])
    val_ids = corpus_for(cfg).val_ids
    held_out = ngram.fit(corpus_for(cfg).train_ids, len(ck.vocab), ck.config.ngram, ck.arch.reset_at_eos)
    assert ck.train_state["best_val"] == evaluate(avg, ck.arch, val_ids, ngram.probs(held_out, val_ids)).nats
    assert ck.weights("best") is ck.best_params and ck.weights("last") is ck.params


def test_without_ema_there_is_no_average_and_the_best_weights_are_the_weights():
    ck, _ = run(config(cell="gru", ema=0.0, eval_every=0))
    assert not any(k.startswith("avg.") for k in ck.optim_state)
    assert_bit_identical(ck.best_params, ck.params, "best = last")


def test_resume_can_turn_the_average_on_and_off(tmp_path):
    first, _ = run(config(cell="gru", ema=0.0, steps=10))
    path = str(tmp_path / "a.npz")
    checkpoint.save(first, path)
    for steps, ema, has_average in ((20, 0.99, True), (30, 0.0, False)):
        loaded = checkpoint.load(path)
        cfg = dataclasses.replace(loaded.config, steps=steps, ema=ema)
        corpus = corpus_for(cfg)
        changes = check_resume(cfg, loaded, corpus, given={"steps", "ema"})
        assert f"ema: {loaded.config.ema} -> {ema}" in changes
        second, _ = train(cfg, corpus, resume=loaded)
        assert any(k.startswith("avg.") for k in second.optim_state) == has_average
        checkpoint.save(second, path)
        assert any(k.startswith("avg.") for k in checkpoint.load(path).optim_state) == has_average


@pytest.mark.parametrize("dropout, char_dropout, expected", [(0.3, None, 0.1), (0.5, None, 0.1), (0.2, None, 0.0),
                                                             (0.3, 0.0, 0.0), (0.0, 0.25, 0.25)])
def test_character_dropout_goes_with_the_largest_dropout_unless_given(dropout, char_dropout, expected):
    ck, _ = run(config(steps=3, dropout=dropout, char_dropout=char_dropout))
    assert ck.config.char_dropout == expected
    assert checkpoint.from_arrays(checkpoint.to_arrays(ck)).config.char_dropout == expected
    assert Config.from_dict({"char_dropout": "auto"}).char_dropout is None
    with pytest.raises(ConfigError, match="--char-dropout must be in"):
        Config(char_dropout=1.0).validate()


def test_character_dropout_changes_training_and_stays_reproducible():
    plain, _ = run(config(steps=6, dropout=0.0, char_dropout=0.0))
    noisy, _ = run(config(steps=6, dropout=0.0, char_dropout=0.5))
    again, _ = run(config(steps=6, dropout=0.0, char_dropout=0.5))
    assert not np.array_equal(plain.params["head.weight"], noisy.params["head.weight"])
    assert_same_run(noisy, again)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_a_vocabulary_larger_than_the_hidden_size_trains_through_the_column_lookup(cell, tmp_path):
    """Beyond max(H, model.ONEHOT_VOCAB) tokens layer 0 looks its input up: training, exact resume and scoring work."""
    rng = np.random.default_rng(0)
    alphabet = [chr(0x4E00 + i) for i in range(model.ONEHOT_VOCAB + 40)]
    text = "\n".join("".join(rng.choice(alphabet, size=12)) for _ in range(120)) + "\n"
    cfg = config(cell=cell, steps=12, eval_every=6)
    ck, _ = run(cfg, text)
    assert ck.arch.vocab_size > max(ck.arch.hidden_size, model.ONEHOT_VOCAB) and not model.concatenated(ck.arch, 0, cfg.batch_size)
    assert ck.train_state["step"] == 12 and math.isfinite(ck.train_state["last_loss"])
    assert_same_run(ck, interrupted_then_resumed(cfg, 5, tmp_path, text))
    from charlm.score import score_sentences
    lines = text.split("\n")[:5]
    together = score_sentences(ck.params, ck.arch, ck.vocab, lines)
    alone = [score_sentences(ck.params, ck.arch, ck.vocab, [s])[0] for s in lines]
    for a, b in zip(together, alone):
        assert math.isfinite(a.log_prob) and a.log_prob == pytest.approx(b.log_prob, rel=1e-5)


@pytest.mark.parametrize("line_state", ["carry", "reset"])
def test_the_ngram_baseline_is_the_ngram_alone_that_training_reports(line_state):
    """The summary's baseline row and its "N-gram alone" are one estimator on one split: the same number."""
    cfg = config(steps=3, ngram=4, line_state=line_state)
    data = corpus_for(cfg)
    ck, _ = train(cfg, data)
    rows = validation.baselines(data.train_ids, data.val_ids, len(data.vocab), cfg.ngram, ck.arch.reset_at_eos)
    assert list(rows) == ["unigram", "4-gram"]
    assert rows["4-gram"] == ck.meta["ngram_val_bpc"]
    assert rows["unigram"] > rows["4-gram"]
