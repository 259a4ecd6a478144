"""A cache filled by several processes or machines at once: ``--part i/n`` or ``torchrun``.

Part ``i`` of ``n`` (1-based on the command line) fills shards ``k`` with ``k % n == i - 1``: a
fixed assignment, so every part knows its share without talking to the others, and a part run
again after a kill redoes only its own unfinished shards. Each part keeps its own manifest
(``manifest.part-i-of-n.json``) and removes only its own temporary files, so parts never write
the same file. Shards hold the same bytes whichever process made them. When a part ends, it
merges the parts' manifests; the part that finds every shard finished writes ``manifest.json``,
the one index readers use (each part writes its shards before it looks, so the last part to end
always sees them all). Under ``torchrun`` each rank is one part (``RANK`` of ``WORLD_SIZE``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regionspot.cache.shards import (
    MANIFEST,
    CacheError,
    ShardWriter,
    open_for_writing,
    read_manifest,
    write_manifest,
)
from regionspot.config import ConfigError


@dataclass(frozen=True)
class Part:
    """Part ``index`` (0-based) of ``count``."""

    index: int
    count: int

    def owns(self, shard: int) -> bool:
        return shard % self.count == self.index

    @property
    def label(self) -> str:
        """``i/n``, 1-based, as given on the command line."""
        return f"{self.index + 1}/{self.count}"

    @property
    def manifest_name(self) -> str:
        return f"manifest.part-{self.index + 1}-of-{self.count}.json"


def parse_part(text: str) -> Part:
    """``"i/n"`` (1 <= i <= n) -> :class:`Part`; ConfigError otherwise."""
    try:
        index, count = (int(value) for value in text.split("/"))
    except ValueError:
        raise ConfigError(f"--part must be i/n, e.g. 3/64, got {text!r}") from None
    if not 1 <= index <= count:
        raise ConfigError(f"--part {text}: i must be between 1 and n")
    return Part(index - 1, count)


def part_from_environment() -> Part | None:
    """This process's part under ``torchrun`` (``RANK`` of ``WORLD_SIZE`` > 1), else None."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return Part(int(os.environ.get("RANK", "0")), world) if world > 1 else None


def merge_parts(folder: Path, part: Part) -> list[int]:
    """Union of ``manifest.json`` (if any) and every part manifest of this split in ``folder``;
    when it covers every shard, write it as ``manifest.json``. Returns the shards still missing
    (empty: the cache is whole)."""
    names = [Part(index, part.count).manifest_name for index in range(part.count)]
    manifests = [read_manifest(folder, name) for name in [MANIFEST, *names] if (folder / name).is_file()]
    if not manifests:
        raise CacheError(f"{folder} holds no manifest of this run")
    merged: dict[str, Any] = {**manifests[-1], "shards": {}}
    for manifest in manifests:
        if (manifest["meta"], manifest["num_shards"], manifest["shard_size"]) != (
                merged["meta"], merged["num_shards"], merged["shard_size"]):
            raise CacheError(f"{folder} holds parts made with other settings; give each run its own folder")
        merged["shards"].update(manifest["shards"])
    missing = [index for index in range(int(merged["num_shards"])) if str(index) not in merged["shards"]]
    if not missing:
        write_manifest(folder, merged)
    return missing


def finished_in_job(folder: Path, part: Part) -> int:
    """How many shards the parts of this split have finished so far, as their manifests say (the
    union of every part manifest and ``manifest.json``); a manifest that cannot be read right now
    is left out of this count."""
    finished: set[str] = set()
    for name in [MANIFEST, *(Part(index, part.count).manifest_name for index in range(part.count))]:
        if (folder / name).is_file():
            try:
                finished.update(read_manifest(folder, name)["shards"])
            except (CacheError, KeyError, TypeError):
                continue
    return len(finished)


def job_eta_text(folder: Path, part: Part, num_shards: int, at_start: int, seconds: float) -> str:
    """The whole split job's progress for a progress bar: ``job 37/640 shards, ETA 3:12:05``, the
    ETA from the rate at which all parts together finished shards since this part began
    (``at_start`` of them then, ``seconds`` ago)."""
    done = finished_in_job(folder, part)
    text = f"job {done}/{num_shards} shards"
    if done > at_start and seconds > 0 and done < num_shards:
        remaining = (num_shards - done) * seconds / (done - at_start)
        hours, rest = divmod(int(remaining), 3600)
        text += f", ETA {hours}:{rest // 60:02d}:{rest % 60:02d}"
    return text


def open_part_for_writing(folder: Path, meta: dict[str, Any], *, num_shards: int, shard_size: int,
                          ignore: Sequence[str], part: Part) -> ShardWriter:
    """:func:`~regionspot.cache.shards.open_for_writing` for one part: its own manifest, its own
    shards; shards of its share that a whole-cache ``manifest.json`` already lists (an earlier
    run in one process) count as finished."""
    writer = open_for_writing(folder, meta, num_shards=num_shards, shard_size=shard_size, ignore=ignore,
                              manifest_name=part.manifest_name, owned=part.owns)
    if (folder / MANIFEST).is_file():
        whole = read_manifest(folder)
        if (whole["num_shards"], whole["shard_size"]) == (num_shards, shard_size):
            for key, entry in whole["shards"].items():
                if part.owns(int(key)) and key not in writer.manifest["shards"] and (folder / entry["file"]).is_file():
                    writer.manifest["shards"][key] = entry
    return writer
