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
  on 1 M characters;
- on the shipped names, the share of sampled names that are not copies of a
  training line.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charlm import model
from charlm.config import Config
from charlm.model import Arch

TRAIN_CONFIGS = [
    # cell, hidden, layers, batch, seq_len, optimizer
    ("lstm", 256, 2, 32, 64, "adam"),
    ("gru", 256, 2, 32, 64, "adam"),
    ("rnn", 256, 1, 32, 64, "adam"),
    ("lstm", 512, 2, 64, 100, "adam"),
]
MINCHAR = ("rnn", 100, 1, 1, 25, "adagrad")


def find_shared(*parts: str) -> Path | None:
    """A file of the team's shared/ folder, looked for beside the repository and the working directory."""
    roots = [Path(__file__).resolve().parents[1].parent, Path.cwd().parent, Path.cwd()]
    for root in roots:
        p = root.joinpath("shared", *parts)
        if p.exists():
            return p
    return None


def bench_text(path: str | None, size: int = 1_115_394) -> tuple[str, str]:
    """Benchmark text: the given file, tinyshakespeare if found, else seeded random English-like text."""
    p = Path(path) if path else find_shared("data", "tinyshakespeare.txt")
    if p is not None and p.exists():
        return p.read_text(encoding="utf-8"), str(p)
    rng = np.random.default_rng(0)
    letters = np.array(list("etaoinshrdlucmfwypvbgkjqxz ETAOINSHR,.;:!?'\n"))
    weights = np.linspace(2.0, 0.2, len(letters))
    text = "".join(rng.choice(letters, size=size, p=weights / weights.sum()))
    return text, "synthetic text (tinyshakespeare not found)"


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
    G = {"rnn": 1, "gru": 3, "lstm": 4}[cell]
    forward = sum(2 * G * H * ((0 if l == 0 else H) + H) for l in range(L)) + 2 * H * V
    return 3.0 * forward


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


def train_speed(ids: np.ndarray, V: int, cell, H, L, B, T, optimizer, seconds: float, warmup: int = 3) -> float:
    """charlm's trainer (charlm.train.train) in chars/s, warm-up steps and evaluation excluded."""
    from charlm.train import Corpus, train
    from charlm.vocab import Vocab

    cfg = Config(cell=cell, hidden_size=H, num_layers=L, batch_size=B, seq_len=T, optimizer=optimizer,
                 lr=1e-1 if optimizer == "adagrad" else 2e-3, dropout=0.0, ema=0.0, max_time=seconds, eval_every=0, save_every=0,
                 val_fraction=0.0).validate()
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


def score_speed(text: str, cell: str, H: int, L: int, num_sentences: int = 10_000,
                with_ngram: bool = False) -> tuple[float, float, int]:
    """(chars/s over num_sentences lines, seconds for --document on 1 M chars, document length)."""
    from charlm.score import document_log_prob, score_sentences
    from charlm.vocab import Vocab, build_vocab, code_points, count_code_points

    vocab: Vocab = build_vocab(count_code_points(code_points(text)))
    arch = Arch(cell, len(vocab), H, L)
    params = model.init_params(arch, np.random.default_rng(0), "float32")
    doc = vocab.encode(text[:1_000_000])
    mix = ngram_mixture(doc, len(vocab)) if with_ngram else None
    lines = [ln for ln in text.split("\n") if ln][:num_sentences]
    t0 = time.perf_counter()
    score_sentences(params, arch, vocab, lines, mix=mix)   # in batches of `score --batch-size`
    dt = time.perf_counter() - t0
    chars = sum(len(ln) + 1 for ln in lines)
    t0 = time.perf_counter()
    document_log_prob(params, arch, doc, mix=mix)
    return chars / dt, time.perf_counter() - t0, len(doc)


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


def run_peer(python: str, script: str, args: list[str], timeout: float = 600) -> float | None:
    """chars/s reported by a peer script (its RESULT line or JSON), None if it failed."""
    try:
        proc = subprocess.run([python, script, *args], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in reversed(proc.stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return float(json.loads(line)["chars_per_s"])
            except (ValueError, KeyError):
                continue
        m = re.search(r"=\s*([0-9.]+)\s*chars/s", line) or re.search(r"chars/s\s+([0-9.]+)", line)
        if m:
            return float(m.group(1))
    return None


def torch_python(explicit: str | None) -> str | None:
    """A Python that can import torch: the one given, this one, or none."""
    candidates = [explicit] if explicit else [sys.executable]
    for py in candidates:
        try:
            ok = subprocess.run([py, "-c", "import torch"], capture_output=True, timeout=120).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if ok:
            return py
    return None


def run_bench(seconds: float = 15.0, data: str | None = None, peer: str | None = None,
              sample_peer: str | None = None, peer_python: str | None = None, quick: bool = False,
              progress=lambda msg: None, repeats: int = 1) -> dict:
    text, source = bench_text(data)
    data_file = source
    if not os.path.exists(source):  # the peers read a file
        import tempfile

        fd, data_file = tempfile.mkstemp(suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
    from charlm.vocab import build_vocab, code_points, count_code_points

    vocab = build_vocab(count_code_points(code_points(text)))
    ids = vocab.encode(text)
    n_train = int(0.9 * len(ids))
    train_ids = ids[:n_train]
    V = len(vocab)
    peer = peer or (str(find_shared("peers", "torch_charlm.py") or "") or None)
    sample_peer = sample_peer or (str(find_shared("peers", "torch_sample.py") or "") or None)
    py = torch_python(peer_python) if (peer or sample_peer) else None
    progress("measuring the float32 matmul rate")
    rates = {"2048x2048x2048": matmul_rate(2048, 2048, 2048), "32x512x1024": matmul_rate(32, 512, 1024)}
    peak = rates["2048x2048x2048"]
    figures = []
    configs = TRAIN_CONFIGS[:1] if quick else TRAIN_CONFIGS
    for cell, H, L, B, T, opt in configs:
        label = f"train {cell} {L}×{H}, batch {B}×{T}"

        def ours(cell=cell, H=H, L=L, B=B, T=T, opt=opt, label=label):
            progress(label)
            return train_speed(train_ids, V, cell, H, L, B, T, opt, seconds)

        def theirs(cell=cell, H=H, L=L, B=B, T=T, label=label):
            progress(label + " (PyTorch)")
            return run_peer(py, peer, ["--data", data_file, "--cell", cell, "--hidden", str(H), "--layers", str(L),
                                       "--batch", str(B), "--seq-len", str(T), "--seconds", str(seconds),
                                       "--warmup", "3", "--eval-chars", "0"])

        cps, pcs, ratios = alternate(ours, theirs if peer and py else None, repeats)
        frac = cps * flops_per_char(cell, H, L, V) / 1e9 / peak
        note = f"{frac:.0%} of matmul peak"
        if len(ratios) > 1:
            note += f"; pairs {min(ratios):.2f}–{max(ratios):.2f}×"
        figures.append(Figure(label, cps, pcs, "PyTorch", note=note))
    cell, H, L, B, T, opt = MINCHAR
    label = "train rnn 1×100, batch 1×25, adagrad"
    progress(label)
    cps = train_speed(train_ids, V, cell, H, L, B, T, opt, seconds / 2)
    progress(label + " (min-char-rnn loop)")
    figures.append(Figure(label, cps, minchar_speed(train_ids, V, seconds=seconds / 2), "min-char-rnn loop"))
    progress("sample lstm 2×256, batch 1")
    sps = sample_speed("lstm", 256, 2, V)
    sp_peer = None
    if sample_peer and py:
        sp_peer = run_peer(py, sample_peer, ["--cell", "lstm", "--hidden", "256", "--layers", "2",
                                             "--vocab", str(V), "--length", "3000"])
    figures.append(Figure("sample lstm 2×256, batch 1", sps, sp_peer, "PyTorch"))
    progress("sample lstm 2×256 with a 7-gram, batch 1")
    sps = sample_speed("lstm", 256, 2, V, mix=ngram_mixture(train_ids, V))
    figures.append(Figure("sample lstm 2×256 + 7-gram, batch 1", sps, sp_peer, "PyTorch"))
    train_lstm = figures[0].charlm
    for with_ngram in (False, True):
        plus = " + 7-gram" if with_ngram else ""
        progress(f"score lstm 2×256{plus}: 10,000 sentences and a 1 M character document")
        scs, doc_s, doc_n = score_speed(text, "lstm", 256, 2, with_ngram=with_ngram)
        figures.append(Figure(f"score --file, 10,000 lines, lstm 2×256{plus}", scs, train_lstm, "charlm training"))
        figures.append(Figure(f"score --document, {doc_n:,} chars, lstm 2×256{plus}", doc_n / doc_s, None,
                              note=f"{doc_s:.1f} s"))
    progress("names: train for a while, sample 500, count the new ones")
    new, bpc = names_novelty(seconds * 2)
    figures.append(Figure(f"names ({seconds * 2:.0f} s of training): sampled names not in the corpus", 100 * new,
                          unit="%", note=f"validation {bpc:.3f} bits/char"))
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": f"{os.cpu_count()} cores, numpy {np.__version__}",
        "data": source,
        "matmul_gflops": rates,
        "seconds_per_config": seconds,
        "repeats": repeats,
        "figures": [f.__dict__ | {"ratio": f.ratio} for f in figures],
    }


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
        t.add_row(f["label"], value, peer, ratio, f["note"])
    rates = result["matmul_gflops"]
    caption = (f"float32 matmul: {rates['2048x2048x2048']:.0f} GFLOP/s (2048²), "
               f"{rates['32x512x1024']:.0f} GFLOP/s ((32×512)·(512×1024)); data: {result['data']}")
    t.caption = caption
    return t


if __name__ == "__main__":  # python -m charlm.bench
    from charlm.cli import app

    sys.argv = ["charlm", "bench", *sys.argv[1:]]
    app()
