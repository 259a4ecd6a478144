"""Images split across ``torchrun`` processes and the per-image outputs merged on rank 0.

Process ``rank`` of ``world_size`` takes items ``rank, rank + world_size, ...``; each item's
output is computed independently, so gathering them back into item order gives rank 0 exactly
the list a single process makes. Without a process group everything runs in this process.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch.distributed as dist
from tqdm.auto import tqdm

from regionspot.prefetch import prefetched
from regionspot.processes import DistributedContext

Item = TypeVar("Item")
Output = TypeVar("Output")


def shard_indices(count: int, rank: int, world_size: int) -> list[int]:
    """The item indices process ``rank`` of ``world_size`` handles: ``rank::world_size``."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size}")
    return list(range(rank, count, world_size))


def interleave(shards: Sequence[Sequence[Output]]) -> list[Output]:
    """Per-rank outputs (rank r holds items r, r + W, ...) -> one list in item order."""
    world_size = len(shards)
    total = sum(len(shard) for shard in shards)
    merged = []
    for index in range(total):
        shard = shards[index % world_size]
        if index // world_size >= len(shard):
            raise ValueError(f"shard {index % world_size} has {len(shard)} outputs; item {index} is missing")
        merged.append(shard[index // world_size])
    return merged


def map_sharded(items: Sequence[Item], function: Callable[[list[Item], list[Any]], list[Output]],
                ctx: DistributedContext, *, load: Callable[[Item], Any], workers: int = 0, batch: int = 1,
                progress: bool = True, description: str = "images") -> list[Output] | None:
    """``function(items, [load(item) for item in items])`` (one output per item) over the items,
    split across processes and given to ``function`` ``batch`` at a time, with ``load`` (an
    image's decoding) running ahead in ``workers`` background processes (see :func:`prefetched`).
    Returns the outputs in item order on rank 0 and None on the other ranks. Every process must
    call it (it ends with a collective). A tqdm bar with ETA is shown on rank 0 only, over its share."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    mine = shard_indices(len(items), ctx.rank, ctx.world_size)
    outputs: list[Output] = []
    bar = tqdm(total=len(mine), desc=description, unit="image", disable=not (progress and ctx.is_main),
               dynamic_ncols=True)
    waiting: list[tuple[Item, Any]] = []
    for index, loaded in prefetched([items[index] for index in mine], load, workers):
        waiting.append((items[mine[index]], loaded))
        if len(waiting) == batch or index == len(mine) - 1:
            outputs += function([item for item, _ in waiting], [value for _, value in waiting])
            bar.update(len(waiting))
            waiting = []
    bar.close()
    gathered = gather_to_main(outputs, ctx)
    return interleave(gathered) if gathered is not None else None


def gather_to_main(obj: Any, ctx: DistributedContext) -> list[Any] | None:
    """Every process's ``obj`` (picklable) in rank order on rank 0, None elsewhere (only rank 0
    holds them all). Single process: ``[obj]``."""
    if not (ctx.initialized and ctx.world_size > 1):
        return [obj]
    gathered: list[Any] | None = [None] * ctx.world_size if ctx.is_main else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def world_description(ctx: DistributedContext) -> dict[str, Any]:
    """How the run was split, for a report."""
    return {"processes": ctx.world_size, "backend": ctx.backend, "device": str(ctx.device)}
