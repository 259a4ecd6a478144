"""Images split across ``torchrun`` processes.

Process ``rank`` of ``world_size`` takes items ``rank, rank + world_size, ...``; each item's
output is computed independently and written as it is made (the runs write them to per-process
shards, :mod:`regionspot.eval.output_shards`, which rank 0 reads back in item order: exactly
the outputs a single process makes). Without a process group everything runs in this process.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

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


def run_sharded(items: Sequence[Item], function: Callable[[list[Item], list[Any]], list[Output]],
                ctx: DistributedContext, *, write: Callable[[Output], None], load: Callable[[Item], Any],
                workers: int = 0, batch: int = 1, progress: bool = True, description: str = "images",
                skip: int = 0) -> int:
    """``function(items, [load(item) for item in items])`` (one output per item) over this
    process's share of the items (:func:`shard_indices`), given to ``function`` ``batch`` at a
    time, with ``load`` (an image's decoding) running ahead in ``workers`` background processes
    (see :func:`prefetched`); each output goes to ``write`` as soon as it is made, in item order
    (nothing is kept here: see :mod:`regionspot.eval.output_shards`). A tqdm bar with ETA is
    shown on rank 0 only, over its share. ``skip``: this process's first items are done already
    (a resumed run). Returns how many items this process handled."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    share = shard_indices(len(items), ctx.rank, ctx.world_size)
    mine = share[skip:]
    bar = tqdm(total=len(share), initial=len(share) - len(mine), desc=description, unit="image",
               disable=not (progress and ctx.is_main), dynamic_ncols=True)
    waiting: list[tuple[Item, Any]] = []
    for index, loaded in prefetched([items[index] for index in mine], load, workers):
        waiting.append((items[mine[index]], loaded))
        if len(waiting) == batch or index == len(mine) - 1:
            for output in function([item for item, _ in waiting], [value for _, value in waiting]):
                write(output)
            bar.update(len(waiting))
            waiting = []
    bar.close()
    return len(mine)


def world_description(ctx: DistributedContext) -> dict[str, Any]:
    """How the run was split, for a report."""
    return {"processes": ctx.world_size, "backend": ctx.backend, "device": str(ctx.device)}
