"""Per-process output shards: the way an evaluation or a batch prediction gets its outputs to
rank 0 without holding them all at once.

Each process appends every image's output (its COCO detections, box counts, seconds and, for
``predict-batch``, its JSON document) to its own JSON-lines file as it goes, one line per image
(``outputs.rank-<r>-of-<w>.jsonl``). Rank 0 then reads the files back image by image in item
order (item ``i`` is line ``i // w`` of rank ``i % w``'s file, see
:func:`~regionspot.eval.sharding.shard_indices`), so no process holds more than one image's
outputs at a time, however large the dataset. The folder is made by rank 0 and its path sent to
the others: a folder under ``--out`` when the run has one (on several machines it must be a
filesystem they share), else a temporary folder (one machine only). Rank 0 removes it at the end.

Lines are ``json.dumps`` of Python floats, which read back to the same bits, so a run through
shards gives exactly the numbers of a run held in memory.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np
import torch.distributed as dist

from regionspot.eval.image_run import ImageOutput
from regionspot.processes import DistributedContext
from regionspot.results import RegionResult

#: An example image's picture: (the image HxWx3 uint8, its best regions, how many regions it had).
Picture = tuple[np.ndarray, RegionResult, int]
SHARD_NAME = "outputs.rank-{rank}-of-{world}.jsonl"
FOLDER_PREFIX = "regionspot-shards-"


class ShardError(RuntimeError):
    """An output shard is missing or shorter than the items its process was given."""


def shard_path(folder: Path, rank: int, world_size: int) -> Path:
    return folder / SHARD_NAME.format(rank=rank, world=world_size)


def output_record(output: ImageOutput) -> dict[str, Any]:
    """One image's output as a JSON object (its ``example``, a picture, stays with the process)."""
    return {"image_id": output.image_id, "boxes": output.boxes, "skipped_boxes": output.skipped_boxes,
            "seconds": output.seconds, "detections": output.detections, "document": output.document}


def output_from_record(record: dict[str, Any]) -> ImageOutput:
    return ImageOutput(image_id=record["image_id"], detections=record["detections"], boxes=record["boxes"],
                       skipped_boxes=record["skipped_boxes"], seconds=record["seconds"], document=record["document"])


class ShardWriter:
    """This process's shard: :meth:`write` appends one image's output (and keeps its example
    picture, if any, in :attr:`examples` for :func:`gather_examples`). A context manager."""

    def __init__(self, folder: Path, ctx: DistributedContext) -> None:
        self.path = shard_path(folder, ctx.rank, ctx.world_size)
        self.examples: dict[int, Picture] = {}
        self.written = 0
        self._file: IO[str] = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 (closed by close())

    def write(self, output: ImageOutput) -> None:
        self._file.write(json.dumps(output_record(output)) + "\n")
        self._file.flush()  # rank 0 reads it as soon as every process is done
        self.written += 1
        if output.example is not None:
            self.examples[output.image_id] = (*output.example, output.boxes)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


def read_outputs(folder: Path, world_size: int, count: int) -> Iterator[ImageOutput]:
    """The ``count`` items' outputs in item order, read one line at a time from the shards of
    ``world_size`` processes. ShardError when a shard is missing or ends early."""
    used = min(world_size, count)
    paths = [shard_path(folder, rank, world_size) for rank in range(used)]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise ShardError(f"output shard(s) {', '.join(missing)} not found: the processes of a run on several machines "
                         "need --out on a filesystem they all share")
    files = [open(path, encoding="utf-8") for path in paths]  # noqa: SIM115 (closed below)
    try:
        for index in range(count):
            line = files[index % used].readline()
            if not line.endswith("\n"):
                raise ShardError(f"{paths[index % used]} ends after {index // used} images; item {index} is missing")
            yield output_from_record(json.loads(line))
    finally:
        for handle in files:
            handle.close()


@contextmanager
def shard_folder(ctx: DistributedContext, near: Path | None = None) -> Iterator[Path]:
    """A new folder every process writes its shard into: under ``near`` (made if missing) when
    given, else in the system's temporary folder. Rank 0 makes it, sends its path to the other
    processes and removes it on the way out."""
    path = ""
    if ctx.is_main:
        if near is not None:
            near.mkdir(parents=True, exist_ok=True)
        path = tempfile.mkdtemp(prefix=FOLDER_PREFIX, dir=near)
    if ctx.initialized and ctx.world_size > 1:
        holder = [path]
        dist.broadcast_object_list(holder, src=0)
        path = str(holder[0])
    try:
        yield Path(path)
    finally:
        if ctx.is_main:
            shutil.rmtree(path, ignore_errors=True)


def gather_examples(examples: dict[int, Picture], ctx: DistributedContext) -> dict[int, Picture] | None:
    """Every process's example pictures (a few images) on rank 0, None elsewhere. Every process
    must call it; it also makes sure that every process has written its whole shard."""
    if not (ctx.initialized and ctx.world_size > 1):
        return examples
    gathered: list[Any] | None = [None] * ctx.world_size if ctx.is_main else None
    dist.gather_object(examples, gathered, dst=0)
    return {key: value for part in gathered for key, value in part.items()} if gathered is not None else None
