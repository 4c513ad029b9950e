"""The typo benchmark (`charlm bench --typos`): corrupt held-out text, then find and fix the corruptions.

Lines of held-out text are corrupted at a known rate with a fixed seed, one
kind at a time:

- substitution: a character becomes another character of the vocabulary;
- insertion: a character of the vocabulary is inserted; the inserted one is the error;
- deletion: a character is deleted; the character after the gap is the error
  (not a line's last character, and never two in a row).

Detectors give each character of the corrupted lines a probability:

- "bidirectional": P(x<t> | the rest of the line) from a bidirectional model,
  as `check` computes it (combined with its three n-grams, if it has them);
  "bidirectional-net": its network alone (when it has n-grams);
- "bayes": the same conditional from a left-to-right model by Bayes' rule
  over a right window (`charlm.check.bayes_log_probs`; with the model's
  n-gram, as `score` uses it); "bayes-net": its network alone (when it has one);
- "left": the left-to-right model's P(x<t> | x<1..t-1>), the number
  `score --show` colours (with the model's n-gram, as `score` uses it).

Reported for each: AUROC of the surprisal −log P as a detector of the
errors (over all characters), precision / recall / F0.5 of the flag
P < threshold, and for substitutions the share of errors whose original
character is the best (top-1) or among the 3 best (top-3) suggestions other
than the character there; and characters per second.  To choose a flag rule,
the JSON has, for a sweep of values, the precision / recall / F0.5 of two
rules: P < threshold (`sweep`), and the best alternative at least `ratio`
times as likely as the character there (`ratio_sweep`; not for "left",
whose suggestions come from another distribution than its probabilities).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from charlm import check
from charlm.errors import CharlmError
from charlm.vocab import EOS_ID, UNK_ID

KINDS = ("substitution", "insertion", "deletion")
SWEEP = (0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3)   # thresholds whose precision / recall / F0.5 the JSON reports
RATIO_SWEEP = (10, 30, 100, 300, 1000, 3000, 10000)   # ... and ratios of the best alternative to the character


@dataclass
class Corrupted:
    lines: list[str]
    labels: list[np.ndarray]          # per line, 1 at each error character
    originals: list[dict]             # per line, {index: original character} of the substitutions


def corrupt(lines: list[str], kind: str, rate: float, chars: list[str], rng: np.random.Generator) -> Corrupted:
    """Each character is corrupted with probability `rate` (deletion: not a line's last character, nor
    the one after a deleted one: the character after each gap is marked, so gaps do not touch)."""
    out, labels, originals = [], [], []
    for line in lines:
        new, lab, orig = [], [], {}
        n = len(line)
        for i, ch in enumerate(line):
            # a deletion leaves the line's last character, and the one after a deletion, so each marks its own
            hit = rng.random() < rate and not (kind == "deletion" and (i == n - 1 or (new and new[-1] is None)))
            if not hit:
                new.append(ch)
                lab.append(0)
            elif kind == "substitution":
                choice = [c for c in chars if c != ch]
                orig[len(new)] = ch
                new.append(choice[rng.integers(len(choice))])
                lab.append(1)
            elif kind == "insertion":
                new.append(chars[rng.integers(len(chars))])
                lab.append(1)
                new.append(ch)
                lab.append(0)
            else:                                    # deletion: the next character is marked
                lab.append(-1)                       # placeholder: the next kept character takes the mark
                new.append(None)
        # resolve deletions: drop the placeholders, mark the character after each
        kept, kept_lab, mark = [], [], 0
        for ch, lb in zip(new, lab):
            if ch is None:
                mark = 1
                continue
            kept.append(ch)
            kept_lab.append(1 if mark else lb)
            mark = 0
        out.append("".join(kept))
        labels.append(np.array(kept_lab, dtype=np.int8))
        originals.append(orig)
    return Corrupted(out, labels, originals)


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of `scores` as a detector of labels == 1 (ties count half)."""
    pos = labels == 1
    P, N = int(pos.sum()), int((~pos).sum())
    if P == 0 or N == 0:
        return float("nan")
    values, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    average_rank = ends - (counts - 1) / 2.0                    # ranks from 1, ties averaged
    ranks = average_rank[inverse]
    return float((ranks[pos].sum() - P * (P + 1) / 2.0) / (P * N))


def left_log_probs(ck, lines: list[str], weights: str = "best") -> list[np.ndarray]:
    """log P(x<t> | x<1..t-1>) of each character, as `score` computes it (with the n-gram, if the model has one)."""
    from charlm.score import score_sentences

    scores = score_sentences(ck.weights(weights), ck.arch, ck.vocab, lines, keep_tokens=True,
                             mix=ck.mixture(weights), workers=1)
    return [s.token_log_probs[:-1] for s in scores]            # without the final <EOS>


def detector_figures(probs: list[np.ndarray], suggest: list[np.ndarray] | None, data: Corrupted, vocab,
                     threshold: float) -> dict:
    """AUROC, precision/recall/F0.5 at the threshold and (with `suggest`, (n, V) per line) top-1/top-3."""
    p = np.concatenate(probs) if probs else np.zeros(0)
    y = np.concatenate(data.labels) if data.labels else np.zeros(0)
    _, precision, recall, f05 = sweep(p, y, [threshold])[0]
    figures = {"auroc": auroc(-np.log(np.maximum(p, 1e-300)), y), "precision": precision, "recall": recall,
               "f05": f05, "errors": int((y == 1).sum()), "chars": int(len(y))}
    if suggest is not None and any(data.originals):
        top1 = top3 = total = 0
        for line, dist, orig in zip(data.lines, suggest, data.originals):
            for i, want in orig.items():
                row = dist[i].copy()
                row[[EOS_ID, UNK_ID]] = -np.inf
                here = vocab.encode(line[i])[0]
                row[here] = -np.inf                               # a correction changes the character
                best = np.argsort(-row, kind="stable")[:3]
                got = [vocab.token_text(int(j)) for j in best]
                top1 += got[0] == want
                top3 += want in got
                total += 1
        figures.update(top1=top1 / max(total, 1), top3=top3 / max(total, 1))
    return figures


def run(bi_ck, l2r_ck, lines: list[str], rate: float = 0.05, seed: int = 0, threshold: float = check.THRESHOLD,
        window: int = check.WINDOW, kinds=KINDS, progress=lambda msg: None, clock=time.perf_counter) -> dict:
    """The benchmark's figures: {kind: {detector: figures}}, with the settings."""
    vocab = bi_ck.vocab if bi_ck is not None else l2r_ck.vocab
    chars = [c for c in vocab.tokens[2:] if c != "\n"]
    result = {"settings": {"rate": rate, "seed": seed, "threshold": threshold, "window": window,
                           "lines": len(lines), "chars": sum(len(x) for x in lines)}, "kinds": {}}
    detectors = []
    for name, ck in (("bidirectional", bi_ck), ("bayes", l2r_ck)):
        if ck is not None:
            detectors.append((name, ck, ck.mixture("best")))
            if ck.mixture("best") is not None:                   # and the network alone: what the n-grams add
                detectors.append((name + "-net", ck, None))
    detectors += [("left", l2r_ck, None)] if l2r_ck is not None else []
    for kind in kinds:
        data = corrupt(lines, kind, rate, chars, np.random.default_rng(seed))
        figures = {}
        for name, ck, mix in detectors:
            progress(f"{kind}: {name}")
            t0 = clock()
            seqs = [ck.vocab.encode(x).astype(np.intp) for x in data.lines]
            if name == "left":
                logps = left_log_probs(ck, data.lines)
                dist = None
                probs = [np.exp(lp) for lp in logps]
            else:
                dist = check.conditionals(ck.weights("best"), ck.arch, seqs, window, mix)
                probs = [np.exp(d[np.arange(len(q)), q]) for d, q in zip(dist, seqs)]
            seconds = clock() - t0
            labels = np.concatenate(data.labels)
            if name == "left":   # its suggestions: the likeliest next characters given the left side (the network)
                dist = [check.left_log_probs(ck.weights("best"), ck.arch, q)[0][:len(q)] for q in seqs]
            else:
                f_ratio = ratio_sweep(dist, seqs, labels, RATIO_SWEEP)
            f = detector_figures(probs, dist, data, ck.vocab, threshold)
            f["sweep"] = sweep(np.concatenate(probs), labels, SWEEP)   # to choose a threshold
            if name != "left":
                f["ratio_sweep"] = f_ratio
            f["chars_per_second"] = f["chars"] / max(seconds, 1e-9)
            figures[name] = f
        result["kinds"][kind] = figures
    return result


def sweep(probs: np.ndarray, labels: np.ndarray, thresholds) -> list[tuple[float, float, float, float]]:
    """(threshold, precision, recall, F0.5) of the flag P < threshold for each threshold."""
    rows = []
    for th in thresholds:
        flagged = probs < th
        tp = int((flagged & (labels == 1)).sum())
        pr = tp / max(int(flagged.sum()), 1)
        rc = tp / max(int((labels == 1).sum()), 1)
        rows.append((th, pr, rc, 1.25 * pr * rc / (0.25 * pr + rc) if pr + rc else 0.0))
    return rows


def ratio_sweep(dist: list[np.ndarray], seqs: list[np.ndarray], labels: np.ndarray, ratios):
    """(ratio, precision, recall, F0.5) of the flag "best alternative ≥ ratio × P(character)" for each ratio."""
    gap = []
    for d, q in zip(dist, seqs):
        other = d.copy()
        other[:, [EOS_ID, UNK_ID]] = -np.inf
        other[np.arange(len(q)), q] = -np.inf
        gap.append(other.max(axis=1) - d[np.arange(len(q)), q])       # log(best alternative / P(character))
    flags = np.concatenate(gap) if gap else np.zeros(0)
    return [(r, *sweep(np.exp(-flags), labels, [1.0 / r])[0][1:]) for r in ratios]


def load_checkers(bi: str | None, left_to_right: str | None):
    """The two checkpoints `bench --typos` compares (either may be None), checked to be of their kinds."""
    from charlm import checkpoint as ckpt_io

    bi_ck = ckpt_io.load(bi) if bi else None
    l2r_ck = ckpt_io.load(left_to_right) if left_to_right else None
    if bi_ck is not None and not bi_ck.config.bidirectional:
        raise CharlmError(f"{bi} is not bidirectional (--bi takes a checkpoint trained with --bidirectional)")
    if l2r_ck is not None and l2r_ck.config.bidirectional:
        raise CharlmError(f"{left_to_right} is bidirectional (-c takes a left-to-right checkpoint here)")
    if bi_ck is not None and l2r_ck is not None and bi_ck.vocab.tokens != l2r_ck.vocab.tokens:
        raise CharlmError("the two checkpoints have different vocabularies: train them on the same corpus")
    return bi_ck, l2r_ck


def held_out_lines(path: str, max_chars: int) -> list[str]:
    """The non-empty lines of `path`, until they hold `max_chars` characters."""
    from charlm.corpus import read_lines
    from charlm.files import text_source

    lines, total = [], 0
    for line in read_lines(text_source(path, "data")):
        if line.strip() and total < max_chars:
            lines.append(line)
            total += len(line)
    if not lines:
        raise CharlmError(f"{path} has no non-empty lines")
    return lines
