"""The PyTorch engine: charlm's model trained and read by PyTorch (`--engine torch`), on CPU, GPU or many processes.

Nothing here is imported by the rest of charlm unless the torch engine is
asked for, and this module itself does not import torch: `require_torch()`
does, with a one-line error when the optional extra is not installed.

    convert       charlm's arrays <-> torch tensors, and where each lives in the network
    network       the stacked network in torch (nn.RNN / nn.LSTM, the seed-form GRU as a cell loop)
    optim         clipping, Adam / SGD / Adagrad and the weight average: charlm.optim's formulas on tensors
    distributed   torchrun / DDP: ranks, rows of the batch, collectives, a dead rank as an error
    train         the training loop, writing the ordinary v1 checkpoint
    score         the network's log-probabilities of sentences, sharded over ranks
    bench         measurements for `charlm bench --engine torch`
"""

from __future__ import annotations

from charlm.errors import CharlmError

INSTALL_HINT = 'pip install "charlm[torch]"'
ENGINES = ("numpy", "torch")


def require_torch():
    """The torch module, or a CharlmError that says how to install it."""
    try:
        import torch
    except ImportError:
        raise CharlmError(f"--engine torch needs PyTorch, which is not installed: {INSTALL_HINT}") from None
    return torch


def check_engine(engine: str) -> str:
    """`engine` if it names one, else a CharlmError."""
    if engine not in ENGINES:
        raise CharlmError(f"--engine must be numpy or torch, not {engine!r}")
    return engine


def trainer(engine: str, device: str = "auto"):
    """The training function of `engine`, with `charlm.train.train`'s signature (torch imported only for torch)."""
    check_engine(engine)
    if engine == "numpy":
        if device != "auto":
            raise CharlmError("--device applies to --engine torch (the NumPy engine runs on this process's CPU cores)")
        from charlm.train import train
        return train
    require_torch()
    import functools

    from charlm.torch_engine.train import train
    return functools.partial(train, device=device)


def is_leader() -> bool:
    """Whether this process reports and writes: rank 0 under torchrun (RANK), else always (torch not imported)."""
    import os

    return os.environ.get("RANK", "0") == "0"
