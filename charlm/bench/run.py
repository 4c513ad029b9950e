"""`run_bench`: every measurement in order, each charlm figure beside its peer's, as one result dict.

Absolute speeds drift between machines and runs, so every comparison is a
ratio measured in the same run; with --repeats the training rows and their
peer take turns (`alternate`), so both meet the machine's fast and slow
moments alike.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

import charlm.bench.measure as measure
from charlm.bench.figures import Figure, alternate
import charlm.bench.peers as peers
import charlm.bench.workload as workload
from charlm.bench.peers import Peers
from charlm.bench.workload import MINCHAR, TRAIN_CONFIGS, TRAIN_FRACTION
from charlm.vocab import build_vocab, code_points, count_code_points


@dataclass
class Plan:
    """What one run measures: the user's choices, checked, and the text it trains and scores on."""

    seconds: float
    text: str
    text_file: str | None    # the text as a file, for the training peer
    configs: list
    peers: Peers
    quick: bool
    num_sentences: int
    doc_chars: int
    repeats: int
    train_ids: np.ndarray    # the first TRAIN_FRACTION of the text, encoded with its vocabulary
    vocab_size: int


def run_bench(seconds: float = 15.0, data: str | None = None, peer: str | None = None,
              sample_peer: str | None = None, peer_python: str | None = None, quick: bool = False,
              progress: Callable[[str], None] = lambda msg: None, repeats: int = 1, engine: str = "numpy") -> dict:
    """Run the benchmark; the figures and how they were measured, as a JSON-ready dict.

    Everything the user gives is checked before the first measurement: the
    seconds, the repeats, the engine (torch importable for "torch"), the text
    (readable UTF-8, long enough for the largest training batch), the peer
    scripts and the peer Python.
    `progress(message)` is called before each measurement. `engine="torch"`
    adds the torch engine's rows (`charlm.torch_engine.bench`).
    """
    from charlm.torch_engine import check_engine, require_torch

    workload.check_seconds(seconds)
    workload.check_repeats(repeats)
    if check_engine(engine) == "torch":
        require_torch()
    configs = TRAIN_CONFIGS[:1] if quick else TRAIN_CONFIGS
    text, source, text_file = workload.bench_text(data)
    workload.check_text(text, f"--data file {source}" if data is not None else source, [*configs, MINCHAR])
    found = peers.resolve_peers(peer, sample_peer, peer_python)
    num_sentences, doc_chars = workload.score_sizes(quick, seconds)
    temporary = None  # the text as a file for the training peer, when it is in none; removed at the end
    try:
        if found.training and found.python and text_file is None:
            fd, temporary = tempfile.mkstemp(prefix="charlm-bench-", suffix=".txt")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            text_file = temporary
        vocab = build_vocab(count_code_points(code_points(text)))
        train_ids = vocab.encode(text)
        plan = Plan(seconds, text, text_file, configs, found, quick, num_sentences, doc_chars, repeats,
                    train_ids[:int(TRAIN_FRACTION * len(train_ids))], len(vocab))
        figures, rates = measure_all(plan, progress)
        if engine == "torch":
            from charlm.torch_engine.bench import measure as torch_rows
            figures += torch_rows(plan.train_ids, plan.vocab_size, configs, seconds, repeats, progress)
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
        "peers": {"training": found.training, "sampling": found.sampling, "python": found.python,
                  "status": found.status or "ran"},
        "figures": [f.__dict__ | {"ratio": f.ratio} for f in figures],
    }


def measure_all(plan: Plan, progress: Callable[[str], None]) -> tuple[list[Figure], dict]:
    """The measurements of run_bench, in order; (figures, matmul rates)."""
    train_ids, V = plan.train_ids, plan.vocab_size
    progress("measuring the float32 matmul rate")
    rates = {"2048x2048x2048": measure.matmul_rate(2048, 2048, 2048),
             "32x512x1024": measure.matmul_rate(32, 512, 1024)}
    figures = [train_row(plan, train_ids, V, config, rates["2048x2048x2048"], progress) for config in plan.configs]
    figures.append(minchar_row(plan, train_ids, V, progress))
    figures += sample_rows(plan, train_ids, V, progress)
    train_lstm = figures[0].charlm
    for with_ngram in (False,) if plan.quick else (False, True):
        plus = " + 7-gram" if with_ngram else ""
        progress(f"score lstm 2×256{plus}: {plan.num_sentences:,} sentences and a {plan.doc_chars:,} "
                 "character document")
        scs, doc_s, doc_n, lines, workers = measure.score_speed(plan.text, "lstm", 256, 2, plan.num_sentences,
                                                                with_ngram, plan.doc_chars)
        figures.append(Figure(f"score --file, {lines:,} lines, lstm 2×256{plus}", scs, train_lstm, "charlm training",
                              note=f"{workers} worker processes" if workers > 1 else ""))
        figures.append(Figure(f"score --document, {doc_n:,} chars, lstm 2×256{plus}", doc_n / doc_s, None,
                              note=f"{doc_s:.1f} s"))
    progress("names: train for a while, sample 500, count the new ones")
    new, bpc = measure.names_novelty(plan.seconds * 2)
    figures.append(Figure(f"names ({plan.seconds * 2:.0f} s of training): sampled names not in the corpus", 100 * new,
                          unit="%", note=f"validation {bpc:.3f} bits/char"))
    return figures, rates


def train_row(plan: Plan, train_ids, V: int, config, peak: float, progress) -> Figure:
    """One training configuration beside the PyTorch peer, taking turns `plan.repeats` times."""
    cell, H, L, B, T, opt = config
    label = f"train {cell} {L}×{H}, batch {B}×{T}"
    failures: list[str] = []

    def ours():
        progress(label)
        return measure.train_speed(train_ids, V, cell, H, L, B, T, opt, plan.seconds)

    def theirs():
        progress(label + " (PyTorch)")
        cps, why = peers.run_peer(plan.peers.python, plan.peers.training,
                                  peers.train_args(plan.text_file, cell, H, L, B, T, plan.seconds))
        if cps is None:
            failures.append(why)
        return cps

    runs_peer = bool(plan.peers.training and plan.peers.python)
    cps, pcs, ratios = alternate(ours, theirs if runs_peer else None, plan.repeats)
    frac = cps * measure.flops_per_char(cell, H, L, V) / 1e9 / peak
    note = f"{frac:.0%} of matmul peak"
    workers = measure.train_workers(V, cell, H, L, B, T, opt)
    if workers > 1:
        note += f"; {workers} worker processes"
    if len(ratios) > 1:
        note += f"; pairs {min(ratios):.2f}–{max(ratios):.2f}×"
    if failures:
        note += f"; PyTorch peer failed {len(failures)} of {plan.repeats}: {failures[-1]}"
    return Figure(label, cps, pcs, "PyTorch", note=note)


def minchar_row(plan: Plan, train_ids, V: int, progress) -> Figure:
    """min-char-rnn's configuration, charlm's trainer beside the min-char-rnn-style loop."""
    cell, H, L, B, T, opt = MINCHAR
    label = f"train {cell} {L}×{H}, batch {B}×{T}, {opt}"
    progress(label)
    cps = measure.train_speed(train_ids, V, cell, H, L, B, T, opt, plan.seconds / 2)
    progress(label + " (min-char-rnn loop)")
    return Figure(label, cps, measure.minchar_speed(train_ids, V, H, T, seconds=plan.seconds / 2),
                  "min-char-rnn loop")


def sample_rows(plan: Plan, train_ids, V: int, progress) -> list[Figure]:
    """Sampling an LSTM 2×256 at batch 1 beside the PyTorch peer, and (not --quick) with a 7-gram."""
    progress("sample lstm 2×256, batch 1")
    sps = measure.sample_speed("lstm", 256, 2, V)
    sp_peer, sp_note = None, ""
    if plan.peers.sampling and plan.peers.python:
        sp_peer, why = peers.run_peer(plan.peers.python, plan.peers.sampling, peers.sample_args("lstm", 256, 2, V))
        sp_note = f"PyTorch peer failed: {why}" if sp_peer is None else ""
    rows = [Figure("sample lstm 2×256, batch 1", sps, sp_peer, "PyTorch", note=sp_note)]
    if not plan.quick:
        progress("sample lstm 2×256 with a 7-gram, batch 1")
        sps = measure.sample_speed("lstm", 256, 2, V, mix=measure.ngram_mixture(train_ids, V))
        rows.append(Figure("sample lstm 2×256 + 7-gram, batch 1", sps, sp_peer, "PyTorch", note=sp_note))
    return rows
