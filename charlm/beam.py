"""Beam search: the most probable continuations, not random ones (`sample --beam K`).

The model reads `<EOS>` and the prime, as `charlm.sample` does.  A pool of at
most K candidates starts from that one history.  At each step every live
candidate is extended by every token, and the pool keeps the K best of the
finished candidates and those extensions, ranked by

    score(y) = log P(y | prime) / |y|^A        (|y| = tokens generated; A = --length-penalty)

under the model `sample` uses (the network interpolated with the n-gram, or
the network alone).  A candidate is finished when it produces `<EOS>` (for
line-per-item models, `stop_at_eos`) or a stop text (`charlm.stops`); it stays
in the pool, competing with the live ones, and is never extended.  The search
ends when no live candidate is left or after `length` tokens; candidates cut by
the length are ranked with their log-probability so far.

The live candidates advance as one batch through `inference.step` (B ≤ K rows), so
a step costs one batched matrix product per layer, not K.  With K > 1, the
greedy continuation is carried as one more row and joins the pool at the end,
so the best result is never less probable than greedy's (beam search alone
can lose the greedy path and end below it).  K = 1 is greedy search.

A = 0 ranks by log P alone, which favours short items; the default
LENGTH_PENALTY = 0.6 ranks by a log-probability per token^0.6.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from charlm import inference, mixture, model, ngram
from charlm.mixture import Mixture
from charlm.model import Arch
from charlm.stops import Stops
from charlm.vocab import EOS_ID, Vocab

LENGTH_PENALTY = 0.6   # A: rank by log P / length^A
MAX_BEAM = 1024        # largest K (`sample --beam`)


@dataclass(frozen=True)
class Hypothesis:
    """A candidate: the tokens generated after the prime (its <EOS> included), log P of them, and whether it
    ended (by <EOS> or a stop text) rather than being cut by the length."""

    ids: tuple[int, ...]
    log_prob: float
    finished: bool

    def score(self, length_penalty: float) -> float:
        return self.log_prob / max(len(self.ids), 1) ** length_penalty

    def text(self, vocab: Vocab, stop_at_eos: bool) -> str:
        """Its characters (an ending <EOS> left out when it ends the item)."""
        ids = self.ids[:-1] if stop_at_eos and self.ids and self.ids[-1] == EOS_ID else self.ids
        return vocab.decode(ids)


def _ranked(hyps: list[Hypothesis], length_penalty: float, k: int) -> list[Hypothesis]:
    """The k best, highest score first; ties keep the given order (stable)."""
    order = sorted(range(len(hyps)), key=lambda i: -hyps[i].score(length_penalty))
    return [hyps[i] for i in order[:k]]


def _select(totals: np.ndarray, k: int) -> np.ndarray:
    """Flat indices of the k largest of `totals` (R, V), largest first, ties by index."""
    flat = totals.ravel()
    k = min(k, flat.size)
    if k == 1:
        return np.array([int(np.argmax(flat))])
    cand = np.argpartition(-flat, k - 1)[:k] if flat.size > k else np.arange(flat.size)
    return cand[np.lexsort((cand, -flat[cand]))]


def search(params, arch: Arch, beam: int, length: int = 200, prime: np.ndarray | None = None,
           stop_at_eos: bool = True, mix: Mixture | None = None, length_penalty: float = LENGTH_PENALTY,
           stops: Stops | None = None, vocab: Vocab | None = None) -> list[Hypothesis]:
    """The (up to) `beam` best candidates, best first.  `vocab` decodes tokens for the stop texts."""
    stops = stops if stops else None
    if stops is not None and vocab is None:
        raise ValueError("stop texts need the vocabulary")
    dtype = params["head.weight"].dtype
    history = np.concatenate(([EOS_ID], prime if prime is not None else [])).astype(np.intp)
    logits, state, _ = model.forward(params, arch, history[:, None], model.zero_state(arch, 1, dtype))
    logits = logits[-1]
    weights = inference.step_weights(params)
    if mix is not None:
        tokens, hist_len = ngram.histories(history[1:], np.array([len(history) - 1]), 0, mix.ngram.order - 1,
                                           mix.ngram.reset_at_eos)
    # the live rows: beam candidates, then (with K > 1) the greedy row
    seqs = np.zeros((1, 0), dtype=np.intp)
    logp = np.zeros(1)
    tails = [""]
    greedy_row = beam > 1           # row 1 follows the greedy path
    if greedy_row:
        seqs, logp, tails = np.repeat(seqs, 2, axis=0), np.zeros(2), ["", ""]
        logits, state = np.repeat(logits, 2, axis=0), [tuple(np.repeat(s, 2, axis=0) for s in layer) for layer in state]
        if mix is not None:
            tokens, hist_len = tokens.repeat(2, axis=1), hist_len.repeat(2)
    n_beam = 1                       # rows [0, n_beam) are beam candidates
    finished: list[Hypothesis] = []
    greedy: Hypothesis | None = None
    for t in range(1, length + 1):
        scores = model.log_softmax(logits.astype(np.float64))
        if mix is not None:
            scores = mixture.log_prob(mix.weight, scores, ngram.estimate(mix.ngram, tokens, hist_len))
        g = n_beam                   # the greedy row's index now
        rows, next_ids, new_seqs, new_logp, tails_next = [], [], [], [], []
        if n_beam:   # the beam: the K best extensions, then the K best of them and the finished ones
            pick = _select(logp[:n_beam, None] + scores[:n_beam], beam)
            parents, toks = np.divmod(pick, scores.shape[1])
            totals = logp[parents] + scores[parents, toks]
            grown = []
            for p, v, total in zip(parents.tolist(), toks.tolist(), totals.tolist()):
                tail, hit = stops.grow(tails[p], vocab.decode([v])) if stops is not None else ("", False)
                grown.append((Hypothesis(tuple(seqs[p].tolist()) + (v,), total, hit or (stop_at_eos and v == EOS_ID)),
                              p, v, tail))
            pool = finished + [h for h, _, _, _ in grown]
            order = sorted(range(len(pool)), key=lambda i: -pool[i].score(length_penalty))[:beam]
            finished = [pool[i] for i in order if pool[i].finished]
            for i in order:
                if not pool[i].finished:
                    h, p, v, tail = grown[i - (len(pool) - len(grown))]
                    rows.append(p)
                    next_ids.append(v)
                    new_seqs.append(np.array(h.ids, dtype=np.intp))
                    new_logp.append(h.log_prob)
                    tails_next.append(tail)
        n_beam = len(rows)
        if greedy_row and greedy is None:      # the greedy row: its argmax, as `sample --greedy` takes it
            v = int(np.argmax(scores[g]))
            g_ids = tuple(seqs[g].tolist()) + (v,)
            g_logp = float(logp[g] + scores[g, v])
            tail, hit = stops.grow(tails[g], vocab.decode([v])) if stops is not None else ("", False)
            if hit or (stop_at_eos and v == EOS_ID):
                greedy = Hypothesis(g_ids, g_logp, True)
            else:
                rows.append(g)
                next_ids.append(v)
                new_seqs.append(np.array(g_ids, dtype=np.intp))
                new_logp.append(g_logp)
                tails_next.append(tail)
        if not rows:
            break
        if t == length:                     # cut by the length: the live ones end here
            cut = [Hypothesis(tuple(q.tolist()), float(lp), False) for q, lp in zip(new_seqs, new_logp)]
            if greedy_row and greedy is None:
                greedy = cut.pop()
            finished = _ranked(finished + cut, length_penalty, beam)
            break
        rows_a = np.array(rows, dtype=np.intp)
        ids = np.array(next_ids, dtype=np.intp)
        seqs = np.array(new_seqs, dtype=np.intp).reshape(len(rows), t)
        logp = np.array(new_logp)
        tails = tails_next
        state = [tuple(s[rows_a] for s in layer) for layer in state]
        if mix is not None:
            tokens, hist_len = ngram.extend(mix.ngram, tokens[:, rows_a], hist_len[rows_a], ids)
        logits, state = inference.step(params, arch, ids, state, weights)
    if greedy is not None and greedy.ids not in {h.ids for h in finished}:
        finished = _ranked(finished + [greedy], length_penalty, beam)
    return finished                         # (ranked, at most K, on every way out of the loop)
