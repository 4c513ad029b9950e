"""Edges a careful user runs into: where outputs go, YAML spellings, decoding, odd argument mixes.

Each behaviour here was found by trying to break the tool (an exploratory
QA pass); each test fails on the code before its fix.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from charlm import checkpoint as ckpt_io
from conftest import TINY, TINY2, invoke, ok, one_line_error


pytestmark = pytest.mark.usefixtures("no_env_checkpoint")   # the fixtures `trained` and `corpus` are in conftest.py


@pytest.fixture(scope="module")
def model(trained):
    """The path of conftest's tiny trained model."""
    return trained[2]


# ---------------------------------------------------------------------------
# Outputs: never over an input, through links, never onto a device, usual permissions
# ---------------------------------------------------------------------------

def test_train_refuses_to_write_its_checkpoint_over_the_corpus(corpus):
    before = corpus.read_bytes()
    one_line_error(invoke("train", corpus, *TINY2, "-c", corpus), "is the corpus")
    assert corpus.read_bytes() == before


def test_build_vocab_refuses_to_write_over_the_corpus(corpus):
    before = corpus.read_bytes()
    one_line_error(invoke("build-vocab", corpus, "-o", corpus), "is the corpus")
    assert corpus.read_bytes() == before


def test_train_refuses_to_overwrite_a_file_that_is_not_a_checkpoint(corpus, tmp_path):
    other = tmp_path / "notes.txt"
    other.write_text("my notes\n")
    one_line_error(invoke("train", corpus, *TINY2, "-c", other), "not a charlm checkpoint")
    assert other.read_text() == "my notes\n"


def test_train_over_an_old_checkpoint_warns_and_replaces_it(corpus, tmp_path):
    path = tmp_path / "m.npz"
    ok(invoke("train", corpus, *TINY2, "-c", path))
    r = ok(invoke("train", corpus, *TINY2, "--seed", "1", "-c", path))
    assert "will be overwritten" in r.stderr
    assert ckpt_io.load(str(path)).config.seed == 1


def test_a_symbolic_link_is_written_through(corpus, tmp_path):
    (tmp_path / "real").mkdir()
    link = tmp_path / "link.json"
    link.symlink_to(tmp_path / "real" / "target.json")
    ok(invoke("build-vocab", corpus, "-o", link))
    assert link.is_symlink()
    assert json.loads((tmp_path / "real" / "target.json").read_text())["format"] == "charlm-vocab"


def test_a_fifo_is_refused_not_replaced(corpus, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    one_line_error(invoke("build-vocab", corpus, "-o", fifo), "not a regular file")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_new_files_get_the_umask_and_replaced_files_keep_their_mode(corpus, tmp_path):
    out = tmp_path / "v.json"
    old = os.umask(0o027)
    try:
        ok(invoke("build-vocab", corpus, "-o", out))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o640
    os.chmod(out, 0o604)
    ok(invoke("build-vocab", corpus, "-o", out, "--min-count", "2"))
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o604


def test_build_vocab_to_stdout(corpus):
    r = ok(invoke("build-vocab", corpus, "-o", "-"))
    assert json.loads(r.stdout)["format"] == "charlm-vocab"
    assert not os.path.exists("-")


def test_train_to_a_checkpoint_named_dash_is_refused(corpus):
    one_line_error(invoke("train", corpus, *TINY2, "-c", "-"), "file name")


# ---------------------------------------------------------------------------
# YAML spellings
# ---------------------------------------------------------------------------

def _yaml(tmp_path, text):
    p = tmp_path / "run.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text, needle", [
    ("clip:\n", "--clip has no value"),
    ("num-layers: 1\nnum_layers: 2\n", "given twice"),
    ("checkpoint: x.npz\n", "command-line option only"),
    ("lr: abc\n", "--lr must be a number"),
    ("vocab: 3\n", "vocab must be a file name"),
])
def test_yaml_mistakes_are_one_line_errors(corpus, tmp_path, text, needle):
    one_line_error(invoke("train", corpus, *TINY2, "--config", _yaml(tmp_path, text), "-c", tmp_path / "m.npz"),
                   needle)


def test_yaml_reads_1e_minus_3_as_a_number(corpus, tmp_path):
    path = tmp_path / "m.npz"
    ok(invoke("train", corpus, *TINY2, "--config", _yaml(tmp_path, "lr: 1e-3\n"), "-c", path))
    assert ckpt_io.load(str(path)).config.lr == pytest.approx(1e-3)


def test_yaml_vocab_key_names_the_vocabulary(corpus, tmp_path):
    voc = tmp_path / "v.json"
    ok(invoke("build-vocab", corpus, "-o", voc, "--max-size", "5"))
    path = tmp_path / "m.npz"
    ok(invoke("train", corpus, *TINY2, "--config", _yaml(tmp_path, f"vocab: {voc}\n"), "-c", path))
    assert len(ckpt_io.load(str(path)).vocab) == 5


def test_vocab_with_min_count_warns_that_it_is_ignored(corpus, tmp_path):
    voc = tmp_path / "v.json"
    ok(invoke("build-vocab", corpus, "-o", voc))
    r = ok(invoke("train", corpus, *TINY2, "--vocab", voc, "--min-count", "5", "-c", tmp_path / "m.npz"))
    assert "ignored" in r.stderr


def test_no_validation_text_warns_that_the_ngram_is_dropped(corpus, tmp_path):
    r = ok(invoke("train", corpus, *TINY2, "--val-fraction", "0", "-c", tmp_path / "m.npz"))
    assert "no validation text (--val-fraction 0)" in r.stderr and "network alone" in r.stderr
    tiny = tmp_path / "one.txt"
    tiny.write_text("a")
    r = ok(invoke("train", tiny, *TINY2, "-c", tmp_path / "t.npz"))    # the default --val-fraction, nothing to hold out
    assert "too small to hold out any" in r.stderr and "--val-fraction 0" not in r.stderr


# ---------------------------------------------------------------------------
# Decoding what score and sample read
# ---------------------------------------------------------------------------

def test_score_file_takes_encoding_and_errors(model, tmp_path):
    f = tmp_path / "latin1.txt"
    f.write_bytes("anna\nlé\n".encode("latin-1"))
    one_line_error(invoke("score", "-c", model, "--file", f), "not valid utf-8")
    r = ok(invoke("score", "-c", model, "--file", f, "--encoding", "latin-1", "--json"))
    assert [json.loads(line)["text"] for line in r.stdout.splitlines()] == ["anna", "lé"]
    r = ok(invoke("score", "-c", model, "--file", f, "--errors", "replace", "--json"))
    assert json.loads(r.stdout.splitlines()[1])["text"] == "l\ufffd"


def test_score_uses_the_models_own_errors_setting(tmp_path):
    corpus = tmp_path / "raw.txt"
    corpus.write_bytes(b"anna\nbob\xff\n" * 30)
    path = tmp_path / "m.npz"
    ok(invoke("train", corpus, *TINY2, "--errors", "surrogateescape", "-c", path))
    r = ok(invoke("score", "-c", path, "--file", corpus, "--json"))
    assert len(r.stdout.splitlines()) == 60


def test_sample_prime_file_takes_encoding(model, tmp_path):
    f = tmp_path / "prime.txt"
    f.write_bytes("é".encode("latin-1"))
    one_line_error(invoke("sample", "-c", model, "--prime-file", f, "--seed", "0"), "not valid utf-8")
    ok(invoke("sample", "-c", model, "--prime-file", f, "--encoding", "latin-1", "--seed", "0"))


@pytest.mark.parametrize("encoding, needle", [("rot13", "not a text encoding"), ("base64", "not a text encoding"),
                                              ("utf-16", "not valid utf-16"), ("klingon", "unknown encoding")])
def test_encodings_that_cannot_decode_are_one_line_errors(model, tmp_path, encoding, needle):
    f = tmp_path / "s.txt"
    f.write_bytes(b"A\x00B")
    one_line_error(invoke("score", "-c", model, "--file", f, "--encoding", encoding), needle)


def test_missing_prime_file_is_named_as_such(model):
    one_line_error(invoke("sample", "-c", model, "--prime-file", "no-such-file"), "prime file not found")


def test_empty_score_file_says_so(model, tmp_path):
    f = tmp_path / "empty.txt"
    f.write_text("")
    one_line_error(invoke("score", "-c", model, "--file", f), "empty.txt has no lines")


# ---------------------------------------------------------------------------
# Argument mixes
# ---------------------------------------------------------------------------

def test_dash_among_sentences_reads_stdin_in_its_place(model):
    r = ok(invoke("score", "-c", model, "anna", "-", "eve", "--json", input="bob\nida\n"))
    assert [json.loads(line)["text"] for line in r.stdout.splitlines()] == ["anna", "bob", "ida", "eve"]


def test_greedy_with_another_temperature_is_an_error(model):
    one_line_error(invoke("sample", "-c", model, "--greedy", "--temperature", "0.5"), "not both")
    ok(invoke("sample", "-c", model, "--greedy", "--temperature", "0"))


def test_resume_with_fewer_steps_than_done_is_an_error(corpus, tmp_path):
    path = tmp_path / "m.npz"
    ok(invoke("train", corpus, *TINY, "-c", path))
    one_line_error(invoke("train", corpus, "--resume", "--steps", "10", "-c", path), "already at step 20")


def test_help_shows_eos_and_unk():
    for command in ("sample", "build-vocab", "train"):
        r = ok(invoke(command, "--help", env={"COLUMNS": "250"}))
        assert "<EOS>" in r.stdout and ("<UNK>" in r.stdout or command == "sample"), command
        assert "( and  included)" not in r.stdout and "at  (end" not in r.stdout


def test_not_enough_memory_is_a_one_line_error(model):
    r = subprocess.run([sys.executable, "-m", "charlm", "sample", "-c", str(model), "--num", "1000000000",
                        "--length", "5"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert r.stderr.startswith("error: not enough memory") and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_a_full_disk_on_stdout_is_a_one_line_error(model):
    with open("/dev/full", "w") as full:
        r = subprocess.run([sys.executable, "-m", "charlm", "score", "-c", str(model), "anna", "--json"],
                           stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert r.returncode == 1
    assert r.stderr.startswith("error: No space left on device") and "Traceback" not in r.stderr


# ---------------------------------------------------------------------------
# Numbers as shown: huge budgets, certain samples
# ---------------------------------------------------------------------------

def test_huge_counts_and_times_are_shown_compactly():
    from charlm.cli.render import fmt_count, fmt_seconds
    assert fmt_count(1234) == "1,234" and fmt_count(10 ** 14) == "100,000,000,000,000"
    assert fmt_count(15 * 10 ** 300) == "1.5e+301"              # `--epochs 1e300` used to print 300 digits
    assert fmt_seconds(7200) == "2 h 00 min" and fmt_seconds(3.6e303) == "1e+300 h"


def test_a_certain_sample_has_zero_bits_not_minus_zero():
    from charlm.cli.render import fmt_logprob
    assert fmt_logprob(0.0, 3) == "log P = 0.0000 nats over 3 tokens (0.0000 bits/char)"
    assert fmt_logprob(-0.0, 1) == "log P = 0.0000 nats over 1 token (0.0000 bits/char)"
    assert fmt_logprob(-2 * 0.6931471805599453, 2) == "log P = -1.3863 nats over 2 tokens (1.0000 bits/char)"


def test_a_huge_epoch_budget_is_shown_in_a_few_characters(corpus, tmp_path):
    r = ok(invoke("train", corpus, *TINY, "--epochs", "1e300", "--steps", "2", "-c", tmp_path / "m.npz"))
    assert "budget 2 steps" in r.stderr
    r = ok(invoke("train", corpus, "--hidden-size", "4", "--num-layers", "1", "--batch-size", "2", "--seq-len", "4",
                  "--epochs", "1e300", "--max-time", "0.2", "-c", tmp_path / "m2.npz"))
    budget = r.stderr.split("; budget ", 1)[1].split(" steps", 1)[0]
    assert "e+" in budget and len(budget) < 10


# ---------------------------------------------------------------------------
# The library: save writes only what load accepts
# ---------------------------------------------------------------------------

def test_save_refuses_a_checkpoint_that_load_would_refuse(model, tmp_path):
    ck = ckpt_io.load(str(model))
    ck.meta = {}
    path = tmp_path / "bad.npz"
    with pytest.raises(ckpt_io.CharlmError, match="could not be loaded: .*meta has no 'corpus'"):
        ckpt_io.save(ck, str(path))
    assert not path.exists()


# ---------------------------------------------------------------------------
# Resume: the budget given replaces the saved one; nothing left to do is an error
# ---------------------------------------------------------------------------

def test_resume_with_a_new_kind_of_budget_replaces_the_saved_one(corpus, tmp_path):
    """`--steps 20` then `--resume --epochs E`: the saved 20 steps no longer cap the run (it used to stop at once, exit 0)."""
    path = tmp_path / "m.npz"
    ok(invoke("train", corpus, *TINY, "--ngram", "0", "-c", path))
    r = ok(invoke("train", corpus, "--resume", "--epochs", "30", "-c", path))
    assert "steps: 20 -> none (the budget given replaces it)" in r.stderr
    ck = ckpt_io.load(str(path))
    assert ck.meta["steps"] > 20 and ck.config.steps is None and ck.config.epochs == 30


def test_resume_with_nothing_left_to_do_is_an_error(corpus, tmp_path):
    path = tmp_path / "m.npz"
    ok(invoke("train", corpus, *TINY, "--ngram", "0", "-c", path))
    before = path.read_bytes()
    one_line_error(invoke("train", corpus, "--resume", "-c", path), "already used its budget (20 steps")
    one_line_error(invoke("train", corpus, "--resume", "--epochs", "0.01", "-c", path), "already used its budget")
    one_line_error(invoke("train", corpus, "--resume", "--max-time", "0.001", "-c", path), "already used its budget")
    assert path.read_bytes() == before                       # refused before anything was written


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_resume_says_when_a_longer_budget_moves_the_learning_rate(corpus, tmp_path, schedule):
    path = tmp_path / "m.npz"
    ok(invoke("train", corpus, *TINY, "--ngram", "0", "--schedule", schedule, "--warmup-steps", "0", "-c", path))
    r = ok(invoke("train", corpus, "--resume", "--steps", "40", "-c", path))
    moved = "learning-rate schedule spans the run's new budget, so at step 20 the rate goes from" in r.stderr
    assert moved == (schedule == "cosine")


def test_blank_lines_at_the_end_leave_a_list_a_list(tmp_path):
    """Editors add a blank last line; it used to turn a list of names into prose (state carried, samples not stopping)."""
    names = tmp_path / "names.txt"
    names.write_text("\n" + "\n".join(["anna", "bob", "carla", "dave", "eve"] * 30) + "\n\n\n")
    prose = tmp_path / "prose.txt"
    prose.write_text("anna bob\n\ncarla dave\n" * 30)
    for corpus, items in ((names, True), (prose, False)):
        path = tmp_path / f"{corpus.stem}.npz"
        r = ok(invoke("train", corpus, *TINY2, "-c", path))
        ck = ckpt_io.load(str(path))
        assert ck.meta["corpus"]["line_items"] is items
        assert ck.config.line_state == ("reset" if items else "carry")
        assert ("each line is its own sequence" in r.stderr) is items
        assert ("the state flows from line to line" in r.stderr) is not items


def test_show_logprob_counts_the_tokens_generated_when_length_cuts_a_sample(model):
    """A sample cut by --length has no final <EOS>; it used to be counted anyway (understating bits/char)."""
    r = ok(invoke("sample", "-c", model, "--seed", "0", "--num", "5", "--length", "1", "--show-logprob"))
    counts = [line.split(" over ", 1)[1].split(" (", 1)[0] for line in r.stderr.splitlines() if "log P" in line]
    assert counts == ["1 token"] * 5
    r = ok(invoke("sample", "-c", model, "--seed", "0", "--length", "300", "--show-logprob"))
    text = r.stdout.rstrip("\n")
    expected = len(text) + 1 if len(text) < 300 else 300      # ended at <EOS>: its characters and the <EOS>
    assert f"over {expected} tokens" in r.stderr


def test_activation_is_for_the_vanilla_rnn_only(corpus, tmp_path):
    one_line_error(invoke("train", corpus, *TINY2, "--cell", "gru", "--activation", "relu", "-c", tmp_path / "m.npz"),
                   "--activation applies to --cell rnn only")
    ok(invoke("train", corpus, *TINY2, "--cell", "rnn", "--activation", "relu", "-c", tmp_path / "m.npz"))


def test_a_huge_learning_rate_is_one_error_without_numpy_warnings(corpus, tmp_path):
    """Run as a user runs it (pytest would catch the warnings itself)."""
    r = subprocess.run([sys.executable, "-m", "charlm", "train", str(corpus), *TINY2, "--steps", "30", "--lr", "1e40",
                        "-c", str(tmp_path / "m.npz")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert "RuntimeWarning" not in r.stderr and "overflow encountered" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: the weights overflowed")


def test_a_large_vocabulary_lowers_the_ngram_order_and_says_so(tmp_path):
    big = tmp_path / "han.txt"
    big.write_text("".join(chr(0x4E00 + i) for i in range(5000)) + "\n")
    path = tmp_path / "m.npz"
    r = ok(invoke("train", big, *TINY2, "-c", path))
    assert "at most a 5-gram here" in r.stderr and "counting 5-grams, not 7-grams" in r.stderr
    assert ckpt_io.load(str(path)).ngram.order == 5


@pytest.mark.parametrize("args,names", [
    (["score", "-c", "-", "-"], "the checkpoint and the sentences"),
    (["score", "-c", "-", "--file", "-"], "the checkpoint and the file"),
    (["sample", "-c", "-", "--prime-file", "-"], "the checkpoint and the prime file"),
    (["train", "-", "--vocab", "-", "--steps", "1"], "the corpus and the vocabulary"),
    (["train", "-", "--config", "-"], "the corpus and the config file"),
])
def test_two_inputs_from_stdin_are_refused_up_front(model, args, names):
    """They used to compete for it: "nothing to score", "a config file must be a mapping", an empty prime."""
    r = invoke(*args, input=open(model, "rb").read())
    one_line_error(r, f"only one input can come from standard input (-), not {names}")


def test_a_second_reader_of_stdin_is_refused_by_the_reader_itself(monkeypatch):
    """The guard under the up-front check: whatever reads - second is told who read it first."""
    import io as _io

    from charlm import files
    monkeypatch.setattr("sys.stdin", _io.TextIOWrapper(_io.BytesIO(b"abc\n")))
    files.forget_stdin()
    assert files.read_stdin("corpus") == b"abc\n" and files.read_stdin("corpus") == b"abc\n"   # the same input, twice
    with pytest.raises(files.CharlmError, match="standard input is already the corpus: the vocabulary"):
        files.open_user_file("-", "vocabulary")
    files.forget_stdin()


def test_build_vocab_refuses_to_overwrite_a_file_that_is_not_a_vocabulary(corpus, model, tmp_path):
    """`-o model.npz` used to replace a trained checkpoint with a vocabulary."""
    ck = tmp_path / "m.npz"
    ck.write_bytes(open(model, "rb").read())
    before = ck.read_bytes()
    one_line_error(invoke("build-vocab", corpus, "-o", ck), "is not a charlm vocabulary: refusing to overwrite it")
    assert ck.read_bytes() == before
    voc = tmp_path / "v.json"
    ok(invoke("build-vocab", corpus, "-o", voc))
    ok(invoke("build-vocab", corpus, "-o", voc, "--min-count", "2"))          # a vocabulary is replaced
    assert json.loads(voc.read_text())["format"] == "charlm-vocab"


def test_names_with_brackets_are_shown_as_written(corpus, tmp_path):
    """Rich read "[b]" in a file name as markup (the name lost its brackets) and "[/]" crashed with a traceback."""
    odd = tmp_path / "[b]names[x].txt"
    odd.write_bytes(corpus.read_bytes())
    r = ok(invoke("train", odd, *TINY2, "-c", tmp_path / "[bold]m.npz"))
    assert "[b]names[x].txt" in r.stderr
    assert ok(invoke("info", tmp_path / "[bold]m.npz")).stdout.count("[bold]m.npz") == 1
    one_line_error(invoke("train", corpus, *TINY2, "--vocab", tmp_path / "[/]v.json", "-c", tmp_path / "n.npz"),
                   "[/]v.json")


def test_a_vocabulary_that_keeps_no_character_is_pointed_out(corpus, tmp_path):
    voc = tmp_path / "few.json"
    r = ok(invoke("build-vocab", corpus, "--min-count", "100000", "-o", voc))
    assert "no character is seen 100,000 times" in r.stderr
    r = ok(invoke("train", corpus, *TINY2, "--vocab", voc, "-c", tmp_path / "m.npz"))
    assert "warning: the vocabulary is only <EOS> and <UNK>: the model reads every character as <UNK>" in r.stderr
    small = tmp_path / "small.json"
    ok(invoke("build-vocab", corpus, "--max-size", "4", "-o", small))
    r = ok(invoke("train", corpus, *TINY2, "--vocab", small, "-c", tmp_path / "s.npz", env={"COLUMNS": "400"}))
    assert f"{small} leaves" in r.stderr and "of this corpus's tokens to <UNK>" in r.stderr
    full = tmp_path / "all.json"
    ok(invoke("build-vocab", corpus, "-o", full))
    r = ok(invoke("train", corpus, *TINY2, "--vocab", full, "-c", tmp_path / "n.npz"))
    assert "tokens to <UNK>" not in r.stderr


def test_the_vocabulary_summary_counts_in_the_singular_and_shows_the_space():
    from rich.console import Console

    from charlm.cli.render import vocab_table
    from charlm.vocab import build_vocab, code_points, count_code_points
    console = Console(width=100, record=True, color_system=None)
    console.print(vocab_table(build_vocab(count_code_points(code_points("b a\x1b"))), 4, 1))
    text = console.export_text()
    assert "4 characters in 1 line" in text and "and 4 characters" in text
    assert "\\x1b␠ab" in text and "(␠ is the space)" in text


def test_train_reads_a_pipe_corpus_once(corpus, tmp_path):
    """`charlm train <(zcat corpus.gz)`: training counts, then encodes, and a pipe can be read only once."""
    fifo = tmp_path / "corpus.fifo"
    os.mkfifo(fifo)
    writer = subprocess.Popen(["sh", "-c", f"cat {corpus} > {fifo}"])
    r = subprocess.run([sys.executable, "-m", "charlm", "train", str(fifo), *TINY2, "-c", str(tmp_path / "m.npz")],
                       capture_output=True, text=True, timeout=120)
    writer.wait(timeout=60)
    assert r.returncode == 0, r.stderr
    assert ckpt_io.load(str(tmp_path / "m.npz")).meta["corpus"]["num_tokens"] == len(corpus.read_text())


def test_control_characters_in_names_are_shown_as_escapes(corpus, tmp_path):
    """A file name like $'x\\e[31m.txt' must not colour or move the terminal: in messages, tables and titles."""
    odd = tmp_path / "n\x1b[31mred\ttab.txt"
    odd.write_bytes(corpus.read_bytes())
    path = tmp_path / "m\x1b[2J.npz"
    r = ok(invoke("train", odd, *TINY2, "-c", path, env={"COLUMNS": "400"}))
    assert "\x1b" not in r.stderr and "n\\x1b[31mred\\ttab.txt" in r.stderr and "m\\x1b[2J.npz" in r.stderr
    r = ok(invoke("info", path, env={"COLUMNS": "400"}))
    assert "\x1b" not in r.stdout and "m\\x1b[2J.npz" in r.stdout and "n\\x1b[31mred\\ttab.txt" in r.stdout
    r = invoke("info", tmp_path / "gone\x1b[31m.npz")
    one_line_error(r, "gone\\x1b[31m.npz")
    assert "\x1b" not in r.stderr


def test_stdin_rules_cover_the_yaml_vocabulary_the_environment_and_repeated_dashes(corpus, model, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text('vocab: "-"\nsteps: 2\n')
    one_line_error(invoke("train", "-", "--config", cfg, "-c", tmp_path / "m.npz", input=corpus.read_bytes()),
                   "not the corpus and the vocabulary")
    one_line_error(invoke("score", "-", input=b"Anna\n", env={"CHARLM_CHECKPOINT": "-"}),
                   "not the checkpoint and the sentences")
    one_line_error(invoke("score", "-c", model, "Zed", "-", "Bob", "-", input=b"Anna\n"), "give - once")
    one_line_error(invoke("score", "-c", model, "-", input=b""), "standard input has no lines")


def test_resume_messages_name_what_moved(corpus, tmp_path):
    path = tmp_path / "m.npz"
    ok(invoke("train", corpus, *TINY, "--ngram", "0", "-c", path))
    r = ok(invoke("train", corpus, "--resume", "--schedule", "constant", "--steps", "30", "-c", path))
    assert "schedule: cosine -> constant" in r.stderr and "spans the run's new budget" not in r.stderr
    r = ok(invoke("train", corpus, "--resume", "--epochs", "50", "-c", path))
    assert "epochs: none -> 50.0" in r.stderr
    one_line_error(invoke("train", corpus, "--resume", "--epochs", "0.01", "-c", path), "(--epochs 0.01)")


def test_train_warns_when_no_character_is_kept(corpus, tmp_path):
    r = ok(invoke("train", corpus, *TINY2, "--min-count", "100000", "-c", tmp_path / "m.npz"))
    assert "the vocabulary is only <EOS> and <UNK> (no character is seen --min-count 100,000 times)" in r.stderr


def test_a_curve_over_under_a_second_labels_its_axis_with_figures_that_differ():
    """`info --curve` of a run under a second used to read "0 … 0" on its time axis."""
    from charlm.cli.render import curve
    axis = curve([(0.01, 3.0), (0.08, 2.5)], [(0.08, 2.6)]).splitlines()[-2].split()
    assert axis == ["0.01", "0.08"]
    assert curve([(15, 3.0), (491, 2.5)]).splitlines()[-2].split() == ["15", "491"]
