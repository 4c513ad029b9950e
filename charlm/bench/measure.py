"""charlm's side of the benchmark: each function measures one thing here and returns its speed.

- training chars/s of `charlm.train.train` (warm-up steps and evaluation
  excluded), and a min-char-rnn-style NumPy loop (batch 1, dense one-hot
  input, per-step matmuls, Adagrad) to compare its smallest row with;
- this machine's float32 matmul rate, and the matmul FLOPs of a training character;
- sampling chars/s (batch 1), with or without a 7-gram;
- scoring chars/s of `score --file` and the time of `score --document`;
- on the names shipped with the package, the share of sampled names that
  are not copies of a training line.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from charlm import inference, model, ngram, score
from charlm.config import Config
from charlm.errors import CharlmError
from charlm.mixture import Mixture
from charlm.model import Arch
from charlm.sample import generate, generate_texts
from charlm.dataset import Corpus, load_corpus
from charlm.train import resolve_workers, train
from charlm.vocab import Vocab, build_vocab, code_points, count_code_points

from charlm.bench.workload import SCORE_DOCUMENT, SCORE_SENTENCES

NAMES = Path(__file__).with_name("names.txt")   # corpora/names.txt, shipped inside the package


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
    return 3.0 * inference.token_flops(Arch(cell, V, H, L))


def train_config(cell, H, L, B, T, optimizer, seconds: float) -> Config:
    """The training options a benchmark row uses (no dropout, averaging, validation or saving)."""
    return Config(cell=cell, hidden_size=H, num_layers=L, batch_size=B, seq_len=T, optimizer=optimizer,
                  lr=1e-1 if optimizer == "adagrad" else 2e-3, dropout=0.0, ema=0.0, max_time=seconds, eval_every=0,
                  save_every=0, val_fraction=0.0).validate()


def train_workers(V: int, cell, H, L, B, T, optimizer) -> int:
    """The worker processes `train` shares a benchmark row's batch with (charlm.workers.train)."""
    cfg = train_config(cell, H, L, B, T, optimizer, 1.0)
    return resolve_workers(cfg, Arch(cell, V, H, L), B, np.dtype(cfg.dtype))


def train_speed(ids: np.ndarray, V: int, cell, H, L, B, T, optimizer, seconds: float, warmup: int = 3,
                trainer=train) -> float:
    """A trainer's chars/s (charlm.train.train, or the torch engine's), warm-up steps and evaluation excluded."""
    cfg = train_config(cell, H, L, B, T, optimizer, seconds)
    vocab = Vocab(("<EOS>", "<UNK>") + tuple(chr(0x100 + i) for i in range(V - 2)))
    corpus = Corpus(vocab, ids, ids[:0], {"name": "bench", "line_items": False})
    times: list[tuple[float, int]] = []

    def on_event(kind, info):
        if kind == "step":
            times.append((info["seconds"], info["chars"]))

    trainer(cfg, corpus, on_event=on_event)
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


def ngram_mixture(train_ids: np.ndarray, V: int, reset_at_eos: bool = False) -> Mixture:
    """A 7-gram counted on the benchmark text, interpolated half and half (as a trained checkpoint would be)."""
    return Mixture(ngram.fit(train_ids, V, 7, reset_at_eos), 0.5)


def sample_speed(cell: str, H: int, L: int, V: int, length: int = 3000, mix: Mixture | None = None) -> float:
    """Sampling chars/s of one sequence (batch 1) from random weights, after 200 characters of warm-up."""
    arch = Arch(cell, V, H, L)
    params = model.init_params(arch, np.random.default_rng(0), "float32")
    rng = np.random.default_rng(0)
    for _ in generate(params, arch, rng, 1, 200, 1.0, stop_at_eos=False, mix=mix):
        pass
    t0 = time.perf_counter()
    n = sum(1 for _ in generate(params, arch, rng, 1, length, 1.0, stop_at_eos=False, mix=mix))
    return n / (time.perf_counter() - t0)


def score_speed(text: str, cell: str, H: int, L: int, num_sentences: int = SCORE_SENTENCES,
                with_ngram: bool = False, doc_chars: int = SCORE_DOCUMENT) -> tuple[float, float, int, int, int]:
    """(chars/s over num_sentences lines, seconds for --document on doc_chars characters, document length, lines,
    the worker processes `score --file` reads them with).

    The text's first non-empty lines and first characters; a shorter text is
    read again from its start until there are as many as asked for.
    """
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
    workers = score.auto_workers(arch, chars, len(lines))                      # what `score --file` would choose
    t0 = time.perf_counter()
    score.score_sentences(params, arch, vocab, lines, mix=mix, workers=workers)   # as `score --file` reads them
    dt = time.perf_counter() - t0
    t0 = time.perf_counter()
    score.document_log_prob(params, arch, doc, mix=mix)
    return chars / dt, time.perf_counter() - t0, len(doc), len(lines), workers


def names_novelty(seconds: float, num: int = 500) -> tuple[float, float]:
    """Train on the shipped names for `seconds`, sample `num` names; (fraction not in the corpus, val bits/char)."""
    cfg = Config(max_time=seconds).validate()
    corpus = load_corpus(str(NAMES), cfg)
    ck, _ = train(cfg, corpus)
    names = set(NAMES.read_text(encoding="utf-8").split("\n"))
    samples = generate_texts(ck.weights("best"), ck.arch, ck.vocab, np.random.default_rng(0), num, 40, 1.0,
                             mix=ck.mixture("best"))   # as `charlm sample` does
    new = sum(1 for s in samples if s.text and s.text not in names)
    return new / num, ck.meta["best_val_bpc"]
