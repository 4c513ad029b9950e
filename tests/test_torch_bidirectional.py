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

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason='needs the torch extra: pip install "charlm[torch]"')

from charlm import bidirectional as bd  # noqa: E402
from charlm import checkpoint, model  # noqa: E402
from charlm.config import Config  # noqa: E402
from charlm.dataset import load_corpus  # noqa: E402
from charlm.model import BACKWARD_PREFIX, Arch  # noqa: E402
from charlm.torch_engine import bidirectional as tbd  # noqa: E402
from charlm.torch_engine import convert  # noqa: E402
from charlm.torch_engine import train as ttrain  # noqa: E402
from charlm.train import train as np_train  # noqa: E402
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


ITEMS = "\n".join(["anna", "bob", "carla", "dave", "eve", "frank", "gina", "hal"] * 6) + "\n"
PROSE = "the cat sat on the mat. we ate a pie at tea. a bird in the hand is worth two in the bush. " * 3


def train_config(**kw):
    base = dict(cell="gru", hidden_size=6, num_layers=2, seq_len=8, batch_size=4, steps=6, lr=5e-3,
                warmup_steps=2, val_fraction=0.1, eval_every=3, save_every=0, seed=3, bidirectional=True,
                dtype="float64", dropout=0.0, char_dropout=0.1, ngram=3)
    base.update(kw)
    return Config(**base).validate()


@pytest.mark.parametrize("text,cell", [(ITEMS, "lstm"), (PROSE, "gru")], ids=["items", "prose"])
def test_torch_training_follows_numpy_and_ends_with_the_same_combination(text, cell):
    """No dropout masks (they are drawn differently), character dropout from the run's generator as in NumPy:
    six steps in float64 give the same weights, validation figures and fitted n-gram combination."""
    cfg = train_config(cell=cell)
    runs = [trainer(dataclasses.replace(cfg), load_corpus(text.encode(), dataclasses.replace(cfg), name="c.txt"))
            for trainer in (np_train, ttrain.train)]
    (a, _), (b, _) = runs
    assert b.config.bidirectional and b.config.line_state == a.config.line_state
    for k in a.params:
        assert np.max(np.abs(a.params[k] - b.params[k])) < 1e-9, k
    ha, hb = a.train_state["history"], b.train_state["history"]
    assert [h["step"] for h in ha] == [h["step"] for h in hb] and len(ha) >= 2
    assert ha[0]["val_bpc"] != ha[-1]["val_bpc"]          # the weights moved
    for x, y in zip(ha, hb):
        assert abs(x["val_bpc"] - y["val_bpc"]) < 1e-9 and abs(x["train_bpc"] - y["train_bpc"]) < 1e-9
    assert b.two_sided_ngram is not None and b.backward_ngram is not None and b.ngram is not None
    assert set(b.combine_weights) == set(a.combine_weights) != set()
    for w in a.combine_weights:
        assert np.allclose(a.combine_weights[w], b.combine_weights[w], atol=1e-6)
    assert abs(a.meta["combine_val_bpc"] - b.meta["combine_val_bpc"]) < 1e-6


def cli(args, cwd, launcher=()):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]), OMP_NUM_THREADS="1",
               CHARLM_DIST_TIMEOUT="60")
    env.pop("CHARLM_CHECKPOINT", None)
    return subprocess.run([sys.executable, *launcher, "-m", "charlm", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_train_on_torch_writes_a_bidirectional_checkpoint_check_reads_and_two_ranks_agree(tmp_path):
    """One process, then two ranks (torchrun, gloo): on items each rank's rows count different numbers of
    positions, and the two ranks must still give one process's weights (the loss is the batch's mean)."""
    (tmp_path / "c.txt").write_text(ITEMS * 2)
    common = ["train", "c.txt", "--engine", "torch", "--bidirectional", "--steps", "8", "--hidden-size", "8",
              "--num-layers", "1", "--cell", "gru", "--batch-size", "4", "--seq-len", "10", "--ngram", "3",
              "--dropout", "0.1", "--eval-every", "4", "--save-every", "0", "--seed", "2"]
    r = cli([*common, "-c", "one.npz"], tmp_path)
    assert r.returncode == 0, r.stderr
    one = checkpoint.load(str(tmp_path / "one.npz"))
    assert one.arch.bidirectional and one.config.line_state == "reset" and one.meta["workers"] == 1
    assert one.params["head.weight"].shape == (len(one.vocab), 16) and one.two_sided_ngram is not None
    assert one.combine_weights and "combine_val_bpc" in one.meta
    r = cli(["check", "anna", "bbo", "-c", "one.npz", "--json"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() and "Traceback" not in r.stderr
    r = cli([*common, "-c", "two.npz"], tmp_path, ("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"))
    assert r.returncode == 0, r.stderr[-2000:]
    two = checkpoint.load(str(tmp_path / "two.npz"))
    assert two.meta["workers"] == 2
    for k in one.params:
        assert np.max(np.abs(one.params[k] - two.params[k])) < 1e-5, k
