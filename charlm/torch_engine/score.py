"""The network's log-probabilities on the torch engine: validation pieces and scored sentences.

The same readings as `charlm.score` (see there): `piece_log_probs` is
`read_in_pieces` (training's validation measure), `network_log_probs`
reads a batch of sentences in stretches of time, and `score_sentences`
scores sentences batched by length, with `charlm.score`'s own piece
layout, length batches and Scores.  The n-gram mixing stays in NumPy
(`charlm.score.mixed_sequences`, `charlm.mixture`).  Under torchrun the
work is shared: rank r reads pieces / batches of its own, and one
all-reduce of the log-probabilities (zeros where another rank read) gives
every rank all of them, in input order.
"""

from __future__ import annotations

import numpy as np
import torch

from charlm.data import inputs_targets
from charlm.model import Arch
from charlm.inference import read_in_stretches
from charlm.score import BATCH_SIZE, length_batches, mixed_sequences, piece_layout, piece_positions, sentence_score
from charlm.torch_engine import network
from charlm.torch_engine.convert import DTYPES, load_params
from charlm.torch_engine.distributed import Group, all_sum
from charlm.vocab import Vocab


def inference_network(params: dict, arch: Arch, device) -> network.Network:
    """A Network holding `params` (NumPy arrays), for reading only."""
    net = network.Network(arch, DTYPES[str(params["head.weight"].dtype)], device)
    load_params(net.named(), params)
    net.requires_grad_(False)
    return net


@torch.no_grad()
def token_log_probs(net: network.Network, inputs: np.ndarray, targets: np.ndarray, state):
    """log P(target | history), (T, B) float64 NumPy, and the final state (tensors), as charlm.inference.token_log_probs."""
    device = net.head.weight.device
    x = torch.as_tensor(inputs, dtype=torch.long, device=device)
    logits, final = net(x, state, None, network.resets(net.arch, inputs, net.head.weight.dtype, device))
    logp = torch.log_softmax(logits.double(), dim=-1)
    y = torch.as_tensor(targets, dtype=torch.long, device=device)
    return torch.gather(logp, 2, y[..., None])[..., 0].cpu().numpy(), final


def _zero(net, batch: int):
    w = net.head.weight
    return network.zero_state(net.arch, batch, w.dtype, w.device)


@torch.no_grad()
def piece_log_probs(net: network.Network, ids: np.ndarray, pieces: int, burn_in: int, group: Group,
                    chunk: int | None = None) -> np.ndarray:
    """log P of every token of `ids` read as `pieces` stretches side by side (charlm.score.read_in_pieces).

    Rank r reads its share of the pieces; the result is complete on every rank.
    """
    n = len(ids)
    inputs, targets = inputs_targets(ids)
    chunk, length, starts = piece_layout(n, pieces, chunk)
    mine = np.array_split(np.arange(len(starts)), group.world)[group.rank]
    out = np.zeros(n)
    if len(mine):
        later = mine[mine > 0]                      # pieces that first re-read the tokens before them
        state = _zero(net, len(mine))
        if len(later):
            warm = min(burn_in, length)
            pos = starts[later][None, :] - warm + np.arange(warm)[:, None]
            warmed = _zero(net, len(later))
            for s in range(0, warm, chunk):
                warmed = _advance(net, inputs[pos[s:s + chunk]], warmed)
            state = warmed if len(later) == len(mine) else [
                tuple(torch.cat([z[:1], w]) for z, w in zip(zl, wl)) for zl, wl in zip(state, warmed)]
        pos, scored = piece_positions(starts[mine], length, n)
        for s in range(0, length, chunk):
            p = pos[s:s + chunk]
            logp, state = token_log_probs(net, inputs[p], targets[p], state)
            kept = scored[s:s + chunk]
            out[p[kept]] = logp[kept]
    if group.active:
        out = all_sum(torch.from_numpy(out).to(group.device), group).cpu().numpy()
    return out


def _advance(net, inputs: np.ndarray, state):
    """The state after reading `inputs` (T, B), unscored."""
    device = net.head.weight.device
    x = torch.as_tensor(inputs, dtype=torch.long, device=device)
    return net(x, state, None, network.resets(net.arch, inputs, net.head.weight.dtype, device))[1]


@torch.no_grad()
def network_log_probs(net: network.Network, seqs: list, max_tokens: int | None = None) -> list:
    """The network's log P of every token of each id sequence (longest first), as charlm.inference.network_log_probs."""
    if not seqs:
        return []
    return read_in_stretches(seqs, _zero(net, len(seqs)), lambda x, y, st: token_log_probs(net, x, y, st),
                             max_tokens)


ROUND_BATCHES = 64   # batches read by all ranks between two exchanges of results (bounds the memory of one)


def score_sentences(params: dict, arch: Arch, vocab: Vocab, sentences: list, group: Group,
                    batch_size: int = BATCH_SIZE, mix=None) -> list:
    """Score each sentence (its characters, then <EOS>) on the torch engine, batched by length; every rank
    gets every Score, in input order (charlm.score.score_sentences)."""
    net = inference_network(params, arch, group.device)
    encoded, batches = length_batches(vocab, sentences, batch_size)
    results = [None] * len(sentences)
    for r0 in range(0, len(batches), ROUND_BATCHES):
        round_ = batches[r0:r0 + ROUND_BATCHES]
        seqs = [[encoded[i] for i in idx] for idx in round_]
        sizes = [sum(len(q) for q in batch) for batch in seqs]
        flat = np.zeros(sum(sizes))
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        for j, batch in enumerate(seqs):
            if j % group.world == group.rank:
                flat[offsets[j]:offsets[j + 1]] = np.concatenate(network_log_probs(net, batch))
        if group.active:
            flat = all_sum(torch.from_numpy(flat).to(group.device), group).cpu().numpy()
        for j, batch in enumerate(seqs):
            logps = np.split(flat[offsets[j]:offsets[j + 1]], np.cumsum([len(q) for q in batch])[:-1])
            for i, logp in zip(round_[j], mixed_sequences(mix, batch, logps)):
                results[i] = sentence_score(sentences[i], encoded[i], logp)
    return results


def score_on_engine(params: dict, arch: Arch, vocab: Vocab, sentences: list, device: str = "auto",
                    batch_size: int = BATCH_SIZE, mix=None) -> tuple[list, bool]:
    """`score_sentences` in this run's process group (one process, or the ranks of torchrun):
    (the Scores in input order, whether this process is the one that reports them)."""
    from charlm.torch_engine.distributed import session

    with session(device) as group:
        return score_sentences(params, arch, vocab, sentences, group, batch_size, mix), group.leader
