"""Many processes: torchrun / DistributedDataParallel.

`torchrun --nproc-per-node N -m charlm train ... --engine torch` starts N
copies of charlm with RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and
MASTER_PORT set; `session()` then joins them into one process group (gloo
on the CPU, NCCL on CUDA).  Without those variables it is one process and
no group.

The pattern (see docs/scaling.md):
- every rank reads the whole corpus and draws the same random numbers
  (the same seed): the batch plan, character dropout and the dropout
  masks are drawn for the global batch on every rank, and each rank keeps
  its own block of `rows()`: rank r the rows r·b … (r+1)·b − 1, b = B/N,
  and carries their hidden state.  So N processes compute what one
  process computes, up to the order of float sums;
- each rank's loss is the mean over its rows; DDP averages the gradients,
  which (equal rows per rank) is the gradient of the mean over the batch;
- every rank runs the same number of steps: the budget's clock and a
  stop request are agreed on with one all-reduce per step;
- rank 0 alone writes checkpoints; the carried states are gathered first;
- a process that dies makes the collectives of the others fail: within
  the group's timeout (CHARLM_DIST_TIMEOUT seconds, default 300; gloo
  notices a closed connection at once) the survivors end with a one-line
  error, and the last checkpoint, written atomically, stays as it was.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
from dataclasses import dataclass

import torch
import torch.distributed as dist

from charlm.errors import CharlmError, ConfigError
from charlm.torch_engine.convert import resolve_device

DEFAULT_TIMEOUT = 300.0   # seconds a collective waits for the other ranks


@dataclass(frozen=True)
class Group:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def leader(self) -> bool:
        return self.rank == 0


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher) as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def timeout_seconds() -> float:
    text = os.environ.get("CHARLM_DIST_TIMEOUT", "")
    try:
        value = float(text) if text else DEFAULT_TIMEOUT
    except ValueError:
        raise ConfigError(f"CHARLM_DIST_TIMEOUT must be a number of seconds, not {text!r}") from None
    if not value > 0:
        raise ConfigError("CHARLM_DIST_TIMEOUT must be positive")
    return value


@contextlib.contextmanager
def session(device_spec: str = "auto"):
    """The process group of this run (joined here, left at the end) as a `Group`; failures as CharlmError."""
    if not launched():
        yield Group(0, 1, resolve_device(device_spec))
        return
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_spec, local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:   # the cores of this machine shared among its ranks
        local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local)))
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_seconds()))
    except (RuntimeError, ValueError) as e:
        raise CharlmError(f"cannot join the distributed run ({_first_line(e)})") from None
    group = Group(dist.get_rank(), dist.get_world_size(), device)
    try:
        with failures(group):
            yield group
    finally:
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


@contextlib.contextmanager
def failures(group: Group):
    """A collective that fails (a rank died or left) becomes one CharlmError line."""
    try:
        yield
    except CharlmError:
        raise
    except (RuntimeError, dist.DistError) as e:
        raise CharlmError(f"rank {group.rank}: another process of the distributed run failed or left "
                          f"({_first_line(e)}); the last checkpoint written is intact") from None


def _first_line(e: Exception) -> str:
    """The first line of an exception's message, without gloo's "[source.cc:123] " prefix, cut short."""
    text = str(e).strip().splitlines()
    line = re.sub(r"^\[[^\]]*\]\s*", "", text[0]) if text else type(e).__name__
    return line.split(". ")[0][:160]


def rows(batch: int, group: Group) -> slice:
    """This rank's rows of a global batch of `batch` rows."""
    if batch % group.world:
        raise ConfigError(f"the batch of {batch} rows cannot be split evenly over {group.world} processes: "
                          f"give --batch-size a multiple of {group.world}")
    b = batch // group.world
    return slice(group.rank * b, (group.rank + 1) * b)


def all_sum(t: torch.Tensor, group: Group) -> torch.Tensor:
    """t summed over the ranks (in place); t itself in one process."""
    if group.active:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def gather_rows(t: torch.Tensor, group: Group) -> torch.Tensor:
    """The (b, ...) blocks of every rank, concatenated in rank order: (N·b, ...)."""
    if not group.active:
        return t
    parts = [torch.empty_like(t) for _ in range(group.world)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def broadcast_float(value: float, group: Group) -> float:
    """Rank 0's value, on every rank."""
    if not group.active:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=group.device)
    dist.broadcast(t, 0)
    return float(t[0])


def wrap(net: torch.nn.Module, group: Group) -> torch.nn.Module:
    """The network under DistributedDataParallel when there are several ranks (it averages the gradients)."""
    if not group.active:
        return net
    from torch.nn.parallel import DistributedDataParallel

    ids = [group.device.index] if group.device.type == "cuda" else None
    return DistributedDataParallel(net, device_ids=ids, broadcast_buffers=False)
