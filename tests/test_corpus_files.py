"""A corpus of many files (charlm.sources): a folder or several paths, for train, build-vocab and score --document."""

import json
import tracemalloc

import numpy as np
import pytest

from charlm import checkpoint as ckpt_io
from charlm import data, sources
from charlm.config import Config
from charlm.corpus import encode_corpus
from charlm.errors import CorpusError
from charlm.dataset import load_corpus
from charlm.vocab import EOS_ID

from conftest import TINY, invoke, ok, one_line_error


def poems(tmp_path):
    d = tmp_path / "poems"
    (d / "b" / "deep").mkdir(parents=True)
    (d / ".git").mkdir()
    (d / "z.txt").write_text("last file\nno newline at end", encoding="utf-8")
    (d / "a.txt").write_text("roses are red\n\nviolets are blue\n", encoding="utf-8")
    (d / "b" / "deep" / "c.txt").write_text("the sea\r\nthe sky\n", encoding="utf-8")
    (d / "b" / "m.txt").write_text("ünïcödé\n", encoding="utf-8")
    (d / ".git" / "HEAD").write_text("ref: refs/heads/main\n", encoding="utf-8")
    (d / ".hidden.txt").write_text("secret\n", encoding="utf-8")
    (d / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xd8")
    (d / "nul.txt").write_bytes(b"text with a\x00NUL\n")
    return d


def test_walk_reads_a_folder_recursively_in_sorted_order_without_hidden_files(tmp_path):
    d = poems(tmp_path)
    names = [name for _, name in sources.walk([str(d)])]
    assert names == ["a.txt", "b/deep/c.txt", "b/m.txt", "image.png", "nul.txt", "z.txt"]
    # paths given one by one keep their order; a file named twice is read once
    paths = [str(d / "z.txt"), str(d / "a.txt"), str(d / "z.txt")]
    assert [name for _, name in sources.walk(paths)] == ["z.txt", "a.txt"]
    with pytest.raises(CorpusError, match="does not exist"):
        sources.walk([str(d / "nope.txt")])
    with pytest.raises(CorpusError, match="standard input"):
        sources.walk([str(d / "a.txt"), "-"])


def test_the_corpus_is_the_files_each_ending_with_eos_and_not_text_is_skipped(tmp_path):
    d = poems(tmp_path)
    skipped = []
    files = sources.scan([str(d)], on_skip=lambda p, why: skipped.append((p, why)))
    assert [p.rsplit("/", 1)[-1] for p, _ in skipped] == ["image.png", "nul.txt"]
    assert "not valid utf-8" in skipped[0][1] and "NUL" in skipped[1][1]
    cfg = Config(val_fraction=0.0).validate()
    corpus = load_corpus(files, cfg)
    whole = tmp_path / "whole.txt"   # what the files read as: each ends with a line end, never joined mid-line
    whole.write_text("roses are red\n\nviolets are blue\nthe sea\nthe sky\nünïcödé\nlast file\nno newline at end\n",
                     encoding="utf-8")
    single = load_corpus(str(whole), cfg)
    assert corpus.vocab == single.vocab
    assert np.array_equal(corpus.train_ids, single.train_ids)
    assert corpus.info["num_files"] == 4
    assert corpus.info["num_chars"] == single.info["num_chars"] and corpus.info["num_lines"] == 8
    assert "num_files" not in single.info
    assert corpus.info["fingerprint"] != single.info["fingerprint"]   # the names and sizes are in it too


def test_fingerprint_covers_names_sizes_and_content(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    (d / "a.txt").write_text("abc\n")
    (d / "b.txt").write_text("abd\n")
    cfg = Config(val_fraction=0.0).validate()

    def fp():
        return load_corpus(sources.scan([str(d)]), cfg).info["fingerprint"]

    first = fp()
    assert fp() == first
    (d / "b.txt").write_text("abe\n")                     # same size, other content
    assert fp() != first
    (d / "b.txt").write_text("abd\n")
    assert fp() == first
    (d / "b.txt").rename(d / "b2.txt")                    # same content, another name
    assert fp() != first


def test_validation_is_drawn_across_the_files(tmp_path):
    d = tmp_path / "many"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(10):
        lines = ["".join(rng.choice(list("abcdef"), 30)) for _ in range(100)]
        (d / f"{i:02d}.txt").write_text("\n".join(lines) + "\n")
    files = sources.scan([str(d)])
    ids = sources.encode(files, load_corpus(files, Config(val_fraction=0.0).validate()).vocab)
    bounds = np.cumsum([s.num_chars + s.num_lines for s in files.stats])
    held = {int(np.searchsorted(bounds, a, side="right")) for a, _ in data.val_blocks(ids, 0.1)}
    assert len(held) >= 8                                 # ten stretches, one in each tenth: in (nearly) every file


def test_encoding_many_files_costs_what_one_file_of_the_same_size_costs(tmp_path):
    """Measured memory (tracemalloc sees NumPy's buffers): the files are encoded into one array, in place."""
    rng = np.random.default_rng(0)
    text = "".join(rng.choice(list("abcdefgh ij\n"), 4_000_000))
    d = tmp_path / "parts"
    d.mkdir()
    for i in range(8):
        (d / f"{i}.txt").write_text(text[i * 500_000:(i + 1) * 500_000])
    (tmp_path / "one.txt").write_text(text)
    files = sources.scan([str(d)])
    cfg = Config(val_fraction=0.0).validate()
    vocab = load_corpus(files, cfg).vocab

    def peak(f):
        tracemalloc.start()
        try:
            ids = f()
            return tracemalloc.get_traced_memory()[1], ids
        finally:
            tracemalloc.stop()

    many, a = peak(lambda: sources.encode(files, vocab))
    one, b = peak(lambda: encode_corpus(str(tmp_path / "one.txt"), vocab, num_tokens=len(text) + 1))
    assert len(a) == len(b) + 7 and a[-1] == EOS_ID      # each file's last line gets its <EOS>
    assert many < one * 1.1 + 2**20, (many, one)


# ---------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------

def test_cli_train_a_folder_warns_once_per_skipped_file_and_info_shows_the_files(tmp_path):
    d = poems(tmp_path)
    ck = tmp_path / "m.npz"
    r = ok(invoke("train", d, *TINY, "-c", ck))
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning: skipped")]
    assert len(warnings) == 2 and "image.png" in warnings[0] and "nul.txt" in warnings[1]
    info = json.loads(ok(invoke("info", ck, "--json")).stdout)
    assert info["corpus"]["num_files"] == 4
    assert "4 files" in ok(invoke("info", ck)).stdout
    # several paths: the same as the folder's text files in the same order
    paths = [d / "a.txt", d / "b" / "deep" / "c.txt", d / "b" / "m.txt", d / "z.txt"]
    ck2 = tmp_path / "m2.npz"
    ok(invoke("train", *paths, *TINY, "-c", ck2))
    assert ckpt_io.load(str(ck2)).meta["corpus"]["num_tokens"] == info["corpus"]["num_tokens"]


def test_cli_resume_refuses_a_changed_file(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    for i in range(3):
        (d / f"{i}.txt").write_text("anna\nbob\ncarla\n" * 20)
    ck = tmp_path / "m.npz"
    ok(invoke("train", d, *TINY, "-c", ck))
    (d / "1.txt").write_text("anna\nbob\ncarla\n" * 19 + "bob\nanna\ncarla\n")
    one_line_error(invoke("train", d, "--steps", "30", "--resume", "-c", ck), "another corpus")
    (d / "1.txt").write_text("anna\nbob\ncarla\n" * 20)
    ok(invoke("train", d, "--steps", "30", "--resume", "-c", ck))


def test_cli_build_vocab_and_score_document_read_the_same_inputs(tmp_path):
    d = poems(tmp_path)
    whole = tmp_path / "whole.txt"
    whole.write_text("roses are red\n\nviolets are blue\nthe sea\nthe sky\nünïcödé\nlast file\nno newline at end\n",
                     encoding="utf-8")
    v1 = json.loads(ok(invoke("build-vocab", d, "-o", "-")).stdout)
    v2 = json.loads(ok(invoke("build-vocab", whole, "-o", "-")).stdout)
    assert v1["tokens"] == v2["tokens"] and v1["counts"] == v2["counts"]
    ck = tmp_path / "m.npz"
    ok(invoke("train", whole, *TINY, "-c", ck))
    s1 = json.loads(ok(invoke("score", "-c", ck, "--document", "--file", d, "--json")).stdout)
    s2 = json.loads(ok(invoke("score", "-c", ck, "--document", "--file", whole, "--json")).stdout)
    assert s1["log_prob"] == pytest.approx(s2["log_prob"], rel=1e-9) and s1["num_tokens"] == s2["num_tokens"]
    files = [d / "a.txt", d / "b" / "deep" / "c.txt", d / "b" / "m.txt", d / "z.txt"]
    s3 = json.loads(ok(invoke("score", "-c", ck, "--document", *[a for f in files for a in ("-f", f)],
                              "--json")).stdout)
    assert s3["log_prob"] == pytest.approx(s2["log_prob"], rel=1e-9)
    one_line_error(invoke("score", "-c", ck, "--file", d), "--document")


def test_cli_a_folder_without_text_is_one_line_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(invoke("train", empty, "--steps", "1", "-c", tmp_path / "m.npz"), "holds no files")
    one_line_error(invoke("build-vocab", empty, "-o", "-"), "holds no files")
    binary = tmp_path / "binary"
    binary.mkdir()
    (binary / "x.bin").write_bytes(b"\xff\xfe\x00\x01")
    r = invoke("train", binary, "--steps", "1", "-c", tmp_path / "m.npz")
    assert r.exit_code == 1
    lines = r.stderr.splitlines()
    assert lines[0].startswith("warning: skipped") and lines[-1].startswith("error:") and "no text file" in lines[-1]
    one_line_error(invoke("train", tmp_path / "nope", tmp_path / "nope2", "--steps", "1"), "does not exist")
