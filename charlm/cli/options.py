"""Options that several commands share, and the checks of their inputs."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from charlm import checkpoint as ckpt_io
from charlm.cli.console import fail

EncodingOpt = Annotated[Optional[str], typer.Option(
    help="Text encoding of the files read. [default: the one the model was trained with]", show_default=False)]
ErrorsOpt = Annotated[Optional[str], typer.Option(
    help="On undecodable bytes: strict, replace, ignore, surrogateescape. [default: as in training]", show_default=False)]
# --engine / --device (train, score): the torch engine lives in charlm/torch_engine, imported only when asked for
EngineOpt = Annotated[str, typer.Option(
    help="numpy: this process's CPU cores; torch: PyTorch (a GPU, or many processes under torchrun), "
         'needs pip install "charlm[torch]".')]
DeviceOpt = Annotated[str, typer.Option(help="With --engine torch: auto (a GPU if any), cpu, cuda or cuda:N.")]
CheckpointOpt = Annotated[Optional[str], typer.Option(
    "-c", "--checkpoint", help="Checkpoint file (default: $CHARLM_CHECKPOINT or charlm.npz).", show_default=False)]
WeightsOpt = Annotated[str, typer.Option(
    help="best: the (averaged) weights with the best validation loss; last: the weights at the end of training.")]
NetworkOnlyOpt = Annotated[bool, typer.Option(
    "--network-only", help="Use the network alone, without the n-gram it was interpolated with in training.")]


def checkpoint_path(path: Optional[str]) -> str:
    return path or ckpt_io.default_path()


def one_stdin(**inputs) -> None:
    """Fail if more than one input is - (standard input can be read only once)."""
    dashes = [name.replace("_", " ") for name, value in inputs.items() if value == "-"]
    if len(dashes) > 1:
        fail(f"only one input can come from standard input (-), not the {' and the '.join(dashes)}")
