"""Per-process output shards: the way an evaluation or a batch prediction gets its outputs to
rank 0 without holding them all at once.

Each process appends every image's output (its COCO detections, box counts, seconds and, for
``predict-batch``, its JSON document) to its own JSON-lines file as it goes, one line per image
(``outputs.rank-<r>-of-<w>.jsonl``). Rank 0 then reads the files back image by image in item
order (item ``i`` is line ``i // w`` of rank ``i % w``'s file, see
:func:`~regionspot.eval.sharding.shard_indices`), so no process holds more than one image's
outputs at a time, however large the dataset. The folder is made by rank 0 and its path sent to
the others: ``shards/`` in ``eval``'s ``--out`` folder, or ``OUT.shards/`` beside
``predict-batch``'s ``--out`` file (on several machines it must be on a filesystem they share),
else a temporary folder (one machine only). Rank 0 removes it when the run succeeds.

A run that stops (killed, Ctrl-C, a failure) leaves that folder in place: started again with
the same command (the same model weights, settings, images and number of processes: each shard's
first line holds a fingerprint of them), every process keeps the images its shard holds and goes
on from the first one missing. A shard of another run is started afresh.

Lines are ``json.dumps`` of Python floats, which read back to the same bits, so a run through
shards gives exactly the numbers of a run held in memory.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np
import torch.distributed as dist

from regionspot.config import ConfigError
from regionspot.eval.config import EvalConfig
from regionspot.eval.image_run import (
    ImageOutput,
    RunSetup,
    image_batch,
    image_workers,
    load_job_image,
    process_images,
)
from regionspot.eval.jobs import ImageJob
from regionspot.eval.sharding import run_sharded
from regionspot.fileio import atomic_text_file, atomic_write_bytes, remove_stale_temporaries, write_failure
from regionspot.processes import DistributedContext, all_gather_object
from regionspot.results import RegionResult

#: An example image's picture: (the image HxWx3 uint8, its best regions, how many regions it had).
Picture = tuple[np.ndarray, RegionResult, int]
SHARD_NAME = "outputs.rank-{rank}-of-{world}.jsonl"
EXAMPLE_NAME = "example.rank-{rank}-of-{world}.{image_id}.npz"
FOLDER_PREFIX = "regionspot-shards-"


class ShardError(ConfigError):
    """An output shard cannot be written, or is missing or shorter than the items its process
    was given (a run on several machines whose ``--out`` they do not share)."""


def shard_path(folder: Path, rank: int, world_size: int) -> Path:
    return folder / SHARD_NAME.format(rank=rank, world=world_size)


def output_record(output: ImageOutput) -> dict[str, Any]:
    """One image's output as a JSON object (its ``example``, a picture, stays with the process).
    A box's mask RLE, which its (box, category) pairs share, is written once (``masks``) and
    each detection names it by index."""
    masks: list[Any] = []
    index: dict[int, int] = {}
    detections = []
    for detection in output.detections:
        if "segmentation" in detection:
            rle = detection["segmentation"]
            if id(rle) not in index:
                index[id(rle)] = len(masks)
                masks.append(rle)
            detection = {**detection, "segmentation": index[id(rle)]}
        detections.append(detection)
    return {"image_id": output.image_id, "boxes": output.boxes, "skipped_boxes": output.skipped_boxes,
            "seconds": output.seconds, "detections": detections, "masks": masks, "document": output.document}


def output_from_record(record: dict[str, Any]) -> ImageOutput:
    """:func:`output_record` read back (pairs of one box share its RLE again)."""
    masks = record["masks"]
    detections = [{**detection, "segmentation": masks[detection["segmentation"]]} if "segmentation" in detection
                  else detection for detection in record["detections"]]
    return ImageOutput(image_id=record["image_id"], detections=detections, boxes=record["boxes"],
                       skipped_boxes=record["skipped_boxes"], seconds=record["seconds"], document=record["document"])


class ShardWriter:
    """This process's shard: :meth:`write` appends one image's output (and keeps its example
    picture, if any, in :attr:`examples` for :func:`gather_examples`). With a ``fingerprint``
    (see :func:`run_fingerprint`), a shard that an earlier run of the same fingerprint left is
    continued: :attr:`resumed` of this process's images are in it already (and their pictures
    in :attr:`examples`; a multiple of ``multiple``, the images run together, so that the rest
    are batched as in a run that never stopped), and a line cut short by a kill is dropped. A
    context manager; a write the disk refuses is a ShardError naming the file."""

    def __init__(self, folder: Path, ctx: DistributedContext, fingerprint: str | None = None, *,
                 multiple: int = 1) -> None:
        self.path = shard_path(folder, ctx.rank, ctx.world_size)
        self.folder, self.rank, self.world_size = folder, ctx.rank, ctx.world_size
        self.examples: dict[int, Picture] = {}
        self.resumed = resumable_lines(self.path, fingerprint, multiple) if fingerprint is not None else 0
        with writing(self.path):
            self._open(fingerprint)
        self.written = self.resumed

    def _open(self, fingerprint: str | None) -> None:
        """Append to the shard being continued (and read back its pictures), or start it afresh."""
        pictures = self.folder.glob(EXAMPLE_NAME.format(rank=self.rank, world=self.world_size, image_id="*"))
        if self.resumed:
            self._file: IO[str] = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())
            for picture in pictures:
                self.examples[int(picture.name.split(".")[-2])] = read_picture(picture)
        else:
            for picture in pictures:  # another run's
                picture.unlink()
            self._file = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 (closed by close())
            self._file.write(json.dumps({"fingerprint": fingerprint}) + "\n")

    def write(self, output: ImageOutput) -> None:
        """Append ``output`` (ShardError when the disk refuses, naming the file and what to do)."""
        if output.example is not None:
            picture = (*output.example, output.boxes)
            self.examples[output.image_id] = picture
            path = self.folder / EXAMPLE_NAME.format(rank=self.rank, world=self.world_size, image_id=output.image_id)
            with writing(path):
                write_picture(path, picture)
        with writing(self.path):
            self._file.write(json.dumps(output_record(output)) + "\n")
            self._file.flush()  # rank 0 reads it as soon as every process is done
        self.written += 1

    def close(self) -> None:
        with writing(self.path):
            self._file.close()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if error is None:
            self.close()
            return
        with suppress(ShardError):  # the error on its way out says what went wrong first
            self.close()


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """An OSError while writing ``path`` becomes a ShardError saying what failed and what to do."""
    try:
        yield
    except OSError as exc:
        raise ShardError(write_failure(path, exc)) from None


@contextmanager
def json_list_file(path: Path, *, indent: int | None = None, end: str = "]") -> Iterator[Callable[[Any], None]]:
    """A JSON list written to ``path`` one element at a time: yields ``append(value)``. The file
    is made atomically (in place only once the block ends; a killed run's leftover temporary is
    cleared first); a write the disk refuses is a ShardError. Elements are separated by ", "
    (``indent`` None) or ",\n" with ``indent``; ``end`` closes the list."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent, [path.name])
    separator = ", " if indent is None else ",\n"
    with writing(path), atomic_text_file(path) as handle:
        handle.write("[")
        written = [0]

        def append(value: Any) -> None:
            handle.write((separator if written[0] else "") + json.dumps(value, indent=indent))
            written[0] += 1

        yield append
        handle.write(end)


def write_picture(path: Path, picture: Picture) -> None:
    """An example picture as a numpy ``.npz`` (no pickles), for a resumed run to draw."""
    image, result, boxes = picture
    arrays = {"image": image, "boxes": result.boxes, "topk_ids": result.topk_ids, "topk_scores": result.topk_scores,
              "vocabulary": np.array(result.vocabulary, dtype=str), "image_size": np.array(result.image_size),
              "regions": np.array(boxes)}
    arrays.update({name: value for name, value in (("masks", result.masks), ("mask_scores", result.mask_scores))
                   if value is not None})
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]  # numpy types **kwds as if one could be allow_pickle
    atomic_write_bytes(path, buffer.getvalue())  # whole or absent, whenever the run is killed


def read_picture(path: Path) -> Picture:
    with np.load(path, allow_pickle=False) as saved:
        result = RegionResult(boxes=saved["boxes"], topk_ids=saved["topk_ids"], topk_scores=saved["topk_scores"],
                              vocabulary=saved["vocabulary"].tolist(), image_size=tuple(saved["image_size"].tolist()),
                              masks=saved.get("masks"),
                              mask_scores=saved.get("mask_scores"))
        return saved["image"], result, int(saved["regions"])


def resumable_lines(path: Path, fingerprint: str, multiple: int = 1) -> int:
    """How many images an earlier run's shard at ``path`` holds, rounded down to a multiple of
    ``multiple``, when its first line is whole and carries ``fingerprint`` (0 when missing, of
    another run, or unreadable); the file is cut after them (a line cut short by a kill goes too)."""
    try:
        with open(path, "rb") as handle:
            header = handle.readline()
            if not header.endswith(b"\n") or json.loads(header).get("fingerprint") != fingerprint:
                return 0
            ends = [handle.tell()]
            for line in handle:
                if not line.endswith(b"\n"):
                    break
                ends.append(ends[-1] + len(line))
    except (OSError, ValueError, AttributeError):
        return 0
    count = (len(ends) - 1) // multiple * multiple
    with writing(path), open(path, "r+b") as handle:
        handle.truncate(ends[count])
    return count


def run_fingerprint(config: EvalConfig, jobs: list[ImageJob], vocabulary: list[str], category_ids: list[int],
                    model: object, world_size: int, **settings: Any) -> str | None:
    """sha256 of what decides a run's outputs: its settings (``config`` but the number of
    decoding workers, and ``settings``), the vocabulary and category ids, every image (id, file,
    size, and its file's bytes count and modification time), the bytes of the annotation and
    proposal files, the model's weights (every parameter and buffer) and the number of
    processes. None for a model that is not an ``nn.Module`` (its weights cannot be read here):
    such a run is not resumed."""
    import torch

    from regionspot.cache.token_cache import tensors_fingerprint
    from regionspot.config import to_dict
    from regionspot.fileio import file_sha256

    if not isinstance(model, torch.nn.Module):
        return None
    files = [config.annotations, config.boxes if config.boxes not in ("gt", "auto") else None]
    described = {
        "config": {k: v for k, v in to_dict(config).items() if k != "image_workers"}, "settings": settings,
        "vocabulary": vocabulary, "category_ids": category_ids, "processes": world_size,
        "files": {str(path): file_sha256(Path(path)) for path in files if path and Path(path).is_file()},
        "images": [[job.image_id, job.file_name, job.height, job.width, *_file_stamp(job.path)] for job in jobs]}
    digest = hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode())
    digest.update(tensors_fingerprint(model, {}).encode())
    return digest.hexdigest()


def _file_stamp(path: Path) -> tuple[int, int]:
    """(bytes, modification time in ns) of a file; (-1, -1) when it cannot be read."""
    try:
        status = path.stat()
    except OSError:
        return -1, -1
    return status.st_size, status.st_mtime_ns


def read_outputs(folder: Path, world_size: int, count: int, fingerprint: str | None = None) -> Iterator[ImageOutput]:
    """The ``count`` items' outputs in item order, read one line at a time from the shards of
    ``world_size`` processes. ShardError when a shard is missing, is another run's (its first
    line does not carry ``fingerprint``) or ends early."""
    used = min(world_size, count)
    paths = [shard_path(folder, rank, world_size) for rank in range(used)]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise ShardError(f"output shard(s) {', '.join(missing)} not found: the processes of a run on several machines "
                         "need --out on a filesystem they all share")
    files = [open(path, encoding="utf-8") for path in paths]  # noqa: SIM115 (closed below)
    try:
        for path, handle in zip(paths, files, strict=True):
            try:
                header = json.loads(handle.readline())["fingerprint"]
            except (ValueError, KeyError, TypeError):
                header = "unreadable"
            if header != fingerprint:
                raise ShardError(f"{path} holds another run's outputs: the processes of a run on several machines "
                                 "need --out on a filesystem they all share")
        for index in range(count):
            line = files[index % used].readline()
            if not line.endswith("\n"):
                raise ShardError(f"{paths[index % used]} ends after {index // used} images; item {index} is missing")
            yield output_from_record(json.loads(line))
    finally:
        for handle in files:
            handle.close()


@contextmanager
def shard_folder(ctx: DistributedContext, resumable: Path | None = None) -> Iterator[Path]:
    """The folder every process writes its shard into: ``resumable`` when given (made if missing;
    left in place when the block raises, so that the run started again continues from it), else
    a new temporary folder. Rank 0 makes it, sends its path to the other processes and removes
    it when the block ends (``resumable`` only when the block ends without an error)."""
    path, problem = "", ""
    if ctx.is_main:
        try:
            with writing(resumable or Path(tempfile.gettempdir())):
                if resumable is not None:
                    resumable.mkdir(parents=True, exist_ok=True)
                path = str(resumable) if resumable is not None else tempfile.mkdtemp(prefix=FOLDER_PREFIX)
        except ShardError as exc:
            problem = str(exc)
    if ctx.initialized and ctx.world_size > 1:
        holder = [path, problem]
        dist.broadcast_object_list(holder, src=0)  # every process learns the folder, or why there is none
        path, problem = str(holder[0]), str(holder[1])
    if problem:
        raise ShardError(problem)
    failed = False
    try:
        yield Path(path)
    except BaseException:
        failed = True
        raise
    finally:
        if ctx.is_main and resumable is None:
            shutil.rmtree(path, ignore_errors=True)
        elif ctx.is_main and not failed:
            remove_shards(Path(path))


def predict_into_shards(folder: Path, jobs: list[ImageJob], setup: RunSetup, config: EvalConfig,
                        ctx: DistributedContext, *, fingerprint: str | None, progress: bool,
                        description: str) -> dict[int, Picture] | None:
    """This process's share of ``jobs`` through :func:`~regionspot.eval.image_run.process_images`,
    each image's output written to its shard in ``folder`` as it is made. With a ``fingerprint``
    (:func:`run_fingerprint`), a shard a stopped run of the same fingerprint left is continued.
    Returns every process's example pictures on rank 0 (once every shard is whole), None elsewhere."""
    batch = image_batch(config, ctx.device)
    try:
        with ShardWriter(folder, ctx, fingerprint, multiple=batch) as writer:
            if writer.resumed and ctx.is_main:
                print(f"continuing the run stopped in {folder}: {writer.resumed} of this process's images are done")
            run_sharded(jobs, partial(process_images, setup=setup), ctx, write=writer.write, load=load_job_image,
                        workers=image_workers(config, ctx.device), batch=batch, progress=progress,
                        description=description, skip=writer.resumed)
    except Exception as exc:  # the other processes must hear of it, not wait for this one until the timeout
        share_failure(f"process {ctx.rank} of {ctx.world_size} failed: {exc}", ctx)
        raise
    share_failure("", ctx)
    return gather_examples(writer.examples, ctx)


def share_failure(failure: str, ctx: DistributedContext) -> None:
    """Every process says whether it failed (``failure``: what went wrong, "" when it did not);
    a process that did not fail raises ShardError with the first failure another one reports. A
    no-op for a single process. Every process must call it once."""
    others = [str(report) for report in all_gather_object(failure, ctx) if report]
    if others and not failure:
        raise ShardError(others[0])


def remove_shards(folder: Path) -> None:
    """Delete the shards, pictures and temporary files runs write in ``folder``, then the folder
    when nothing else is in it (what a user put there stays)."""
    for pattern in ("outputs.rank-*-of-*.jsonl", "example.rank-*-of-*.npz", ".example.rank-*.tmp"):
        for path in folder.glob(pattern):
            with suppress(OSError):
                path.unlink()
    with suppress(OSError):
        folder.rmdir()


def gather_examples(examples: dict[int, Picture], ctx: DistributedContext) -> dict[int, Picture] | None:
    """Every process's example pictures (a few images) on rank 0, None elsewhere. Every process
    must call it; it also makes sure that every process has written its whole shard."""
    if not (ctx.initialized and ctx.world_size > 1):
        return examples
    gathered: list[Any] | None = [None] * ctx.world_size if ctx.is_main else None
    dist.gather_object(examples, gathered, dst=0)
    return {key: value for part in gathered for key, value in part.items()} if gathered is not None else None
