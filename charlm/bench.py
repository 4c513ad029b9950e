"""`charlm bench`: throughput of training, sampling and scoring, measured here.

Prints figures, never asserts them.  Absolute speeds drift between machines
and runs, so every comparison is a ratio measured in the same run:

- training chars/s (start-up and evaluation excluded) for the configurations
  of the performance issue, beside the PyTorch peer script when one is
  given (`--peer`) or found, and beside a min-char-rnn-style NumPy loop
  (batch 1, dense one-hot input, per-step matmuls, Adagrad) written here;
- the fraction of this machine's float32 matmul rate that training reaches;
- sampling chars/s (batch 1) beside the PyTorch sampling peer;
- scoring chars/s for 10,000 sentences, and the time of `score --document`
  on 1 M characters (with `--quick`, fewer sentences and a shorter document,
  scaled with `--seconds`, and no 7-gram rows; the labels give the sizes);
- on the shipped names, the share of sampled names that are not copies of a
  training line.

Everything the user gives is checked before the first measurement: the
seconds, the text (readable UTF-8, long enough for the largest training
batch), the peer scripts and the peer Python.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charlm import model
from charlm.config import Config
from charlm.errors import CharlmError
from charlm.model import Arch

TRAIN_CONFIGS = [
    # cell, hidden, layers, batch, seq_len, optimizer
    ("lstm", 256, 2, 32, 64, "adam"),
    ("gru", 256, 2, 32, 64, "adam"),
    ("rnn", 256, 1, 32, 64, "adam"),
    ("lstm", 512, 2, 64, 100, "adam"),
]
MINCHAR = ("rnn", 100, 1, 1, 25, "adagrad")
TRAIN_FRACTION = 0.9           # the first 90 % trains, as in the PyTorch peer
SCORE_SENTENCES = 10_000       # `score --file` lines (the README's table)
SCORE_DOCUMENT = 1_000_000     # `score --document` characters (the README's table)
QUICK_SENTENCES_PER_SECOND = 1_000   # --quick: sentences and document characters per --seconds,
QUICK_DOCUMENT_PER_SECOND = 50_000   # about a second of scoring each per --seconds (the document at least
                                     # score.MAX_PIECES × score.PIECE_TOKENS, read side by side as 1 M is)


def find_shared(*parts: str) -> Path | None:
    """A file of the team's shared/ folder, looked for beside the repository and the working directory."""
    roots = [Path(__file__).resolve().parents[1].parent, Path.cwd().parent, Path.cwd()]
    for root in roots:
        p = root.joinpath("shared", *parts)
        if p.exists():
            return p
    return None


def read_text(path: str, what: str = "--data file") -> str:
    """A UTF-8 text file the benchmark reads (newlines as `open` reads them); one-line errors naming it."""
    from charlm.files import open_user_file

    try:
        with open_user_file(path, what) as f:
            raw = f.read()
    except OSError as e:
        raise CharlmError(f"cannot read {what} {path}: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CharlmError(f"{what} {path} is not UTF-8 text: byte 0x{raw[e.start:e.start + 1].hex()} "
                          f"at offset {e.start}") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def bench_text(path: str | None, size: int = 1_115_394) -> tuple[str, str, str | None]:
    """Benchmark text: the given file, tinyshakespeare if found, else seeded random English-like text.

    Returns (text, where it came from, the file it is in or None).  A file
    given that cannot be read as UTF-8 text is a CharlmError.
    """
    if path is not None:
        return read_text(path), path, (path if path != "-" else None)
    p = find_shared("data", "tinyshakespeare.txt")
    if p is not None:
        return read_text(str(p), "benchmark text"), str(p), str(p)
    rng = np.random.default_rng(0)
    letters = np.array(list("etaoinshrdlucmfwypvbgkjqxz ETAOINSHR,.;:!?'\n"))
    weights = np.linspace(2.0, 0.2, len(letters))
    text = "".join(rng.choice(letters, size=size, p=weights / weights.sum()))
    return text, "synthetic text (tinyshakespeare not found)", None


def min_chars(configs) -> tuple[int, tuple]:
    """The fewest characters the training measurements need, and the configuration that needs them.

    Each configuration trains on the first 90 % of the text, which must hold
    one batch of B × T characters and one sequence more (else the trainer
    would shrink the batch and the figure would not be the labelled one; the
    PyTorch peer draws windows of T + 1 from the same 90 %).  The
    min-char-rnn loop needs T + 2 characters, the scoring rows cycle the
    text's lines and characters to their sizes, and validation is not used.
    """
    worst = max(configs, key=lambda c: c[3] * c[4] + c[4])
    need = worst[3] * worst[4] + worst[4]
    n = math.ceil(need / TRAIN_FRACTION)
    while int(TRAIN_FRACTION * n) < need:
        n += 1
    return n, worst


def check_text(text: str, source: str, configs) -> None:
    """Refuse, before measuring anything, a text too short for the measurements."""
    need, (cell, H, L, B, T, _) = min_chars(configs)
    if len(text) < need:
        raise CharlmError(
            f"{source} is too short for the benchmark: {len(text):,} characters; it needs at least {need:,} "
            f"(90 % of them train, and must hold one batch of {B}×{T} characters and {T} more for {cell} {L}×{H})")
    if not any(text.split("\n")):
        raise CharlmError(f"{source} has no line with text in it, for the scoring measurement")


def check_seconds(seconds: float) -> None:
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
        raise CharlmError(f"--seconds must be a finite number above 0 (got {seconds})")


def score_sizes(quick: bool, seconds: float) -> tuple[int, int]:
    """(sentences, document characters) scored: the README's 10,000 and 1 M, or fewer with --quick.

    With --quick, about a second of scoring each per --seconds; the document
    is still long enough to be read in as many pieces side by side as 1 M
    characters are (`score.document_log_prob`), so its chars/s is of the same kind.
    """
    from charlm.score import MAX_PIECES, PIECE_TOKENS

    if not quick:
        return SCORE_SENTENCES, SCORE_DOCUMENT
    return (min(SCORE_SENTENCES, max(100, round(QUICK_SENTENCES_PER_SECOND * seconds))),
            min(SCORE_DOCUMENT, max(MAX_PIECES * PIECE_TOKENS, round(QUICK_DOCUMENT_PER_SECOND * seconds))))


def matmul_rate(m: int, k: int, n: int, seconds: float = 0.5) -> float:
    """float32 GFLOP/s of an (m×k)·(k×n) product."""
    rng = np.random.default_rng(0)
    a = rng.random((m, k), dtype=np.float32)
    b = rng.random((k, n), dtype=np.float32)
    a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    return 2.0 * m * k * n * reps / (time.perf_counter() - t0) / 1e9


def flops_per_char(cell: str, H: int, L: int, V: int) -> float:
    """Matmul FLOPs of one training character (forward + backward ≈ 3 × forward).

    The one-hot input of layer 0 is a lookup and costs nothing.
    """
    return 3.0 * model.token_flops(Arch(cell, V, H, L))


@dataclass
class Figure:
    label: str
    charlm: float
    peer: float | None = None
    peer_name: str = ""
    unit: str = "chars/s"
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return self.charlm / self.peer if self.peer else None


def train_config(cell, H, L, B, T, optimizer, seconds: float) -> Config:
    """The training options a benchmark row uses (no dropout, averaging, validation or saving)."""
    return Config(cell=cell, hidden_size=H, num_layers=L, batch_size=B, seq_len=T, optimizer=optimizer,
                  lr=1e-1 if optimizer == "adagrad" else 2e-3, dropout=0.0, ema=0.0, max_time=seconds, eval_every=0,
                  save_every=0, val_fraction=0.0).validate()


def train_workers(V: int, cell, H, L, B, T, optimizer) -> int:
    """The worker processes `train` shares a benchmark row's batch with (charlm.parallel)."""
    from charlm.train import resolve_workers

    cfg = train_config(cell, H, L, B, T, optimizer, 1.0)
    return resolve_workers(cfg, Arch(cell, V, H, L), B, np.dtype(cfg.dtype))


def train_speed(ids: np.ndarray, V: int, cell, H, L, B, T, optimizer, seconds: float, warmup: int = 3) -> float:
    """charlm's trainer (charlm.train.train) in chars/s, warm-up steps and evaluation excluded."""
    from charlm.train import Corpus, train
    from charlm.vocab import Vocab

    cfg = train_config(cell, H, L, B, T, optimizer, seconds)
    vocab = Vocab(("<EOS>", "<UNK>") + tuple(chr(0x100 + i) for i in range(V - 2)))
    corpus = Corpus(vocab, ids, ids[:0], {"name": "bench", "line_items": False})
    times: list[tuple[float, int]] = []

    def on_event(kind, info):
        if kind == "step":
            times.append((info["seconds"], info["chars"]))

    train(cfg, corpus, on_event=on_event)
    timed = times[warmup:] or times
    return sum(c for _, c in timed) / sum(s for s, _ in timed)


def minchar_speed(ids: np.ndarray, V: int, H: int = 100, T: int = 25, seconds: float = 5.0) -> float:
    """A min-char-rnn-style loop: batch 1, dense one-hot inputs, per-step numpy, Adagrad."""
    rng = np.random.default_rng(0)
    Wxh = rng.standard_normal((H, V)) * 0.01
    Whh = rng.standard_normal((H, H)) * 0.01
    Why = rng.standard_normal((V, H)) * 0.01
    bh, by = np.zeros((H, 1)), np.zeros((V, 1))
    params = [Wxh, Whh, Why, bh, by]
    mem = [np.zeros_like(p) for p in params]
    hprev = np.zeros((H, 1))
    if len(ids) < T + 2:
        raise CharlmError(f"the min-char-rnn loop needs at least {T + 2} characters of text")
    p, chars = 0, 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        if p + T + 1 >= len(ids):
            p, hprev = 0, np.zeros((H, 1))
        inputs, targets = ids[p:p + T], ids[p + 1:p + T + 1]
        xs, hs, ps = {}, {-1: hprev}, {}
        for t in range(T):
            xs[t] = np.zeros((V, 1))
            xs[t][inputs[t]] = 1
            hs[t] = np.tanh(Wxh @ xs[t] + Whh @ hs[t - 1] + bh)
            y = Why @ hs[t] + by
            e = np.exp(y - y.max())
            ps[t] = e / e.sum()
        grads = [np.zeros_like(q) for q in params]
        dWxh, dWhh, dWhy, dbh, dby = grads
        dhnext = np.zeros((H, 1))
        for t in reversed(range(T)):
            dy = ps[t].copy()
            dy[targets[t]] -= 1
            dWhy += dy @ hs[t].T
            dby += dy
            dh = Why.T @ dy + dhnext
            dhraw = (1 - hs[t] * hs[t]) * dh
            dbh += dhraw
            dWxh += dhraw @ xs[t].T
            dWhh += dhraw @ hs[t - 1].T
            dhnext = Whh.T @ dhraw
        for q, dq, m in zip(params, grads, mem):
            np.clip(dq, -5, 5, out=dq)
            m += dq * dq
            q -= 0.1 * dq / np.sqrt(m + 1e-8)
        hprev = hs[T - 1]
        p += T
        chars += T
    return chars / (time.perf_counter() - t0)


def ngram_mixture(train_ids: np.ndarray, V: int, reset_at_eos: bool = False):
    """A 7-gram counted on the benchmark text, interpolated half and half (as a trained checkpoint would be)."""
    from charlm import ngram
    from charlm.mixture import Mixture

    return Mixture(ngram.fit(train_ids, V, 7, reset_at_eos), 0.5)


def sample_speed(cell: str, H: int, L: int, V: int, length: int = 3000, mix=None) -> float:
    from charlm.sample import generate

    arch = Arch(cell, V, H, L)
    params = model.init_params(arch, np.random.default_rng(0), "float32")
    rng = np.random.default_rng(0)
    for _ in generate(params, arch, rng, 1, 200, 1.0, stop_at_eos=False, mix=mix):
        pass
    t0 = time.perf_counter()
    n = sum(1 for _ in generate(params, arch, rng, 1, length, 1.0, stop_at_eos=False, mix=mix))
    return n / (time.perf_counter() - t0)


def score_speed(text: str, cell: str, H: int, L: int, num_sentences: int = SCORE_SENTENCES,
                with_ngram: bool = False, doc_chars: int = SCORE_DOCUMENT) -> tuple[float, float, int, int]:
    """(chars/s over num_sentences lines, seconds for --document on doc_chars characters, document length, lines,
    the worker processes `score --file` reads them with).

    The text's first non-empty lines and first characters; a shorter text is
    read again from its start until there are as many as asked for.
    """
    from charlm.score import auto_workers, document_log_prob, score_sentences
    from charlm.vocab import Vocab, build_vocab, code_points, count_code_points

    vocab: Vocab = build_vocab(count_code_points(code_points(text)))
    arch = Arch(cell, len(vocab), H, L)
    params = model.init_params(arch, np.random.default_rng(0), "float32")
    lines = [ln for ln in text.split("\n") if ln][:num_sentences]
    if not lines:
        raise CharlmError("the benchmark text has no line with text in it, for the scoring measurement")
    lines = [lines[i % len(lines)] for i in range(num_sentences)]
    doc = np.resize(vocab.encode(text[:doc_chars]), doc_chars)   # np.resize repeats a short text
    mix = ngram_mixture(doc, len(vocab)) if with_ngram else None
    chars = sum(len(ln) + 1 for ln in lines)
    workers = auto_workers(arch, chars, len(lines))                      # what `score --file` would choose
    t0 = time.perf_counter()
    score_sentences(params, arch, vocab, lines, mix=mix, workers=workers)   # as `score --file` reads them
    dt = time.perf_counter() - t0
    t0 = time.perf_counter()
    document_log_prob(params, arch, doc, mix=mix)
    return chars / dt, time.perf_counter() - t0, len(doc), len(lines), workers


def names_novelty(seconds: float, num: int = 500) -> tuple[float, float]:
    """Train on the shipped names for `seconds`, sample `num` names; (fraction not in the corpus, val bits/char)."""
    from charlm.sample import generate
    from charlm.train import load_corpus, train

    path = Path(__file__).resolve().parents[1] / "corpora" / "names.txt"
    if not path.exists():
        return float("nan"), float("nan")
    cfg = Config(max_time=seconds).validate()
    corpus = load_corpus(str(path), cfg)
    ck, _ = train(cfg, corpus)
    names = set(path.read_text(encoding="utf-8").split("\n"))
    rows = [[] for _ in range(num)]
    for ids, active, _ in generate(ck.weights("best"), ck.arch, np.random.default_rng(0), num, 40, 1.0,
                                   mix=ck.mixture("best")):  # as `charlm sample` does
        for n in np.flatnonzero(active & (ids != 0)):
            rows[n].append(int(ids[n]))
    samples = [ck.vocab.decode(r) for r in rows]
    new = sum(1 for x in samples if x and x not in names)
    return new / num, ck.meta["best_val_bpc"]


def alternate(ours, peer, repeats: int):
    """Measure `ours()` and `peer()` (or None) `repeats` times, taking turns.

    Taking turns, both meet the machine's fast and slow moments alike.
    Returns (median of ours, median of the peer's or None, the ratio of
    each pair in which both measured).
    """
    pairs, alone = [], []
    for _ in range(repeats):
        a = ours()
        p = peer() if peer is not None else None
        if p:
            pairs.append((a, p))
        else:
            alone.append(a)
    mine = [a for a, _ in pairs] + alone
    theirs = [p for _, p in pairs]
    return (float(np.median(mine)), float(np.median(theirs)) if theirs else None, [a / p for a, p in pairs])


def _last_line(text: str, limit: int = 160) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return (lines[-1][:limit] if lines else "")


def peer_run(python: str, script: str, args: list[str], timeout: float = 600) -> tuple[float | None, str]:
    """(chars/s reported by a peer script (its RESULT line or JSON), "") or (None, why it gave none)."""
    try:
        proc = subprocess.run([python, script, *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:g} s"
    except OSError as e:
        return None, f"could not start {python}: {e.strerror}"
    for line in reversed(proc.stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return float(json.loads(line)["chars_per_s"]), ""
            except (ValueError, KeyError, TypeError):
                continue
        m = re.search(r"=\s*([0-9.]+)\s*chars/s", line) or re.search(r"chars/s\s+([0-9.]+)", line)
        if m:
            return float(m.group(1)), ""
    why = f"exit code {proc.returncode}" if proc.returncode else "no chars/s in its output"
    last = _last_line(proc.stderr)
    return None, f"{why}: {last}" if last else why


def run_peer(python: str, script: str, args: list[str], timeout: float = 600) -> float | None:
    """chars/s reported by a peer script (its RESULT line or JSON), None if it failed."""
    return peer_run(python, script, args, timeout)[0]


def torch_missing(python: str) -> str:
    """Why `python` cannot run the peers ("" if it imports torch)."""
    try:
        proc = subprocess.run([python, "-c", "import torch"], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return f"{python} took over 120 s to import torch"
    except OSError as e:
        return f"cannot run {python}: {e.strerror}"
    if proc.returncode == 0:
        return ""
    return f"{python} cannot import torch ({_last_line(proc.stderr) or f'exit code {proc.returncode}'})"


def resolve_peers(peer: str | None, sample_peer: str | None, peer_python: str | None) -> tuple[
        str | None, str | None, str | None, str]:
    """(training peer, sampling peer, Python to run them, why they will not run or "").

    Scripts or a Python named explicitly must exist (a CharlmError if not);
    the defaults in shared/peers/ are used when found.
    """
    for option, path in (("--peer", peer), ("--sample-peer", sample_peer)):
        if path is not None and not os.path.isfile(path):
            what = "is a directory, not a script" if os.path.isdir(path) else "not found"
            raise CharlmError(f"{option} {path}: {what}")
    if peer_python is not None and shutil.which(peer_python) is None:
        what = "not found" if not os.path.exists(peer_python) else "not an executable program"
        raise CharlmError(f"--peer-python {peer_python}: {what}")
    peer = peer or (str(find_shared("peers", "torch_charlm.py") or "") or None)
    sample_peer = sample_peer or (str(find_shared("peers", "torch_sample.py") or "") or None)
    if not (peer or sample_peer):
        return None, None, None, "PyTorch peer scripts not found (give --peer, --sample-peer)"
    missing = torch_missing(peer_python or sys.executable)
    if missing:
        hint = "" if peer_python else "; give --peer-python"
        return peer, sample_peer, None, f"PyTorch peers not run: {missing}{hint}"
    return peer, sample_peer, peer_python or sys.executable, ""


def run_bench(seconds: float = 15.0, data: str | None = None, peer: str | None = None,
              sample_peer: str | None = None, peer_python: str | None = None, quick: bool = False,
              progress=lambda msg: None, repeats: int = 1, engine: str = "numpy") -> dict:
    # everything the user gives is checked before the first measurement
    check_seconds(seconds)
    if not isinstance(repeats, int) or repeats < 1:
        raise CharlmError(f"--repeats must be at least 1 (got {repeats})")
    configs = TRAIN_CONFIGS[:1] if quick else TRAIN_CONFIGS
    text, source, text_file = bench_text(data)
    check_text(text, f"--data file {source}" if data is not None else source, [*configs, MINCHAR])
    peer, sample_peer, py, peer_status = resolve_peers(peer, sample_peer, peer_python)
    num_sentences, doc_chars = score_sizes(quick, seconds)
    temporary = None  # the text as a file for the training peer, when it is in none; removed at the end
    try:
        if peer and py and text_file is None:
            fd, temporary = tempfile.mkstemp(prefix="charlm-bench-", suffix=".txt")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            text_file = temporary
        figures, rates = _measure(seconds, text, text_file, configs, peer, sample_peer, py, quick,
                                  num_sentences, doc_chars, progress, repeats)
        if engine == "torch":   # the torch engine's rows (charlm.torch_engine.bench)
            figures += _torch_rows(text, configs, seconds, repeats, progress)
    finally:
        if temporary is not None:
            try:
                os.unlink(temporary)
            except OSError:
                pass
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": f"{os.cpu_count()} cores, numpy {np.__version__}",
        "data": source,
        "matmul_gflops": rates,
        "seconds_per_config": seconds,
        "repeats": repeats,
        "quick": quick,
        "score_sentences": num_sentences,
        "score_document_chars": doc_chars,
        "ngram_rows": not quick,
        "peers": {"training": peer, "sampling": sample_peer, "python": py, "status": peer_status or "ran"},
        "figures": [f.__dict__ | {"ratio": f.ratio} for f in figures],
    }


def _measure(seconds, text, data_file, configs, peer, sample_peer, py, quick, num_sentences, doc_chars,
             progress, repeats) -> tuple[list[Figure], dict]:
    """The measurements of run_bench, in order; (figures, matmul rates)."""
    from charlm.vocab import build_vocab, code_points, count_code_points

    vocab = build_vocab(count_code_points(code_points(text)))
    ids = vocab.encode(text)
    n_train = int(TRAIN_FRACTION * len(ids))
    train_ids = ids[:n_train]
    V = len(vocab)
    progress("measuring the float32 matmul rate")
    rates = {"2048x2048x2048": matmul_rate(2048, 2048, 2048), "32x512x1024": matmul_rate(32, 512, 1024)}
    peak = rates["2048x2048x2048"]
    figures = []
    for cell, H, L, B, T, opt in configs:
        label = f"train {cell} {L}×{H}, batch {B}×{T}"
        failures: list[str] = []

        def ours(cell=cell, H=H, L=L, B=B, T=T, opt=opt, label=label):
            progress(label)
            return train_speed(train_ids, V, cell, H, L, B, T, opt, seconds)

        def theirs(cell=cell, H=H, L=L, B=B, T=T, label=label, failures=failures):
            progress(label + " (PyTorch)")
            cps, why = peer_run(py, peer, ["--data", data_file, "--cell", cell, "--hidden", str(H),
                                           "--layers", str(L), "--batch", str(B), "--seq-len", str(T),
                                           "--seconds", str(seconds), "--warmup", "3", "--eval-chars", "0"])
            if cps is None:
                failures.append(why)
            return cps

        cps, pcs, ratios = alternate(ours, theirs if peer and py else None, repeats)
        frac = cps * flops_per_char(cell, H, L, V) / 1e9 / peak
        note = f"{frac:.0%} of matmul peak"
        workers = train_workers(V, cell, H, L, B, T, opt)
        if workers > 1:
            note += f"; {workers} worker processes"
        if len(ratios) > 1:
            note += f"; pairs {min(ratios):.2f}–{max(ratios):.2f}×"
        if failures:
            note += f"; PyTorch peer failed {len(failures)} of {repeats}: {failures[-1]}"
        figures.append(Figure(label, cps, pcs, "PyTorch", note=note))
    cell, H, L, B, T, opt = MINCHAR
    label = "train rnn 1×100, batch 1×25, adagrad"
    progress(label)
    cps = train_speed(train_ids, V, cell, H, L, B, T, opt, seconds / 2)
    progress(label + " (min-char-rnn loop)")
    figures.append(Figure(label, cps, minchar_speed(train_ids, V, seconds=seconds / 2), "min-char-rnn loop"))
    progress("sample lstm 2×256, batch 1")
    sps = sample_speed("lstm", 256, 2, V)
    sp_peer, sp_note = None, ""
    if sample_peer and py:
        sp_peer, why = peer_run(py, sample_peer, ["--cell", "lstm", "--hidden", "256", "--layers", "2",
                                                  "--vocab", str(V), "--length", "3000"])
        sp_note = f"PyTorch peer failed: {why}" if sp_peer is None else ""
    figures.append(Figure("sample lstm 2×256, batch 1", sps, sp_peer, "PyTorch", note=sp_note))
    if not quick:
        progress("sample lstm 2×256 with a 7-gram, batch 1")
        sps = sample_speed("lstm", 256, 2, V, mix=ngram_mixture(train_ids, V))
        figures.append(Figure("sample lstm 2×256 + 7-gram, batch 1", sps, sp_peer, "PyTorch", note=sp_note))
    train_lstm = figures[0].charlm
    for with_ngram in (False,) if quick else (False, True):
        plus = " + 7-gram" if with_ngram else ""
        progress(f"score lstm 2×256{plus}: {num_sentences:,} sentences and a {doc_chars:,} character document")
        scs, doc_s, doc_n, lines, workers = score_speed(text, "lstm", 256, 2, num_sentences, with_ngram, doc_chars)
        figures.append(Figure(f"score --file, {lines:,} lines, lstm 2×256{plus}", scs, train_lstm, "charlm training",
                              note=f"{workers} worker processes" if workers > 1 else ""))
        figures.append(Figure(f"score --document, {doc_n:,} chars, lstm 2×256{plus}", doc_n / doc_s, None,
                              note=f"{doc_s:.1f} s"))
    progress("names: train for a while, sample 500, count the new ones")
    new, bpc = names_novelty(seconds * 2)
    figures.append(Figure(f"names ({seconds * 2:.0f} s of training): sampled names not in the corpus", 100 * new,
                          unit="%", note=f"validation {bpc:.3f} bits/char"))
    return figures, rates


def _torch_rows(text: str, configs, seconds: float, repeats: int, progress) -> list:
    """`bench --engine torch`: the torch engine beside the NumPy engine, DDP 2 processes beside 1, a GPU if any."""
    from charlm.torch_engine import require_torch
    from charlm.vocab import build_vocab, code_points, count_code_points

    require_torch()
    from charlm.torch_engine.bench import measure

    vocab = build_vocab(count_code_points(code_points(text)))
    ids = vocab.encode(text)
    return measure(ids[:int(TRAIN_FRACTION * len(ids))], len(vocab), configs, seconds, repeats, progress)


def render(result: dict):
    from rich.table import Table

    t = Table(title=f"charlm bench — {result['date']}, {result['machine']}", title_justify="left")
    t.add_column("measurement")
    t.add_column("charlm", justify="right")
    t.add_column("peer", justify="right")
    t.add_column("ratio", justify="right")
    t.add_column("note")
    for f in result["figures"]:
        peer = f"{f['peer']:,.0f} ({f['peer_name']})" if f["peer"] else "–"
        ratio = f"{f['ratio']:.2f}×" if f["ratio"] else "–"
        value = f"{f['charlm']:.1f} %" if f["unit"] == "%" else f"{f['charlm']:,.0f} {f['unit']}"
        if f["note"].startswith("not measured"):
            value = "–"
        t.add_row(f["label"], value, peer, ratio, f["note"])
    rates = result["matmul_gflops"]
    caption = (f"float32 matmul: {rates['2048x2048x2048']:.0f} GFLOP/s (2048²), "
               f"{rates['32x512x1024']:.0f} GFLOP/s ((32×512)·(512×1024)); data: {result['data']}")
    if result.get("quick"):
        caption += (f"\n--quick: one training configuration, {result['score_sentences']:,} sentences and a "
                    f"{result['score_document_chars']:,} character document scored (not 10,000 and 1,000,000), "
                    "no 7-gram rows")
    status = result.get("peers", {}).get("status", "ran")
    if status != "ran":
        caption += f"\n{status}"
    t.caption = caption
    return t


if __name__ == "__main__":  # python -m charlm.bench
    from charlm.cli import app

    sys.argv = ["charlm", "bench", *sys.argv[1:]]
    app()
