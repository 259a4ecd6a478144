"""Example pictures of an evaluation: for each of the first few images, its ground truth beside
the model's best regions, every region marked right or wrong.

    truths = image_truths(annotation, [image_id, ...], category_ids)
    write_example_images([Example(image, best_regions, truths[image_id]), ...], out / "examples")

A region is **correct** (green) when its top-1 name is the category of a non-crowd ground-truth
box that it overlaps at IoU >= 0.5, and **wrong** (red) otherwise; a wrong region's tag adds what
the ground truth there is (the box it overlaps most, at IoU >= 0.5) or ``gt: none``. The left
panel shows the ground-truth boxes (blue) with their names; the title gives the image id, its
file and how many regions are correct.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from regionspot.ops.boxes import box_iou_xyxy
from regionspot.results import RegionResult
from regionspot.viz import draw_regions, save_figure, side_by_side

CORRECT = (40, 170, 70)
WRONG = (225, 30, 60)
TRUTH = (0, 110, 220)
MATCH_IOU = 0.5


@dataclass(frozen=True)
class ImageTruth:
    """The non-crowd ground truth of one image: ``boxes`` float64 [G, 4] xyxy absolute pixels,
    ``label_ids`` int64 [G] indices into the evaluation's vocabulary (the index space of
    :attr:`RegionResult.label_ids`)."""

    image_id: int
    file_name: str
    boxes: np.ndarray
    label_ids: np.ndarray


@dataclass(frozen=True)
class Example:
    """An image (HxWx3 uint8), its best regions, its ground truth, and how many regions were
    named in all (None: ``result`` holds them all)."""

    image: np.ndarray
    result: RegionResult
    truth: ImageTruth
    regions: int | None = None


def image_truths(annotation: Mapping[str, Any], image_ids: Collection[int],
                 category_ids: Sequence[int]) -> dict[int, ImageTruth]:
    """The ground truth of ``image_ids`` in a COCO-format ``annotation``: non-crowd boxes of the
    categories in ``category_ids`` (``category_ids[i]`` is the dataset id of vocabulary entry i)."""
    index = {int(category): position for position, category in enumerate(category_ids)}
    wanted = {int(image_id) for image_id in image_ids}
    files = {int(image["id"]): str(image.get("file_name", "")) for image in annotation["images"]
             if int(image["id"]) in wanted}
    boxes: dict[int, list[list[float]]] = {image_id: [] for image_id in files}
    labels: dict[int, list[int]] = {image_id: [] for image_id in files}
    for item in annotation["annotations"]:
        image_id, category = int(item["image_id"]), int(item["category_id"])
        if image_id in files and not item.get("iscrowd", 0) and category in index:
            x, y, w, h = (float(v) for v in item["bbox"])
            boxes[image_id].append([x, y, x + w, y + h])
            labels[image_id].append(index[category])
    return {image_id: ImageTruth(image_id, files[image_id], np.asarray(boxes[image_id], np.float64).reshape(-1, 4),
                                 np.asarray(labels[image_id], np.int64)) for image_id in files}


def judge_regions(result: RegionResult, truth: ImageTruth, iou: float = MATCH_IOU) -> tuple[np.ndarray, np.ndarray]:
    """(correct bool [R]: the region's top-1 name is that of a ground-truth box it overlaps at
    IoU >= ``iou``; truth int [R]: the vocabulary index of the ground-truth box it overlaps most
    at IoU >= ``iou``, -1 where none does)."""
    count = len(result)
    if count == 0 or len(truth.boxes) == 0:
        return np.zeros(count, dtype=bool), np.full(count, -1, dtype=np.int64)
    overlaps = box_iou_xyxy(result.boxes, truth.boxes)  # [R, G]
    hits = overlaps >= iou
    correct = (hits & (result.label_ids[:, None] == truth.label_ids[None, :])).any(axis=1)
    nearest = truth.label_ids[overlaps.argmax(axis=1)]
    return correct, np.where(hits.any(axis=1), nearest, -1)


def prediction_tags(result: RegionResult, correct: np.ndarray, truth_ids: np.ndarray) -> list[str]:
    """``"name 0.87"`` for a correct region; ``"name 0.87 (gt: other)"`` or ``"(gt: none)"`` for a wrong one."""
    tags = []
    for name, score, right, truth_id in zip(result.labels, result.scores, correct, truth_ids, strict=True):
        found = "" if right else f" (gt: {result.vocabulary[truth_id] if truth_id >= 0 else 'none'})"
        tags.append(f"{name} {score:.2f}{found}")
    return tags


def example_picture(example: Example, max_regions: int = 20) -> Image.Image:
    """The ground truth (left) beside the ``max_regions`` best-scoring regions (right, green
    correct / red wrong, masks when the result has them), under a title with the image id."""
    image, truth = example.image, example.truth
    result = example.result
    best = result[np.argsort(-result.scores, kind="stable")[:max_regions]]
    correct, truth_ids = judge_regions(best, truth)
    tags = prediction_tags(best, correct, truth_ids)
    rising = np.argsort(best.scores, kind="stable")  # drawn and placed like draw_regions' score order
    predicted = draw_regions(image, best.boxes[rising], [tags[i] for i in rising], None,
                             None if best.masks is None else best.masks[rising],
                             colors=[CORRECT if correct[i] else WRONG for i in rising])
    names = [result.vocabulary[i] for i in truth.label_ids]
    ground = draw_regions(image, truth.boxes, names, None, colors=[TRUTH] * len(names))
    total = max(len(result), example.regions or 0)
    shown = f"the {len(best)} best of {total} regions" if total > len(best) else f"all {total} regions"
    title = (f"image {truth.image_id}" + (f" ({truth.file_name})" if truth.file_name else "")
             + f": {int(correct.sum())} of {len(best)} regions named correctly")
    legend = [(CORRECT, f"correct: top-1 name = a ground-truth box it overlaps at IoU >= {MATCH_IOU:g}"),
              (WRONG, f"wrong: (gt: X) names the ground truth it overlaps most; none: no box at IoU >= {MATCH_IOU:g}"),
              (TRUTH, "ground truth (non-crowd boxes)")]
    return side_by_side([(f"ground truth: {len(names)} boxes", ground),
                         (f"predictions: {shown}, top-1 name and score", predicted)], title=title, legend=legend)


def write_example_images(examples: Sequence[Example], folder: Path, *, max_regions: int = 20) -> list[Path]:
    """:func:`example_picture` of each example, saved as ``folder/example_000.png``,
    ``example_001.png``, ... Returns the paths written."""
    if max_regions < 1:
        raise ValueError(f"max_regions must be >= 1, got {max_regions}")
    folder = Path(folder)
    paths = []
    for number, example in enumerate(examples):
        if tuple(example.image.shape[:2]) != tuple(example.result.image_size):
            raise ValueError(f"example {number}: image is {example.image.shape[:2]} but its result is for "
                             f"{example.result.image_size}")
        paths.append(save_figure(example_picture(example, max_regions), folder / f"example_{number:03d}.png"))
    return paths
