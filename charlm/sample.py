"""Generating text: greedy or stochastic (temperature, top-k, top-p).

The model first reads `<EOS>` (the start of a sequence) and then the prime,
if any; from then on each step samples a token from

    P(y) ∝ exp(logits(y) / T)        (T = temperature; T = 0 is argmax)

optionally restricted to the k most likely tokens (top-k) or to the
smallest set whose probability reaches p (top-p), and feeds it back as the
next input.  N samples run side by side as one batch.  With a `Mixture`
the logits are the log-probabilities of the interpolation with the n-gram
(`charlm.mixture`), whose history is the prime and the sample so far.  The choice is
numerically safe at any temperature: logits are shifted by their maximum
before dividing by T, in float64.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from charlm import inference, mixture, model
from charlm.errors import CharlmError
from charlm.mixture import Mixture
from charlm.model import Arch
from charlm.ngram_cache import Histories
from charlm.vocab import EOS_ID, Vocab


def _scaled(logits: np.ndarray, temperature: float) -> np.ndarray:
    """(logits − their row's maximum) / T in float64: ≤ 0, and 0 at the argmax (T > 0)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - np.maximum.reduce(z, axis=-1, keepdims=True)   # (the ufunc itself: z.max's wrapper costs µs a step)
    if temperature != 1.0:
        if temperature < 1e-3:  # z/T may overflow to -inf: that is the right limit, say nothing
            with np.errstate(over="ignore", under="ignore"):
                z = z / temperature
        else:
            z /= temperature
    return z


def distribution(logits: np.ndarray, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> np.ndarray:
    """The sampling distribution (B, V) of a batch of logits; rows sum to 1."""
    if temperature <= 0:
        probs = np.zeros(np.shape(logits))  # greedy: all mass on the (first) argmax
        probs[np.arange(len(probs)), np.argmax(logits, axis=-1)] = 1.0
        return probs
    z = _scaled(logits, temperature)
    if top_k and top_k < z.shape[-1]:
        kth = np.partition(z, -top_k, axis=-1)[:, -top_k][:, None]
        z = np.where(z >= kth, z, -np.inf)
    probs = np.exp(z)
    probs /= probs.sum(axis=-1, keepdims=True)
    if top_p < 1.0:
        order = np.argsort(-probs, axis=-1, kind="stable")
        sorted_p = np.take_along_axis(probs, order, axis=-1)
        before = np.cumsum(sorted_p, axis=-1) - sorted_p  # mass of the more likely tokens
        keep_sorted = before < top_p                       # always keeps the most likely
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=-1)
        probs = np.where(keep, probs, 0.0)
        probs /= probs.sum(axis=-1, keepdims=True)
    return probs


def choose(logits: np.ndarray, rng: np.random.Generator, temperature: float = 1.0,
           top_k: int = 0, top_p: float = 1.0) -> np.ndarray:
    """One token id per row of `logits`, drawn from `distribution(...)`."""
    if temperature <= 0:
        return np.argmax(logits, axis=-1)
    if top_k or top_p < 1.0:
        return draw(distribution(logits, temperature, top_k, top_p), rng)
    return draw(np.exp(_scaled(logits, temperature)), rng)   # ∝ the distribution: draw() needs no sum of 1


def draw(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One index per row of `weights` (B, V) ≥ 0, with probability ∝ its weight: one uniform number per row.

    The index is the first whose cumulative weight exceeds u · (the row's total).
    """
    cdf = np.add.accumulate(weights, axis=-1)   # np.cumsum, without its wrapper
    u = rng.random(len(cdf)) * cdf[:, -1]
    if len(cdf) == 1:  # sampling one sequence: a binary search
        ids = cdf[0].searchsorted(u, side="right")
    else:
        ids = (cdf <= u[:, None]).sum(axis=-1)
    return np.minimum(ids, cdf.shape[-1] - 1)


def generate(params, arch: Arch, rng: np.random.Generator, num: int = 1, length: int = 200,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
             prime: np.ndarray | None = None, stop_at_eos: bool = True, mix: Mixture | None = None,
             stop=None, ngram_cache: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield, step by step, (ids (N,), active (N,) bool, log-probs (N,)).

    `active[n]` is False once sample n has ended (it produced <EOS> and
    `stop_at_eos` is set, or `stop(ids)`, a bool per row, said so: see
    `charlm.stops.Matcher`); its id is then meaningless.  The log-probability
    is that of the chosen token under the model itself (temperature 1).
    `ngram_cache=False` computes the n-gram's distribution afresh at every
    step instead of keeping it by the contexts the n-gram has counted
    (`charlm.ngram_cache`): the same numbers, slower.
    """
    dtype = params["head.weight"].dtype
    state = model.zero_state(arch, num, dtype)
    history = np.concatenate(([EOS_ID], prime if prime is not None else [])).astype(np.intp)
    x = np.repeat(history[:, None], num, axis=1)
    logits, state, _ = model.forward(params, arch, x, state)
    logits = logits[-1]
    weights = inference.step_weights(params)
    rows = np.arange(num)
    active = np.ones(num, dtype=bool)
    if mix is not None and mix.weight >= 1.0:   # the network alone
        mix = None
    if mix is not None:  # the n-gram's history: the prime (the same for every row), then each row's sample
        grams, log_weight = Histories(mix, history[1:], num, ngram_cache), mixture.log_share(mix.weight)
    for _ in range(length):
        scores = model.log_softmax(logits.astype(np.float64))
        if mix is not None:
            scores = mixture.combine(log_weight, scores, grams.terms())
        ids = choose(scores, rng, temperature, top_k, top_p)
        logp = scores[rows, ids]
        if mix is not None:
            grams.extend(ids)
        yield ids, active.copy(), logp
        if stop_at_eos:
            active &= ids != EOS_ID
        if stop is not None:
            active &= ~stop(ids)
        if (stop_at_eos or stop is not None) and not active.any():
            return
        logits, state = inference.step(params, arch, ids, state, weights)


def check_batch_fits(num: int, V: int, arch: Arch, length: int, prime_chars: int) -> None:
    """Refuse, before allocating, a batch of `num` samples that could not fit in this machine's memory.

    A generous estimate per sample: the float64 distributions of a step and
    their sorted copies (8·V), the forward pass over the prime (3 arrays of
    every layer's gates per prime character) and the text.  Without it a
    huge --num only failed once the machine had swapped its way to a
    MemoryError (15 GB here for --num 1000000000).
    """
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):   # (not on Windows: the MemoryError handler remains)
        return
    gates = arch.gates * arch.hidden_size * arch.num_layers
    need = num * (8 * (8 * V + 3 * gates * (prime_chars + 1) + 2 * length) + 200)
    if need > 0.8 * memory:
        raise CharlmError(f"not enough memory: {num:,} samples at once would need about {need / 2**30:,.1f} GiB, "
                          f"and this machine has {memory / 2**30:,.1f} GiB (ask for fewer with --num)")


@dataclass
class Text:
    """One generated sample as text."""

    text: str        # its characters (`<EOS>` a newline; the `<EOS>` that ends a sample not included)
    logprob: float   # Σ log P of its tokens under the model (natural log), the ending `<EOS>` included
    tokens: int      # the tokens generated, the ending `<EOS>` included


def generate_texts(params, arch: Arch, vocab: Vocab, rng: np.random.Generator, num: int = 1, length: int = 200,
                   temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                   prime: np.ndarray | None = None, stop_at_eos: bool = True, mix: Mixture | None = None,
                   on_text: Callable[[int, str], None] | None = None, stop=None) -> list[Text]:
    """`generate`'s tokens turned into text: one `Text` per sample (the prime not included).

    `on_text(n, chars)` is called with each character of sample n as soon
    as it is generated, for showing a sample while it is written.
    """
    texts: list[list[str]] = [[] for _ in range(num)]
    logps = np.zeros(num)
    counts = [0] * num
    for ids, active, lp in generate(params, arch, rng, num, length, temperature, top_k, top_p, prime,
                                    stop_at_eos, mix, stop):
        for n in np.flatnonzero(active):
            tok = int(ids[n])
            logps[n] += lp[n]
            counts[n] += 1
            if stop_at_eos and tok == EOS_ID:   # the end of the sample, not a character of it
                continue
            ch = vocab.decode([tok])
            texts[n].append(ch)
            if on_text is not None:
                on_text(int(n), ch)
    return [Text("".join(t), float(logp), count) for t, logp, count in zip(texts, logps, counts)]
