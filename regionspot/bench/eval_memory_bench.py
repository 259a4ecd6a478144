"""``regionspot bench eval-memory``: peak memory of rank 0 evaluating a large run, detections
read from per-process shards one image at a time (what ``regionspot eval`` does) against all of
them held at once (what gathering every process's outputs on rank 0 gives).

No model is needed: a synthetic LVIS-style annotation (federated, 1203 categories with r/c/f
tags) and synthetic detections (half near an annotated object of its category, half anywhere,
of a category evaluated in the image) are written as the shards ``processes`` ranks would write.
Each mode then runs in its own fresh process (spawned, so its peak resident memory is its own):
it reads the annotation, then the shards, and computes box AP with the evaluation runner's
:func:`~regionspot.eval.runner.evaluate_outputs`. Both must give the same AP.
"""

from __future__ import annotations

import json
import multiprocessing
import resource
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from regionspot.eval.config import EvalConfig
from regionspot.eval.image_run import ImageOutput
from regionspot.eval.jobs import ImageJob
from regionspot.eval.output_shards import ShardWriter, read_outputs
from regionspot.eval.runner import DatasetInputs, evaluate_outputs
from regionspot.processes import DistributedContext

MODES = ("gather", "stream")
WIDTH, HEIGHT = 640, 480


@dataclass
class EvalMemoryResult:
    """What was measured: the run's size and, per mode, peak RSS and seconds."""

    images: int
    detections_per_image: int
    categories: int
    processes: int
    shard_mib: float
    modes: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"images": self.images, "detections_per_image": self.detections_per_image,
                "categories": self.categories, "processes": self.processes, "shard_mib": self.shard_mib,
                "modes": self.modes}


def synthetic_annotation(images: int, categories: int, objects_per_image: int, seed: int = 0) -> dict[str, Any]:
    """An LVIS-style annotation: ``images`` 640x480 images with ``objects_per_image`` random
    boxes of random categories, 3 negative categories each, categories tagged r/c/f in turn."""
    rng = np.random.default_rng(seed)
    annotations: list[dict[str, Any]] = []
    image_entries: list[dict[str, Any]] = []
    for image_id in range(1, images + 1):
        labels = rng.integers(1, categories + 1, objects_per_image)
        corner = rng.uniform(0, 0.7, (objects_per_image, 2)) * [WIDTH, HEIGHT]
        size = rng.uniform(0.05, 0.3, (objects_per_image, 2)) * [WIDTH, HEIGHT]
        for label, (x, y), (w, h) in zip(labels.tolist(), corner.tolist(), size.tolist(), strict=True):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": label,
                                "bbox": [round(x, 2), round(y, 2), round(w, 2), round(h, 2)],
                                "area": round(w * h, 2), "iscrowd": 0})
        negatives = sorted(set(rng.integers(1, categories + 1, 3).tolist()) - set(labels.tolist()))
        image_entries.append({"id": image_id, "file_name": f"{image_id:012d}.jpg", "width": WIDTH, "height": HEIGHT,
                              "neg_category_ids": negatives, "not_exhaustive_category_ids": []})
    return {"images": image_entries, "annotations": annotations,
            "categories": [{"id": c, "name": f"category {c}", "frequency": "rcf"[c % 3]}
                           for c in range(1, categories + 1)]}


def synthetic_detections(image: dict[str, Any], objects: list[dict[str, Any]], count: int,
                         rng: np.random.Generator) -> list[dict[str, Any]]:
    """``count`` COCO results for ``image``: half jittered copies of its objects (their category),
    half random boxes of a category evaluated in the image; scores uniform in [0, 1)."""
    boxes = np.array([o["bbox"] for o in objects], dtype=np.float64).reshape(-1, 4)
    near = count // 2 if len(objects) else 0
    picks = rng.integers(0, max(len(objects), 1), near)
    jittered = boxes[picks] * rng.uniform(0.9, 1.1, (near, 4)) if near else np.zeros((0, 4))
    anywhere = np.concatenate([rng.uniform(0, 0.7, (count - near, 2)) * [WIDTH, HEIGHT],
                               rng.uniform(0.05, 0.3, (count - near, 2)) * [WIDTH, HEIGHT]], axis=1)
    evaluated = sorted({o["category_id"] for o in objects} | set(image["neg_category_ids"])) or [1]
    labels = [objects[i]["category_id"] for i in picks.tolist()] + rng.choice(evaluated, count - near).tolist()
    scores = rng.uniform(0, 1, count)
    return [{"image_id": image["id"], "category_id": int(label), "bbox": [round(v, 2) for v in box],
             "score": round(float(score), 5)}
            for label, box, score in zip(labels, np.concatenate([jittered, anywhere]).tolist(), scores, strict=True)]


def write_shards(annotation: dict[str, Any], folder: Path, processes: int, per_image: int, seed: int = 0) -> float:
    """The shards ``processes`` ranks would write for the annotation's images (item ``i`` on rank
    ``i % processes``, as the runs split them). Returns their size in MiB."""
    rng = np.random.default_rng(seed + 1)
    by_image: dict[int, list[dict[str, Any]]] = {}
    for entry in annotation["annotations"]:
        by_image.setdefault(entry["image_id"], []).append(entry)
    writers = [ShardWriter(folder, DistributedContext(rank=rank, world_size=processes)) for rank in range(processes)]
    for index, image in enumerate(annotation["images"]):
        detections = synthetic_detections(image, by_image.get(image["id"], []), per_image, rng)
        writers[index % processes].write(ImageOutput(image["id"], detections, boxes=per_image))
    for writer in writers:
        writer.close()
    return sum(path.stat().st_size for path in folder.glob("*.jsonl")) / 2**20


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _measure(mode: str, annotation_path: str, folder: str, processes: int, queue: Any) -> None:
    """One mode in this (fresh) process; puts {peak_rss_mib, annotation_rss_mib, seconds, AP} on ``queue``."""
    torch.set_num_threads(1)
    document = json.loads(Path(annotation_path).read_text(encoding="utf-8"))
    jobs = [ImageJob(image["id"], image["file_name"], Path(image["file_name"]), HEIGHT, WIDTH)
            for image in document["images"]]
    categories = sorted(c["id"] for c in document["categories"])
    data = DatasetInputs(Path(annotation_path), document, jobs, [str(c) for c in categories], categories,
                         {c["id"]: c["frequency"] for c in document["categories"]}, federated=True)
    annotation_rss = _rss_mib()
    started = time.perf_counter()
    outputs: Any = read_outputs(Path(folder), processes, len(jobs))
    if mode == "gather":
        outputs = list(outputs)  # every process's outputs at once, as gathering them on rank 0 leaves them
    sections, _, tally = evaluate_outputs(data, outputs, EvalConfig(annotations=annotation_path))
    queue.put({"peak_rss_mib": round(_rss_mib(), 1), "annotation_rss_mib": round(annotation_rss, 1),
               "seconds": round(time.perf_counter() - started, 1), "AP": sections["bbox"]["metrics"]["AP"],
               "detections": tally.detections})


def run_eval_memory_bench(images: int = 20000, per_image: int = 300, categories: int = 1203, processes: int = 2,
                          objects_per_image: int = 12, log: Any = print) -> EvalMemoryResult:
    """Write the synthetic run, then measure each mode in its own spawned process."""
    with tempfile.TemporaryDirectory(prefix="regionspot-eval-memory-") as work:
        folder = Path(work)
        annotation_path = folder / "annotation.json"
        log(f"writing a synthetic LVIS-style annotation: {images} images, {categories} categories")
        annotation_path.write_text(json.dumps(synthetic_annotation(images, categories, objects_per_image)),
                                   encoding="utf-8")
        log(f"writing {processes} shards of {per_image} detections per image")
        shards = folder / "shards"
        shards.mkdir()
        annotation = json.loads(annotation_path.read_text(encoding="utf-8"))
        result = EvalMemoryResult(images, per_image, categories, processes,
                                  round(write_shards(annotation, shards, processes, per_image), 1))
        del annotation
        context = multiprocessing.get_context("spawn")
        for mode in MODES:
            log(f"measuring {mode} in its own process")
            queue = context.Queue()
            child = context.Process(target=_measure, args=(mode, str(annotation_path), str(shards), processes, queue))
            child.start()
            child.join()
            if child.exitcode != 0 or queue.empty():
                raise RuntimeError(f"the {mode} measurement failed (exit code {child.exitcode})")
            result.modes[mode] = queue.get()
    aps = {mode: values["AP"] for mode, values in result.modes.items()}
    if len(set(aps.values())) != 1:
        raise RuntimeError(f"the modes disagree on AP: {aps}")
    return result


def format_table(result: EvalMemoryResult) -> str:
    lines = [f"rank 0 evaluating {result.images} images x {result.detections_per_image} detections "
             f"({result.images * result.detections_per_image:,} in all, {result.categories} categories, "
             f"shards of {result.processes} processes: {result.shard_mib:.0f} MiB)",
             "", "| mode | peak RSS (MiB) | after the annotation (MiB) | seconds | AP |", "|---|---|---|---|---|"]
    for mode, values in result.modes.items():
        name = {"gather": "all outputs held at once (gather)", "stream": "read from shards image by image"}[mode]
        lines.append(f"| {name} | {values['peak_rss_mib']:.0f} | {values['annotation_rss_mib']:.0f} | "
                     f"{values['seconds']:.1f} | {values['AP']:.4f} |")
    return "\n".join(lines)


def write_json(result: EvalMemoryResult, path: str | Path) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result.to_json(), indent=1) + "\n", encoding="utf-8")
