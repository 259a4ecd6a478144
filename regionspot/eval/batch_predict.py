"""Batch prediction: the evaluation runner without the evaluation, over a folder of images or a
COCO/LVIS annotation's images, split across processes under ``torchrun`` like an evaluation.

Each process writes its images' outputs to its own shard as it goes and rank 0 writes the output
from the shards one image at a time (:mod:`regionspot.eval.output_shards`), so no process holds
the whole output. Output, written by rank 0: ``coco`` - one COCO results list (each image's best
``protocol.pairs_per_image`` (box, category) pairs, as an evaluation keeps them, ready for
``regionspot eval --detections``); ``json`` - one document per image, ``regionspot predict``'s
(boxes xyxy, top-k names and scores per box, SAM masks as RLE with masks on) plus the image id
and file and each box's proposal score.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from regionspot.config import ConfigError
from regionspot.datasets.coco_format import dataset_vocabulary, read_annotations
from regionspot.eval.config import EvalConfig, Method, check_eval_config
from regionspot.eval.image_run import (
    ImageOutput,
    RunTally,
    build_setup,
    load_for_run,
    single_process,
)
from regionspot.eval.jobs import (
    BoxSource,
    ImageJob,
    dataset_jobs,
    default_image_folder,
    folder_jobs,
)
from regionspot.eval.output_shards import (
    json_list_file,
    predict_into_shards,
    read_outputs,
    run_fingerprint,
    shard_folder,
)
from regionspot.eval.protocol import category_index
from regionspot.processes import DistributedContext
from regionspot.vocab import (
    BUILTIN_VOCABULARIES,
    builtin_category_ids,
    parse_vocabulary,
    validate_vocabulary,
)

if TYPE_CHECKING:
    from regionspot.model.loader import Model

OUTPUT_FORMATS = ("coco", "json")


def prediction_inputs(config: EvalConfig) -> tuple[list[ImageJob], list[str], list[int]]:
    """(images, vocabulary, category id of each name). With an annotation and no vocabulary: its
    categories (names cleaned, ids its own). Otherwise ``config.vocabulary``: built-in
    vocabularies keep their dataset ids (COCO's 1..90), other names get index + 1."""
    if config.annotations is not None:
        path = Path(config.annotations)
        document = read_annotations(path)
        jobs = dataset_jobs(document, default_image_folder(path, config.images), config.max_images)
        if config.vocabulary is None:
            categories = sorted(document["categories"], key=lambda category: int(category["id"]))
            return jobs, dataset_vocabulary(categories, None, str(path)), category_index(categories)
    elif config.images is None:
        raise ConfigError("give the images: --images DIR (a folder) or --data ANN.json (a COCO/LVIS annotation)")
    else:
        jobs = folder_jobs(Path(config.images), config.max_images)
    if config.vocabulary is None:
        raise ConfigError("a folder of images has no categories: give --vocab (names, a file, or lvis|coco|objects365)")
    names = validate_vocabulary(parse_vocabulary(config.vocabulary))
    key = config.vocabulary.strip().casefold()
    ids = builtin_category_ids(key) if key in BUILTIN_VOCABULARIES else list(range(1, len(names) + 1))
    return jobs, names, ids


@dataclass
class BatchSummary:
    """What a batch prediction wrote: ``path``; ``written`` (COCO pairs or documents' regions in
    the file) of ``total`` (before ``min_score``); the run's totals (``tally``)."""

    path: Path
    written: int
    total: int
    tally: RunTally


def run_batch_prediction(config: EvalConfig, out: Path, *, output_format: str = "coco",
                         ctx: DistributedContext | None = None, model: Model | None = None,
                         progress: bool = True, min_score: float | None = None) -> BatchSummary | None:
    """Predict over the images (split across processes, each writing its outputs to its own
    shard as it goes) and write ``out`` (JSON) on rank 0, streamed from the shards one image at
    a time, without what scores under ``min_score`` (see :func:`drop_low_scores`) when given.
    Returns what was written on rank 0, None elsewhere."""
    if output_format not in OUTPUT_FORMATS:
        raise ConfigError(f"output format {output_format!r} is not one of {list(OUTPUT_FORMATS)}")
    config = check_eval_config(config)
    ctx = ctx or single_process()
    started = time.perf_counter()
    jobs, names, category_ids = prediction_inputs(config)
    box_source = BoxSource(config.boxes, jobs, auto_config=config.auto)
    model = model if model is not None else load_for_run(config, ctx)
    config = dataclasses.replace(config, method=config.method or cast(Method, model.method))
    setup = build_setup(config, model, box_source, jobs, names, category_ids, documents=output_format == "json")
    setup.example_ids = frozenset()
    out = Path(out)
    with shard_folder(ctx, out.with_name(out.name + ".shards")) as folder:  # kept if this fails
        fingerprint = run_fingerprint(config, jobs, names, category_ids, model, ctx.world_size, format=output_format)
        if predict_into_shards(folder, jobs, setup, config, ctx, fingerprint=fingerprint, progress=progress,
                               description=f"predict {config.method}") is None:
            return None
        outputs = zip(jobs, read_outputs(folder, ctx.world_size, len(jobs), fingerprint), strict=True)
        items = ((output, output.detections if output_format == "coco"
                  else output.document or empty_document(job, names, str(config.method))) for job, output in outputs)
        written = write_streamed(out, items, output_format, min_score)
    if min_score is not None:
        unit = "(box, category) pairs" if output_format == "coco" else "regions"
        print(f"min score {min_score:g}: kept {written.written} of {written.total} {unit}")
    print(summary(written.tally, out, time.perf_counter() - started))
    return written


def write_streamed(out: Path, items: Iterable[tuple[ImageOutput, Any]], output_format: str,
                   min_score: float | None) -> BatchSummary:
    """Write one JSON list to ``out`` (atomically) from (output, its pairs or document) items read
    one at a time: COCO pairs one after another, or one document per image."""
    tally, kept, total = RunTally(), 0, 0
    with json_list_file(out, indent=None if output_format == "coco" else 1, end="]\n") as append:
        for output, entry in items:
            tally.add(output)
            entries = entry if output_format == "coco" else [entry]
            if min_score is not None:
                counts = drop_low_scores(entries, output_format, min_score)
                kept, total = kept + counts[0], total + counts[1]
            for value in entries:
                append(value)
    if min_score is None:
        kept = total = tally.detections if output_format == "coco" else tally.boxes_classified
    return BatchSummary(out, kept, total, tally)


def empty_document(job: ImageJob, names: list[str], method: str) -> dict[str, Any]:
    """The JSON of an image that had no usable box."""
    return {"model": {"method": method},
            "image": {"height": job.height, "width": job.width, "id": job.image_id, "file": job.file_name},
            "vocabulary": names, "regions": []}


def summary(tally: RunTally, out: Path, seconds: float) -> str:
    counts = tally.counts()
    return (f"wrote {out}: {counts['images']} images, {counts['boxes_classified']} boxes named "
            f"({counts['boxes_skipped']} skipped as under 1 px), {counts['detections']} (box, category) pairs, "
            f"{seconds:.1f} s")


def drop_low_scores(written: list[dict[str, Any]], output_format: str, min_score: float) -> tuple[int, int]:
    """Drop, in place, what scores under ``min_score`` from a written ``predict-batch`` output: COCO
    results (``output_format`` coco) lose their pairs under it, ``predict`` documents (json) their
    regions under it. Returns (kept, total) counts of pairs or regions."""
    if output_format == "coco":
        total = len(written)
        written[:] = [pair for pair in written if pair["score"] >= min_score]
        return len(written), total
    total = kept = 0
    for document in written:
        regions = document.get("regions", [])
        document["regions"] = [region for region in regions if region["score"] >= min_score]
        total, kept = total + len(regions), kept + len(document["regions"])
    return kept, total
