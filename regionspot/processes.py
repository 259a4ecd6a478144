"""Processes of one run: one process per device under ``torchrun``, or a single process.

Shared by training, evaluation and batch prediction (and their commands), so it sits below them.
``torchrun --nproc_per_node=N -m regionspot train ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them, picks
this process's device and joins the process group (nccl on CUDA, gloo on CPU). Without them, or
with ``WORLD_SIZE=1``, the run is a single process with no process group, and every collective
below is the identity.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from regionspot.devices import choose_device

ENV_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class LaunchError(RuntimeError):
    """The process environment does not describe a usable data-parallel launch (e.g. ``WORLD_SIZE``
    set by hand without the other variables that ``torchrun`` sets). The command line reports it as
    one ``error: ...`` line (:func:`regionspot.cli.main.user_error_types`)."""


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: ``rank`` of ``world_size``, its ``local_rank`` on the node,
    its ``device``, and the process-group ``backend`` (``None``: single process, no group)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and prints."""
        return self.rank == 0

    @property
    def initialized(self) -> bool:
        """Whether a process group is in use (collectives talk to other processes)."""
        return self.backend is not None and dist.is_available() and dist.is_initialized()


def init_distributed(device_preference: str = "auto", timeout_minutes: float = 30.0,
                     command: str = "train") -> DistributedContext:
    """Join the process group described by torchrun's environment, or run as a single process.

    Under torchrun each process uses ``cuda:LOCAL_RANK`` (with backend nccl) when the device is
    CUDA, else the CPU (gloo). If a process group is already initialised it is reused.
    Raises :class:`LaunchError`, saying how to launch, when the environment is incomplete or
    inconsistent (``WORLD_SIZE`` set by hand, not by torchrun) or the group cannot be joined.
    """
    if dist.is_available() and dist.is_initialized():
        return _context_from_group(device_preference)
    world_size = _environment_number("WORLD_SIZE", command, "1")
    if world_size <= 1:
        device = choose_device(device_preference)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", _environment_number("LOCAL_RANK", command, "0"))
        return DistributedContext(0, 1, 0, device, None)
    missing = [name for name in ENV_VARIABLES if not os.environ.get(name)]
    if missing:
        raise LaunchError(f"WORLD_SIZE={world_size} is set but {', '.join(missing)} "
                          f"{'is' if len(missing) == 1 else 'are'} not: this is not a torchrun launch; "
                          f"{launch_hint(world_size, command)}")
    if not dist.is_available():
        raise LaunchError("torch.distributed is not available in this torch build; run a single process "
                          "(unset WORLD_SIZE)")
    rank, local_rank = _environment_number("RANK", command), _environment_number("LOCAL_RANK", command)
    _environment_number("MASTER_PORT", command)  # a port number: refused here rather than deep in torch
    if not (rank < world_size and local_rank <= rank):
        raise LaunchError(f"RANK={rank} and LOCAL_RANK={local_rank} do not fit WORLD_SIZE={world_size}; "
                          f"{launch_hint(world_size, command)}")
    device = _process_device(device_preference, local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    options: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
    try:
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world_size,
                                timeout=timedelta(minutes=timeout_minutes), **options)
    except (RuntimeError, ValueError) as exc:  # torch's DistError family subclasses RuntimeError
        where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
        reason = " ".join(str(exc).split())[:200]
        raise LaunchError(f"rank {rank} of {world_size} could not join the process group at {where} ({reason}); "
                          f"{launch_hint(world_size, command)}") from None
    return DistributedContext(rank, world_size, local_rank, device, backend)


def launch_hint(world_size: int | str = "N", command: str = "train") -> str:
    """How to start ``command`` (``train``, ``eval``, ``predict-batch``) data-parallel, or in a
    single process, for error messages."""
    if command == "train":
        return (f"start data-parallel training with 'torchrun --nproc_per_node={world_size} -m regionspot train "
                "CONFIG', which sets all of " + ", ".join(ENV_VARIABLES) + ", or unset WORLD_SIZE to train in one "
                "process")
    return (f"start a data-parallel {command} with 'torchrun --nproc_per_node={world_size} -m regionspot {command} "
            "...', which sets all of " + ", ".join(ENV_VARIABLES) + f", or unset WORLD_SIZE to {command} in one "
            "process")


def _environment_number(name: str, command: str, default: str | None = None) -> int:
    """The whole number >= 0 in environment variable ``name`` (``default`` when unset)."""
    text = os.environ.get(name) or default
    if text is None or not text.strip().isdigit():
        raise LaunchError(f"{name}={text!r} is not a whole number >= 0; {launch_hint(command=command)}")
    return int(text)


def _process_device(preference: str, local_rank: int) -> torch.device:
    device = choose_device(preference)
    if device.type != "cuda":
        return device
    if local_rank >= torch.cuda.device_count():
        raise LaunchError(f"LOCAL_RANK {local_rank} has no GPU: {torch.cuda.device_count()} visible; "
                          f"use --nproc_per_node <= the number of GPUs")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def _context_from_group(device_preference: str) -> DistributedContext:
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = str(dist.get_backend())
    device = _process_device(device_preference, local_rank)
    return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank, device, backend)


def all_reduce_sum(tensor: Tensor, ctx: DistributedContext) -> Tensor:
    """The element-wise sum of ``tensor`` over all processes, as a new tensor (the input is left
    unchanged). ``tensor`` must be on ``ctx.device`` under nccl. Single process: a copy."""
    result = tensor.detach().clone()
    if ctx.initialized and ctx.world_size > 1:
        dist.all_reduce(result, op=dist.ReduceOp.SUM)
    return result


def all_reduce_mean(tensor: Tensor, ctx: DistributedContext) -> Tensor:
    """The element-wise mean of ``tensor`` over all processes (floating point; integer inputs
    give float32). New tensor, input unchanged."""
    if not tensor.is_floating_point():
        tensor = tensor.float()
    return all_reduce_sum(tensor, ctx) / ctx.world_size


def broadcast_object(obj: Any, ctx: DistributedContext, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` (picklable) on every process. Single process: ``obj`` itself."""
    if not (ctx.initialized and ctx.world_size > 1):
        return obj
    box = [obj if ctx.rank == src else None]
    dist.broadcast_object_list(box, src=src, device=ctx.device if ctx.device.type == "cuda" else None)
    return box[0]


def all_gather_object(obj: Any, ctx: DistributedContext) -> list[Any]:
    """Every process's ``obj`` (picklable), in rank order. Single process: ``[obj]``."""
    if not (ctx.initialized and ctx.world_size > 1):
        return [obj]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier(ctx: DistributedContext) -> None:
    """Wait until every process gets here (no-op for a single process)."""
    if ctx.initialized and ctx.world_size > 1:
        if ctx.backend == "nccl":
            dist.barrier(device_ids=[ctx.device.index])
        else:
            dist.barrier()


def shutdown(ctx: DistributedContext) -> None:
    """Leave the process group (no-op for a single process or when already left)."""
    if ctx.initialized:
        dist.destroy_process_group()
