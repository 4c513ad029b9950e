"""Sentence and document log-likelihoods, against stepping the model by hand."""

import math

import numpy as np
import pytest

from charlm import inference, model
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
        logits, state = inference.step(params, arch, np.array([x]), state)
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
    logits, _ = inference.step(params, arch, np.array([EOS_ID]), model.zero_state(arch, 1, np.float64))
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
    from charlm.dataset import load_corpus
    from charlm.train import train

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
    for module, name in ((model, "forward"), (inference, "infer")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda p, a, x, *rest, real=real, **kw: shapes.append(x.shape) or real(p, a, x, *rest, **kw))
    for pieces in (2, 9, 64):
        shapes.clear()
        score.read_in_pieces(params, arch, ids, pieces, burn_in=512)
        assert max(t * b for t, b in shapes) <= max(score.CHUNK_TOKENS, 16 * pieces)
        assert sum(t * b for t, b in shapes) >= len(ids)          # ...and every token is still read


# ---------------------------------------------------------------------------
# long lines: read in stretches, the state carried, in bounded memory
# ---------------------------------------------------------------------------

def one_piece_log_probs(params, arch, ids, mix=None):
    """A line read as one sequence in a single forward call, as score_sentences read every line before."""
    from charlm import mixture, ngram
    from charlm.inference import token_log_probs

    ids = np.asarray(ids, dtype=np.intp)
    inputs = np.concatenate([[EOS_ID], ids[:-1]])
    logp, _ = token_log_probs(params, arch, inputs[:, None], ids[:, None])
    logp = logp[:, 0]
    if mix is not None:
        logp = mixture.log_prob(mix.weight, logp, ngram.probs(mix.ngram, ids))
    return logp


def record_forward_shapes(monkeypatch):
    """Every (T, B) the network's forward functions are called with."""
    shapes = []
    for module, name in ((model, "forward"), (inference, "infer")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda p, a, x, *rest, real=real, **kw: shapes.append(x.shape) or real(p, a, x, *rest, **kw))
    return shapes


def long_line(n, seed=0, alphabet=" abcé🙂x"):
    return "".join(np.random.default_rng(seed).choice(list(alphabet), size=n))


@pytest.mark.parametrize("cell,reset,with_ngram", [("rnn", False, False), ("gru", False, True), ("lstm", True, True),
                                                    ("lstm", False, False)])
def test_a_long_line_scored_in_pieces_equals_the_line_read_in_one_piece(monkeypatch, cell, reset, with_ngram):
    from charlm import ngram
    from charlm.mixture import Mixture

    rng = np.random.default_rng(5)
    arch = Arch(cell, len(VOCAB), 6, 2, reset_at_eos=reset)
    params = {k: rng.standard_normal(s) * 0.7 for k, s in param_shapes(arch).items()}
    mix = None
    if with_ngram:
        mix = Mixture(ngram.fit(VOCAB.encode(long_line(3000, seed=9) + "\n"), len(VOCAB), 5, reset), 0.6)
    monkeypatch.setattr(inference, "SENTENCE_TOKENS", 1000)    # (the default, 16,384, in the tests below)
    line = long_line(3 * inference.SENTENCE_TOKENS + 77)       # 3,077 tokens: four stretches
    others = ["abc", "", long_line(1500, seed=1), "é🙂 a"]  # shorter lines in the same batch
    shapes = record_forward_shapes(monkeypatch)
    results = score_sentences(params, arch, VOCAB, others[:2] + [line] + others[2:], keep_tokens=True, mix=mix)
    assert len(shapes) >= 4 and max(t * b for t, b in shapes) <= inference.SENTENCE_TOKENS   # really read in pieces
    monkeypatch.undo()
    expected = one_piece_log_probs(params, arch, VOCAB.encode(line).tolist() + [EOS_ID], mix)
    s = results[2]
    assert s.num_tokens == len(line) + 1 == len(expected) and s.num_eos == 1 and s.num_unk == line.count("x")
    np.testing.assert_allclose(s.token_log_probs, expected, rtol=0, atol=1e-10)   # every character, the <EOS> too
    assert s.log_prob == pytest.approx(expected.sum(), rel=1e-12)
    for text, r in zip(others[:2] + others[2:], results[:2] + results[3:]):     # and the lines beside it
        one = one_piece_log_probs(params, arch, VOCAB.encode(text).tolist() + [EOS_ID], mix)
        np.testing.assert_allclose(r.token_log_probs, one, rtol=0, atol=1e-10)


def test_a_long_line_in_float32_scores_as_in_one_piece():
    params, arch = make_model("lstm", seed=7)
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    line = long_line(inference.SENTENCE_TOKENS + 5, seed=3)    # two stretches at the default
    (s,) = score_sentences(p32, arch, VOCAB, [line], keep_tokens=True)
    expected = one_piece_log_probs(p32, arch, VOCAB.encode(line).tolist() + [EOS_ID])
    np.testing.assert_allclose(s.token_log_probs, expected, rtol=0, atol=1e-5)
    assert s.log_prob == pytest.approx(expected.sum(), rel=1e-6)


def test_scoring_lines_keeps_each_forward_call_small(monkeypatch):
    """Memory: whatever the longest line, a forward call reads at most max(SENTENCE_TOKENS, batch) tokens.

    (A forward call's memory is proportional to the tokens it reads: logits
    and log-softmax of V floats per token, and the cells' per-step arrays.)
    """
    from charlm import score

    params, arch = make_model("gru", H=4, layers=1, seed=2)
    line = long_line(40_000, seed=4)          # three stretches at the default SENTENCE_TOKENS
    short = [long_line(n, seed=n) for n in range(300)]
    shapes = record_forward_shapes(monkeypatch)
    for batch_size in (1, 7, 128, 300):
        shapes.clear()
        results = score_sentences(params, arch, VOCAB, short + [line] + short[:40], batch_size=batch_size)
        assert max(t * b for t, b in shapes) <= max(inference.SENTENCE_TOKENS, batch_size)
        total = sum(r.num_tokens for r in results)
        read = sum(t * b for t, b in shapes)
        assert total <= read < 1.2 * total + inference.SENTENCE_TOKENS   # every token read, and not the long line's length
        #                                                            times the batch (no padding to the longest)
    shapes.clear()
    score.explain(params, arch, VOCAB, line[:10_000])   # --show reads a long line in pieces too
    assert max(t * b for t, b in shapes) <= score.CHUNK_TOKENS and sum(t for t, _ in shapes) == 10_001


def test_scoring_a_long_line_allocates_little_beyond_the_line_itself(monkeypatch):
    """Measured memory (tracemalloc sees NumPy's buffers), not time: the peak grows by bytes per character,
    not by what a forward call over the whole line takes per character (the control, read in one piece)."""
    import tracemalloc

    monkeypatch.setattr(inference, "SENTENCE_TOKENS", 1000)   # stretches shorter than the lines (tracemalloc is slow)
    params, arch = make_model("lstm", H=16, layers=1, seed=8)
    p32 = {k: v.astype(np.float32) for k, v in params.items()}

    def peak(run):
        tracemalloc.start()
        try:
            run()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    lines = {n: long_line(n, seed=n) for n in (4_000, 16_000)}
    pieces = {n: peak(lambda: score_sentences(p32, arch, VOCAB, [line])) for n, line in lines.items()}
    whole = {n: peak(lambda: one_piece_log_probs(p32, arch, VOCAB.encode(line).tolist() + [EOS_ID]))
             for n, line in lines.items()}
    per_char = (pieces[16_000] - pieces[4_000]) / 12_000
    control = (whole[16_000] - whole[4_000]) / 12_000
    assert per_char < 100, pieces        # the ids and one float64 per token
    assert control > 4 * per_char, (control, per_char)   # (one piece: ~500 bytes a character for this tiny model)
    assert pieces[4_000] < 20e6, pieces


def test_explain_in_pieces_equals_explain_in_one_piece(monkeypatch):
    from charlm import ngram, score
    from charlm.mixture import Mixture

    params, arch = make_model("gru", seed=5)
    mix = Mixture(ngram.fit(VOCAB.encode(long_line(2000, seed=2) + "\n"), len(VOCAB), 4, False), 0.7)
    line = long_line(1000, seed=6)
    ids = VOCAB.encode(line).tolist() + [EOS_ID]
    monkeypatch.setattr(score, "CHUNK_TOKENS", 64)
    pieces = score.explain(params, arch, VOCAB, line, mix=mix)
    monkeypatch.setattr(score, "CHUNK_TOKENS", 10 ** 6)
    whole = score.explain(params, arch, VOCAB, line, mix=mix)
    np.testing.assert_allclose(pieces.bits, whole.bits, rtol=0, atol=1e-10)
    np.testing.assert_allclose(pieces.bits, -one_piece_log_probs(params, arch, ids, mix) / math.log(2), rtol=0, atol=1e-10)
    assert [[c for c, _ in t] for t in pieces.top] == [[c for c, _ in t] for t in whole.top]
    assert len(pieces.tokens) == len(pieces.top) == len(ids)


# ---------------------------------------------------------------------------
# the table shows untrusted text safely
# ---------------------------------------------------------------------------

UNSAFE = ["B\x1b[31mred\x1b[0m", "a\tb", "x\x7fy\x85z\u202eq\x00", "[bold]b[/bold] [/] [red]r :smile:", "An\udcffna",
          "zero\u200bwidth\u2028sep", "é🙂 ok"]
SHOWN = ["B\\x1b[31mred\\x1b[0m", "a\\tb", "x\\x7fy\\x85z\\u202eq\\x00", "[bold]b[/bold] [/] [red]r :smile:", "An\\xffna",
         "zero\\u200bwidth\\u2028sep", "é🙂 ok"]


def render(renderable, **console):
    import io

    from rich.console import Console

    buf = io.StringIO()
    Console(file=buf, width=250, **console).print(renderable)
    return buf.getvalue()


def test_score_table_escapes_characters_that_do_not_print_and_shows_markup_as_written():
    from charlm.cli.render import score_table, visible_text

    table = score_table([Score(t, -1.0, len(t) + 1, 0) for t in UNSAFE], show_text_width=200)
    plain = render(table, color_system=None)
    assert [ch for ch in plain if not ch.isprintable() and ch != "\n"] == []   # no control character at all
    rows = [line for line in plain.splitlines() if "│" in line]
    assert len(rows) == len(UNSAFE)                                            # a tab or separator splits no row
    for row, shown in zip(rows, SHOWN):
        assert row.split("│")[1].strip() == shown
    terminal = render(table, force_terminal=True, color_system="truecolor")
    assert "\x1b[31m" not in terminal                          # Rich's own styles, but none from the text:
    assert "\x1b[2m\\x1b\x1b[0m[31mred" in terminal             # its escape, dimmed, then the rest as written
    assert [visible_text(t).plain for t in UNSAFE] == SHOWN
    assert visible_text("plain text, 'quotes' and \\ backslash").plain == "plain text, 'quotes' and \\ backslash"


def test_score_command_escapes_the_table_and_keeps_json_exact(trained, tmp_path):
    import json

    from conftest import invoke, ok

    _, _, ck = trained
    f = tmp_path / "unsafe.txt"
    f.write_bytes("\n".join(UNSAFE[:4] + UNSAFE[5:]).encode("utf-8") + b"\nAn\xffna\n")
    r = ok(invoke("score", "-c", ck, "--file", f, "--errors", "surrogateescape"))
    assert "\x1b" not in r.stdout and "\t" not in r.stdout and "\\x1b[31mred" in r.stdout
    assert "[bold]b[/bold]" in r.stdout and "An\\xffna" in r.stdout
    r = ok(invoke("score", "-c", ck, "--file", f, "--errors", "surrogateescape", "--json"))
    texts = [json.loads(line)["text"] for line in r.stdout.split("\n")[:-1]]   # (not splitlines: U+0085 is in a text)
    assert texts == UNSAFE[:4] + UNSAFE[5:] + ["An\udcffna"]
