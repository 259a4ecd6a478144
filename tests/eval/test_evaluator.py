"""DetectionEvaluator: LVIS federated rules on hand-built cases, the per-image cap, APr/APc/APf,
the fixed-AP budget, and the detectron2-style API."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest

from regionspot.eval import DetectionEvaluator, evaluate_results_file, fixed_ap, format_metrics

FAR = [80.0, 80.0, 10.0, 10.0]  # overlaps no ground truth below


def lvis_dataset() -> dict[str, Any]:
    """Three 100x100 images, categories 1 (f), 2 (c), 3 (r), 4 (r, never annotated).
    Image 1: cat 1 and cat 2 annotated, cat 3 negative. Image 2: cat 1 (not exhaustive) and cat 3
    annotated, cat 2 neither annotated nor negative. Image 3: cat 2 annotated."""
    boxes = {1: [10.0, 10.0, 30.0, 30.0], 2: [50.0, 10.0, 20.0, 40.0], 3: [20.0, 50.0, 40.0, 30.0]}
    anns = [(1, 1, 1), (2, 1, 2), (3, 2, 1), (4, 2, 3), (5, 3, 2)]  # (id, image, category)
    return {
        "images": [
            {"id": 1, "height": 100, "width": 100, "neg_category_ids": [3], "not_exhaustive_category_ids": []},
            {"id": 2, "height": 100, "width": 100, "neg_category_ids": [], "not_exhaustive_category_ids": [1]},
            {"id": 3, "height": 100, "width": 100, "neg_category_ids": [], "not_exhaustive_category_ids": []},
        ],
        "categories": [{"id": 1, "name": "one", "frequency": "f"}, {"id": 2, "name": "two", "frequency": "c"},
                       {"id": 3, "name": "three", "frequency": "r"}, {"id": 4, "name": "four", "frequency": "r"}],
        "annotations": [{"id": i, "image_id": img, "category_id": cat, "bbox": boxes[cat],
                         "area": boxes[cat][2] * boxes[cat][3], "segmentation": [box_polygon(boxes[cat])]}
                        for i, img, cat in anns],
    }


def box_polygon(box: list[float]) -> list[float]:
    x, y, w, h = box
    return [x, y, x, y + h, x + w, y + h, x + w, y]


def same_metrics(a: dict[str, float], b: dict[str, float]) -> bool:
    """Equal keys and values, NaN equal to NaN."""
    return a.keys() == b.keys() and all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


def perfect(dataset: dict[str, Any], score: float = 0.5) -> list[dict[str, Any]]:
    """One exact detection per annotation."""
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]), "score": score}
            for a in dataset["annotations"]]


def det(image_id: int, category_id: int, bbox: list[float], score: float) -> dict[str, Any]:
    return {"image_id": image_id, "category_id": category_id, "bbox": bbox, "score": score}


def run(dataset: dict[str, Any], results: list[dict[str, Any]], **options: Any) -> tuple[dict, dict[int, float]]:
    evaluator = DetectionEvaluator(dataset, **options)
    for image in dataset["images"]:
        evaluator.process(image["id"], [r for r in results if r["image_id"] == image["id"]])
    metrics = evaluator.evaluate()
    return metrics, {row["id"]: row["AP"] for row in evaluator.per_category()}


def test_lvis_annotation_switches_on_federated_rules_and_lvis_defaults() -> None:
    evaluator = DetectionEvaluator(lvis_dataset())
    assert evaluator.federated and evaluator.params.max_dets == (300,) and evaluator.max_dets_per_image == 300
    metrics, per_cat = run(lvis_dataset(), perfect(lvis_dataset()))
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AR@300"] == pytest.approx(1.0)
    assert math.isnan(per_cat[4])  # never annotated: no AP
    assert {"APr", "APc", "APf"} <= set(metrics)


def test_detection_of_a_negative_category_is_a_false_positive() -> None:
    data = lvis_dataset()
    results = [*perfect(data), det(1, 3, FAR, 0.9)]  # cat 3 is negative in image 1, ranked first
    metrics, per_cat = run(data, results)
    assert per_cat[3] == pytest.approx(0.5)  # precision 0 then 1/2 -> interpolated 1/2 everywhere
    assert per_cat[1] == per_cat[2] == pytest.approx(1.0)
    assert metrics["AP"] == pytest.approx((1 + 1 + 0.5) / 3)


def test_detection_of_an_unannotated_non_negative_category_is_ignored() -> None:
    data = lvis_dataset()
    baseline, _ = run(data, perfect(data))
    results = [*perfect(data), det(2, 2, FAR, 0.9), det(2, 4, FAR, 0.9)]  # image 2 says nothing of cats 2, 4
    metrics, per_cat = run(data, results)
    assert same_metrics(metrics, baseline) and per_cat[2] == pytest.approx(1.0)
    # the same detection under COCO rules (federated off) is a false positive
    _, coco_per_cat = run(data, results, federated=False)
    assert coco_per_cat[2] == pytest.approx(2 / 3)  # 2 gts, precision 0, 1/2, 2/3


def test_not_exhaustive_unmatched_ignored_but_matched_count() -> None:
    data = lvis_dataset()
    extra = det(2, 1, FAR, 0.9)  # cat 1 is not exhaustive in image 2
    _, per_cat = run(data, [*perfect(data), extra])
    assert per_cat[1] == pytest.approx(1.0)
    # the same unmatched detection in image 1 (exhaustive) is a false positive: precision 0, 1/2, 2/3
    _, per_cat = run(data, [*perfect(data), {**extra, "image_id": 1}])
    assert per_cat[1] == pytest.approx(2 / 3)
    # only image 2's cat-1 detection: it matches, so it is a true positive (recall 1/2: precision 1
    # at the 51 recall points 0..0.5, 0 above)
    only_image_2 = [r for r in perfect(data) if (r["image_id"], r["category_id"]) != (1, 1)]
    _, per_cat = run(data, only_image_2)
    assert per_cat[1] == pytest.approx(51 / 101)
    stripped = copy.deepcopy(data)
    for image in stripped["images"]:
        image["not_exhaustive_category_ids"] = []
    assert run(stripped, only_image_2)[1][1] == pytest.approx(51 / 101)  # same either way: matches count


def test_per_image_cap_of_300_over_all_categories() -> None:
    data = lvis_dataset()
    # junk of cat 4 (not evaluated in image 1) still takes places under the cap, as in lvis-api
    junk = [det(1, 4, FAR, 0.9 - i * 1e-4) for i in range(300)]
    true_positive = det(1, 1, list(data["annotations"][0]["bbox"]), 0.1)
    rest = [r for r in perfect(data) if (r["image_id"], r["category_id"]) != (1, 1)]
    _, capped = run(data, rest + junk + [true_positive])
    assert capped[1] == pytest.approx(51 / 101)  # the 301st detection of image 1 is dropped: recall 1/2
    _, under = run(data, rest + junk[:298] + [true_positive])  # with image 1's cat-2 detection: 300
    assert under[1] == pytest.approx(1.0)
    _, uncapped = run(data, rest + junk + [true_positive], max_dets_per_image=None)
    assert uncapped[1] == pytest.approx(1.0)


def test_frequency_averages_use_only_categories_with_ground_truth() -> None:
    data = lvis_dataset()
    results = [*perfect(data), det(1, 3, FAR, 0.9)]  # cat 3 (r) -> AP 1/2; cat 4 (r) has no gt
    metrics, _ = run(data, results)
    assert metrics["APr"] == pytest.approx(0.5)  # not (0.5 + 0) / 2: category 4 is left out
    assert metrics["APc"] == pytest.approx(1.0) and metrics["APf"] == pytest.approx(1.0)
    untagged = copy.deepcopy(data)
    for cat in untagged["categories"]:
        del cat["frequency"]
    plain, _ = run(untagged, results)
    assert "APr" not in plain
    given, _ = run(untagged, results, frequencies={1: "f", 2: "c", 3: "r", 4: "r"})
    assert given["APr"] == pytest.approx(0.5)
    no_rare = copy.deepcopy(data)
    no_rare["annotations"] = [a for a in no_rare["annotations"] if a["category_id"] != 3]
    assert math.isnan(run(no_rare, perfect(no_rare))[0]["APr"])


def test_frequencies_from_the_shared_lvis_vocabulary(shared_data: Path) -> None:
    vocab = shared_data / "vocab" / "lvis_v1_categories.json"
    data = lvis_dataset()
    evaluator = DetectionEvaluator(data, frequencies=vocab)
    categories = json.loads(vocab.read_text(encoding="utf-8"))
    categories = categories["categories"] if isinstance(categories, dict) else categories
    assert evaluator.frequencies is not None and len(evaluator.frequencies) == 1203
    assert evaluator.frequencies[1] == next(c["frequency"] for c in categories if c["id"] == 1)


def test_fixed_ap_keeps_a_per_category_budget_and_no_per_image_cap(tmp_path: Path) -> None:
    data = lvis_dataset()
    # cat 1: two false positives outrank its two true positives; a budget of 3 keeps one of them
    results = [*perfect(data, score=0.6), det(1, 1, FAR, 0.9), det(2, 1, [0, 0, 5, 5], 0.8)]
    results = [r if r["category_id"] != 1 or r["score"] != 0.6 or r["image_id"] == 1 else {**r, "score": 0.5}
               for r in results]
    small = fixed_ap(data, results, per_category_budget=3)
    large = fixed_ap(data, results, per_category_budget=100)
    assert "AR@3/cat" in small
    assert small["APf"] == pytest.approx(0.5 * 51 / 101)  # budget 3: FP, (ignored), TP -> recall 1/2
    assert small["AR@3/cat"] < large["AR@100/cat"]
    # image 2's cat-1 false positive is ignored (not exhaustive): with budget 100 precision
    # runs 0 (image 1 FP), 1/2, 2/3 -> AP of cat 1 = (51 * 2/3 + 50 * 2/3) / 101 = 2/3
    assert large["APf"] == pytest.approx(2 / 3)
    # no per-image cap: 350 ignored detections in image 1 do not push out its true positive
    junk = [det(1, 4, FAR, 0.95) for _ in range(350)]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(perfect(data) + junk), encoding="utf-8")
    assert fixed_ap(data, path)["AP"] == pytest.approx(1.0)
    assert evaluate_results_file(data, path)["AP"] < 1.0  # the standard 300-per-image cap drops it


def test_reset_process_evaluate_cycle_and_subset_of_images() -> None:
    data = lvis_dataset()
    evaluator = DetectionEvaluator(data)
    with pytest.raises(RuntimeError):
        evaluator.evaluate()
    evaluator.process(1, [r for r in perfect(data) if r["image_id"] == 1])
    first = evaluator.evaluate()
    assert first["AP"] == pytest.approx(1.0)  # only image 1's ground truth counts
    assert {row["id"]: row["num_gt"] for row in evaluator.per_category()} == {1: 1, 2: 1, 3: 0, 4: 0}
    evaluator.process(2, [])  # image 2 evaluated with no detections: its cats 1 and 3 are missed
    assert evaluator.evaluate()["AP"] == pytest.approx((51 / 101 + 1.0 + 0.0) / 3)
    evaluator.reset()
    with pytest.raises(RuntimeError):
        evaluator.per_category()


def test_rejects_bad_inputs() -> None:
    data = lvis_dataset()
    evaluator = DetectionEvaluator(data)
    with pytest.raises(ValueError, match="image 99 is not in the annotation"):
        evaluator.process(99, [])
    with pytest.raises(ValueError, match="detection of image 2 passed for image 1"):
        evaluator.process(1, [det(2, 1, FAR, 0.5)])
    with pytest.raises(ValueError, match="detection for unknown image 1 or category 99"):
        evaluator.process(1, [det(1, 99, FAR, 0.5)])  # refused at once, not after a whole run
    with pytest.raises(ValueError, match="iou_type must be 'bbox' or 'segm', got 'keypoints'"):
        DetectionEvaluator(data, iou_type="keypoints")
    segm = DetectionEvaluator(data, iou_type="segm")
    with pytest.raises(ValueError, match="detection without segmentation"):
        segm.process(1, [det(1, 1, FAR, 0.5)])  # mask AP needs masks


def test_results_file_output_and_formatting(tmp_path: Path) -> None:
    data = lvis_dataset()
    out = tmp_path / "metrics.json"
    metrics = evaluate_results_file(data, perfect(data), output=out)
    written = json.loads(out.read_text(encoding="utf-8"))
    assert written["metrics"]["AP"] == pytest.approx(metrics["AP"]) and written["federated"] is True
    assert [row["id"] for row in written["per_category"]] == [1, 2, 3, 4]
    table = format_metrics(metrics).splitlines()
    assert len(table) == 2 and "APr" in table[0] and "100.00" in table[1]


# ----------------------------------------------------------------------------- zero area and mask area
EMPTY_MASK = {"size": [100, 100], "counts": "`h9"}  # compressed RLE: 10000 background pixels


def test_zero_area_detections_are_left_out_under_lvis_rules_and_false_positives_otherwise() -> None:
    data = lvis_dataset()
    baseline, _ = run(data, perfect(data))
    zero = [det(1, 1, [10.0, 10.0, 0.0, 0.0], 0.9), det(1, 1, [10.0, 10.0, 30.0, 0.0], 0.8)]  # cat 1, image 1
    metrics, per_cat = run(data, [*perfect(data), *zero])
    assert same_metrics(metrics, baseline) and per_cat[1] == pytest.approx(1.0)  # as lvis-api: left out
    # kept (pycocotools' rule): two false positives ranked first -> precision 0, 0, 1/3, 2/4
    _, kept = run(data, [*perfect(data), *zero], drop_zero_area=False)
    assert kept[1] == pytest.approx(0.5)
    _, coco = run(data, [*perfect(data), *zero], federated=False)
    assert coco[1] == pytest.approx(0.5)  # COCO rules keep them by default
    # left out after the per-image cap, in which it takes a place (lvis-api's order): with a cap of 2,
    # image 1 keeps the zero-area detection and its cat-1 detection, so its cat-2 object is missed
    _, capped = run(data, [*perfect(data), zero[0]], max_dets_per_image=2)
    assert capped[1] == pytest.approx(1.0) and capped[2] == pytest.approx(51 / 101)


def test_an_empty_mask_without_a_box_is_zero_area_in_mask_ap() -> None:
    data = lvis_dataset()
    masked = [{**r, "segmentation": [box_polygon(r["bbox"])]} for r in perfect(data)]
    empty = {"image_id": 1, "category_id": 1, "segmentation": EMPTY_MASK, "score": 0.9}
    _, per_cat = run(data, [*masked, empty], iou_type="segm")
    assert per_cat[1] == pytest.approx(1.0)
    _, kept = run(data, [*masked, empty], iou_type="segm", drop_zero_area=False)
    assert kept[1] == pytest.approx(2 / 3)


def test_zero_area_ground_truth_is_left_out_under_lvis_rules() -> None:
    data = lvis_dataset()
    results = perfect(data)
    data["annotations"].append({"id": 6, "image_id": 3, "category_id": 1, "bbox": [5.0, 5.0, 0.0, 0.0], "area": 0.0,
                                "segmentation": [box_polygon([5.0, 5.0, 0.0, 0.0])]})
    metrics, per_cat = run(data, results)
    assert metrics["AP"] == pytest.approx(1.0) and per_cat[1] == pytest.approx(1.0)
    _, kept = run(data, results, drop_zero_area=False)
    assert kept[1] == pytest.approx(67 / 101)  # 3 objects, 2 found: recall 2/3


def test_mask_fixed_ap_sizes_detections_by_mask_area() -> None:
    """A false positive with a large box (100x100) but a small mask (20x20): mask fixed AP counts it
    in the small range (mask area, as the fixed-AP script); standard mask AP sizes a detection that
    carries a box by its box (as lvis-api and pycocotools do with the given file), so there it is
    outside the small range and ignored."""
    data = lvis_dataset()
    results = [{**r, "segmentation": [box_polygon(r["bbox"])]} for r in perfect(data)]
    results.append({**det(1, 1, [0.0, 0.0, 100.0, 100.0], 0.9), "segmentation": [box_polygon([60, 60, 20, 20])]})
    # small range: cat 1 (30x30) and cat 2 (20x40); cat 1 precision 0, 1/2, 2/3 -> 2/3, cat 2 -> 1
    assert fixed_ap(data, results, 100, iou_type="segm")["APs"] == pytest.approx((2 / 3 + 1) / 2)
    assert fixed_ap(data, results, 100, iou_type="bbox")["APs"] == pytest.approx(1.0)
    assert evaluate_results_file(data, results, iou_type="segm")["APs"] == pytest.approx(1.0)
    unsized = [{key: value for key, value in r.items() if key != "bbox"} for r in results]
    assert evaluate_results_file(data, unsized, iou_type="segm")["APs"] == pytest.approx((2 / 3 + 1) / 2)
