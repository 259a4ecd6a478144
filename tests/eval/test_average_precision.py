"""COCO-style AP: the numeric pieces on hand-computed cases, and agreement with pycocotools'
COCOeval on the real COCO sample (../shared/data/coco-sample) for boxes and masks."""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from regionspot.eval import (
    DetectionEvaluator,
    box_iou_xywh,
    evaluate_results_file,
    match_detections,
    precision_recall,
    top_per_image,
)
from regionspot.eval.average_precision import RECALL_THRESHOLDS, Detections

STAT_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR@1", "AR@10", "AR@100", "ARs", "ARm", "ARl")
TOLERANCE = 1e-4


# ---------------------------------------------------------------- numeric pieces, hand-computed


def test_box_iou_matches_pycocotools_including_crowd() -> None:
    rng = np.random.default_rng(3)
    dt = np.c_[rng.uniform(0, 50, (40, 2)), rng.uniform(1, 40, (40, 2))]
    gt = np.c_[rng.uniform(0, 50, (30, 2)), rng.uniform(1, 40, (30, 2))]
    crowd = rng.random(30) < 0.3
    ours = box_iou_xywh(dt, gt, crowd)
    theirs = mask_utils.iou(dt.tolist(), gt.tolist(), crowd.astype(int).tolist())
    assert ours.shape == (40, 30)
    assert np.abs(ours - theirs).max() < 1e-12
    assert crowd.any() and (ours[:, crowd] >= box_iou_xywh(dt, gt)[:, crowd] - 1e-12).all()


def test_box_iou_hand_values() -> None:
    iou = box_iou_xywh(np.array([[0, 0, 10, 10]]), np.array([[5, 0, 10, 10], [20, 20, 5, 5], [0, 0, 20, 20]]),
                       np.array([False, False, True]))
    np.testing.assert_allclose(iou, [[50 / 150, 0.0, 1.0]])  # crowd: intersection / detection area


def test_matching_prefers_best_free_regular_gt_then_ignored_then_crowd_reuse() -> None:
    thrs = np.array([0.5, 0.7])
    # 3 detections (best first) x 3 gts: gt0 regular, gt1 ignored, gt2 crowd (ignored too)
    # at 0.5 regular gt0 beats the better ignored gt1; at 0.7 only gt1 qualifies
    ious = np.array([[0.6, 0.9, 0.0],
                     [0.65, 0.0, 0.8],   # gt0 taken at 0.5 -> crowd gt2; at 0.7 gt2
                     [0.0, 0.0, 0.75]])  # crowd gt2 is reusable
    ignore = np.array([[False, True, True]])
    matched, on_ignored = match_detections(ious, ignore, np.array([False, False, True]), thrs)
    assert matched.shape == (1, 2, 3)
    np.testing.assert_array_equal(matched[0], [[True, True, True], [True, True, True]])
    np.testing.assert_array_equal(on_ignored[0], [[False, True, True], [True, True, True]])


def test_matching_ties_take_the_later_gt_and_thresholds_are_inclusive() -> None:
    ious = np.array([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]])
    no_flags = np.zeros((1, 2), dtype=bool)
    matched, _ = match_detections(ious, no_flags, no_flags[0], np.array([0.5, 0.55]))
    np.testing.assert_array_equal(matched[0], [[True, True, False], [False, False, False]])


def test_precision_recall_hand_case() -> None:
    tp = np.array([[True, False, True]])
    precision, recall = precision_recall(tp, ~tp, 2, RECALL_THRESHOLDS)
    assert recall.tolist() == [1.0]
    assert precision[0, 0] == pytest.approx(1.0) and precision[0, 50] == pytest.approx(1.0)
    assert precision[0, 51] == pytest.approx(2 / 3) and precision[0, 100] == pytest.approx(2 / 3)
    assert precision.mean() == pytest.approx((51 + 50 * 2 / 3) / 101)
    precision, recall = precision_recall(tp[:, :1], ~tp[:, :1], 2, RECALL_THRESHOLDS)
    assert recall.tolist() == [0.5] and (precision[0, 51:] == 0).all()  # unreached recall -> 0


def test_top_per_image_keeps_highest_scores_earlier_first_on_ties() -> None:
    dt = Detections(image_ids=np.array([1, 1, 1, 2, 1]), category_ids=np.array([1, 2, 3, 1, 4]),
                    boxes=np.zeros((5, 4)), scores=np.array([0.5, 0.9, 0.5, 0.1, 0.7]), areas=np.ones(5))
    assert top_per_image(dt, 3).tolist() == [0, 1, 3, 4]
    assert top_per_image(dt, 1).tolist() == [1, 3]


# ---------------------------------------------------------------- agreement with pycocotools


def build_detections(dataset: dict[str, Any], *, masks: bool, boxes: bool = True, crowded: bool = True,
                     seed: int = 0) -> list[dict[str, Any]]:
    """Deterministic COCO results for the sample: jittered copies of the ground truth (some missed,
    some duplicated, some with a wrong category, some scores rounded so they tie), random false
    positives of all sizes, and one (image, category) pair with over 100 detections, its exact
    copies of the ground truth scored last (so the per-pair limit of 100 matters).
    Masks: the annotation's mask shifted by the box jitter; false positives get box masks."""
    rng = np.random.default_rng(seed)
    sizes = {img["id"]: (img["height"], img["width"]) for img in dataset["images"]}
    cats = sorted(c["id"] for c in dataset["categories"])
    out: list[dict[str, Any]] = []

    def add(image_id: int, cat: int, box: np.ndarray, score: float, segm: Any) -> None:
        det: dict[str, Any] = {"image_id": image_id, "category_id": int(cat), "score": float(score)}
        if boxes:
            det["bbox"] = [round(float(v), 2) for v in box]
        if masks:
            height, width = sizes[image_id]
            rle = mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
            det["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
        out.append(det)

    for ann in dataset["annotations"]:
        box = np.array(ann["bbox"], dtype=float)
        for copy_index in range(int(rng.integers(0, 3))):
            shift = rng.normal(0.0, 0.06 + 0.12 * copy_index, 4) * box[[2, 3, 2, 3]]
            jittered = np.r_[box[:2] + shift[:2], np.maximum(box[2:] + shift[2:], 1.0)]
            cat = ann["category_id"] if rng.random() > 0.15 else int(rng.choice(cats))
            score = rng.random() if rng.random() > 0.3 else round(rng.random(), 1)
            polys = ann["segmentation"] if isinstance(ann["segmentation"], list) else [_box_polygon(box)]
            add(ann["image_id"], cat, jittered, score,
                [(np.array(p, dtype=float) + np.tile(shift[:2], len(p) // 2)).tolist() for p in polys])
    for image_id, (height, width) in sizes.items():
        for _ in range(int(rng.integers(0, 6))):
            side = float(rng.choice([12.0, 50.0, 150.0])) * rng.uniform(0.6, 1.4, 2)
            corner = rng.uniform(0, 1, 2) * np.maximum([width - side[0], height - side[1]], 1)
            box = np.r_[corner, side]
            add(image_id, int(rng.choice(cats)), box, rng.random(), [_box_polygon(box)])
    if crowded:  # 110 high-scoring loose boxes push this pair's exact copies past the 100 limit
        pairs = Counter((a["image_id"], a["category_id"]) for a in dataset["annotations"] if not a["iscrowd"])
        (image_id, cat), _ = pairs.most_common(1)[0]
        first = next(a for a in dataset["annotations"] if (a["image_id"], a["category_id"]) == (image_id, cat))
        for _ in range(110):
            box = np.array(first["bbox"], dtype=float) * rng.uniform(0.5, 1.5, 4)
            add(image_id, cat, box, rng.uniform(0.2, 1.0), [_box_polygon(box)])
        for ann in dataset["annotations"]:
            if (ann["image_id"], ann["category_id"]) == (image_id, cat) and not ann["iscrowd"]:
                add(ann["image_id"], ann["category_id"], np.array(ann["bbox"]), rng.uniform(0.0, 0.2),
                    [_box_polygon(np.array(ann["bbox"]))])
    return out


def _box_polygon(box: np.ndarray) -> list[float]:
    x, y, w, h = (float(v) for v in box)
    return [x, y, x, y + h, x + w, y + h, x + w, y]


def _as_stats(metrics: dict[str, float]) -> np.ndarray:
    return np.array([metrics[k] if np.isfinite(metrics[k]) else -1.0 for k in STAT_KEYS])


@pytest.mark.parametrize(("iou_type", "masks", "boxes"), [
    ("bbox", False, True),   # box results
    ("bbox", True, True),    # box results that also carry masks (the masks play no part)
    ("segm", True, True),    # detectron2-style results: box + mask (detection area = box area)
    ("segm", True, False),   # mask-only results (detection area = mask area)
])
def test_agrees_with_pycocotools_on_coco_sample(coco_dataset: dict[str, Any], pycocotools_eval, iou_type: str,
                                                masks: bool, boxes: bool, tmp_path: Path) -> None:
    results = build_detections(coco_dataset, masks=masks, boxes=boxes)
    assert sum(a["iscrowd"] for a in coco_dataset["annotations"]) > 0  # crowd handling is exercised
    results_file = tmp_path / "results.json"
    results_file.write_text(json.dumps(results), encoding="utf-8")
    theirs = pycocotools_eval(coco_dataset, results, iou_type)
    ours = evaluate_results_file(coco_dataset, results_file, iou_type=iou_type)
    difference = np.abs(_as_stats(ours) - theirs.stats)
    assert difference.max() < TOLERANCE, dict(zip(STAT_KEYS, difference, strict=True))
    assert 0.05 < ours["AP"] < 0.95 and all(np.isfinite(ours[k]) for k in STAT_KEYS)  # a non-trivial case
    assert set(ours) == set(STAT_KEYS)  # COCO categories carry no frequency tags


def test_per_category_and_subset_agree_with_pycocotools(coco_dataset: dict[str, Any],
                                                        pycocotools_eval) -> None:
    results = build_detections(coco_dataset, masks=False, seed=1)
    subset = sorted(img["id"] for img in coco_dataset["images"])[::2]
    theirs = pycocotools_eval(coco_dataset, [r for r in results if r["image_id"] in subset], "bbox", subset)
    evaluator = DetectionEvaluator(coco_dataset, iou_type="bbox")
    for image_id in subset:
        evaluator.process(image_id, [r for r in results if r["image_id"] == image_id])
    ours = evaluator.evaluate()
    assert np.abs(_as_stats(ours) - theirs.stats).max() < TOLERANCE
    table = theirs.eval["precision"][:, :, :, 0, -1]
    their_ap = np.where((table > -1).all(axis=(0, 1)), table.mean(axis=(0, 1)), np.nan)
    our_ap = np.array([row["AP"] for row in evaluator.per_category()])
    np.testing.assert_allclose(our_ap, their_ap, atol=TOLERANCE)
    assert np.isnan(our_ap).sum() > 0 and (~np.isnan(our_ap)).sum() > 10


def test_federated_with_complete_negative_lists_reduces_to_coco(coco_dataset: dict[str, Any],
                                                                pycocotools_eval) -> None:
    """LVIS rules on an exhaustively labelled dataset (every absent category listed as negative,
    nothing not-exhaustive) must give COCO's numbers."""
    lvis_style = copy.deepcopy(coco_dataset)
    all_cats = {c["id"] for c in lvis_style["categories"]}
    for image in lvis_style["images"]:
        present = {a["category_id"] for a in lvis_style["annotations"] if a["image_id"] == image["id"]}
        image["neg_category_ids"] = sorted(all_cats - present)
        image["not_exhaustive_category_ids"] = []
    results = build_detections(coco_dataset, masks=False, crowded=False, seed=2)
    theirs = pycocotools_eval(coco_dataset, results, "bbox")
    evaluator = DetectionEvaluator(lvis_style, iou_type="bbox", max_dets=(1, 10, 100))
    assert evaluator.federated
    for image in lvis_style["images"]:
        evaluator.process(image["id"], [r for r in results if r["image_id"] == image["id"]])
    ours = evaluator.evaluate()
    for index, key in enumerate(STAT_KEYS[:6]):
        assert abs(ours[key] - theirs.stats[index]) < TOLERANCE, key
    # dropping the negative lists makes every absent-category detection ignored: AP rises
    for image in lvis_style["images"]:
        image["neg_category_ids"] = []
    lenient = evaluate_results_file(lvis_style, results, max_dets=(1, 10, 100))
    assert lenient["AP"] > ours["AP"] + 0.01
