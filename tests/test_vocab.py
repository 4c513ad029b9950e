"""The vocabulary: the id rule, <UNK> folding, encoding, and the JSON file."""

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charlm.errors import VocabError
from charlm.vocab import (
    EOS, EOS_ID, UNK, UNK_DISPLAY, UNK_ID, Vocab, build_vocab, code_points, count_code_points, load_vocab,
    save_vocab,
)


def counts_of(text: str) -> np.ndarray:
    return count_code_points(code_points(text))


def vocab_of(text: str, **kw) -> Vocab:
    return build_vocab(counts_of(text), **kw)


# ---------------------------------------------------------------------------
# the id rule
# ---------------------------------------------------------------------------

def test_specials_first_then_kept_characters_in_code_point_order():
    text = "zebra\nApple ☃ é\n"
    v = vocab_of(text)
    assert v.tokens[0] == EOS and v.tokens[1] == UNK
    assert EOS_ID == 0 and UNK_ID == 1
    chars = sorted(set(text) - {"\n"}, key=ord)
    assert list(v.tokens[2:]) == chars
    assert "\n" not in v.tokens
    for ch in chars:
        assert v.encode(ch).tolist() == [v.tokens.index(ch)]


def test_ids_do_not_depend_on_the_order_of_the_text():
    a = vocab_of("hello world\nfoo\n")
    b = vocab_of("foo\n dlrow olleh\n")
    assert a.tokens == b.tokens
    assert build_vocab(counts_of("abcabc")).tokens == build_vocab(counts_of("cba" * 2)).tokens


def test_counts_of_specials_are_lines_and_absorbed_characters():
    v = vocab_of("aab\nab\nc\n", min_count=2)
    assert v.tokens == (EOS, UNK, "a", "b")
    assert v.counts == (3, 1, 3, 2)
    assert v.unk_chars == {"c": 1}


def test_min_count_folds_rare_characters_into_unk():
    text = "aaaa bbb cc d\n"
    v = vocab_of(text, min_count=3)
    assert set(v.tokens[2:]) == {"a", "b", " "}  # " " occurs 3 times
    assert v.unk_chars == {"c": 2, "d": 1}
    ids = v.encode("abcd")
    assert ids.tolist() == [v.tokens.index("a"), v.tokens.index("b"), UNK_ID, UNK_ID]


def test_max_size_keeps_the_most_frequent_and_breaks_ties_by_code_point():
    # counts: x 5, b 3, a 3, c 3, z 1.  max_size 4 = 2 specials + 2 characters:
    # x (most frequent), then the tie a/b/c is broken by the lower code point: a.
    text = "xxxxx" + "bbb" + "aaa" + "ccc" + "z"
    v = vocab_of(text, max_size=4)
    assert v.tokens == (EOS, UNK, "a", "x")
    assert v.unk_chars == {"b": 3, "c": 3, "z": 1}
    v5 = vocab_of(text, max_size=5)
    assert v5.tokens == (EOS, UNK, "a", "b", "x")


def test_max_size_and_min_count_together():
    text = "aaaa bbb cc d"
    v = vocab_of(text, min_count=2, max_size=4)
    assert v.tokens == (EOS, UNK, " ", "a")  # " " 3, a 4, b 3: tie " " / b -> " " (U+0020 < b)
    assert set(v.unk_chars) == {"b", "c", "d"}


def test_build_vocab_refuses_bad_limits():
    with pytest.raises(VocabError, match="min-count"):
        vocab_of("abc", min_count=0)
    with pytest.raises(VocabError, match="max-size"):
        vocab_of("abc", max_size=1)


def test_unseen_characters_are_unk_and_newline_is_eos():
    v = vocab_of("abc\n")
    ids = v.encode("a\nq☃\n\x00")
    assert ids.tolist() == [2, EOS_ID, UNK_ID, UNK_ID, EOS_ID, UNK_ID]
    assert v.decode(ids) == "a\n" + UNK_DISPLAY * 2 + "\n" + UNK_DISPLAY


def test_newline_is_never_a_token():
    with pytest.raises(VocabError, match="newline"):
        Vocab((EOS, UNK, "\n"))
    v = vocab_of("\n\n\n")
    assert v.tokens == (EOS, UNK)
    assert v.counts[0] == 3


def test_encode_with_a_vocabulary_of_specials_only():
    v = Vocab((EOS, UNK))
    assert v.encode("ab\nc").tolist() == [UNK_ID, UNK_ID, EOS_ID, UNK_ID]
    assert v.encode("").tolist() == []


@pytest.mark.parametrize("size,dtype", [(2, np.uint8), (256, np.uint8), (257, np.uint16),
                                        (65536, np.uint16), (65537, np.uint32)])
def test_id_dtype_is_the_smallest_that_fits(size, dtype):
    tokens = (EOS, UNK) + tuple(chr(cp) for cp in range(0x100, 0x100 + size - 2))
    v = Vocab(tokens)
    assert v.dtype == np.dtype(dtype)
    last = tokens[-1] if size > 2 else "x"  # the highest id (or <UNK> if there are no characters)
    ids = v.encode(last + "\n")
    assert ids.dtype == np.dtype(dtype)
    assert ids.tolist() == [size - 1, EOS_ID]


def test_encode_decode_round_trip_with_unusual_characters():
    text = "naïve cafe\u0301 🙂👍🏽 \x00\x01\x7f\t \u200b\ufeff \udc80\ud800 end"
    v = vocab_of(text)
    assert v.decode(v.encode(text)) == text
    assert UNK_ID not in v.encode(text)


# ---------------------------------------------------------------------------
# the JSON file
# ---------------------------------------------------------------------------

def test_save_load_round_trip(tmp_path):
    text = "hello wörld ☃\n🙂 \x00 \udcff\nrare\n"
    v = vocab_of(text, min_count=2)
    path = tmp_path / "vocab.json"
    save_vocab(v, str(path))
    data = json.loads(path.read_text(encoding="ascii"))  # pure ASCII on disk
    assert data["tokens"][:2] == [EOS, UNK]
    w = load_vocab(str(path))
    assert w.tokens == v.tokens
    assert w.counts == v.counts
    assert w.unk_chars == v.unk_chars
    sample = "hello \x00 rare ☃"
    assert np.array_equal(w.encode(sample), v.encode(sample))


def write(tmp_path, content, name="v.json"):
    p = tmp_path / name
    if isinstance(content, (bytes, bytearray)):
        p.write_bytes(content)
    elif isinstance(content, str):
        p.write_text(content, encoding="utf-8")
    else:
        p.write_text(json.dumps(content), encoding="utf-8")
    return str(p)


def v1(**fields) -> dict:
    """A vocabulary file's object as save_vocab writes it: format and version first."""
    return {"format": "charlm-vocab", "version": 1, **fields}


@pytest.mark.parametrize("content,needle", [
    ("{not json", "not valid JSON"),
    ("", "not valid JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
    ([1, 2, 3], "JSON object"),
    (v1(tokens="abc"), "tokens"),
    (v1(tokens=[EOS, UNK, 3]), "tokens"),
    (v1(), "tokens"),
    ({"format": "something-else", "version": 1, "tokens": [EOS, UNK]}, "format"),
    (v1(tokens=["a", "b"]), "<EOS>"),
    (v1(tokens=[UNK, EOS, "a"]), "<EOS>"),
    (v1(tokens=[EOS, "a"]), "<UNK>"),
    (v1(tokens=[EOS, UNK, "a", "a"]), "duplicate"),
    (v1(tokens=[EOS, UNK, "b", "a"]), "order"),
    (v1(tokens=[EOS, UNK, "ab"]), "single character"),
    (v1(tokens=[EOS, UNK, ""]), "single character"),
    (v1(tokens=[EOS, UNK, "a", EOS]), "single character"),
    (v1(tokens=[EOS, UNK, "\n"]), "newline"),
    (v1(tokens=[EOS, UNK, "a"], counts=[1, 2]), "counts"),
    (v1(tokens=[EOS, UNK, "a"], counts=[1, -2, 3]), "counts"),
    (v1(tokens=[EOS, UNK, "a"], unk_chars=[1]), "unk_chars"),
])
def test_load_refuses_malformed_files(tmp_path, content, needle):
    path = write(tmp_path, content)
    with pytest.raises(VocabError) as e:
        load_vocab(path)
    msg = str(e.value)
    assert needle.lower() in msg.lower()
    assert "\n" not in msg and len(msg) < 300


def refused(tmp_path, content) -> str:
    """load_vocab's one-line refusal of a hand-written file."""
    path = write(tmp_path, content)
    with pytest.raises(VocabError) as e:
        load_vocab(path)
    msg = str(e.value)
    assert path in msg and "\n" not in msg and len(msg) < 300
    return msg


TOKENS = [EOS, UNK, "a", "b"]


def test_load_refuses_a_file_without_format_and_version(tmp_path):
    msg = refused(tmp_path, {"tokens": TOKENS})
    assert 'no "format" key' in msg and "charlm-vocab" in msg
    msg = refused(tmp_path, '{"format": "charlm-vocab", "tokens": ["<EOS>", "<UNK>"]}')
    assert 'no "version" key' in msg and "reads version 1" in msg


@pytest.mark.parametrize("version", [2, 0, -1, 10 ** 20])
def test_load_refuses_another_version_and_says_which_it_reads(tmp_path, version):
    msg = refused(tmp_path, {"format": "charlm-vocab", "version": version, "tokens": TOKENS})
    assert f"version {version} is not supported" in msg and "reads version 1" in msg


@pytest.mark.parametrize("version", ["one", "1", 1.0, True, None, [1]])
def test_load_refuses_a_version_that_is_not_an_integer(tmp_path, version):
    msg = refused(tmp_path, {"format": "charlm-vocab", "version": version, "tokens": TOKENS})
    assert '"version" must be an integer' in msg and json.dumps(version) in msg and "reads version 1" in msg


@pytest.mark.parametrize("fmt", [None, 1, "charlm-checkpoint", ["charlm-vocab"]])
def test_load_refuses_another_format(tmp_path, fmt):
    msg = refused(tmp_path, {"format": fmt, "version": 1, "tokens": TOKENS})
    assert "not a charlm vocabulary" in msg and json.dumps(fmt) in msg


@pytest.mark.parametrize("counts,shown", [
    ([5, 0, 3, True], "entry 3 is true"),
    ([5, False, 3, 1], "entry 1 is false"),
    ([5, 0, 3.0, 1], "entry 2 is 3.0"),
    ([5, 0, "3", 1], 'entry 2 is "3"'),
    ([5, 0, None, 1], "entry 2 is null"),
    ([5, 0, 2 ** 63, 1], f"entry 2 is {2 ** 63}"),   # beyond the checkpoint's int64
])
def test_load_refuses_counts_that_are_not_integer_counts(tmp_path, counts, shown):
    msg = refused(tmp_path, v1(tokens=TOKENS, counts=counts))
    assert '"counts" must be a list of non-negative integers' in msg and shown in msg
    assert load_vocab(write(tmp_path, v1(tokens=TOKENS, counts=[5, 0, 3, 2 ** 63 - 1]))).counts[3] == 2 ** 63 - 1


@pytest.mark.parametrize("digits", [31, 5000, 100_000])
def test_load_refuses_a_count_with_thousands_of_digits(tmp_path, digits):
    """Past Python's int-parsing limit (4,300 digits) json.loads raises a bare ValueError: one line instead."""
    text = '{"format": "charlm-vocab", "version": 1, "tokens": ["<EOS>", "<UNK>", "a"], "counts": [1, 0, %s]}'
    msg = refused(tmp_path, text % ("9" * digits))
    assert "not a valid vocabulary" in msg and f"integer of {digits:,} digits" in msg
    msg = refused(tmp_path, text.replace('"version": 1', '"version": -' + "1" * digits) % "1")
    assert f"integer of {digits:,} digits" in msg


def test_load_refuses_json_nested_too_deeply(tmp_path):
    msg = refused(tmp_path, '{"format": "charlm-vocab", "version": 1, "tokens": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert "nested too deeply" in msg


@pytest.mark.parametrize("tokens,named", [
    ([EOS, UNK, "a", "b", "a"], "token 4 ('a' (U+0061)) is a duplicate of token 2"),
    ([EOS, UNK, "a", "c", "b", "c"], "token 5 ('c' (U+0063)) is a duplicate of token 3"),
    ([EOS, UNK, "\x1b", "a", "\x1b"], "token 4 ('\\x1b' (U+001B)) is a duplicate of token 2"),
])
def test_load_names_a_duplicate_character_as_a_duplicate(tmp_path, tokens, named):
    msg = refused(tmp_path, v1(tokens=tokens))
    assert named in msg and "order" not in msg
    with pytest.raises(VocabError, match="duplicate"):
        Vocab(tuple(tokens))
    assert "out of code-point order" in refused(tmp_path, v1(tokens=[EOS, UNK, "b", "a", "c"]))


def test_load_refuses_unexpected_keys_and_malformed_unk_chars(tmp_path):
    assert 'unexpected key "count"' in refused(tmp_path, v1(tokens=TOKENS, count=[1, 2, 3, 4]))
    for unk_chars, needle in (({"c": True}, '"c" has true'), ({"c": -1}, '"c" has -1'), ({"c": "1"}, '"c" has "1"'),
                              ({"a": 1}, '"a" is a token'), ({"cd": 1}, "not a single character"),
                              ({"\n": 1}, "newline")):
        msg = refused(tmp_path, v1(tokens=TOKENS, unk_chars=unk_chars))
        assert '"unk_chars"' in msg and needle in msg, msg
    v = load_vocab(write(tmp_path, v1(tokens=TOKENS, counts=[1, 3, 2, 2], unk_chars={"c": 2, "\x00": 1})))
    assert v.unk_chars == {"c": 2, "\x00": 1}


def test_load_refuses_missing_file_and_directory(tmp_path):
    with pytest.raises(VocabError, match="not found"):
        load_vocab(str(tmp_path / "nope.json"))
    with pytest.raises(VocabError, match="directory"):
        load_vocab(str(tmp_path))


def test_load_accepts_a_minimal_file(tmp_path):
    path = write(tmp_path, v1(tokens=[EOS, UNK, " ", "a", "é"]))
    v = load_vocab(path)
    assert v.encode("a é?").tolist() == [3, 2, 4, UNK_ID]


# ---------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------

# every code point, surrogates included (st.text() leaves them out)
any_char = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, blacklist_categories=())
escaped_bytes = st.binary(max_size=60).map(lambda b: b.decode("utf-8", "surrogateescape"))
texts = st.one_of(
    st.text(max_size=60),
    st.text(alphabet=any_char, max_size=60),
    escaped_bytes,
    st.lists(st.sampled_from(["a", "\n", "\r", "\x00", "\u0301", "🙂", "👍🏽", "\udc80", "\ud83d", "\x1b", "\u2028"]),
             max_size=40).map("".join),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts)
def test_property_round_trip_without_unk(text):
    v = vocab_of(text)
    ids = v.encode(text)
    assert len(ids) == len(text)
    assert UNK_ID not in ids.tolist()
    assert v.decode(ids) == text
    assert ids.tolist().count(EOS_ID) == text.count("\n")
    assert list(v.tokens[2:]) == sorted(set(text) - {"\n"}, key=ord)


@settings(max_examples=300, deadline=None)
@given(texts, texts, st.integers(1, 4), st.one_of(st.none(), st.integers(2, 8)))
def test_property_encode_never_raises_and_unknowns_are_unk(train_text, other, min_count, max_size):
    v = vocab_of(train_text, min_count=min_count, max_size=max_size)
    ids = v.encode(other)
    assert ids.dtype == v.dtype and len(ids) == len(other)
    kept = set(v.tokens[2:])
    for ch, i in zip(other, ids.tolist()):
        if ch == "\n":
            assert i == EOS_ID
        elif ch in kept:
            assert v.tokens[i] == ch
        else:
            assert i == UNK_ID
    assert max_size is None or len(v) <= max_size
    assert all(c >= min_count for c in v.counts[2:])


@settings(max_examples=100, deadline=None)
@given(texts)
def test_property_json_round_trip(tmp_path_factory, text):
    path = str(tmp_path_factory.mktemp("v") / "vocab.json")
    v = vocab_of(text, min_count=2)
    save_vocab(v, path)
    w = load_vocab(path)
    assert (w.tokens, w.counts, w.unk_chars) == (v.tokens, v.counts, v.unk_chars)
