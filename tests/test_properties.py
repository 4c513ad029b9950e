"""Property tests: arbitrary text through the command line never crashes it.

Random corpora mix ordinary characters with the awkward ones: emoji (and ZWJ
sequences), combining marks, control characters, NUL, carriage returns, BOMs,
Unicode line separators, and lone surrogates, written as the invalid UTF-8
bytes they stand for (surrogateescape) and read back with `--errors strict`,
`replace` or `surrogateescape`.  `build-vocab`, `train`, `score`, `sample`
and `info` must each end with exit code 0, or 1 and a one-line error, never
an unexpected exception; and whenever the corpus has a character they must
succeed.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from charlm.cli import app

runner = CliRunner()

TINY = ["--steps", "2", "--hidden-size", "4", "--num-layers", "1", "--batch-size", "2", "--seq-len", "4"]

AWKWARD = ["\x00", "\r", "\r\n", "\n", "\n\n", "\t", "\x1b", "\x7f", "\x85", "\u2028", "\ufeff", "\u0301",
           "e\u0301", "\u200d", "😀", "👩\u200d👩\u200d👧", "🇫🇷", "\U0010ffff", "\ufffd", " ", "a", "ab"]

characters = st.one_of(
    st.characters(exclude_categories=("Cs",)),       # any code point but surrogates
    st.sampled_from(AWKWARD),
    st.integers(0xDC80, 0xDCFF).map(chr),           # an undecodable byte, as surrogateescape reads it
)
texts = st.lists(characters, max_size=40).map("".join)
errors_modes = st.sampled_from(["strict", "replace", "surrogateescape"])

SETTINGS = settings(max_examples=25, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def invoke(*args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def outcome(r, what) -> int:
    """Exit 0, or exit 1 with one 'error:' line on stderr; never an unexpected exception."""
    detail = f"{what}: exit {r.exit_code}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}\nexc: {r.exception!r}"
    assert r.exception is None or isinstance(r.exception, SystemExit), detail
    assert "Traceback" not in r.output, detail
    assert r.exit_code in (0, 1), detail
    if r.exit_code == 1:
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), detail
        assert "internal error" not in lines[0], detail
    return r.exit_code


def decoded(raw: bytes, errors: str) -> str | None:
    """The text charlm should read from `raw` (None: not decodable)."""
    try:
        text = raw.decode("utf-8", errors)
    except UnicodeDecodeError:
        return None
    text = text.removeprefix("\ufeff")      # a byte-order mark at the start is a signature, not text
    return text.replace("\r\n", "\n").replace("\r", "\n")


def write_corpus(d: Path, text: str) -> tuple[Path, bytes]:
    raw = text.encode("utf-8", "surrogateescape")
    path = d / "corpus.txt"
    path.write_bytes(raw)
    return path, raw


@SETTINGS
@given(text=texts, errors=errors_modes)
@example(text="\ufeffab\n", errors="strict")      # a byte-order mark at the start
@example(text="\ufeff", errors="strict")          # nothing but a byte-order mark
def test_build_vocab_never_crashes(text, errors):
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        corpus, raw = write_corpus(d, text)
        expected = decoded(raw, errors)
        out = d / "v.json"
        r = invoke("build-vocab", corpus, "--errors", errors, "-o", out)
        code = outcome(r, "build-vocab")
        if expected is None:
            assert code == 1 and "offset" in r.stderr
        elif expected.replace("\n", "") == "":
            assert code == 1 and "empty" in r.stderr
        else:
            assert code == 0, r.stderr
            vocab = json.loads(out.read_text(encoding="ascii"))
            chars = sorted(set(expected) - {"\n"})
            assert vocab["tokens"] == ["<EOS>", "<UNK>"] + chars
            assert r.stdout == ""


@SETTINGS
@given(text=texts, errors=errors_modes, extra=st.lists(texts, max_size=3))
def test_train_score_sample_info_never_crash(text, errors, extra):
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        corpus, raw = write_corpus(d, text)
        expected = decoded(raw, errors)
        ck = d / "m.npz"
        r = invoke("train", corpus, *TINY, "--errors", errors, "-c", ck)
        code = outcome(r, "train")
        if expected is None or expected.replace("\n", "") == "":
            assert code == 1
            assert not ck.exists()
            return
        assert code == 0, r.stderr
        assert r.stdout == ""

        # score the corpus's own lines and some other text, with and without --json
        sentences = [s for s in expected.split("\n")[:4] + extra if s != "-"] or ["a"]   # a lone - reads stdin (test_stdin)
        r = invoke("score", "-c", ck, *sentences, "--json")
        assert outcome(r, "score --json") == 0
        lines = r.stdout.split("\n")
        assert lines[-1] == ""
        assert len(lines) - 1 == len(sentences)
        for line, sentence in zip(lines, sentences):
            obj = json.loads(line)
            assert obj["text"] == sentence
            assert obj["num_tokens"] == len(sentence) + 1
            assert obj["log_prob"] <= 0
        assert outcome(invoke("score", "-c", ck, *sentences), "score") == 0

        # the corpus as a document: exit 0, or a one-line error if it is not UTF-8
        r = invoke("score", "-c", ck, "--document", "--file", corpus, "--json")
        if outcome(r, "score --document") == 0:
            assert len(r.stdout.splitlines()) == 1
        else:
            assert decoded(raw, "strict") is None

        r = invoke("sample", "-c", ck, "--seed", "0", "--length", "20", "--num", "2", "--no-stop-at-eos")
        assert outcome(r, "sample") == 0
        assert outcome(invoke("sample", "-c", ck, "--greedy", "--length", "10", "--prime", text[:5]), "sample --prime") == 0
        assert outcome(invoke("info", ck), "info") == 0
        r = invoke("info", ck, "--json")
        assert outcome(r, "info --json") == 0
        json.loads(r.stdout)


@SETTINGS
@given(text=texts)
def test_score_stdin_never_crashes(text):
    """Standard input may hold anything, including undecodable bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        corpus = d / "c.txt"
        corpus.write_text("anna\nbob\ncarla\n", encoding="utf-8")
        ck = d / "m.npz"
        assert outcome(invoke("train", corpus, *TINY, "-c", ck), "train") == 0
        raw = text.encode("utf-8", "surrogateescape")
        r = invoke("score", "-c", ck, "-", "--json", input=raw)
        code = outcome(r, "score -")
        expected = decoded(raw, "strict")
        if expected is None:
            assert code == 1
        elif expected == "":
            assert code == 1 and "nothing to score" in r.stderr
        else:
            assert code == 0
            n = len(expected.split("\n")) - (1 if expected.endswith("\n") else 0)
            assert len(r.stdout.split("\n")) - 1 == n  # JSON lines end in \n (a U+2028 inside one is no line end)
