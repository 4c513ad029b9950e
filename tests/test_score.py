"""Sentence and document log-likelihoods, against stepping the model by hand."""

import math

import numpy as np
import pytest

from charlm import model
from charlm.model import Arch, init_params, param_shapes
from charlm.score import Score, document_log_prob, score_document, score_sentences
from charlm.vocab import EOS_ID, UNK_ID, Vocab


def log_softmax_row(z):
    z = np.asarray(z, dtype=np.float64)
    m = z.max()
    return z - m - math.log(np.exp(z - m).sum())


VOCAB = Vocab(("<EOS>", "<UNK>", " ", "a", "b", "c", "é", "🙂"))


def make_model(cell="lstm", layers=2, H=6, seed=0):
    rng = np.random.default_rng(seed)
    arch = Arch(cell, len(VOCAB), H, layers)
    params = {k: rng.standard_normal(s) * 0.7 for k, s in param_shapes(arch).items()}
    return params, arch


def reference_log_probs(params, arch, ids, state=None, first_input=EOS_ID):
    """Step the model one token at a time, from the zero state and input <EOS>."""
    if state is None:
        state = model.zero_state(arch, 1, np.float64)
    x = first_input
    out = []
    for y in ids:
        logits, state = model.step(params, arch, np.array([x]), state)
        out.append(log_softmax_row(logits[0])[y])
        x = y
    return out, state


def ids_of(text):
    """Ids written out from the vocabulary's token list (not via encode)."""
    return [EOS_ID if ch == "\n" else VOCAB.tokens.index(ch) if ch in VOCAB.tokens[2:] else UNK_ID for ch in text]


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_sentence_log_prob_is_the_sum_over_characters_and_final_eos(cell):
    params, arch = make_model(cell)
    sentence = "abc é🙂 a"
    (s,) = score_sentences(params, arch, VOCAB, [sentence], keep_tokens=True)
    steps, _ = reference_log_probs(params, arch, ids_of(sentence) + [EOS_ID])
    assert len(steps) == len(sentence) + 1
    assert s.log_prob == pytest.approx(sum(steps), abs=1e-10)
    np.testing.assert_allclose(s.token_log_probs, steps, atol=1e-10)
    assert s.num_tokens == len(sentence) + 1
    assert s.num_unk == 0 and s.num_eos == 1
    assert s.text == sentence
    assert s.nats_per_token == pytest.approx(-sum(steps) / (len(sentence) + 1))
    assert s.bits_per_char == pytest.approx(s.nats_per_token / math.log(2))
    assert s.perplexity == pytest.approx(math.exp(s.nats_per_token))


def test_unknown_characters_are_scored_as_unk_and_counted():
    params, arch = make_model()
    sentence = "xa?bz"  # x, ?, z are not in the vocabulary
    (s,) = score_sentences(params, arch, VOCAB, [sentence])
    assert s.num_unk == 3
    steps, _ = reference_log_probs(params, arch, [UNK_ID, 3, UNK_ID, 4, UNK_ID, EOS_ID])
    assert s.log_prob == pytest.approx(sum(steps), abs=1e-10)
    assert s.to_json()["num_chars"] == 5 and s.to_json()["num_unk"] == 3


def test_empty_sentence_scores_only_eos():
    params, arch = make_model()
    (s,) = score_sentences(params, arch, VOCAB, [""])
    logits, _ = model.step(params, arch, np.array([EOS_ID]), model.zero_state(arch, 1, np.float64))
    assert s.num_tokens == 1
    assert s.log_prob == pytest.approx(log_softmax_row(logits[0])[EOS_ID], abs=1e-12)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_batched_scoring_equals_scoring_one_by_one(cell):
    params, arch = make_model(cell, seed=3)
    rng = np.random.default_rng(1)
    alphabet = list(" abcé🙂x")
    sentences = ["".join(rng.choice(alphabet, size=n)) for n in rng.integers(0, 25, size=23)]
    sentences += ["", "a", "a"]  # duplicates and the empty sentence
    batched = score_sentences(params, arch, VOCAB, sentences, batch_size=4)
    single = [score_sentences(params, arch, VOCAB, [s], batch_size=1)[0] for s in sentences]
    big = score_sentences(params, arch, VOCAB, sentences, batch_size=1000)
    assert [b.text for b in batched] == sentences  # results in the input order
    for b, s, g, text in zip(batched, single, big, sentences):
        assert b.log_prob == pytest.approx(s.log_prob, abs=1e-9)
        assert g.log_prob == pytest.approx(s.log_prob, abs=1e-9)
        assert b.num_tokens == s.num_tokens == len(text) + 1
        assert b.num_unk == text.count("x")
    # and each one equals the hand-stepped reference
    for text, s in zip(sentences[:6], single):
        steps, _ = reference_log_probs(params, arch, ids_of(text) + [EOS_ID])
        assert s.log_prob == pytest.approx(sum(steps), abs=1e-10)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("chunk", [1, 5, 512])
def test_document_log_prob_carries_state_across_lines_and_chunks(cell, chunk):
    params, arch = make_model(cell, seed=4)
    text = "ab c\n\nbé🙂a\nca b\nzz\n"
    ids = np.array(ids_of(text), dtype=VOCAB.dtype)
    total, n = document_log_prob(params, arch, ids, chunk=chunk)
    steps, _ = reference_log_probs(params, arch, ids.tolist())  # one stream, never reset
    assert n == len(ids) == len(text)
    assert total == pytest.approx(sum(steps), abs=1e-9)
    # carrying the state matters: resetting at each line gives another number
    per_line = sum(s.log_prob for s in score_sentences(params, arch, VOCAB, text.split("\n")[:-1]))
    assert abs(per_line - total) > 1e-6
    doc = score_document(params, arch, VOCAB, ids, "doc")
    assert doc.log_prob == pytest.approx(total, abs=1e-12)
    assert doc.num_eos == text.count("\n") and doc.num_unk == 2 and doc.num_tokens == len(ids)


def test_document_of_nothing():
    params, arch = make_model()
    assert document_log_prob(params, arch, np.zeros(0, dtype=np.uint8)) == (0.0, 0)


def test_float32_scoring_is_close_to_float64():
    params, arch = make_model("gru", seed=6)
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    sentences = ["abc", "é🙂 b a", ""]
    s64 = score_sentences(params, arch, VOCAB, sentences)
    s32 = score_sentences(p32, arch, VOCAB, sentences)
    for a, b in zip(s64, s32):
        assert isinstance(b.log_prob, float)
        assert b.log_prob == pytest.approx(a.log_prob, abs=1e-3)


def test_score_json_fields():
    s = Score(text="ab", log_prob=-3.0, num_tokens=3, num_unk=1)
    j = s.to_json()
    assert j["log2_prob"] == pytest.approx(-3.0 / math.log(2))
    assert j["nats_per_char"] == pytest.approx(1.0)
    assert j["num_chars"] == 2
    assert math.isnan(Score("", 0.0, 0, 0, 0).nats_per_token)


def test_document_pieces_read_from_the_start_equal_the_exact_measure():
    """With two pieces and a burn-in as long as the first, the second reads its full history: exact."""
    from charlm.score import document_log_prob, read_in_pieces

    arch = Arch("lstm", 9, 6, 2)
    params = init_params(arch, np.random.default_rng(4), "float64")
    ids = np.random.default_rng(5).integers(0, 9, size=300).astype(np.uint8)
    exact, n = document_log_prob(params, arch, ids)
    piecewise, gap = read_in_pieces(params, arch, ids, 2, burn_in=300, chunk=64)
    assert n == 300 and gap < 1e-12
    assert abs(piecewise - exact) < 1e-9 * abs(exact)


def test_document_pieces_with_short_burn_in_are_close():
    from charlm.score import document_log_prob, read_in_pieces

    arch = Arch("gru", 9, 6, 1)
    params = init_params(arch, np.random.default_rng(6), "float64")
    ids = np.random.default_rng(7).integers(0, 9, size=2000).astype(np.uint8)
    exact, _ = document_log_prob(params, arch, ids)
    approx, gap = read_in_pieces(params, arch, ids, 7, burn_in=64, chunk=50)
    assert approx != exact and gap > 0  # the pieces really start from a zero state...
    assert abs(approx - exact) < 1e-3 * abs(exact)  # ...but after burn-in they agree closely
    # a piece without burn-in scores with less context: a different total, and joints that disagree more
    cold, cold_gap = read_in_pieces(params, arch, ids, 7, burn_in=0, chunk=50)
    assert abs(cold - exact) > abs(approx - exact) and cold_gap > gap


def test_with_lines_as_sequences_a_document_is_the_sum_of_its_lines():
    """reset_at_eos: the state restarts after every <EOS>, so each line is scored as `score` scores a sentence."""
    vocab = Vocab(("<EOS>", "<UNK>", "a", "b", "c"))
    arch = Arch("gru", len(vocab), 5, 2, reset_at_eos=True)
    params = init_params(arch, np.random.default_rng(8), "float64")
    lines = ["ab", "c", "abca", "b"]
    doc, n = document_log_prob(params, arch, vocab.encode("\n".join(lines) + "\n"))
    parts = score_sentences(params, arch, vocab, lines)
    assert n == sum(p.num_tokens for p in parts)
    assert abs(doc - sum(p.log_prob for p in parts)) < 1e-9 * abs(doc)
    carried = Arch("gru", len(vocab), 5, 2)  # the same weights with the state carried across lines
    other, _ = document_log_prob(params, carried, vocab.encode("\n".join(lines) + "\n"))
    assert abs(other - doc) > 1e-6


def test_training_chooses_line_state_from_the_corpus(tmp_path):
    from charlm.config import Config
    from charlm.train import load_corpus, train

    items = tmp_path / "items.txt"
    items.write_text("Anna\nBob\nCarl\n" * 30)
    prose = tmp_path / "prose.txt"
    prose.write_text("It was a dark night.\n\nThe end came soon.\n" * 30)
    for path, expected in ((items, "reset"), (prose, "carry")):
        cfg = Config(hidden_size=4, num_layers=1, batch_size=2, seq_len=8, steps=1).validate()
        ck, _ = train(cfg, load_corpus(str(path), cfg))
        assert ck.config.line_state == expected
        assert ck.arch.reset_at_eos == (expected == "reset")


def test_a_long_document_read_in_checked_pieces_gives_the_in_order_number(monkeypatch):
    """The default reading of a long document: pieces side by side, joints checked, same total."""
    from charlm import score

    arch = Arch("gru", 9, 8, 2)
    params = init_params(arch, np.random.default_rng(11), "float64")
    params["layers.0.weight_hh"] *= 0.5     # a model that forgets its starting state, as trained ones do
    params["layers.1.weight_hh"] *= 0.5
    ids = np.random.default_rng(12).integers(0, 9, size=3 * score.PIECE_TOKENS + 77).astype(np.uint8)
    gaps = []
    real = score.read_in_pieces
    monkeypatch.setattr(score, "read_in_pieces", lambda *a, **k: gaps.append(real(*a, **k)[1]) or real(*a, **k))
    total, n = document_log_prob(params, arch, ids)
    in_order, m = document_log_prob(params, arch, ids, exact=True)
    assert n == m == len(ids)
    assert len(gaps) == 1 and gaps[0] <= score.JOINT_TOLERANCE   # read in pieces, joints agreed
    assert total != in_order                                       # really another reading...
    assert abs(total - in_order) < 1e-9 * abs(in_order)           # ...of the same number


def test_pieces_that_do_not_agree_at_their_joints_fall_back_to_reading_in_order(monkeypatch):
    """A model that never forgets (h<t> = relu(h<t-1> + x)): no burn-in is long enough."""
    from charlm import score

    arch = Arch("rnn", 5, 3, 1, activation="relu")
    params = {
        "layers.0.weight_ih": np.full((3, 5), 0.01),
        "layers.0.weight_hh": np.eye(3),
        "layers.0.bias": np.zeros(3),
        "head.weight": np.random.default_rng(1).standard_normal((5, 3)),
        "head.bias": np.zeros(5),
    }
    ids = np.random.default_rng(2).integers(0, 5, size=3 * score.PIECE_TOKENS + 300).astype(np.uint8)
    gaps = []
    real = score.read_in_pieces
    monkeypatch.setattr(score, "read_in_pieces", lambda *a, **k: gaps.append(real(*a, **k)[1]) or real(*a, **k))
    total, _ = document_log_prob(params, arch, ids)
    assert len(gaps) == 4 and min(gaps) > score.JOINT_TOLERANCE   # burn-in 512 … 4096, none enough
    assert total == document_log_prob(params, arch, ids, exact=True)[0]


def test_reading_in_pieces_keeps_each_forward_call_small(monkeypatch):
    """Memory: each forward call reads about CHUNK_TOKENS tokens, however many pieces there are."""
    from charlm import score

    arch = Arch("gru", 9, 4, 1)
    params = init_params(arch, np.random.default_rng(3), "float64")
    ids = np.random.default_rng(4).integers(0, 9, size=40_000).astype(np.uint8)
    shapes = []
    for name in ("forward", "infer"):
        real = getattr(model, name)
        monkeypatch.setattr(model, name, lambda p, a, x, *rest, real=real, **kw: shapes.append(x.shape) or real(p, a, x, *rest, **kw))
    for pieces in (2, 9, 64):
        shapes.clear()
        score.read_in_pieces(params, arch, ids, pieces, burn_in=512)
        assert max(t * b for t, b in shapes) <= max(score.CHUNK_TOKENS, 16 * pieces)
        assert sum(t * b for t, b in shapes) >= len(ids)          # ...and every token is still read
