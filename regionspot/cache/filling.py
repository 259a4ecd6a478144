"""Filling a cache's shards: all of them, or one part's share when the work is split across
processes or machines (:mod:`regionspot.cache.parts`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import torch

from regionspot.cache.parts import Part, finished_in_job, job_eta_text, merge_parts, open_part_for_writing
from regionspot.cache.shards import MANIFEST, ShardReader, ShardWriter, open_for_writing

T = TypeVar("T")
JOB_STATUS_EVERY_S = 10.0  # at most this often a part reads the other parts' manifests for the job's progress


@dataclass
class FillStats:
    """What one :func:`fill_shards` call did. ``stopped``: it ended early (``stop_after_shards``)."""

    shards_total: int = 0
    shards_skipped: int = 0
    shards_computed: int = 0
    images_computed: int = 0
    seconds: float = 0.0
    stopped: bool = False
    #: With a part of a split run: the cache's shards no part has finished yet (empty: whole).
    missing_after_merge: list[int] = field(default_factory=list)

    @property
    def shards_done(self) -> int:
        return self.shards_skipped + self.shards_computed


def fill_shards(writer: ShardWriter, items: Sequence[T], image_id: Callable[[T], int],
                compute: Callable[[Sequence[T], Callable[[], None]], Mapping[str, torch.Tensor]], *,
                progress: bool = True, desc: str = "extract", stop_after_shards: int | None = None,
                job_status: Callable[[float], str] | None = None) -> FillStats:
    """Compute every unfinished shard of ``writer`` (that it owns: a part's share of a split run):
    shard k holds ``items[k*S:(k+1)*S]`` (S = the manifest's shard size).
    ``compute(items_of_shard, tick)`` returns the shard's tensors and calls ``tick()`` once per
    item (progress bar over items, with ETA). ``job_status(seconds since start)``: the whole
    split job's progress, shown beside the bar after a shard (at most every
    ``JOB_STATUS_EVERY_S``; never with the bar off). Stops after
    ``stop_after_shards`` newly computed shards when given (tests simulate interruptions so)."""
    from tqdm.auto import tqdm

    size = int(writer.manifest["shard_size"])
    mine = [index for index in range(writer.num_shards) if writer.owned(index)]  # all, or a part's share
    done = writer.finished() & set(mine)
    stats = FillStats(shards_total=len(mine), shards_skipped=len(done))
    start = time.perf_counter()
    total_items = sum(len(items[i * size:(i + 1) * size]) for i in mine)
    skipped_items = sum(len(items[i * size:(i + 1) * size]) for i in done)
    looked = -float("inf")  # when the job's progress was last looked up
    with tqdm(total=total_items, initial=skipped_items, desc=desc, unit="img", disable=not progress,
              dynamic_ncols=True) as bar:

        def advance() -> None:
            bar.update(1)

        for index in mine:
            if index in done:
                continue
            if stop_after_shards is not None and stats.shards_computed >= stop_after_shards:
                stats.stopped = True
                break
            chunk = items[index * size:(index + 1) * size]
            tensors = compute(chunk, advance)
            writer.write(index, tensors, [image_id(item) for item in chunk])
            if job_status is not None and progress and time.perf_counter() - looked >= JOB_STATUS_EVERY_S:
                bar.set_postfix_str(job_status(time.perf_counter() - start))  # reads every part's manifest
                looked = time.perf_counter()
            stats.shards_computed += 1
            stats.images_computed += len(chunk)
    stats.seconds = time.perf_counter() - start
    return stats


def plan_shards(num_items: int, shard_size: int) -> int:
    """Number of shards for ``num_items`` items, ``shard_size`` (>= 1) per shard."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard_size}")
    return (num_items + shard_size - 1) // shard_size


def fill_cache(folder: Path, meta: Mapping[str, Any], items: Sequence[T], image_id: Callable[[T], int],
               compute: Callable[[Sequence[T], Callable[[], None]], Mapping[str, torch.Tensor]], *, shard_size: int,
               ignore: Sequence[str], part: Part | None, progress: bool, desc: str,
               stop_after_shards: int | None) -> tuple[ShardReader, FillStats]:
    """Fill (or resume) the cache ``folder``: every shard, or with ``part`` that part's share, then
    merge the parts (:mod:`regionspot.cache.parts`). Returns a reader of the whole cache (of the
    part's own shards while other parts are unfinished) and what this call did."""
    num_shards = plan_shards(len(items), shard_size)
    job_status: Callable[[float], str] | None = None  # a split job's progress over all its parts
    if part is None:
        writer = open_for_writing(folder, meta, num_shards=num_shards, shard_size=shard_size, ignore=ignore)
    else:
        writer = open_part_for_writing(folder, dict(meta), num_shards=num_shards, shard_size=shard_size,
                                       ignore=ignore, part=part)
        desc = f"{desc} part {part.label}"
        at_start = finished_in_job(folder, part)
        job_status = partial(job_eta_text, folder, part, num_shards, at_start)
    stats = fill_shards(writer, items, image_id, compute, progress=progress, desc=desc,
                        stop_after_shards=stop_after_shards, job_status=job_status)
    manifest_name = MANIFEST
    if part is not None:
        stats.missing_after_merge = merge_parts(folder, part)
        manifest_name = part.manifest_name if stats.missing_after_merge else MANIFEST
    return ShardReader(folder, manifest_name=manifest_name), stats
