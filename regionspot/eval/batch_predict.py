"""Batch prediction: the evaluation runner without the evaluation, over a folder of images or a
COCO/LVIS annotation's images, split across processes under ``torchrun`` like an evaluation.

Output, written by rank 0: ``coco`` - one COCO results list (each image's best
``protocol.pairs_per_image`` (box, category) pairs, as an evaluation keeps them, ready for
``regionspot eval --detections``); ``json`` - one document per image, ``regionspot predict``'s
(boxes xyxy, top-k names and scores per box, SAM masks as RLE with masks on) plus the image id
and file and each box's proposal score.
"""

from __future__ import annotations

import dataclasses
import json
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from regionspot.config import ConfigError
from regionspot.datasets.coco_format import dataset_vocabulary, read_annotations
from regionspot.eval.config import EvalConfig, Method, check_eval_config
from regionspot.eval.image_run import (
    ImageOutput,
    build_setup,
    image_batch,
    image_workers,
    load_for_run,
    load_job_image,
    process_images,
    run_counts,
    single_process,
)
from regionspot.eval.jobs import (
    BoxSource,
    ImageJob,
    dataset_jobs,
    default_image_folder,
    folder_jobs,
)
from regionspot.eval.protocol import category_index
from regionspot.eval.sharding import map_sharded
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


def run_batch_prediction(config: EvalConfig, out: Path, *, output_format: str = "coco",
                         ctx: DistributedContext | None = None, model: Model | None = None,
                         progress: bool = True, min_score: float | None = None) -> list[dict[str, Any]] | None:
    """Predict over the images (split across processes) and write ``out`` (JSON) on rank 0,
    without what scores under ``min_score`` (see :func:`drop_low_scores`) when given.
    Returns the written list on rank 0, None elsewhere."""
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
    outputs = map_sharded(jobs, partial(process_images, setup=setup), ctx, load=load_job_image,
                          workers=image_workers(config, ctx.device), batch=image_batch(config, ctx.device),
                          progress=progress,
                          description=f"predict {config.method}")
    if outputs is None:
        return None
    if output_format == "coco":
        written: list[dict[str, Any]] = [detection for output in outputs for detection in output.detections]
    else:
        written = [output.document or empty_document(job, names, str(config.method))
                   for job, output in zip(jobs, outputs, strict=True)]
    if min_score is not None:
        kept, total = drop_low_scores(written, output_format, min_score)
        unit = "(box, category) pairs" if output_format == "coco" else "regions"
        print(f"min score {min_score:g}: kept {kept} of {total} {unit}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(written, indent=None if output_format == "coco" else 1) + "\n", encoding="utf-8")
    print(summary(outputs, out, time.perf_counter() - started))
    return written


def empty_document(job: ImageJob, names: list[str], method: str) -> dict[str, Any]:
    """The JSON of an image that had no usable box."""
    return {"model": {"method": method},
            "image": {"height": job.height, "width": job.width, "id": job.image_id, "file": job.file_name},
            "vocabulary": names, "regions": []}


def summary(outputs: list[ImageOutput], out: Path, seconds: float) -> str:
    counts = run_counts(outputs)
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
