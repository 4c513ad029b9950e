"""The bidirectional network combined with three n-grams (a product of experts).

For a character c at position t of a line, with left side L = x<1..t-1>
and right side R = x<t+1..n>, five experts each give a distribution:

    f_net(c) = log P_net(c | L, R)    the bidirectional network
    f_fwd(c) = log P_fwd(c | L, R)    a Kneser-Ney n-gram counted left to right, given both sides
    f_bwd(c) = log P_bwd(c | L, R)    the same counted on the reversed text (reads the line reversed)
    f_uni(c) = log P_uni(c)           the forward n-gram's unigram
    f_two(c) = log P_two(c | x<t-1>, x<t+1>, x<t-2>, x<t+2>, …)   a two-sided n-gram

An n-gram counted in one direction gives P(c | L, R) exactly by Bayes'
rule, P(c | L) · Π_k P(x<t+k> | …, c, …), over the N − 1 characters after t
(those further on do not see c): `ngram_conditional`.  The two-sided
n-gram is a Kneser-Ney n-gram whose history is the characters on both
sides, interleaved nearest first (l1, r1, l2, r2, …, N−1 of them), each
line counted alone with the <EOS> on each side as the last token of that
side (`two_sided_histories`).  They are combined log-linearly, normalised
over the vocabulary:

    P(c | L, R) = exp(Σ_k w_k · f_k(c)) / Σ_c' exp(Σ_k w_k · f_k(c'))

Why this form: a product of conditionals is a product of experts, which is
sharp where they agree; each conditional includes the prior P(c), which the
product would count several times, and a negative w_uni takes the excess
out.  The weights w maximise the held-out log-likelihood, which is concave
in w (a multinomial logit): Newton's method with a backtracking line search
(`fit_weights`), on the validation split, with n-grams counted on the
training split only.

Shapes: n positions, V vocabulary, K = 5 experts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from charlm import ngram
from charlm.loss import log_softmax
from charlm.ngram import NGram
from charlm.errors import CheckpointError
from charlm.vocab import EOS_ID

EXPERTS = ("network", "forward n-gram", "backward n-gram", "unigram", "two-sided n-gram")
FIT_TOKENS = 32_768   # validation tokens the weights are fitted on at most (memory: 8·V·K bytes a token)


@dataclass(frozen=True)
class Combination:
    forward: NGram           # counted on the text as it reads
    backward: NGram          # counted on the text reversed
    two_sided: NGram         # counted with both sides as history (`fit_two_sided`)
    weights: np.ndarray      # (K,): w_net, w_fwd, w_bwd, w_uni, w_two


def unigram(ng: NGram) -> np.ndarray:
    """P_uni (V,): the n-gram's estimate with no history (its order-1 level)."""
    return ngram.estimate(ng, np.zeros((max(ng.order - 1, 1), 1), dtype=np.int64), np.zeros(1, dtype=np.int64))[0]


def line_bounds(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first and the last index of the line of each position of a stream (lines end at <EOS>)."""
    n = len(ids)
    at = np.arange(n)
    eos = ids == EOS_ID
    before = np.maximum.accumulate(np.where(eos, at, -1))                 # the last <EOS> at or before
    after = np.minimum.accumulate(np.where(eos, at, n)[::-1])[::-1]      # the first <EOS> at or after
    return before + 1, after - 1


def two_sided_histories(ids: np.ndarray, pos: np.ndarray, start: np.ndarray, end: np.ndarray, width: int):
    """The history l1, r1, l2, r2, … (width, n) of each position and how many of its tokens are history (n,).

    l_j = ids[pos − j], r_j = ids[pos + j] within the line ids[start..end];
    the <EOS> just outside it is the last token of each side: with a = pos −
    start + 1 tokens on the left and b = end − pos + 1 on the right, the
    history is the first min(2a, 2b + 1, width) tokens.
    """
    a, b = pos - start + 1, end - pos + 1
    tokens = np.full((width, len(pos)), EOS_ID, dtype=np.int64)
    for i in range(width):
        j = i // 2 + 1
        idx = pos - j if i % 2 == 0 else pos + j
        inside = (idx >= start) & (idx <= end)
        tokens[i] = np.where(inside, ids[np.clip(idx, 0, max(len(ids) - 1, 0))], EOS_ID)
    return tokens, np.minimum(np.minimum(2 * a, 2 * b + 1), width)


def fit_two_sided(ids: np.ndarray, vocab_size: int, order: int) -> NGram:
    """The two-sided n-gram of the characters (not <EOS>) of the last MAX_TOKENS tokens of a stream."""
    order = max(1, min(order, ngram.max_order(vocab_size)))
    ids = np.asarray(ids[-ngram.MAX_TOKENS:], dtype=np.int64)
    pos = np.flatnonzero(ids != EOS_ID)
    start, end = line_bounds(ids)
    tokens, length = two_sided_histories(ids, pos, start[pos], end[pos], order - 1)
    return ngram.fit_histories(tokens, length, ids[pos], vocab_size, order, True)   # cut histories: raw counts


def ngram_conditional(ng: NGram, ids: np.ndarray) -> np.ndarray:
    """P_ng(c | the whole line) (n, V) of a left-to-right n-gram, exactly, by Bayes' rule:

        P(c | L, R) ∝ P(c | L) · Π_{k=1..N−1} P(x<t+k> | …, c, …, x<t+k−1>)

    (a character N or more after t does not see c, so N − 1 tokens of the
    right side, the line's <EOS> included, are all that matter).  For each
    position the V candidate lines are laid out side by side: the N − 1
    tokens before t, the candidate, the right window.
    """
    n, V, h = len(ids), ng.vocab_size, ng.order - 1
    seq = np.append(np.asarray(ids, dtype=np.int64), EOS_ID)
    score = np.log(ngram.next_distribution(ng, seq, np.arange(n))) if n else np.zeros((0, V))
    if h == 0 or n == 0:
        return np.exp(log_softmax(score))
    t = np.arange(n)[:, None]
    j = np.arange(-h, h + 1)[None, :]                      # the block around t: h before, t, h after
    idx = t + j
    block = np.where((idx >= 0) & (idx <= n), seq[np.clip(idx, 0, n)], EOS_ID)   # (n, 2h + 1)
    first = np.maximum(h - t[:, 0], 0)                     # where the line (its <EOS> before it) starts in a block
    rows = np.repeat(block, V, axis=0)                     # (n·V, 2h + 1): row t·V + c
    rows[:, h] = np.tile(np.arange(V), n)
    width = 2 * h + 1
    stream = rows.ravel()
    starts = (np.arange(n * V) * width + np.repeat(first, V))[:, None]
    where = (np.arange(n * V) * width)[:, None] + h + 1 + np.arange(h)[None, :]   # the right window's tokens
    p = ngram.probs(ng, stream, where.ravel(), np.broadcast_to(starts, where.shape).ravel()).reshape(n, V, h)
    inside = (t + 1 + np.arange(h)[None, :]) <= n          # the window's tokens up to the line's <EOS>
    score = score + (np.log(p) * inside[:, None, :]).sum(axis=-1)
    return np.exp(log_softmax(score))


def ngram_features(forward: NGram, backward: NGram, two_sided: NGram, ids: np.ndarray) -> np.ndarray:
    """f_fwd, f_bwd, f_uni, f_two at every position of one line `ids` (n,): (n, V, 4).

    The line is read as `check` reads it: the forward n-gram's history
    starts with the `<EOS>` before the line, the backward one reads the
    line reversed (a stream of its own), from the `<EOS>` after it.
    """
    n = len(ids)
    pos = np.arange(n)
    ids = np.asarray(ids, dtype=np.int64)
    fwd = ngram_conditional(forward, ids)
    bwd = ngram_conditional(backward, ids[::-1].copy())[::-1]
    uni = np.broadcast_to(unigram(forward), fwd.shape)
    tokens, length = two_sided_histories(ids, pos, np.zeros(n, dtype=np.int64), np.full(n, n - 1), two_sided.order - 1)
    two = ngram.estimate(two_sided, tokens, length) if n else np.zeros((0, two_sided.vocab_size))
    return np.log(np.stack([fwd, bwd, uni, two], axis=-1))


def features(net_logp: np.ndarray, comb: Combination, ids: np.ndarray) -> np.ndarray:
    """All K features at every position of one line: (n, V, K), the network's log-probabilities first."""
    return np.concatenate([np.asarray(net_logp, dtype=np.float64)[..., None],
                           ngram_features(comb.forward, comb.backward, comb.two_sided, ids)], axis=-1)


def log_probs(comb: Combination, net_logp: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """log P(· | L, R) (n, V) at every position of one line, from the network's log P (n, V)."""
    return log_softmax(features(net_logp, comb, ids) @ comb.weights)


def objective(w: np.ndarray, F: np.ndarray, y: np.ndarray):
    """Mean negative log-likelihood J(w) of targets y (n,) under softmax(F w), F (n, V, K); its gradient and Hessian.

        J  = −mean_i [ s_i(y_i) − log Σ_c exp s_i(c) ],  s_i = F_i w
        ∇J = −mean_i [ F_i(y_i) − E_p F_i ]
        ∇²J = mean_i [ E_p F_i F_iᵀ − E_p F_i E_p F_iᵀ ]   (positive semi-definite: J is convex)
    """
    logp = log_softmax(F @ w)                                      # (n, V)
    p = np.exp(logp)
    n = len(y)
    mean_f = np.einsum("nv,nvk->nk", p, F)                         # E_p F_i
    picked = F[np.arange(n), y]                                    # F_i(y_i)
    J = -float(logp[np.arange(n), y].mean())
    grad = -(picked - mean_f).mean(axis=0)
    hess = np.einsum("nv,nvk,nvj->kj", p, F, F) / n - mean_f.T @ mean_f / n
    return J, grad, hess


def fit_weights(F: np.ndarray, y: np.ndarray, iterations: int = 50, tol: float = 1e-9) -> np.ndarray:
    """The w that minimises `objective` (Newton's method, backtracking), from w = (1, 0, …, 0): the network alone."""
    K = F.shape[-1]
    w = np.zeros(K)
    w[0] = 1.0
    J, grad, hess = objective(w, F, y)
    for _ in range(iterations):
        step = np.linalg.solve(hess + 1e-9 * np.eye(K), grad)
        t = 1.0
        while True:
            w_new = w - t * step
            J_new, g_new, h_new = objective(w_new, F, y)
            if J_new <= J - 1e-4 * t * float(grad @ step) or t < 1e-6:
                break
            t /= 2
        if J_new > J:                      # no descent left (at the optimum, up to rounding)
            break
        done = J - J_new < tol
        w, J, grad, hess = w_new, J_new, g_new, h_new
        if done:
            break
    return w


def fit_ngrams(train_ids: np.ndarray, vocab_size: int, order: int, reset_at_eos: bool) -> tuple[NGram, NGram, NGram]:
    """The forward n-gram, the backward one (counted on the reversed stream) and the two-sided one of a training split."""
    return (ngram.fit(train_ids, vocab_size, order, reset_at_eos),
            ngram.fit(np.ascontiguousarray(train_ids[::-1]), vocab_size, order, reset_at_eos),
            fit_two_sided(train_ids, vocab_size, order))


def held_out_lines(val_ids: np.ndarray, max_tokens: int = FIT_TOKENS) -> list[np.ndarray]:
    """The non-empty lines of the held-out ids (split at `<EOS>`), until they hold about `max_tokens` characters."""
    lines, total = [], 0
    for line in np.split(val_ids, np.flatnonzero(val_ids == EOS_ID)):
        line = line[1:] if len(line) and line[0] == EOS_ID else line
        if len(line) and total < max_tokens:
            lines.append(line.astype(np.intp))
            total += len(line)
    return lines


# ----------------------------------------------------------------------------
# In a checkpoint (charlm.checkpoint): the backward n-gram and the weights
# ----------------------------------------------------------------------------

BACKWARD_PREFIX = "backward.ngram."                                # the backward n-gram's tables
TWO_SIDED_PREFIX = "two_sided.ngram."                              # the two-sided n-gram's tables
WEIGHT_KEYS = {"last": "combine.last", "best": "combine.best"}     # w for each set of network weights


def to_arrays(backward: NGram | None, two_sided: NGram | None, weights: dict) -> dict[str, np.ndarray]:
    arrays = {} if backward is None else ngram.to_arrays(backward, BACKWARD_PREFIX)
    arrays.update({} if two_sided is None else ngram.to_arrays(two_sided, TWO_SIDED_PREFIX))
    arrays.update({key: np.asarray(weights[which], dtype=np.float64)
                   for which, key in WEIGHT_KEYS.items() if weights.get(which) is not None})
    return arrays


def layout(names, vocab_size: int, order: int) -> dict:
    """(name: (dtype, shape)) of the members present: the backward and two-sided n-grams' tables, the weights."""
    specs = ngram.layout(names, vocab_size, order, BACKWARD_PREFIX)
    specs.update(ngram.layout(names, vocab_size, order, TWO_SIDED_PREFIX))
    specs.update({key: ("float", (len(EXPERTS),)) for key in WEIGHT_KEYS.values() if key in names})
    return specs


def from_arrays(arrays, vocab_size: int, reset_at_eos: bool) -> tuple[NGram | None, NGram | None, dict]:
    """The backward and two-sided n-grams (None if absent) and the weights {"last"/"best": (K,)}, validated."""
    backward = ngram.from_arrays(arrays, vocab_size, reset_at_eos, BACKWARD_PREFIX)
    two_sided = ngram.from_arrays(arrays, vocab_size, True, TWO_SIDED_PREFIX)
    weights = {}
    for which, key in WEIGHT_KEYS.items():
        if key in arrays:
            w = np.asarray(arrays[key], dtype=np.float64)
            if not np.all(np.isfinite(w)):
                raise CheckpointError(f"{key!r} contains NaN or infinite values")
            weights[which] = w
    return backward, two_sided, weights
