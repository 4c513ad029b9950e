"""Log-likelihoods of sentences and of whole documents.

    log P(sentence) = Σ_t log P(y<t> | y<1..t-1>)

over the sentence's characters **and the final `<EOS>`**, starting from the
input `<EOS>` and the zero state.  Unknown characters are scored as `<UNK>`
(and counted).  Logarithms are natural (nats); bits = nats / ln 2.

Sentences are scored in batches: sorted by length, padded, and masked, so a
batch gives the same numbers as scoring each sentence alone.

With a `Mixture` (a checkpoint trained with its n-gram) every P is the
interpolation λ·P_net + (1 − λ)·P_ngram (see `charlm.mixture`); the n-gram's
history of a sentence starts at the sentence, as the network's state does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from charlm import inference, mixture, model, ngram
from charlm.data import inputs_targets
from charlm.mixture import Mixture
from charlm.model import Arch
from charlm.vocab import EOS_ID, UNK_ID, Vocab
from charlm.workers import score as score_workers
from charlm.workers.process import usable_cores

LN2 = math.log(2.0)


@dataclass
class Score:
    """The log-likelihood of one text (a sentence, or a whole document)."""

    text: str
    log_prob: float       # natural log, includes <EOS>
    num_tokens: int       # characters + <EOS> tokens scored
    num_unk: int          # characters scored as <UNK>
    num_eos: int = 1      # <EOS> tokens among num_tokens
    token_log_probs: np.ndarray | None = None  # per token, for heat maps

    @property
    def nats_per_token(self) -> float:
        return -self.log_prob / self.num_tokens if self.num_tokens else float("nan")

    @property
    def bits_per_char(self) -> float:
        return self.nats_per_token / LN2

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.nats_per_token, 700.0))

    def to_json(self) -> dict:
        return {
            "text": self.text,
            "log_prob": self.log_prob,
            "log2_prob": self.log_prob / LN2,
            "num_tokens": self.num_tokens,
            "num_chars": self.num_tokens - self.num_eos,
            "num_unk": self.num_unk,
            "nats_per_char": self.nats_per_token,
            "bits_per_char": self.bits_per_char,
            "perplexity": self.perplexity,
        }


def mixed(mix: Mixture | None, logp: np.ndarray, ids: np.ndarray, pos: np.ndarray, start=0) -> np.ndarray:
    """The log-probabilities `logp` of the tokens ids[pos] under the mixture (unchanged without one)."""
    if mix is None:
        return logp
    p_ngram = ngram.probs(mix.ngram, ids, pos.ravel(), np.broadcast_to(start, pos.shape).ravel())
    return mixture.log_prob(mix.weight, logp, p_ngram.reshape(pos.shape))


BATCH_SIZE = 256  # sentences scored together (`score --batch-size`; 3–5 % faster than 128 in alternating runs)


def auto_workers(arch: Arch, num_tokens: int, num_sentences: int, batch_size: int = BATCH_SIZE) -> int:
    """The worker processes `score_sentences` (workers=None) reads that many sentences and tokens with."""
    batches = -(-num_sentences // batch_size)
    return score_workers.auto_workers(arch, num_tokens, batches, usable_cores())


def score_sentences(params, arch: Arch, vocab: Vocab, sentences: list[str], batch_size: int = BATCH_SIZE,
                    keep_tokens: bool = False, mix: Mixture | None = None, workers: int | None = 1,
                    on_failure=lambda msg: None) -> list[Score]:
    """Score each sentence (its characters, then <EOS>), batched by length.

    Memory does not grow with the longest sentence: a batch is read in
    stretches of time with the state carried (see `network_log_probs`).
    `workers` > 1 reads the batches in worker processes (None: as many as
    `score_workers.auto_workers` chooses), with the same results up to
    float rounding (their BLAS runs single-threaded);
    `on_failure(message)` hears of a worker that failed, whose batches are
    then read here.
    """
    encoded, batches = length_batches(vocab, sentences, batch_size)
    seqs = [[encoded[i] for i in idx] for idx in batches]
    if workers is None:
        workers = auto_workers(arch, sum(len(q) for q in encoded), len(sentences), batch_size)
    results: list[Score | None] = [None] * len(sentences)
    for j, logps in score_workers.batch_log_probs(params, arch, seqs, workers, on_failure):
        for i, logp in zip(batches[j], mixed_sequences(mix, seqs[j], logps)):
            results[i] = sentence_score(sentences[i], encoded[i], logp, keep_tokens)
    return results  # type: ignore[return-value]


def length_batches(vocab: Vocab, sentences: list[str], batch_size: int) -> tuple[list[np.ndarray], list[list[int]]]:
    """Each sentence's ids (its characters, then <EOS>), and the sentences' indices in batches of
    similar lengths, each batch longest first (so that its rows end in order)."""
    encoded = [np.append(vocab.encode(s).astype(np.intp), EOS_ID) for s in sentences]
    order = sorted(range(len(sentences)), key=lambda i: len(encoded[i]))
    return encoded, [order[start:start + batch_size][::-1] for start in range(0, len(order), batch_size)]


def sentence_score(text: str, ids: np.ndarray, logp: np.ndarray, keep_tokens: bool = False) -> Score:
    """The Score of a sentence from its ids and the log-probabilities of its tokens."""
    return Score(text=text, log_prob=float(logp.sum()), num_tokens=len(logp),
                 num_unk=int(np.count_nonzero(ids == UNK_ID)), num_eos=int(np.count_nonzero(ids == EOS_ID)),
                 token_log_probs=logp if keep_tokens else None)


def mixed_sequences(mix: Mixture | None, seqs: list[np.ndarray], logps: list[np.ndarray]) -> list[np.ndarray]:
    """Each sequence's log-probabilities under the mixture, its n-gram history starting at the sequence."""
    if mix is None or not seqs:
        return logps
    lengths = np.array([len(q) for q in seqs], dtype=np.int64)
    flat = np.concatenate(seqs).astype(np.intp, copy=False)   # sequence b is flat[offsets[b]:offsets[b] + lengths[b]]
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    out = mixed(mix, np.concatenate(logps), flat, np.arange(len(flat)), start=np.repeat(offsets, lengths))
    return np.split(out, offsets[1:])


def document_log_prob(params, arch: Arch, ids: np.ndarray, chunk: int = 512, exact: bool = False,
                      mix: Mixture | None = None) -> tuple[float, int]:
    """Σ log P over a whole id stream (state carried across lines and chunks).

    The stream starts from input <EOS> and the zero state; each line end in
    `ids` is an <EOS> that is predicted too.  Returns (log_prob, num_tokens).

    With `exact` (or a short stream) the stream is read in order, one token
    after another.  Otherwise it is read as pieces side by side, each piece
    first re-reading the tokens before it (see `read_in_pieces`); the state
    every piece starts from is checked against the state the piece before it
    arrives with, and the result is used only if they agree everywhere
    (within `JOINT_TOLERANCE`) — so both ways give the same number.
    """
    if len(ids) == 0:
        return 0.0, 0
    adjust = None if mix is None else (lambda pos, logp: mixed(mix, logp, ids, pos))
    pieces = min(MAX_PIECES, len(ids) // PIECE_TOKENS)
    if not exact and pieces >= 2:
        burn_in = BURN_IN
        while burn_in <= MAX_BURN_IN:
            log_prob, gap = read_in_pieces(params, arch, ids, pieces, burn_in, adjust=adjust)
            if gap <= JOINT_TOLERANCE:
                return log_prob, len(ids)
            burn_in *= 2
    return _read_in_order(params, arch, ids, chunk, adjust), len(ids)


MAX_PIECES = 64          # read side by side
PIECE_TOKENS = 4096      # at least this many tokens per piece
BURN_IN = 512            # tokens each piece re-reads before its own stretch (doubled until the joints agree)
MAX_BURN_IN = 4096
JOINT_TOLERANCE = 1e-4   # largest allowed difference between the two states at a joint
CHUNK_TOKENS = 4096      # tokens per forward call when reading in pieces (a forward keeps ~25 kB per token)


def _read_in_order(params, arch: Arch, ids: np.ndarray, chunk: int, adjust=None) -> float:
    inputs, targets = inputs_targets(ids)
    state = None
    total = 0.0
    for s in range(0, len(ids), chunk):
        x = inputs[s:s + chunk].astype(np.intp)[:, None]
        y = targets[s:s + chunk].astype(np.intp)[:, None]
        logp, state = inference.token_log_probs(params, arch, x, y, state)
        if adjust is not None:
            logp = adjust(np.arange(s, s + len(x)), logp[:, 0])
        total += float(logp.sum())
    return total


def read_in_pieces(params, arch: Arch, ids: np.ndarray, pieces: int, burn_in: int,
                   chunk: int | None = None, adjust=None) -> tuple[float, float]:
    """The document log-likelihood read as `pieces` equal stretches side by side (a batch).

    Piece 0 starts at the beginning, from the zero state and input <EOS>,
    as the in-order reading does.  Piece k > 0 first reads the `burn_in`
    tokens before its stretch, from the zero state, unscored.  A recurrent
    state forgets where it started, so by the joint that state is the one
    piece k-1 arrives with after reading everything before.  (The burn-in
    is at most a piece long, so that piece 1's starts at the beginning.)  Returns
    (log_prob, gap): gap is the largest difference between those two
    states over all joints, layers and state tensors — the check that the
    burn-in was long enough.  `adjust(positions, logp)`, if given, sees the
    scored tokens' log-probabilities and returns the ones to sum.
    """
    n = len(ids)
    inputs, targets = inputs_targets(ids)
    chunk, length, starts = piece_layout(n, pieces, chunk)
    pieces = len(starts)
    dtype = params["head.weight"].dtype
    start_state = model.zero_state(arch, pieces, dtype)
    if pieces > 1:
        warm = min(burn_in, length)
        pos = starts[1:][None, :] - warm + np.arange(warm)[:, None]
        state = model.zero_state(arch, pieces - 1, dtype)
        for s in range(0, warm, chunk):
            _, state = inference.infer(params, arch, inputs[pos[s:s + chunk]].astype(np.intp), state)
        start_state = [tuple(np.concatenate([z[:1], w]) for z, w in zip(zl, wl))
                       for zl, wl in zip(start_state, state)]
    pos, scored = piece_positions(starts, length, n)
    state = start_state
    total = 0.0
    for s in range(0, length, chunk):
        p = pos[s:s + chunk]
        logp, state = inference.token_log_probs(params, arch, inputs[p].astype(np.intp), targets[p].astype(np.intp), state)
        kept = scored[s:s + chunk]
        logp = logp[kept] if adjust is None else adjust(p[kept], logp[kept])
        total += float(logp.sum())
    gap = 0.0
    if pieces > 1:  # piece k-1's final state against piece k's start, every layer and state tensor
        gap = max(float(np.abs(a[:-1] - b[1:]).max())
                  for arrived, started in zip(state, start_state) for a, b in zip(arrived, started))
    return total, gap


def piece_layout(n: int, pieces: int, chunk: int | None) -> tuple[int, int, np.ndarray]:
    """(chunk, length, starts) of n tokens read as `pieces` equal stretches side by side (none empty).

    chunk: the time steps of one forward call, by default about
    CHUNK_TOKENS tokens a call, so that memory does not grow with the pieces.
    """
    if chunk is None:
        chunk = max(16, CHUNK_TOKENS // pieces)
    length = -(-n // pieces)
    return chunk, length, np.arange(-(-n // length)) * length


def piece_positions(starts: np.ndarray, length: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The token read at each time step of each piece, (length, pieces), and whether it is scored
    (the last piece's stretch runs past the end: it repeats the last token there, unscored)."""
    pos = starts[None, :] + np.arange(length)[:, None]
    return np.minimum(pos, n - 1), pos < n


def score_document(params, arch: Arch, vocab: Vocab, ids: np.ndarray, text_label: str,
                   exact: bool = False, mix: Mixture | None = None) -> Score:
    log_prob, n = document_log_prob(params, arch, ids, exact=exact, mix=mix)
    return Score(text=text_label, log_prob=log_prob, num_tokens=n,
                 num_unk=int(np.count_nonzero(ids == UNK_ID)), num_eos=int(np.count_nonzero(ids == EOS_ID)))


@dataclass
class Surprise:
    """Why a sentence is (un)likely: per-token surprisal and the model's alternatives."""

    tokens: list[str]            # display form of each scored token ("⏎" for <EOS>)
    bits: np.ndarray             # surprisal −log2 P of each token
    top: list[list[tuple[str, float]]]  # per token, the model's most likely tokens and their probabilities


def explain(params, arch: Arch, vocab: Vocab, sentence: str, k: int = 3, mix: Mixture | None = None) -> Surprise:
    """Surprisal of every token of `sentence` (and its <EOS>) with the top-k alternatives.

    The network reads the sentence CHUNK_TOKENS tokens at a time, the state
    carried, so its memory does not grow with the sentence.
    """
    ids = np.append(vocab.encode(sentence).astype(np.intp), EOS_ID)
    inputs, targets = inputs_targets(ids)
    state = model.zero_state(arch, 1, params["head.weight"].dtype)
    bits = np.empty(len(ids))
    top = []
    for s in range(0, len(ids), CHUNK_TOKENS):
        pos = np.arange(s, min(s + CHUNK_TOKENS, len(ids)))
        logits, state = inference.infer(params, arch, inputs[pos][:, None], state)      # (T, V, 1)
        logp = model.log_softmax(logits[:, :, 0].astype(np.float64))
        if mix is not None:
            logp = mixture.log_prob(mix.weight, logp, ngram.next_distribution(mix.ngram, ids, pos))
        bits[pos] = -logp[np.arange(len(pos)), targets[pos]] / LN2
        top_ids = np.argsort(-logp, axis=-1, kind="stable")[:, :k]
        top += [[(_display(vocab, int(j)), float(np.exp(logp[t, j]))) for j in top_ids[t]] for t in range(len(pos))]
    # one id per code point, a newline being <EOS>: the tokens are the characters, then <EOS>
    tokens = ["⏎" if ch == "\n" else ch for ch in sentence] + ["⏎"]
    return Surprise(tokens, bits, top)


def _display(vocab: Vocab, i: int) -> str:
    return "⏎" if i == EOS_ID else vocab.token_text(i)
