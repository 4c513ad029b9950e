"""Reading corpora: universal newlines, chunking, decoding errors, id arrays."""

import functools
import io
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charlm import corpus
from charlm.corpus import count_corpus, encode_corpus, iter_text, read_lines
from charlm.errors import CorpusError
from charlm.vocab import EOS_ID, UNK_ID, Vocab, build_vocab


def write(tmp_path, data: bytes, name="c.txt") -> str:
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def vocab_for(text: str) -> Vocab:
    return Vocab(("<EOS>", "<UNK>") + tuple(sorted(set(text) - {"\n"}, key=ord)))


def expected_ids(vocab: Vocab, lines: list[str]) -> list[int]:
    """Independent reference: each line's character ids, then <EOS>."""
    out = []
    for line in lines:
        for ch in line:
            out.append(vocab.tokens.index(ch) if ch in vocab.tokens[2:] else UNK_ID)
        out.append(EOS_ID)
    return out


@pytest.fixture
def small_chunks(monkeypatch):
    """Make count_corpus / encode_corpus / read_lines read in chunks of n bytes."""
    original = corpus.iter_text

    def use(n):
        monkeypatch.setattr(corpus, "iter_text", functools.partial(original, chunk_bytes=n))
    return use


# ---------------------------------------------------------------------------
# line ends
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("data", [b"ab\ncd\n", b"ab\r\ncd\r\n", b"ab\rcd\r", b"ab\r\ncd\n", b"ab\rcd\r\n"])
def test_universal_newlines(tmp_path, data):
    path = write(tmp_path, data)
    assert read_lines(path) == ["ab", "cd"]
    assert "".join(iter_text(path)) == "ab\ncd\n"
    stats = count_corpus(path)
    assert stats.num_lines == 2 and stats.num_chars == 4 and stats.num_empty_lines == 0
    assert stats.counts[10] == 2 and stats.counts[ord("a")] == 1
    assert len(stats.counts) <= 13 or stats.counts[13] == 0  # no carriage return is counted
    v = vocab_for("abcd")
    assert encode_corpus(path, v).tolist() == expected_ids(v, ["ab", "cd"])


def test_carriage_returns_make_empty_lines(tmp_path):
    path = write(tmp_path, b"a\r\r\nb\n\n")
    assert read_lines(path) == ["a", "", "b", ""]
    stats = count_corpus(path)
    assert (stats.num_lines, stats.num_empty_lines, stats.num_chars) == (4, 2, 2)


def test_last_line_without_newline_still_ends_in_eos(tmp_path):
    path = write(tmp_path, b"hello\nworld")
    v = vocab_for("helloworld")
    ids = encode_corpus(path, v)
    assert ids.tolist() == expected_ids(v, ["hello", "world"])
    assert ids[-1] == EOS_ID
    stats = count_corpus(path)
    assert stats.num_lines == 2 and stats.counts[10] == 2 and stats.num_chars == 10
    assert read_lines(path) == ["hello", "world"]


def test_empty_file(tmp_path):
    path = write(tmp_path, b"")
    stats = count_corpus(path)
    assert (stats.num_chars, stats.num_lines) == (0, 0)
    assert encode_corpus(path, vocab_for("a")).tolist() == []
    assert read_lines(path) == []


def test_empty_lines_are_counted(tmp_path):
    path = write(tmp_path, b"\n\nab\n\nc")
    stats = count_corpus(path)
    assert (stats.num_lines, stats.num_empty_lines, stats.num_chars) == (5, 3, 3)


# ---------------------------------------------------------------------------
# chunk boundaries
# ---------------------------------------------------------------------------

def test_crlf_split_across_chunks_is_one_line_end(tmp_path, small_chunks):
    data = b"abc\r\ndef\r\ngh\r"
    # chunk_bytes 4: b"abc\r" | b"\ndef" | b"\r\ngh" | b"\r"
    path = write(tmp_path, data)
    pieces = list(iter_text(path, chunk_bytes=4))
    assert "".join(pieces) == "abc\ndef\ngh\n"
    assert all("\r" not in p for p in pieces)
    small_chunks(4)
    assert read_lines(path) == ["abc", "def", "gh"]
    stats = count_corpus(path)
    assert stats.num_lines == 3 and stats.num_empty_lines == 0
    v = vocab_for("abcdefgh")
    assert encode_corpus(path, v).tolist() == expected_ids(v, ["abc", "def", "gh"])


def test_multibyte_character_split_across_chunks(tmp_path, small_chunks):
    text = "a€b🙂c\né"  # € is 3 bytes, 🙂 4, é 2
    path = write(tmp_path, text.encode("utf-8"))
    for n in range(1, 8):
        assert "".join(iter_text(path, chunk_bytes=n)) == "a€b🙂c\né"
        small_chunks(n)
        stats = count_corpus(path)
        assert stats.num_chars == 6 and stats.num_lines == 2
        assert stats.counts[ord("🙂")] == 1 and stats.counts[ord("€")] == 1
        v = build_vocab(stats.counts)
        assert encode_corpus(path, v).tolist() == expected_ids(v, ["a€b🙂c", "é"])
        assert read_lines(path) == ["a€b🙂c", "é"]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=80) | st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"a", "é".encode(), "🙂".encode(),
                                                          b"\xff", b"\xe2\x82"]), max_size=30).map(b"".join),
       st.integers(1, 9))
def test_property_chunking_does_not_change_the_text(data, n):
    reference = data.decode("utf-8", "surrogateescape").removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(corpus, "iter_text", functools.partial(iter_text, chunk_bytes=n))
        chunked = "".join(corpus.iter_text(data, errors="surrogateescape"))
        assert chunked == reference
        v = vocab_for(reference)
        ids = encode_corpus(data, v, errors="surrogateescape")
        lines = reference.split("\n")
        if reference.endswith("\n"):
            lines.pop()
        assert ids.tolist() == expected_ids(v, lines if reference else [])
        assert v.decode(ids) == reference + ("" if reference.endswith("\n") or not reference else "\n")
        stats = count_corpus(data, errors="surrogateescape")
        assert stats.num_lines == len(lines if reference else [])
        assert stats.num_chars == len(reference) - reference.count("\n")
        kept = lines if reference else []
        filled = [i for i, line in enumerate(kept) if line]
        inner = sum(1 for line in kept[filled[0]:filled[-1]] if not line) if filled else 0
        assert stats.num_empty_lines == sum(1 for line in kept if not line)
        assert stats.num_inner_empty_lines == inner       # blank lines between two non-empty ones


# ---------------------------------------------------------------------------
# decoding errors
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("chunk", [1, 3, 4, 1 << 20])
@pytest.mark.parametrize("data,offset,line", [
    (b"\xff", 0, 1),
    (b"ok\nfine\nbad \xff here\n", 12, 3),
    (b"ok\r\nfine\r\nbad \xfe\n", 14, 3),
    (b"ok\rfine\rbad \xc0\xaf\n", 12, 3),       # old-Mac line ends still count as lines
    (b"caf\xc3\xa9\nx\xe2\x82Z\n", 7, 2),        # truncated 3-byte sequence
    (b"abc\n\xf0\x9f\x99", 4, 2),               # truncated at the end of the file
])
def test_invalid_utf8_names_the_byte_offset_and_line(tmp_path, small_chunks, data, offset, line, chunk):
    path = write(tmp_path, data)
    small_chunks(chunk)
    for fn in (count_corpus, read_lines, lambda p: encode_corpus(p, vocab_for("abc"))):
        with pytest.raises(CorpusError) as e:
            fn(path)
        msg = str(e.value)
        assert f"offset {offset}" in msg, msg
        assert f"line {line}" in msg, msg
        assert f"0x{data[offset]:02x}" in msg, msg
        assert path in msg and "\n" not in msg


def test_errors_replace_ignore_and_surrogateescape(tmp_path):
    path = write(tmp_path, b"a\xffb\n")
    assert read_lines(path, errors="replace") == ["a\ufffdb"]
    assert read_lines(path, errors="ignore") == ["ab"]
    assert read_lines(path, errors="surrogateescape") == ["a\udcffb"]
    stats = count_corpus(path, errors="replace")
    assert stats.counts[0xFFFD] == 1 and stats.num_chars == 3
    v = build_vocab(stats.counts)
    ids = encode_corpus(path, v, errors="replace")
    assert v.decode(ids) == "a\ufffdb\n"
    assert UNK_ID not in ids.tolist()


def test_unknown_errors_value_and_encoding(tmp_path):
    path = write(tmp_path, b"abc\n")
    with pytest.raises(CorpusError, match="errors"):
        read_lines(path, errors="bogus")
    with pytest.raises(CorpusError, match="encoding"):
        read_lines(path, encoding="no-such-encoding")


def test_other_encodings(tmp_path):
    text = "Grüße\r\nß€\n"
    path = write(tmp_path, text.encode("utf-16"))
    assert read_lines(path, encoding="utf-16") == ["Grüße", "ß€"]
    path = write(tmp_path, "Grüße\n".encode("latin-1"), "l1.txt")
    assert read_lines(path, encoding="latin-1") == ["Grüße"]
    with pytest.raises(CorpusError):
        read_lines(path)  # not UTF-8


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(CorpusError, match="not found"):
        count_corpus(str(tmp_path / "missing.txt"))
    with pytest.raises(CorpusError, match="directory"):
        encode_corpus(str(tmp_path), vocab_for("a"))
    with pytest.raises(CorpusError, match="not found"):
        read_lines(str(tmp_path / "missing.txt"))


# ---------------------------------------------------------------------------
# the id array
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("n_chars,dtype", [(5, np.uint8), (254, np.uint8), (255, np.uint16), (70000, np.uint32)])
def test_id_dtype_follows_vocabulary_size(tmp_path, n_chars, dtype):
    chars = [chr(cp) for cp in range(0x10000, 0x10000 + n_chars)]  # 4-byte UTF-8, no newline among them
    text = "".join(chars) + "\n"
    path = write(tmp_path, text.encode("utf-8"))
    v = build_vocab(count_corpus(path).counts)
    assert len(v) == n_chars + 2
    ids = encode_corpus(path, v)
    assert ids.dtype == np.dtype(dtype)
    assert ids[0] == 2 and int(ids[-2]) == n_chars + 1 and ids[-1] == EOS_ID
    assert np.array_equal(ids[:-1].astype(np.int64), np.arange(2, n_chars + 2))


def test_unknown_characters_become_unk(tmp_path):
    path = write(tmp_path, "abxa\ny\n".encode())
    v = vocab_for("ab")
    assert encode_corpus(path, v).tolist() == [2, 3, UNK_ID, 2, EOS_ID, UNK_ID, EOS_ID]


# ---------------------------------------------------------------------------
# stdin: "-" and bytes
# ---------------------------------------------------------------------------

def test_bytes_input_works_like_a_file(tmp_path):
    data = "héllo\r\nwörld".encode()
    path = write(tmp_path, data)
    v = build_vocab(count_corpus(path).counts)
    assert np.array_equal(count_corpus(data).counts, count_corpus(path).counts)
    assert np.array_equal(encode_corpus(data, v), encode_corpus(path, v))
    assert read_lines(data) == read_lines(path) == ["héllo", "wörld"]


def test_bytes_input_error_names_stdin():
    with pytest.raises(CorpusError) as e:
        count_corpus(b"ok\n\xff")
    assert "offset 3" in str(e.value) and "line 2" in str(e.value)
    assert "b'" not in str(e.value)  # not the raw bytes as a "file name"


def test_dash_reads_standard_input(monkeypatch):
    class FakeStdin:
        buffer = io.BytesIO("ab\ncé\n".encode())

    monkeypatch.setattr(sys, "stdin", FakeStdin)
    assert read_lines("-") == ["ab", "cé"]
    FakeStdin.buffer = io.BytesIO(b"x\xff")
    with pytest.raises(CorpusError, match="standard input"):
        read_lines("-")


@pytest.mark.parametrize("chunk", [1, 2, 3, 4, 1 << 20])
def test_a_utf8_byte_order_mark_at_the_start_is_not_text(chunk):
    """Windows tools start UTF-8 files with U+FEFF; it used to become a vocabulary token (and <UNK> in score input)."""
    data = b"\xef\xbb\xbfab\n\xef\xbb\xbfc\n"
    assert "".join(iter_text(data, chunk_bytes=chunk)) == "ab\n\ufeffc\n"     # only the leading one is a signature
    stats = count_corpus(data)
    assert stats.num_chars == 4 and stats.counts[0xFEFF] == 1
    assert "".join(iter_text("\ufeffab".encode("utf-16"), encoding="utf-16")) == "\ufeffab"   # (utf-16 keeps its own rules)
