"""The installed `charlm`, run as a user runs it: in a pipe and on a (pseudo-)terminal.

stdout carries only the product; colour appears only on a terminal, never
with NO_COLOR; exit codes are the documented ones.
"""

import json
import os
import pty
import re
import select
import subprocess
import sys

import pytest

from charlm import checkpoint
from charlm.config import Config
from charlm.dataset import load_corpus
from charlm.train import train

ANSI = re.compile(r"\x1b\[")
COLOUR = re.compile(r"\x1b\[[0-9;]*(?:3[0-7]|38|9[0-7])[;m]")


@pytest.fixture(scope="module")
def ckpt_path(tmp_path_factory):
    d = tmp_path_factory.mktemp("term")
    corpus = d / "names.txt"
    corpus.write_text("\n".join(["Anna", "Bob", "Carla", "Dave", "Emma", "Fred", "Gina", "Hugo"] * 20) + "\n")
    cfg = Config(hidden_size=16, num_layers=1, batch_size=4, seq_len=8, steps=30, eval_every=10).validate()
    ck, _ = train(cfg, load_corpus(str(corpus), cfg))
    path = d / "m.npz"
    checkpoint.save(ck, str(path))
    return str(path)


def run_pipe(args, env_extra=None, stdin=None):
    env = dict(os.environ, **(env_extra or {}))
    env.pop("NO_COLOR", None) if not env_extra or "NO_COLOR" not in env_extra else None
    return subprocess.run([sys.executable, "-m", "charlm", *args], capture_output=True, text=True,
                          input=stdin, env=env, timeout=60)


def run_pty(args, env_extra=None):
    """Run with stdout and stderr on a pseudo-terminal; return (exit code, everything printed)."""
    env = dict(os.environ, TERM="xterm-256color", COLUMNS="120", **(env_extra or {}))
    if not env_extra or "NO_COLOR" not in env_extra:
        env.pop("NO_COLOR", None)
    env.pop("FORCE_COLOR", None)
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "charlm", *args], stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        r, _, _ = select.select([master], [], [], 30)
        if not r:
            break
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=60)
    os.close(master)
    return proc.returncode, b"".join(chunks).decode("utf-8", "replace")


def test_score_json_in_a_pipe_is_clean_json_lines(ckpt_path):
    r = run_pipe(["score", "-c", ckpt_path, "--json", "Anna", "Zzz"])
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 2
    objs = [json.loads(line) for line in lines]
    assert [o["text"] for o in objs] == ["Anna", "Zzz"]
    assert not ANSI.search(r.stdout)


def test_no_colour_in_a_pipe(ckpt_path):
    r = run_pipe(["score", "-c", ckpt_path, "--show", "Anna"])
    assert r.returncode == 0, r.stderr
    assert "Anna" in r.stdout
    assert not ANSI.search(r.stdout) and not ANSI.search(r.stderr)


def test_colour_on_a_terminal(ckpt_path):
    code, text = run_pty(["score", "-c", ckpt_path, "--show", "Anna"])
    assert code == 0, text
    assert COLOUR.search(text), "expected colour codes on a terminal"


def test_no_colour_on_a_terminal_with_NO_COLOR(ckpt_path):
    code, text = run_pty(["score", "-c", ckpt_path, "--show", "Anna"], {"NO_COLOR": "1"})
    assert code == 0, text
    assert "Anna" in text
    assert not COLOUR.search(text)


def test_sample_to_a_pipe_is_only_the_samples(ckpt_path):
    r = run_pipe(["sample", "-c", ckpt_path, "--num", "3", "--seed", "1", "--stop-at-eos"])
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 3
    assert not ANSI.search(r.stdout)



def test_train_progress_goes_to_stderr_and_stdout_stays_empty(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("hello world\n" * 50)
    r = subprocess.run([sys.executable, "-m", "charlm", "train", str(corpus), "--steps", "12", "--hidden-size", "8",
                        "--num-layers", "1", "--batch-size", "2", "--seq-len", "8", "--eval-every", "6",
                        "-c", str(tmp_path / "m.npz")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    assert "step" in r.stderr and "bits/char" in r.stderr
    metrics = (tmp_path / "m.npz.metrics.jsonl").read_text().splitlines()
    assert any(json.loads(m)["kind"] == "eval" for m in metrics)


def test_train_on_a_terminal_shows_a_progress_bar(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("hello world\n" * 50)
    code, text = run_pty(["train", str(corpus), "--steps", "12", "--hidden-size", "8", "--num-layers", "1",
                          "--batch-size", "2", "--seq-len", "8", "--eval-every", "6", "-c", str(tmp_path / "m.npz")])
    assert code == 0, text
    assert "chars/s" in text and "ETA" in text and "val" in text


@pytest.mark.parametrize("args,code", [
    (["--version"], 0),
    (["score", "--no-such-option"], 2),
    (["sample", "-c", "/nonexistent/x.npz"], 1),
])
def test_exit_codes(args, code):
    r = run_pipe(args)
    assert r.returncode == code, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr


def test_version_prints_the_version():
    from charlm import __version__

    r = run_pipe(["--version"])
    assert r.stdout.strip() == f"charlm {__version__}"


def test_sample_into_a_closed_pipe_is_quiet(ckpt_path):
    """`charlm sample | head -c 1`: the reader leaving is not an error and prints no traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "charlm", "sample", "-c", ckpt_path, "--num", "200",
                             "--length", "200", "--no-stop-at-eos", "--seed", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.read(1)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipe" not in err
    assert proc.returncode == 0


def test_the_installed_console_script_pipes_cleanly(ckpt_path):
    """The `charlm` script that `pip install` put beside this Python, as a user runs it."""
    script = os.path.join(os.path.dirname(sys.executable), "charlm")
    assert os.path.exists(script), "charlm is not installed in this environment"
    r = subprocess.run([script, "score", "-c", ckpt_path, "--json", "Anna"], capture_output=True, text=True,
                       timeout=60, env={k: v for k, v in os.environ.items() if k != "NO_COLOR"})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["text"] == "Anna" and not ANSI.search(r.stdout)
    r = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("charlm ")


def _names_corpus(d):
    corpus = d / "names.txt"
    corpus.write_text("\n".join(["Anna", "Bob", "Carla", "Dave", "Emma", "Fred", "Gina", "Hugo"] * 20) + "\n")
    return corpus


def test_train_whose_progress_reader_leaves_saves_and_exits_0(tmp_path):
    """`charlm train … 2>&1 | head -1`: training stops as on Ctrl-C, with a resumable checkpoint, exit 0."""
    corpus = _names_corpus(tmp_path)
    path = tmp_path / "m.npz"
    proc = subprocess.Popen([sys.executable, "-m", "charlm", "train", str(corpus), "-c", str(path),
                             "--steps", "100000", "--hidden-size", "8", "--num-layers", "1", "--batch-size", "4",
                             "--seq-len", "8", "--eval-every", "5", "--save-every", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    while not proc.stdout.readline().startswith(b"step"):   # the first validation line: training is under way
        pass
    proc.stdout.close()
    proc.wait(timeout=120)
    assert proc.returncode == 0
    ck = checkpoint.load(str(path))     # --save-every 0: only the stop could have saved it
    assert ck.resumable and 5 <= ck.train_state["step"] < 100000


def test_info_curve_into_a_closed_pipe_is_quiet(ckpt_path):
    """Rich's own reaction to a closed stdout is exit 1; charlm's is 0 and silence."""
    proc = subprocess.Popen([sys.executable, "-m", "charlm", "info", ckpt_path, "--curve"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, COLUMNS="60"))
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "error" not in err


@pytest.mark.parametrize("args", [["sample", "-c", "{ck}"], ["score", "-c", "{ck}", "Anna"], ["info", "{ck}", "--json"],
                                  ["gradcheck"], ["bench", "--quick", "--seconds", "30"]])
def test_a_closed_stdout_is_an_error_not_silence(ckpt_path, args):
    """`charlm sample >&-`: the result cannot be printed, so the exit code says so (it used to be 0),
    before any work (bench and gradcheck used to measure first)."""
    args = [a.format(ck=ckpt_path) for a in args]
    proc = subprocess.run([sys.executable, "-m", "charlm", *args], stderr=subprocess.PIPE, text=True,
                          preexec_fn=lambda: os.close(1), timeout=20)     # (bench --quick --seconds 30 takes minutes)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines == ["error: standard output is closed: there is nowhere to print the result"]


def test_train_runs_with_a_closed_stdout(tmp_path):
    """train prints to stderr only, so a closed stdout does not stop it."""
    corpus = tmp_path / "c.txt"
    corpus.write_text("abc\nabd\n" * 50)
    out = tmp_path / "m.npz"
    proc = subprocess.run([sys.executable, "-m", "charlm", "train", str(corpus), "--steps", "2", "--hidden-size", "4",
                           "--num-layers", "1", "--batch-size", "2", "--seq-len", "4", "-c", str(out)],
                          stderr=subprocess.PIPE, text=True, preexec_fn=lambda: os.close(1), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert checkpoint.load(str(out)).meta["steps"] == 2
