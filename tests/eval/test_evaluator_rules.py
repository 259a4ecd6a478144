"""The evaluator's rules for zero-area detections and for the size of a detection in mask fixed AP,
against pycocotools on the real COCO sample (../shared/data/coco-sample). lvis-api is not installed
here; its rules (areas > 0 only; mask area in the fixed-AP script) have hand-built cases in
test_evaluator.py."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval

from regionspot.eval import evaluate_results_file, fixed_ap

TOLERANCE = 1e-4
SIZES = ("all", "small", "medium", "large")


def jittered(dataset: dict[str, Any], seed: int = 0) -> list[dict[str, Any]]:
    """Up to two jittered copies of each annotation (some of a wrong category): a box and, from the
    annotation's polygons moved by the same shift, a mask (so mask area and box area differ)."""
    rng = np.random.default_rng(seed)
    sizes = {img["id"]: (img["height"], img["width"]) for img in dataset["images"]}
    cats = sorted(c["id"] for c in dataset["categories"])
    out = []
    for ann in dataset["annotations"]:
        if not isinstance(ann["segmentation"], list):
            continue  # crowd RLE
        box = np.array(ann["bbox"], dtype=float)
        for spread in (0.05, 0.2)[:int(rng.integers(0, 3))]:
            shift = rng.normal(0.0, spread, 4) * box[[2, 3, 2, 3]]
            polygons = [(np.array(p) + np.tile(shift[:2], len(p) // 2)).tolist() for p in ann["segmentation"]]
            out.append({"image_id": ann["image_id"], "score": float(rng.random()),
                        "category_id": ann["category_id"] if rng.random() > 0.15 else int(rng.choice(cats)),
                        "bbox": [float(v) for v in np.r_[box[:2] + shift[:2], np.maximum(box[2:] + shift[2:], 1)]],
                        "segmentation": rle(polygons, *sizes[ann["image_id"]])})
    return out


def rle(polygons: list[list[float]], height: int, width: int) -> dict[str, Any]:
    merged = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    return {"size": merged["size"], "counts": merged["counts"].decode("ascii")}


def zero_area(dataset: dict[str, Any], rng: np.random.Generator) -> list[dict[str, Any]]:
    """High-scoring detections of area 0 on real objects: a 0x0 box, a box of height 0, each with an
    empty mask, over a quarter of the annotations."""
    sizes = {img["id"]: (img["height"], img["width"]) for img in dataset["images"]}
    out = []
    for ann in dataset["annotations"][::4]:
        x, y, w, _ = ann["bbox"]
        empty = rle([[0, 0, 0, 0, 0, 0]], *sizes[ann["image_id"]])
        assert mask_utils.area(empty) == 0
        for box in ([x, y, 0.0, 0.0], [x, y, w, 0.0]):
            out.append({"image_id": ann["image_id"], "category_id": ann["category_id"], "bbox": box,
                        "score": float(rng.uniform(0.5, 1.0)), "segmentation": empty})
    return out


def ap_by_size(evaluation: COCOeval) -> dict[str, float]:
    """AP over the valid categories for each area range, at the largest maxDets."""
    table = evaluation.eval["precision"]
    return {size: float(np.mean(table[:, :, :, a, -1][table[:, :, :, a, -1] > -1])) for a, size in enumerate(SIZES)}


def ours_by_size(metrics: dict[str, float]) -> dict[str, float]:
    return {"all": metrics["AP"], "small": metrics["APs"], "medium": metrics["APm"], "large": metrics["APl"]}


def assert_close(ours: dict[str, float], theirs: dict[str, float]) -> None:
    assert max(abs(ours[k] - theirs[k]) for k in theirs) < TOLERANCE, (ours, theirs)


@pytest.mark.parametrize(("iou_type", "boxes"), [("bbox", True), ("segm", True), ("segm", False)])
def test_coco_rules_keep_zero_area_detections_as_pycocotools(coco_dataset: dict[str, Any], pycocotools_eval,
                                                             iou_type: str, boxes: bool) -> None:
    """pycocotools keeps detections of area 0 (COCOeval._prepare filters by image and category
    only): they match nothing and are false positives. So do we under COCO rules."""
    clean, zero = jittered(coco_dataset), zero_area(coco_dataset, np.random.default_rng(1))
    if not boxes:  # mask-only results: the area (0 for the empty masks) comes from the mask
        clean, zero = ([{k: v for k, v in r.items() if k != "bbox"} for r in rows] for rows in (clean, zero))
    results = clean + zero
    theirs = ap_by_size(pycocotools_eval(coco_dataset, results, iou_type))
    ours = ours_by_size(evaluate_results_file(coco_dataset, results, iou_type=iou_type))
    assert_close(ours, theirs)
    without = evaluate_results_file(coco_dataset, clean, iou_type=iou_type)
    assert ours["all"] < without["AP"] - 0.01  # they are counted: false positives
    # the LVIS rule (lvis-api keeps areas > 0 only) leaves them out: the numbers without them
    dropped = evaluate_results_file(coco_dataset, results, iou_type=iou_type, drop_zero_area=True)
    assert dropped == without


def top_per_category(results: list[dict[str, Any]], budget: int) -> list[dict[str, Any]]:
    """Each category's ``budget`` highest-scoring detections over the dataset (ties: file order)."""
    by_category: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for result in results:
        by_category[result["category_id"]].append(result)
    return [r for rows in by_category.values() for r in sorted(rows, key=lambda r: -r["score"])[:budget]]


@pytest.mark.parametrize("budget", [3, 10000])
def test_mask_fixed_ap_sizes_by_mask_area_as_the_fixed_ap_script(coco_dataset: dict[str, Any], pycocotools_eval,
                                                                  budget: int) -> None:
    """Mask fixed AP under COCO rules equals pycocotools on the file the fixed-AP script builds:
    each category's top ``budget`` detections, their ``bbox`` removed (so the mask area sizes
    them), with no per-image cap (maxDets per image and category = the budget)."""
    results = jittered(coco_dataset, seed=2)
    prepared = [{k: v for k, v in r.items() if k != "bbox"} for r in top_per_category(results, budget)]
    theirs = ap_by_size(pycocotools_eval(coco_dataset, prepared, "segm", max_dets=[1, 10, budget]))
    ours = fixed_ap(coco_dataset, results, budget, iou_type="segm", federated=False)
    assert_close(ours_by_size(ours), theirs)
    # sized by box area instead, APs/APm/APl differ: the case tests the rule
    by_box = evaluate_results_file(coco_dataset, results, iou_type="segm", max_dets=(budget,), max_dets_per_image=None,
                                   per_category_budget=budget)
    assert max(abs(ours_by_size(by_box)[k] - theirs[k]) for k in SIZES[1:]) > 1e-3
