"""`-` reads standard input wherever a file is accepted: corpus, --file, --prime-file, checkpoint, --vocab, --config."""

import json

import pytest
from typer.testing import CliRunner

from charlm import checkpoint
from charlm.cli import app
from charlm.config import Config
from charlm.dataset import load_corpus
from charlm.train import train

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("stdin")
    corpus = d / "c.txt"
    corpus.write_text("abc abd\nabe\n" * 40)
    cfg = Config(hidden_size=8, num_layers=1, batch_size=2, seq_len=8, steps=12, eval_every=6).validate()
    ck, _ = train(cfg, load_corpus(str(corpus), cfg))
    path = d / "m.npz"
    checkpoint.save(ck, str(path))
    return d, str(path), str(corpus)


def test_checkpoint_from_stdin(trained):
    _, path, _ = trained
    with open(path, "rb") as f:
        data = f.read()
    r = runner.invoke(app, ["info", "-", "--json"], input=data)
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["cell"] == Config().cell  # the fixture trained the default cell
    r = runner.invoke(app, ["score", "-c", "-", "--json", "abc"], input=data)
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["num_tokens"] == 4


def test_vocab_and_config_from_stdin(trained, tmp_path):
    d, _, corpus = trained
    vocab_path = tmp_path / "v.json"
    assert runner.invoke(app, ["build-vocab", corpus, "-o", str(vocab_path)]).exit_code == 0
    out = tmp_path / "m.npz"
    r = runner.invoke(app, ["train", corpus, "--vocab", "-", "--steps", "2", "--hidden-size", "4", "--num-layers", "1",
                            "-c", str(out)], input=vocab_path.read_bytes())
    assert r.exit_code == 0, r.stderr
    assert checkpoint.load(str(out)).vocab.tokens[2:] == tuple(" abcde")
    r = runner.invoke(app, ["train", corpus, "--config", "-", "-c", str(out)],
                      input=b"steps: 2\nhidden_size: 4\nnum_layers: 1\ncell: gru\n")
    assert r.exit_code == 0, r.stderr
    assert checkpoint.load(str(out)).config.cell == "gru"


def test_info_curve_against_step_and_time(trained):
    _, path, _ = trained
    r = runner.invoke(app, ["info", path, "--curve"])
    assert r.exit_code == 0, r.stderr
    assert "bits/char against step" in r.stdout and "bits/char against training seconds" in r.stdout


def test_resume_takes_an_option_changed_in_the_yaml_file(trained, tmp_path):
    """On --resume, a learning rate set in --config counts as asked for explicitly (and is reported)."""
    _, _, corpus = trained
    out = tmp_path / "r.npz"
    base = ["--hidden-size", "4", "--num-layers", "1", "--batch-size", "2", "--seq-len", "8", "-c", str(out)]
    assert runner.invoke(app, ["train", corpus, "--steps", "3", *base]).exit_code == 0
    cfg = tmp_path / "more.yaml"
    cfg.write_text("lr: 0.0005\n")
    r = runner.invoke(app, ["train", corpus, "--steps", "5", "--resume", "--config", str(cfg), *base])
    assert r.exit_code == 0, r.stderr
    assert f"lr: {Config().lr} -> 0.0005" in r.stderr
    assert checkpoint.load(str(out)).config.lr == 0.0005


def test_score_show_draws_a_heat_map_readable_without_colour(trained, tmp_path):
    _, path, _ = trained
    r = runner.invoke(app, ["score", "-c", path, "--show", "abc", "zzz"], env={"NO_COLOR": "1"})
    assert r.exit_code == 0, r.stderr
    out = r.stdout
    assert "surprisal (bits)" in out                      # the legend
    lines = out.splitlines()
    i = lines.index("abc⏎")                               # the sentence, then one digit per token
    assert len(lines[i + 1]) == 4 and lines[i + 1].isdigit()
    assert "the model expected" in out and "%" in out     # least expected characters with alternatives
    f = tmp_path / "s.txt"
    f.write_text("ab\nabd\n")
    r = runner.invoke(app, ["score", "-c", path, "--show", "--file", str(f)])
    assert r.exit_code == 0 and "abd⏎" in r.stdout
    for bad in (["--json"], ["--document", "--file", str(f)]):
        r = runner.invoke(app, ["score", "-c", path, "--show", *bad] + ([] if "--file" in bad else ["abc"]))
        assert r.exit_code == 1 and len(r.stderr.strip().splitlines()) == 1
