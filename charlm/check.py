"""`charlm check`: how likely each character of a line is, given everything around it.

For every character x<t> of a line x<1> … x<n>:

    P(x<t> | x<1..t-1>, x<t+1..n>)

- A bidirectional model (`charlm.bidirectional`) gives it in one pass,
  combined with its forward, backward and two-sided n-grams when it has them
  (`charlm.combine`).
- A left-to-right model gives it by Bayes' rule over a right window of W
  tokens r = x<t+1..t+W> (the line's <EOS> counts as a token of it):

      P(c | left, r) = P(c | left) · P(r | left, c) / Σ_c' P(c' | left) · P(r | left, c')

  exact for the window (and for the whole line once W reaches past its
  end), at a cost of W steps for each of the V candidates c at each
  position, batched over candidates and positions (`bayes_log_probs`).
  With the model's n-gram every P is the interpolation, as in `score`.

A character is flagged when its probability is below the threshold
(docs/check.md has the measurements the default comes from).
Suggestions are the most likely characters at the position (never <EOS> or
<UNK>).  The library returns values and never prints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from charlm import bidirectional, combine, inference, mixture, model, ngram
from charlm.combine import Combination
from charlm.mixture import Mixture
from charlm.model import Arch
from charlm.vocab import EOS_ID, UNK_ID, Vocab

THRESHOLD = 0.0003   # a character less likely than this is flagged (docs/check.md: the measurements)
WINDOW = 8           # right window of the Bayes rule for left-to-right models (docs/check.md)
TOP = 3              # suggestions per character
LN2 = math.log(2.0)


@dataclass
class CharCheck:
    index: int                          # position in the line, from 0
    char: str
    prob: float                         # P(char | rest of the line); of <UNK> for a character outside the vocabulary
    flagged: bool
    suggestions: list[tuple[str, float]]
    unknown: bool = False               # outside the vocabulary (scored as <UNK>)

    @property
    def bits(self) -> float:
        return -math.log2(self.prob) if self.prob > 0 else math.inf

    def to_json(self) -> dict:
        return {"index": self.index, "char": self.char, "prob": self.prob, "bits": self.bits,
                "flagged": self.flagged, "suggestions": [[c, p] for c, p in self.suggestions]}


@dataclass
class LineCheck:
    text: str
    chars: list[CharCheck]

    def fixed(self) -> str:
        """The line with each flagged character replaced by its best suggestion other than itself."""
        out = list(self.text)
        for c in self.chars:
            if c.flagged:
                better = [s for s, _ in c.suggestions if s != c.char]
                if better:
                    out[c.index] = better[0]
        return "".join(out)

    def to_json(self, fix: bool = False) -> dict:
        d = {"text": self.text, "chars": [c.to_json() for c in self.chars]}
        if fix:
            d["fixed"] = self.fixed()
        return d


def conditionals(params, arch: Arch, seqs: list[np.ndarray], window: int = WINDOW,
                 mix: Mixture | Combination | None = None) -> list[np.ndarray]:
    """log P(· | the rest of the line) at every position of each id sequence: (n, V) each.

    `mix`: a left-to-right model's n-gram interpolation, as `score` uses it;
    a bidirectional model's combination with its three n-grams (`Checkpoint.mixture`).
    """
    if arch.bidirectional:
        net = bidirectional.log_probs(params, arch, seqs)
        return net if mix is None else [combine.log_probs(mix, lp, q) for lp, q in zip(net, seqs)]
    return [bayes_log_probs(params, arch, q, window, mix) for q in seqs]


def left_log_probs(params, arch: Arch, ids: np.ndarray):
    """log P(· | x<1..t-1>) at every position t of ids, (n+1, V) with the <EOS> after them, and the
    state after reading each input: states[t] is what predicts position t (layer by layer, batch 1)."""
    state = model.zero_state(arch, 1, params["head.weight"].dtype)
    weights = inference.step_weights(params)
    inputs = np.concatenate([[EOS_ID], ids]).astype(np.intp)
    logps, states = [], []
    for x in inputs:
        logits, state = inference.step(params, arch, np.array([x]), state, weights)
        logps.append(model.log_softmax(logits[0].astype(np.float64)))
        states.append(state)
    return np.array(logps), states


def bayes_log_probs(params, arch: Arch, ids: np.ndarray, window: int, mix: Mixture | None = None,
                    max_batch: int = 8192) -> np.ndarray:
    """log P(c | left, right window) for every position of `ids` and every token c: (n, V).

    For each position t the V candidates are read side by side from the
    state that predicts t: the candidate, then the window x<t+1..t+W>
    (with the line's final <EOS>), each token's log P summed where the
    window has one.  Positions are batched too (at most `max_batch` rows).
    With `mix`, every P is the interpolation with the n-gram (`ngram_window`).
    """
    n, V = len(ids), arch.vocab_size
    if n == 0:
        return np.zeros((0, V))
    left, states = left_log_probs(params, arch, ids)
    seq = np.concatenate([ids, [EOS_ID]]).astype(np.intp)            # x<1..n>, <EOS>
    if mix is not None:
        left = mixture.log_prob(mix.weight, left, ngram.next_distribution(mix.ngram, seq, np.arange(n + 1)))
    W = max(0, window)
    out = np.empty((n, V))
    per = max(1, max_batch // V)
    for s in range(0, n, per):
        pos = np.arange(s, min(n, s + per))
        right = np.full((W, len(pos)), EOS_ID, dtype=np.intp)        # x<t+1..t+W>, padded
        mask = np.zeros((W, len(pos)))
        for j, t in enumerate(pos):
            r = seq[t + 1:t + 1 + W]
            right[:len(r), j], mask[:len(r), j] = r, 1.0
        score = left[pos]                                            # log P(c | left), (P, V)
        if W:
            # rows: position-major, candidate-minor; inputs c, r1 .. r_{W-1}; targets r1 .. rW
            cand = np.tile(np.arange(V), len(pos))
            inputs = np.vstack([cand[None], np.repeat(right[:-1], V, axis=1)])
            targets = np.repeat(right, V, axis=1)
            state = [tuple(np.repeat(np.concatenate([states[t][l][k] for t in pos]), V, axis=0)
                           for k in range(len(states[0][l]))) for l in range(arch.num_layers)]
            logits, _ = inference.infer(params, arch, inputs, state)            # (W, V, rows)
            logp = model.log_softmax(logits.astype(np.float64), axis=1)
            picked = np.take_along_axis(logp, targets[:, None, :], axis=1)[:, 0]   # (W, rows)
            if mix is not None:
                picked = mixture.log_prob(mix.weight, picked, ngram_window(mix.ngram, seq, pos, W, V))
            score = score + (picked * np.repeat(mask, V, axis=1)).sum(axis=0).reshape(len(pos), V)
        out[pos] = model.log_softmax(score)
    return out


def ngram_window(ng, seq: np.ndarray, pos: np.ndarray, W: int, V: int) -> np.ndarray:
    """The n-gram's P of each window token, (W, rows) as in `bayes_log_probs`: row (t, c) reads the line up
    to t, the candidate c at t, then x<t+1..t+W> (padded with <EOS> past the line's end)."""
    h = ng.order - 1
    rows, starts, where = [], [], []
    offset = 0
    for t in pos:
        before = seq[max(0, t - h):t]                                  # all the history the n-gram reads
        right = np.full(W, EOS_ID, dtype=np.intp)
        r = seq[t + 1:t + 1 + W]
        right[:len(r)] = r
        block = np.tile(np.concatenate([before, [0], right]), (V, 1))
        block[:, len(before)] = np.arange(V)
        width = block.shape[1]
        rows.append(block.ravel())
        row_starts = offset + width * np.arange(V)
        starts.append(np.repeat(row_starts, W))
        where.append((row_starts[:, None] + len(before) + 1 + np.arange(W)[None, :]).ravel())
        offset += width * V
    stream = np.concatenate(rows)
    p = ngram.probs(ng, stream, np.concatenate(where), np.concatenate(starts))
    return p.reshape(len(pos) * V, W).T


def check_lines(params, arch: Arch, vocab: Vocab, lines: list[str], threshold: float = THRESHOLD,
                top: int = TOP, window: int = WINDOW, mix: Mixture | None = None) -> list[LineCheck]:
    """Every character of every line: its probability given the rest, whether it is flagged, suggestions."""
    seqs = [vocab.encode(line).astype(np.intp) for line in lines]
    logps = conditionals(params, arch, seqs, window, mix)
    results = []
    for line, ids, logp in zip(lines, seqs, logps):
        probs = np.exp(logp)
        real = probs.copy()
        real[:, [EOS_ID, UNK_ID]] = -1.0                                # suggestions are characters
        best = np.argsort(-real, axis=1, kind="stable")[:, :top]
        chars = []
        for t, ch in enumerate(line):
            p = float(probs[t, ids[t]])
            chars.append(CharCheck(t, ch, p, p < threshold,
                                   [(vocab.token_text(int(j)), float(probs[t, j])) for j in best[t]],
                                   unknown=bool(ids[t] == UNK_ID)))
        results.append(LineCheck(line, chars))
    return results
