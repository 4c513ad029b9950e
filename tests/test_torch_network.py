"""The torch engine's network against the NumPy engine's, from the same weights.

Loss to 1e-10 in float64 (1e-5 relative in float32) and every parameter's
gradient to 1e-8 in float64, for rnn (tanh, relu), gru and lstm with 1 and
2 layers, with line resets inside the chunk, dropout masks and a carried
initial state.  Negative controls: torch's own nn.GRU (reset gate after the
matmul) is a different model, and a wrong gate order is caught.
"""

import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason='needs the torch extra: pip install "charlm[torch]"')

from charlm import model  # noqa: E402
from charlm.model import Arch  # noqa: E402
from charlm.torch_engine import convert, network  # noqa: E402
from charlm.vocab import EOS_ID  # noqa: E402

CASES = [("rnn", "tanh"), ("rnn", "relu"), ("gru", "tanh"), ("lstm", "tanh")]


def batch(arch, T=9, B=3, seed=0, dtype="float64", dropout=0.0):
    rng = np.random.default_rng(seed)
    params = model.init_params(arch, rng, dtype)
    for k in params:            # non-zero biases, so that a bias in the wrong place shows
        if k.endswith("bias"):
            params[k] += rng.uniform(-0.3, 0.3, params[k].shape).astype(dtype)
    x = rng.integers(2, arch.vocab_size, size=(T, B))
    x[3, 0] = x[6, 1] = x[0, 2] = EOS_ID          # line restarts inside the chunk
    y = rng.integers(0, arch.vocab_size, size=(T, B))
    state = [tuple((rng.standard_normal((B, arch.hidden_size)) * 0.5).astype(dtype) for _ in layer)
             for layer in model.zero_state(arch, B, np.dtype(dtype))]
    masks = model.dropout_masks(arch, T, B, dropout, rng, np.dtype(dtype))
    return params, x, y, state, masks


def numpy_side(arch, params, x, y, state, masks):
    loss, grads, final = model.loss_and_grads(params, arch, x, y, state, masks=masks)
    return loss, grads, final


def torch_side(arch, params, x, y, state, masks, dtype):
    net = network.Network(arch, convert.DTYPES[dtype])
    named = net.named()
    convert.load_params(named, params)
    tmasks = None if masks is None else [torch.from_numpy(np.swapaxes(m, 1, 2).copy()) for m in masks]
    logits, final = net(torch.from_numpy(x), convert.state_tensors(state, "cpu"), tmasks,
                        network.resets(arch, x, convert.DTYPES[dtype], "cpu"))
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, arch.vocab_size), torch.from_numpy(y).reshape(-1))
    loss.backward()
    return loss.item(), {k: t.grad.numpy() for k, t in named.items()}, convert.state_arrays(final)


@pytest.mark.parametrize("cell,activation", CASES)
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("reset", [True, False])
def test_loss_and_every_gradient_match_numpy_float64(cell, activation, layers, reset):
    arch = Arch(cell, 9, 5, layers, activation, reset_at_eos=reset)
    params, x, y, state, masks = batch(arch, dropout=0.3 if layers == 2 else 0.0)
    loss, grads, final = numpy_side(arch, params, x, y, state, masks)
    tloss, tgrads, tfinal = torch_side(arch, params, x, y, state, masks, "float64")
    assert abs(loss - tloss) < 1e-10
    assert set(grads) == set(tgrads)
    for k in grads:
        assert np.max(np.abs(grads[k] - tgrads[k])) < 1e-8, k
    for a, b in zip(final, tfinal):
        for s, t in zip(a, b):
            assert np.max(np.abs(s - t)) < 1e-10


@pytest.mark.parametrize("cell,activation", CASES)
def test_loss_matches_numpy_float32(cell, activation):
    arch = Arch(cell, 9, 6, 2, activation, reset_at_eos=True)
    params, x, y, state, masks = batch(arch, dtype="float32", seed=3)
    loss, _, _ = numpy_side(arch, params, x, y, state, masks)
    tloss, _, _ = torch_side(arch, params, x, y, state, masks, "float32")
    assert abs(loss - tloss) <= 1e-5 * abs(loss)


def test_resets_matter():
    """Negative control: the same chunk without line resets gives another loss (so the resets are tested)."""
    arch = Arch("lstm", 9, 5, 2, reset_at_eos=True)
    params, x, y, state, masks = batch(arch)
    loss, _, _ = numpy_side(arch, params, x, y, state, masks)
    other, _, _ = torch_side(Arch("lstm", 9, 5, 2, reset_at_eos=False), params, x, y, state, masks, "float64")
    assert abs(loss - other) > 1e-6


def test_pytorch_gru_is_another_model():
    """Negative control: nn.GRU with charlm's weights (reset gate after the matmul) does not give charlm's loss."""
    arch = Arch("gru", 9, 5, 1)
    params, x, y, state, _ = batch(arch)
    loss, _, _ = numpy_side(arch, params, x, y, state, None)
    gru = torch.nn.GRU(9, 5, dtype=torch.float64)
    head = torch.nn.Linear(5, 9, dtype=torch.float64)
    with torch.no_grad():
        gru.weight_ih_l0.copy_(torch.from_numpy(params["layers.0.weight_ih"]))
        gru.weight_hh_l0.copy_(torch.from_numpy(params["layers.0.weight_hh"]))
        gru.bias_ih_l0.copy_(torch.from_numpy(params["layers.0.bias"]))
        gru.bias_hh_l0.zero_()
        head.weight.copy_(torch.from_numpy(params["head.weight"]))
        head.bias.copy_(torch.from_numpy(params["head.bias"]))
        onehot = torch.nn.functional.one_hot(torch.from_numpy(x), 9).double()
        out, _ = gru(onehot, torch.from_numpy(state[0][0])[None])
        other = torch.nn.functional.cross_entropy(head(out).reshape(-1, 9), torch.from_numpy(y).reshape(-1))
    assert abs(loss - float(other)) > 1e-6


def test_gate_order_is_checked():
    """Negative control: swapping the LSTM's i and f blocks in torch changes the loss."""
    arch = Arch("lstm", 9, 5, 1)
    params, x, y, state, _ = batch(arch)
    loss, _, _ = numpy_side(arch, params, x, y, state, None)
    H = 5
    swapped = dict(params)
    for k in ("layers.0.weight_ih", "layers.0.weight_hh", "layers.0.bias"):
        a = params[k].copy()
        swapped[k] = np.concatenate([a[H:2 * H], a[:H], a[2 * H:]])
    other, _, _ = torch_side(arch, swapped, x, y, state, None, "float64")
    assert abs(loss - other) > 1e-6


@pytest.mark.parametrize("with_keep", [True, False])
def test_gru_loop_backward_against_finite_differences(with_keep):
    """The GRU's written-out BPTT (inputs, initial state, weights) against torch's finite-difference check."""
    g = torch.Generator().manual_seed(0)
    T, B, H = 5, 2, 3
    gx = torch.randn(T, B, 3 * H, dtype=torch.float64, generator=g, requires_grad=True)
    h0 = torch.randn(B, H, dtype=torch.float64, generator=g, requires_grad=True)
    W = (torch.randn(3 * H, H, dtype=torch.float64, generator=g) * 0.5).requires_grad_()
    keep = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 1.0]],
                        dtype=torch.float64)[..., None] if with_keep else None
    assert torch.autograd.gradcheck(lambda a, b, c: network.GRULoop.apply(a, b, c, keep), (gx, h0, W))
    # negative control: a backward that drops the recurrent term of dh<t-1> fails the check
    class Broken(network.GRULoop):
        @staticmethod
        def backward(ctx, dhs):
            da, dh, dW, _ = network.GRULoop.backward(ctx, dhs)
            return da, dh * 0.5, dW, None
    with pytest.raises(sys.modules["torch.autograd.gradcheck"].GradcheckError):
        torch.autograd.gradcheck(lambda a, b, c: Broken.apply(a, b, c, keep), (gx, h0, W))
