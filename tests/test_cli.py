"""The `charlm` command line through Typer's CliRunner.

Happy paths of every subcommand with tiny models, the stdout/stderr
contract (stdout carries only the product), the YAML configuration, and a
matrix of bad inputs that must each give a non-zero exit code and exactly
one line of error on stderr, never a traceback.

Typer 0.29's CliRunner always keeps stdout and stderr apart
(`result.stdout`, `result.stderr`; `result.output` is both interleaved).
"""

from __future__ import annotations

import json
import math
import zipfile

import numpy as np
import pytest
from typer.testing import CliRunner

from charlm import __version__
from charlm import checkpoint as ckpt_io
from charlm.cli import app
from charlm.config import Config
from conftest import NAMES, TINY, TINY2, invoke, ok, one_line_error

pytestmark = pytest.mark.usefixtures("no_env_checkpoint")   # the fixtures `trained` and `corpus` are in conftest.py

# ---------------------------------------------------------------------------
# --version, --help
# ---------------------------------------------------------------------------

def test_version():
    r = ok(invoke("--version"))
    assert r.stdout.strip() == f"charlm {__version__}"


def _commands():
    from typer.main import get_command

    return list(get_command(app).commands)


def test_the_documented_commands_exist():
    assert {"build-vocab", "train", "sample", "score", "info"} <= set(_commands())


@pytest.mark.parametrize("cmd", [[]] + [[name] for name in _commands()])
def test_help_has_examples(cmd):
    r = ok(invoke(*cmd, "--help"))
    assert "Usage" in r.stdout
    assert "Examples" in r.stdout
    assert "charlm" in r.stdout.split("Examples", 1)[1]


@pytest.mark.parametrize("name", _commands())
def test_help_examples_are_one_per_line(name):
    """Each example of the epilog starts its own line of --help (not run together)."""
    from typer.main import get_command

    epilog = get_command(app).commands[name].epilog
    examples = [line.strip() for line in epilog.splitlines() if "charlm " in line]
    assert len(examples) >= 3
    r = ok(invoke(name, "--help"))
    help_lines = [line.strip() for line in r.stdout.split("Examples", 1)[1].splitlines()]
    for example in examples:
        assert any(line.startswith(example[:40]) for line in help_lines), example


def test_short_help_flag():
    r = ok(invoke("sample", "-h"))
    assert "--temperature" in r.stdout


@pytest.mark.parametrize("cmd", [["build-vocab", "x.txt"], ["train", "x.txt"], ["sample"], ["score", "abc"],
                                 ["info"]])
def test_unknown_option_is_usage_error(cmd, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = invoke(*cmd, "--no-such-option")
    assert r.exit_code == 2
    assert "no-such-option" in r.stderr
    assert "Traceback" not in r.output
    assert r.stdout == ""


def test_missing_argument_is_usage_error():
    r = invoke("train")
    assert r.exit_code == 2
    assert "Traceback" not in r.output


def test_bad_option_type_is_usage_error(corpus):
    r = invoke("train", corpus, "--hidden-size", "many")
    assert r.exit_code == 2
    assert "Traceback" not in r.output


def test_unknown_command_is_usage_error():
    r = invoke("fly")
    assert r.exit_code == 2


# ---------------------------------------------------------------------------
# build-vocab
# ---------------------------------------------------------------------------

def test_build_vocab_writes_json_and_summary(corpus, tmp_path):
    out = tmp_path / "v.json"
    r = ok(invoke("build-vocab", corpus, "-o", out))
    assert r.stdout == ""
    assert "wrote" in r.stderr and str(out) in r.stderr
    assert "tokens" in r.stderr
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["format"] == "charlm-vocab"
    chars = sorted(set("".join(NAMES)))
    assert data["tokens"] == ["<EOS>", "<UNK>"] + chars
    assert data["counts"][0] == 300  # lines
    assert data["counts"][1] == 0     # nothing folded into <UNK>
    text = corpus.read_text(encoding="utf-8")
    assert data["counts"][2:] == [text.count(c) for c in chars]


def test_build_vocab_default_output_in_cwd(corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ok(invoke("build-vocab", corpus))
    assert (tmp_path / "vocab.json").exists()


def test_build_vocab_max_size_and_min_count(corpus, tmp_path):
    out = tmp_path / "v.json"
    r = ok(invoke("build-vocab", corpus, "-o", out, "--max-size", "6"))
    data = json.loads(out.read_text())
    assert len(data["tokens"]) == 6
    assert data["counts"][1] > 0
    assert "<UNK>" in r.stderr
    text = corpus.read_text()
    ok(invoke("build-vocab", corpus, "-o", out, "--min-count", "100000"))
    data = json.loads(out.read_text())
    assert data["tokens"] == ["<EOS>", "<UNK>"]
    assert data["counts"][1] == len(text) - text.count("\n")


def test_build_vocab_stdin(tmp_path):
    out = tmp_path / "v.json"
    ok(invoke("build-vocab", "-", "-o", out, input="hello\nworld\n"))
    assert json.loads(out.read_text())["tokens"] == ["<EOS>", "<UNK>"] + sorted(set("helloworld"))
    # a second invocation in the same process reads its own standard input
    ok(invoke("build-vocab", "-", "-o", out, input="xyz\n"))
    assert json.loads(out.read_text())["tokens"] == ["<EOS>", "<UNK>", "x", "y", "z"]


@pytest.mark.parametrize("args, needle", [(["--min-count", "0"], "--min-count"), (["--max-size", "2"], "--max-size")])
def test_build_vocab_bad_values(corpus, tmp_path, args, needle):
    one_line_error(invoke("build-vocab", corpus, "-o", tmp_path / "v.json", *args), needle)
    assert not (tmp_path / "v.json").exists()


# ---------------------------------------------------------------------------
# train, sample, score, info: happy paths
# ---------------------------------------------------------------------------

def test_train_writes_checkpoint_and_keeps_stdout_empty(corpus, tmp_path):
    ck = tmp_path / "x.npz"
    r = ok(invoke("train", corpus, *TINY, "-c", ck))
    assert r.stdout == ""
    assert "Training" in r.stderr
    c = ckpt_io.load(str(ck))
    assert c.config.hidden_size == 16 and c.config.num_layers == 1
    assert c.config.batch_size == 4 and c.config.seq_len == 8
    assert c.train_state["step"] == 20
    assert c.resumable
    assert c.best_params is not None
    assert len(c.train_state["history"]) == 2  # evaluated at steps 10 and 20
    assert [h["step"] for h in c.train_state["history"]] == [10, 20]
    assert (tmp_path / "x.npz.metrics.jsonl").exists()
    # no --dropout: chosen from the budget, printed, and stored as a number
    assert f"Dropout {c.config.dropout:g}, character dropout {c.config.char_dropout:g}: chosen for a budget of about" in r.stderr
    r = ok(invoke("train", corpus, *TINY, "-c", ck, "--dropout", "0.05"))
    assert "chosen for a budget" not in r.stderr and ckpt_io.load(str(ck)).config.dropout == 0.05


def test_default_checkpoint_in_working_directory(corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ok(invoke("train", corpus, *TINY))
    assert (tmp_path / "charlm.npz").exists()
    r = ok(invoke("sample", "--seed", "1", "--num", "2"))
    assert r.stdout.strip()
    r = ok(invoke("score", "anna", "--json"))
    assert json.loads(r.stdout)["text"] == "anna"
    r = ok(invoke("info", "--json"))
    assert json.loads(r.stdout)["steps"] == 20


def test_checkpoint_from_environment(corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "env.npz"
    env = {"CHARLM_CHECKPOINT": str(path)}
    ok(invoke("train", corpus, *TINY, env=env))
    assert path.exists()
    assert not (tmp_path / "charlm.npz").exists()
    ok(invoke("sample", "--seed", "0", env=env))
    r = ok(invoke("score", "bob", "--json", env=env))
    assert json.loads(r.stdout)["num_tokens"] == 4
    r = ok(invoke("info", "--json", env=env))
    assert json.loads(r.stdout)["path"] == str(path)
    # without the variable, the default file (absent here) is used
    one_line_error(invoke("sample"), "charlm.npz")
    # -c wins over the variable
    one_line_error(invoke("sample", "-c", tmp_path / "other.npz", env=env), "other.npz")


def test_train_warns_before_overwriting(corpus, tmp_path):
    ck = tmp_path / "x.npz"
    ok(invoke("train", corpus, *TINY2, "-c", ck))
    r = ok(invoke("train", corpus, *TINY2, "-c", ck))
    assert "warning" in r.stderr and "overwritten" in r.stderr


def test_train_resume_continues_the_step_count(corpus, tmp_path):
    ck = tmp_path / "x.npz"
    ok(invoke("train", corpus, *TINY, "-c", ck))
    args = [a if a != "20" else "30" for a in TINY]
    r = ok(invoke("train", corpus, *args, "-c", ck, "--resume"))
    assert "resuming at step 20" in r.stderr
    assert ckpt_io.load(str(ck)).train_state["step"] == 30


def test_train_resume_refuses_another_architecture(corpus, tmp_path):
    ck = tmp_path / "x.npz"
    ok(invoke("train", corpus, *TINY2, "-c", ck))
    one_line_error(invoke("train", corpus, "--steps", "4", "--hidden-size", "8", "-c", ck, "--resume"),
                   "hidden-size")


def test_train_resume_without_checkpoint(corpus, tmp_path):
    one_line_error(invoke("train", corpus, *TINY2, "-c", tmp_path / "none.npz", "--resume"), "not found")


def test_train_refuses_an_unwritable_checkpoint_before_training(corpus, tmp_path):
    """One error line and no training: the run would be lost at the final save."""
    one_line_error(invoke("train", corpus, *TINY2, "-c", tmp_path / "no" / "such" / "dir.npz"), "does not exist")
    (tmp_path / "adir").mkdir()
    one_line_error(invoke("train", corpus, *TINY2, "-c", tmp_path / "adir"), "directory")
    assert list((tmp_path / "adir").iterdir()) == []


def test_build_vocab_unwritable_output(corpus, tmp_path):
    one_line_error(invoke("build-vocab", corpus, "-o", tmp_path / "no" / "v.json"), "cannot write")


def test_train_from_stdin(tmp_path):
    ck = tmp_path / "x.npz"
    ok(invoke("train", "-", *TINY2, "-c", ck, input="anna\nbob\ncarla\ndave\n"))
    c = ckpt_io.load(str(ck))
    assert "".join(c.vocab.tokens[2:]) == "".join(sorted(set("annabobcarladave")))


def test_train_with_vocab_file(corpus, tmp_path):
    v = tmp_path / "v.json"
    ok(invoke("build-vocab", corpus, "-o", v, "--max-size", "8"))
    ck = tmp_path / "x.npz"
    ok(invoke("train", corpus, *TINY2, "--vocab", v, "-c", ck))
    assert list(ckpt_io.load(str(ck)).vocab.tokens) == json.loads(v.read_text())["tokens"]


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_train_each_cell(corpus, tmp_path, cell):
    ck = tmp_path / "x.npz"
    ok(invoke("train", corpus, *TINY2, "--cell", cell, "-c", ck))
    assert ckpt_io.load(str(ck)).config.cell == cell
    ok(invoke("sample", "-c", ck, "--seed", "0", "--length", "10"))


def test_sample_same_seed_same_text(trained):
    _, _, ck = trained
    a = ok(invoke("sample", "-c", ck, "--seed", "7", "--num", "3", "--length", "40"))
    b = ok(invoke("sample", "-c", ck, "--seed", "7", "--num", "3", "--length", "40"))
    c = ok(invoke("sample", "-c", ck, "--seed", "8", "--num", "3", "--length", "40"))
    assert a.stdout == b.stdout
    assert a.stdout.strip()
    assert a.stdout != c.stdout


def test_sample_greedy_is_deterministic(trained):
    _, _, ck = trained
    a = ok(invoke("sample", "-c", ck, "--greedy", "--length", "30", "--no-stop-at-eos"))
    b = ok(invoke("sample", "-c", ck, "--greedy", "--length", "30", "--no-stop-at-eos"))
    t0 = ok(invoke("sample", "-c", ck, "--temperature", "0", "--length", "30", "--no-stop-at-eos", "--seed", "5"))
    assert a.stdout == b.stdout == t0.stdout
    assert len(a.stdout.rstrip("\n")) > 0


def test_sample_stop_at_eos_gives_one_line_per_sample(trained):
    _, _, ck = trained
    r = ok(invoke("sample", "-c", ck, "--seed", "3", "--num", "5", "--length", "30", "--stop-at-eos"))
    lines = r.stdout.split("\n")
    assert lines[-1] == ""
    assert len(lines[:-1]) == 5
    for line in lines[:-1]:
        assert len(line) <= 30


def test_sample_default_stops_at_eos_for_a_list_of_names(trained):
    _, _, ck = trained
    r = ok(invoke("sample", "-c", ck, "--seed", "4", "--num", "4"))
    assert len(r.stdout.split("\n")) == 5


def test_sample_length_limit(trained):
    _, _, ck = trained
    r = ok(invoke("sample", "-c", ck, "--seed", "2", "--length", "5", "--no-stop-at-eos"))
    assert 1 <= len(r.stdout) <= 6  # at most 5 characters, plus the final newline
    assert r.stdout.endswith("\n")


def test_sample_prime_is_echoed(trained):
    _, _, ck = trained
    r = ok(invoke("sample", "-c", ck, "--seed", "1", "--prime", "ann", "--length", "10"))
    assert r.stdout.startswith("ann")
    r = ok(invoke("sample", "-c", ck, "--seed", "1", "--prime", "ann", "--no-echo-prime", "--length", "10"))
    assert len(r.stdout) <= 11  # only the 10 sampled characters and a newline


def test_sample_prime_outside_vocabulary_warns(trained):
    _, _, ck = trained
    r = ok(invoke("sample", "-c", ck, "--seed", "1", "--prime", "an☃Z", "--length", "10"))
    assert "warning" in r.stderr
    assert "☃" in r.stderr and "Z" in r.stderr
    assert r.stdout.startswith("an☃Z")


def test_sample_prime_file(trained, tmp_path):
    _, _, ck = trained
    p = tmp_path / "p.txt"
    p.write_text("eve", encoding="utf-8")
    r = ok(invoke("sample", "-c", ck, "--seed", "1", "--prime-file", p, "--length", "5"))
    assert r.stdout.startswith("eve")
    one_line_error(invoke("sample", "-c", ck, "--prime", "a", "--prime-file", p), "--prime")


def test_sample_show_logprob(trained):
    _, _, ck = trained
    r = ok(invoke("sample", "-c", ck, "--seed", "1", "--num", "2", "--show-logprob"))
    assert r.stderr.count("log P") == 2
    assert "log P" not in r.stdout


def test_sample_top_k_and_top_p(trained):
    _, _, ck = trained
    V = len(ckpt_io.load(str(ck)).vocab)
    ok(invoke("sample", "-c", ck, "--seed", "1", "--top-k", V))
    ok(invoke("sample", "-c", ck, "--seed", "1", "--top-k", "1", "--length", "20", "--no-stop-at-eos"))
    ok(invoke("sample", "-c", ck, "--seed", "1", "--top-p", "0.5"))
    a = ok(invoke("sample", "-c", ck, "--seed", "1", "--top-k", "1", "--length", "20", "--no-stop-at-eos"))
    g = ok(invoke("sample", "-c", ck, "--greedy", "--length", "20", "--no-stop-at-eos"))
    assert a.stdout == g.stdout  # top-1 sampling is greedy decoding


def test_sample_weights_last(trained):
    _, _, ck = trained
    ok(invoke("sample", "-c", ck, "--seed", "1", "--weights", "last"))


def _check_score_json(obj, text):
    for key in ("text", "log_prob", "num_tokens", "bits_per_char", "perplexity", "num_unk"):
        assert key in obj, key
    assert obj["text"] == text
    assert obj["num_tokens"] == len(text) + 1
    assert obj["log_prob"] < 0
    assert math.isclose(obj["bits_per_char"], -obj["log_prob"] / obj["num_tokens"] / math.log(2), rel_tol=1e-9)
    assert math.isclose(obj["perplexity"], math.exp(-obj["log_prob"] / obj["num_tokens"]), rel_tol=1e-9)


def test_score_json_one_object_per_sentence(trained):
    _, _, ck = trained
    texts = ["anna", "bob", "a much longer sentence", "x"]
    r = ok(invoke("score", "-c", ck, *texts, "--json"))
    lines = r.stdout.split("\n")
    assert lines[-1] == ""
    assert len(lines) == len(texts) + 1
    objs = [json.loads(line) for line in lines[:-1]]
    for obj, text in zip(objs, texts):
        _check_score_json(obj, text)
        assert obj["num_unk"] == 0 or text == "a much longer sentence"
    assert r.stderr == ""


def test_score_counts_unknown_characters(trained):
    _, _, ck = trained
    r = ok(invoke("score", "-c", ck, "an☃a€", "--json"))
    obj = json.loads(r.stdout)
    _check_score_json(obj, "an☃a€")
    assert obj["num_unk"] == 2


def test_score_batching_does_not_change_results(trained):
    _, _, ck = trained
    texts = ["anna", "bo", "carla dave", "", "eve"]
    a = [json.loads(x) for x in ok(invoke("score", "-c", ck, *texts, "--json")).stdout.splitlines()]
    b = [json.loads(x) for x in ok(invoke("score", "-c", ck, *texts, "--json", "--batch-size", "1")).stdout.splitlines()]
    assert len(a) == len(b) == len(texts)
    for x, y in zip(a, b):
        assert x["text"] == y["text"]
        assert math.isclose(x["log_prob"], y["log_prob"], rel_tol=1e-5, abs_tol=1e-5)


def test_score_stdin(trained):
    _, _, ck = trained
    r = ok(invoke("score", "-c", ck, "-", "--json", input="anna\nbob\n"))
    objs = [json.loads(x) for x in r.stdout.splitlines()]
    assert [o["text"] for o in objs] == ["anna", "bob"]
    r2 = ok(invoke("score", "-c", ck, "-", "--json", input="eve\n"))
    assert [json.loads(x)["text"] for x in r2.stdout.splitlines()] == ["eve"]


def test_score_file(trained, tmp_path):
    _, _, ck = trained
    f = tmp_path / "s.txt"
    f.write_text("anna\nbob\ncarla\n", encoding="utf-8")
    r = ok(invoke("score", "-c", ck, "--file", f, "--json"))
    objs = [json.loads(x) for x in r.stdout.splitlines()]
    assert [o["text"] for o in objs] == ["anna", "bob", "carla"]
    direct = [json.loads(x) for x in ok(invoke("score", "-c", ck, "anna", "bob", "carla", "--json")).stdout.splitlines()]
    for x, y in zip(objs, direct):
        assert math.isclose(x["log_prob"], y["log_prob"], rel_tol=1e-9)


def test_score_document(trained, tmp_path):
    _, _, ck = trained
    f = tmp_path / "doc.txt"
    f.write_text("anna\nbob\n", encoding="utf-8")
    r = ok(invoke("score", "-c", ck, "--document", "--file", f, "--json"))
    lines = r.stdout.splitlines()
    assert len(lines) == 1
    obj = json.loads(lines[0])
    assert obj["num_tokens"] == len("anna\nbob\n")  # 7 characters and 2 <EOS>
    assert obj["num_unk"] == 0
    assert obj["log_prob"] < 0
    assert math.isclose(obj["bits_per_char"], -obj["log_prob"] / obj["num_tokens"] / math.log(2), rel_tol=1e-9)
    # the first line scored as a document starts like the sentence "anna"
    r2 = ok(invoke("score", "-c", ck, "--document", "--file", f))
    assert "scored as one sequence" in r2.stderr


def test_score_document_exact_reads_in_order_and_gives_the_same_number(trained, tmp_path):
    _, _, ck = trained
    f = tmp_path / "doc.txt"
    f.write_text("anna\nbob\ncarla\n" * 1500, encoding="utf-8")     # 22,500 tokens: read in pieces by default
    pieces = json.loads(ok(invoke("score", "-c", ck, "--document", "--file", f, "--json")).stdout)
    in_order = json.loads(ok(invoke("score", "-c", ck, "--document", "--exact", "--file", f, "--json")).stdout)
    assert pieces["num_tokens"] == in_order["num_tokens"] == 22_500
    assert math.isclose(pieces["log_prob"], in_order["log_prob"], rel_tol=1e-6)
    one_line_error(invoke("score", "-c", ck, "--exact", "anna"), "--exact applies to --document")


def test_score_table(trained):
    _, _, ck = trained
    r = ok(invoke("score", "-c", ck, "anna", "bo☃"))
    assert "anna" in r.stdout and "bits/char" in r.stdout
    assert "<UNK>" in r.stderr


def test_undecodable_bytes_round_trip_through_stdout(tmp_path):
    """Text read with --errors surrogateescape (or from argv) holds lone surrogates; output must not crash:
    JSON escapes them, the score table shows them as \\xff, sampled text writes the original bytes back."""
    f = tmp_path / "raw.txt"
    f.write_bytes(b"a\xffb\nab\xff\n" * 20)
    ck = tmp_path / "x.npz"
    ok(invoke("train", f, *TINY2, "--errors", "surrogateescape", "-c", ck))
    assert "\udcff" in ckpt_io.load(str(ck)).vocab.tokens
    r = ok(invoke("score", "-c", ck, "a\udcffb", "--json"))
    obj = json.loads(r.stdout)
    assert obj["text"] == "a\udcffb" and obj["num_unk"] == 0 and obj["num_tokens"] == 4
    r = ok(invoke("score", "-c", ck, "a\udcffb"))
    assert "a\\xffb" in r.stdout          # the table shows the undecodable byte as an escape, not raw
    r = ok(invoke("info", ck, "--json"))
    assert "\udcff" in json.loads(r.stdout)["vocab_preview"]
    ok(invoke("info", ck))
    r = ok(invoke("sample", "-c", ck, "--seed", "0", "--num", "4", "--length", "30", "--no-stop-at-eos"))
    assert r.stdout_bytes.strip()


def test_output_to_an_ascii_stdout(trained):
    _, _, ck = trained
    ascii_runner = CliRunner(charset="ascii")
    r = ascii_runner.invoke(app, ["score", "-c", str(ck), "añ☃", "--json"])
    assert r.exit_code == 0 and r.exception is None, r.stderr
    assert json.loads(r.stdout)["text"] == "añ☃"
    r = ascii_runner.invoke(app, ["sample", "-c", str(ck), "--prime", "☃", "--seed", "0"])
    assert r.exit_code == 0 and r.exception is None, r.stderr
    assert r.stdout.startswith("?")


def test_score_nothing_to_score(trained):
    _, _, ck = trained
    one_line_error(invoke("score", "-c", ck), "nothing to score")
    one_line_error(invoke("score", "-c", ck, "--document"), "--file")


def test_info(trained):
    _, _, ck = trained
    default_cell = Config().cell  # `trained` used the default cell
    r = ok(invoke("info", ck))
    assert default_cell in r.stdout and "16" in r.stdout
    r = ok(invoke("info", ck, "--json"))
    d = json.loads(r.stdout)
    assert d["cell"] == default_cell and d["hidden_size"] == 16 and d["num_layers"] == 1
    assert d["steps"] == 20 and d["resumable"] is True
    assert d["vocab_size"] == 2 + len(set("".join(NAMES)))
    assert d["ngram"]["order"] == 7 and d["ngram"]["grams"] > 0 and set(d["ngram"]["network_share"]) == {"best", "last"}
    r = ok(invoke("info", ck, "--curve"))
    assert "bits/char against step" in r.stdout
    assert "history" not in d
    hist = json.loads(ok(invoke("info", ck, "--json", "--curve")).stdout)["history"]
    assert hist and hist[-1]["step"] == 20 and all(h["val_bpc"] > 0 for h in hist)
    assert [h["step"] for h in hist] == sorted(h["step"] for h in hist)


# ---------------------------------------------------------------------------
# YAML configuration
# ---------------------------------------------------------------------------

def test_config_sets_options_and_flags_override(corpus, tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("cell: gru\nhidden-size: 8\nnum_layers: 1\nsteps: 3\nbatch_size: 2\nseq_len: 4\nseed: 5\n")
    ck = tmp_path / "a.npz"
    ok(invoke("train", corpus, "--config", cfg, "-c", ck))
    c = ckpt_io.load(str(ck)).config
    assert (c.cell, c.hidden_size, c.num_layers, c.steps, c.batch_size, c.seq_len, c.seed) == ("gru", 8, 1, 3, 2, 4, 5)
    ck2 = tmp_path / "b.npz"
    ok(invoke("train", corpus, "--config", cfg, "--hidden-size", "6", "--steps", "2", "-c", ck2))
    c = ckpt_io.load(str(ck2)).config
    assert (c.cell, c.hidden_size, c.steps) == ("gru", 6, 2)


def test_config_empty_file_means_defaults(corpus, tmp_path):
    cfg = tmp_path / "empty.yaml"
    cfg.write_text("")
    ck = tmp_path / "a.npz"
    ok(invoke("train", corpus, "--config", cfg, *TINY2, "-c", ck))


@pytest.mark.parametrize("text, needles", [
    ("hidden_size: 8\nhiden_layers: 2\n", ["hiden_layers"]),
    ("hidden_size: lots\n", ["hidden-size"]),
    ("hidden_size: 8.5\n", ["hidden-size"]),
    ("lr: fast\n", ["lr"]),
    ("cell: [lstm]\n", ["cell"]),
    ("cell: transformer\n", ["cell"]),
    ("hidden_size: [1, 2\n", ["run.yaml"]),
    ("a: b: c\n", ["run.yaml"]),
    ("\tcell: gru\n", ["run.yaml"]),
    ("- cell\n- gru\n", ["mapping"]),
    ("just a string\n", ["mapping"]),
])
def test_config_errors_are_one_line(corpus, tmp_path, text, needles):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(text)
    ck = tmp_path / "a.npz"
    # no flag here sets the same option as the file, so the file's value is the one checked
    one_line_error(invoke("train", corpus, "--config", cfg, "--steps", "1", "--batch-size", "2", "--seq-len", "4",
                          "-c", ck), *needles)
    assert not ck.exists()


def test_config_missing_file(corpus, tmp_path):
    one_line_error(invoke("train", corpus, "--config", tmp_path / "nope.yaml", *TINY2), "nope.yaml")


def test_config_not_utf8(corpus, tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_bytes(b"cell: \xff\xfe\n")
    one_line_error(invoke("train", corpus, "--config", cfg, *TINY2))


# ---------------------------------------------------------------------------
# bad input matrix: exit != 0, one line on stderr, no traceback
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, trained):
    d = tmp_path_factory.mktemp("bad")
    _, _, good = trained
    data = good.read_bytes()
    files = {}
    files["empty"] = d / "empty.txt"
    files["empty"].write_bytes(b"")
    files["newlines"] = d / "newlines.txt"
    files["newlines"].write_bytes(b"\n\n\r\n\n")
    files["notutf8"] = d / "latin1.txt"
    files["notutf8"].write_bytes("anna\nbob\nzoë\n".encode("latin-1"))
    files["dir"] = d / "adir"
    files["dir"].mkdir()
    files["truncated"] = d / "truncated.npz"
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["truncated_tiny"] = d / "truncated_tiny.npz"
    files["truncated_tiny"].write_bytes(data[:10])
    files["random"] = d / "random.npz"
    files["random"].write_bytes(np.random.default_rng(0).bytes(4000))
    files["random_pk"] = d / "random_pk.npz"
    files["random_pk"].write_bytes(b"PK" + np.random.default_rng(1).bytes(4000))
    files["zip"] = d / "other.npz"
    with zipfile.ZipFile(files["zip"], "w") as z:
        z.writestr("readme.txt", "not a checkpoint")
    files["foreign_npz"] = d / "foreign.npz"
    np.savez(files["foreign_npz"], weights=np.zeros(3))
    files["pickle"] = d / "pickle.npz"
    np.savez(files["pickle"], format=np.array("charlm-checkpoint"), evil=np.array([{"a": 1}, None], dtype=object))
    arrays = dict(np.load(good, allow_pickle=False))
    files["version"] = d / "v2.npz"
    np.savez(files["version"], **{**arrays, "version": np.array(2, dtype=np.int64)})
    files["bad_shape"] = d / "bad_shape.npz"
    np.savez(files["bad_shape"], **{**arrays, "head.bias": np.zeros(3, dtype=np.float32)})
    files["nan"] = d / "nan.npz"
    nan_bias = arrays["head.bias"].copy()
    nan_bias[0] = np.nan
    np.savez(files["nan"], **{**arrays, "head.bias": nan_bias})
    files["bad_config"] = d / "bad_config.npz"
    np.savez(files["bad_config"], **{**arrays, "config": np.array("{not json")})
    files["vocab_json"] = d / "malformed.json"
    files["vocab_json"].write_text('{"tokens": ["<EOS>", "<UNK>", "a"')
    files["vocab_specials"] = d / "nospecials.json"
    files["vocab_specials"].write_text(json.dumps({"format": "charlm-vocab", "version": 1, "tokens": ["a", "b", "c"]}))
    files["vocab_dup"] = d / "dup.json"
    files["vocab_dup"].write_text(json.dumps({"format": "charlm-vocab", "version": 1, "tokens": ["<EOS>", "<UNK>", "a", "b", "b"]}))
    files["vocab_list"] = d / "list.json"
    files["vocab_list"].write_text("[1, 2, 3]")
    files["vocab_multichar"] = d / "multichar.json"
    files["vocab_multichar"].write_text(json.dumps({"format": "charlm-vocab", "version": 1, "tokens": ["<EOS>", "<UNK>", "ab"]}))
    return d, files


@pytest.mark.parametrize("kind, needles", [
    ("missing", ["not found"]),
    ("dir", ["directory"]),
    ("empty", ["empty"]),
    ("newlines", ["empty"]),
    ("notutf8", ["offset 11", "0xeb", "line 3"]),
])
@pytest.mark.parametrize("cmd", ["train", "build-vocab"])
def test_bad_corpus(bad_files, tmp_path, kind, needles, cmd):
    d, files = bad_files
    path = d / "missing.txt" if kind == "missing" else files[kind]
    extra = TINY2 + ["-c", str(tmp_path / "x.npz")] if cmd == "train" else ["-o", str(tmp_path / "v.json")]
    one_line_error(invoke(cmd, path, *extra), *needles)
    assert not (tmp_path / "x.npz").exists() and not (tmp_path / "v.json").exists()


def test_not_utf8_with_errors_replace_succeeds(bad_files, tmp_path):
    _, files = bad_files
    ck = tmp_path / "x.npz"
    ok(invoke("train", files["notutf8"], *TINY2, "--errors", "replace", "-c", ck))
    assert "\ufffd" in ckpt_io.load(str(ck)).vocab.tokens
    ok(invoke("build-vocab", files["notutf8"], "--errors", "replace", "-o", tmp_path / "v.json"))
    ok(invoke("train", files["notutf8"], *TINY2, "--encoding", "latin-1", "-c", tmp_path / "y.npz"))
    assert "ë" in ckpt_io.load(str(tmp_path / "y.npz")).vocab.tokens


def test_not_utf8_offset_in_a_large_file(tmp_path):
    """The byte offset is right even when the bad byte is far into the file."""
    f = tmp_path / "big.txt"
    good = ("abcdefghij\n" * 50000).encode()
    f.write_bytes(good + b"\xc3(" + b"\n")
    one_line_error(invoke("build-vocab", f, "-o", tmp_path / "v.json"), f"offset {len(good)}", "line 50001")


@pytest.mark.parametrize("value", ["bogus", "STRICT"])
def test_bad_errors_and_encoding_values(corpus, tmp_path, value):
    one_line_error(invoke("train", corpus, *TINY2, "--errors", value, "-c", tmp_path / "x.npz"), "errors")
    one_line_error(invoke("train", corpus, *TINY2, "--encoding", "no-such-codec-" + value, "-c", tmp_path / "x.npz"),
                   "encoding")


@pytest.mark.parametrize("kind, needles", [
    ("missing", ["not found"]),
    ("dir", ["directory"]),
    ("truncated", []),
    ("truncated_tiny", []),
    ("random", []),
    ("random_pk", []),
    ("zip", []),
    ("foreign_npz", []),
    ("pickle", ["pickle"]),
    ("version", ["version 2"]),
    ("bad_shape", ["head.bias"]),
    ("nan", ["head.bias"]),
    ("bad_config", ["config"]),
])
@pytest.mark.parametrize("cmd", ["sample", "score", "info", "resume"])
def test_bad_checkpoint(bad_files, trained, kind, needles, cmd):
    d, files = bad_files
    _, corpus, _ = trained
    path = d / "missing.npz" if kind == "missing" else files[kind]
    before = path.read_bytes() if path.is_file() else None
    if cmd == "sample":
        r = invoke("sample", "-c", path)
    elif cmd == "score":
        r = invoke("score", "-c", path, "anna")
    elif cmd == "info":
        r = invoke("info", path)
    else:
        r = invoke("train", corpus, *TINY2, "-c", path, "--resume")
    line = one_line_error(r, *needles)
    assert str(path.name) in line
    if before is not None:
        assert path.read_bytes() == before  # never overwritten by a failed command


def test_random_bytes_starting_like_a_zip_are_not_called_a_pickle(bad_files):
    """'PK' + random bytes is not an archive; blaming a pickled array misleads."""
    _, files = bad_files
    line = one_line_error(invoke("info", files["random_pk"]))
    assert "pickle" not in line


@pytest.mark.parametrize("kind, needles", [
    ("vocab_json", ["not valid JSON"]),
    ("vocab_specials", ["<EOS>"]),
    ("vocab_dup", ["duplicate"]),
    ("vocab_list", ["object"]),
    ("vocab_multichar", ["single character"]),
])
def test_bad_vocab(bad_files, trained, tmp_path, kind, needles):
    _, files = bad_files
    _, corpus, _ = trained
    line = one_line_error(invoke("train", corpus, *TINY2, "--vocab", files[kind], "-c", tmp_path / "x.npz"), *needles)
    assert files[kind].name in line
    one_line_error(invoke("train", corpus, *TINY2, "--vocab", tmp_path / "none.json"), "not found")


@pytest.mark.parametrize("args, needle", [
    (["--hidden-size", "0"], "--hidden-size"),
    (["--hidden-size", "-1"], "--hidden-size"),
    (["--num-layers", "0"], "--num-layers"),
    (["--batch-size", "0"], "--batch-size"),
    (["--seq-len", "0"], "--seq-len"),
    (["--lr", "-1"], "--lr"),
    (["--lr", "0"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--lr", "inf"], "--lr"),
    (["--dropout", "1"], "--dropout"),
    (["--val-fraction", "1.5"], "--val-fraction"),
    (["--steps", "0"], "--steps"),
    (["--epochs", "0"], "--epochs"),
    (["--max-time", "-3"], "--max-time"),
    (["--clip", "-1"], "--clip"),
    (["--cell", "transformer"], "--cell"),
    (["--optimizer", "lion"], "--optimizer"),
    (["--dtype", "float16"], "--dtype"),
    (["--seed", "-1"], "--seed"),
])
def test_bad_train_values(corpus, tmp_path, args, needle):
    ck = tmp_path / "x.npz"
    one_line_error(invoke("train", corpus, "--steps", "2", *args, "-c", ck), needle)
    assert not ck.exists()


@pytest.mark.parametrize("args, needle", [
    (["--temperature", "-1"], "--temperature"),
    (["--temperature", "nan"], "--temperature"),
    (["--top-k", "1000"], "--top-k"),
    (["--top-k", "-1"], "--top-k"),
    (["--top-p", "0"], "--top-p"),
    (["--top-p", "1.5"], "--top-p"),
    (["--length", "0"], "--length"),
    (["--num", "0"], "--num"),
    (["--seed", "-2"], "--seed"),
    (["--weights", "median"], "--weights"),
])
def test_bad_sample_values(trained, args, needle):
    _, _, ck = trained
    one_line_error(invoke("sample", "-c", ck, *args), needle)


@pytest.mark.parametrize("args, needle", [
    (["--batch-size", "0"], "--batch-size"),
    (["--weights", "median"], "--weights"),
])
def test_bad_score_values(trained, args, needle):
    _, _, ck = trained
    one_line_error(invoke("score", "-c", ck, "anna", *args), needle)


def test_score_missing_file(trained, tmp_path):
    _, _, ck = trained
    one_line_error(invoke("score", "-c", ck, "--file", tmp_path / "none.txt"), "not found")
    one_line_error(invoke("score", "-c", ck, "--document", "--file", tmp_path / "none.txt"), "not found")


def test_score_empty_document(trained, tmp_path):
    _, _, ck = trained
    f = tmp_path / "e.txt"
    f.write_text("")
    one_line_error(invoke("score", "-c", ck, "--document", "--file", f), "empty")


def test_checkpoint_with_nul_character_round_trips(tmp_path):
    """A corpus may contain U+0000; the checkpoint must still load afterwards."""
    f = tmp_path / "nul.txt"
    f.write_text("ab\x00c\nabc\n" * 5, encoding="utf-8")
    ck = tmp_path / "x.npz"
    ok(invoke("train", f, *TINY2, "-c", ck))
    c = ckpt_io.load(str(ck))
    assert "\x00" in c.vocab.tokens
    ok(invoke("score", "-c", ck, "ab\x00c", "--json"))


# ---------------------------------------------------------------------------
# the n-gram interpolation
# ---------------------------------------------------------------------------

def test_score_and_sample_use_the_ngram_unless_network_only(trained):
    _, _, ck = trained
    loaded = ckpt_io.load(str(ck))
    assert loaded.mixture("best") is not None and 0.0 <= loaded.mixture("best").weight <= 1.0
    both = json.loads(ok(invoke("score", "-c", ck, "anna", "--json")).stdout)
    alone = json.loads(ok(invoke("score", "-c", ck, "anna", "--json", "--network-only")).stdout)
    assert both["log_prob"] != alone["log_prob"]
    a = ok(invoke("sample", "-c", ck, "--num", "5", "--seed", "3")).stdout
    b = ok(invoke("sample", "-c", ck, "--num", "5", "--seed", "3", "--network-only")).stdout
    assert a != b and a == ok(invoke("sample", "-c", ck, "--num", "5", "--seed", "3")).stdout


def test_train_reports_the_network_alone_and_its_share(corpus, tmp_path):
    r = ok(invoke("train", corpus, *TINY, "-c", tmp_path / "m.npz"))
    assert "network alone" in r.stderr and "7-gram alone" in r.stderr
    assert "unigram" in r.stderr and "5-gram" not in r.stderr   # the baselines: this n-gram, at orders 1 and 7
    assert 0 < ckpt_io.load(str(tmp_path / "m.npz")).meta["ngram_val_bpc"] < 10
    r = ok(invoke("train", corpus, *TINY, "--ngram", "0", "-c", tmp_path / "n.npz"))
    assert "network alone" not in r.stderr and ckpt_io.load(str(tmp_path / "n.npz")).ngram is None


def test_train_resume_refuses_another_ngram_order(corpus, tmp_path):
    ck = tmp_path / "x.npz"
    ok(invoke("train", corpus, *TINY2, "-c", ck))
    one_line_error(invoke("train", corpus, "--steps", "4", "--ngram", "3", "-c", ck, "--resume"), "ngram")


@pytest.mark.parametrize("value", ["-1", "13"])
def test_bad_ngram_order(corpus, tmp_path, value):
    one_line_error(invoke("train", corpus, *TINY2, "--ngram", value, "-c", tmp_path / "x.npz"), "--ngram")


def test_score_batch_size_default_is_the_library_default():
    """The bench measures `score --file` with score.BATCH_SIZE: it must be the option's default."""
    import inspect

    from charlm import score
    from charlm.cli import score as score_command

    assert inspect.signature(score_command.score).parameters["batch_size"].default == score.BATCH_SIZE


@pytest.mark.parametrize("args,needle", [(["--seconds", "0"], "--seconds"), (["--repeats", "0"], "--repeats")])
def test_bench_refuses_nonsense_budgets_in_one_line(args, needle):
    one_line_error(invoke("bench", *args), needle)
