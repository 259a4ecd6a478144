"""PR-curve plot: its curves average to the evaluator's AP numbers, its panels split the AP by
frequency group, object size and IoU threshold (and differ on real COCO data with ground-truth
boxes, where the IoU curves coincide)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from regionspot.eval import DetectionEvaluator
from regionspot.eval.plots import mean_pr_curve, plot_pr_curves, pr_figure, pr_panels

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "eval-plots"


def dataset() -> dict[str, Any]:
    """Four 100x100 images; categories 1 (f), 2 (c), 3 (r), 4 (r, never annotated)."""
    annotations = []
    for image_id in range(1, 5):
        for category, box in ((1, [10, 10, 30, 30]), (2, [50, 50, 40, 30]), (3, [5, 60, 20, 30])):
            if category == 3 and image_id > 2:
                continue
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                                "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
    return {
        "images": [{"id": i, "width": 100, "height": 100} for i in range(1, 5)],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "a", "frequency": "f"}, {"id": 2, "name": "b", "frequency": "c"},
                       {"id": 3, "name": "c", "frequency": "r"}, {"id": 4, "name": "d", "frequency": "r"}],
    }


def detections(image_id: int) -> list[dict[str, Any]]:
    """A mix of good, shifted and wrong detections so the curves are not trivial."""
    shift = image_id * 3.0
    return [
        {"category_id": 1, "bbox": [10 + shift, 10, 30, 30], "score": 0.9 - 0.1 * image_id},
        {"category_id": 1, "bbox": [60, 5, 20, 20], "score": 0.5},
        {"category_id": 2, "bbox": [50, 50 + shift, 40, 30], "score": 0.3 + 0.1 * image_id},
        {"category_id": 3, "bbox": [5, 60, 20, 30], "score": 0.2 * image_id},
        {"category_id": 4, "bbox": [0, 0, 10, 10], "score": 0.4},
    ]


@pytest.fixture(scope="module")
def evaluated() -> tuple[DetectionEvaluator, dict[str, float]]:
    evaluator = DetectionEvaluator(dataset(), iou_type="bbox")
    for image_id in range(1, 5):
        evaluator.process(image_id, detections(image_id))
    return evaluator, evaluator.evaluate()


def test_curves_average_to_the_reported_ap(evaluated: tuple[DetectionEvaluator, dict[str, float]]) -> None:
    evaluator, metrics = evaluated
    result = evaluator.result
    assert result is not None and evaluator.frequencies is not None
    everything = np.ones(len(result.categories), dtype=bool)
    assert mean_pr_curve(result, everything, None).mean() == pytest.approx(metrics["AP"])
    assert mean_pr_curve(result, everything, 0.5).mean() == pytest.approx(metrics["AP50"])
    tags = np.array([evaluator.frequencies[int(c)] for c in result.categories])
    for group in ("r", "c", "f"):
        assert mean_pr_curve(result, tags == group, None).mean() == pytest.approx(metrics[f"AP{group}"])
    assert 0.0 < metrics["AP"] < 1.0
    assert mean_pr_curve(result, result.categories == 4, None) is None  # no ground truth
    for size, key in (("small", "APs"), ("medium", "APm")):
        assert mean_pr_curve(result, everything, None, area=size).mean() == pytest.approx(metrics[key])
    assert mean_pr_curve(result, everything, None, area="large") is None and math.isnan(metrics["APl"])


def assert_png(path: Path, min_size: tuple[int, int]) -> Image.Image:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as picture:
        picture.load()
        assert picture.format == "PNG"
        assert picture.width >= min_size[0] and picture.height >= min_size[1]
        return picture.convert("RGB")


def test_pr_plot_by_frequency_and_overall(tmp_path: Path,
                                          evaluated: tuple[DetectionEvaluator, dict[str, float]]) -> None:
    evaluator, _ = evaluated
    by_group = plot_pr_curves(evaluator.result, evaluator.frequencies, tmp_path / "plots" / "pr.png", title="toy")
    assert by_group == tmp_path / "plots" / "pr.png"
    grouped = np.asarray(assert_png(by_group, (800, 400)))
    overall = np.asarray(assert_png(plot_pr_curves(evaluator.result, None, tmp_path / "pr_all.png"), (800, 400)))
    assert grouped.std() > 10 and overall.std() > 10  # something is drawn
    assert grouped.shape[1] > 1.3 * overall.shape[1]  # a third panel: by frequency group


def test_pr_plot_without_ground_truth(tmp_path: Path) -> None:
    data = dataset()
    data["images"].append({"id": 5, "width": 100, "height": 100})
    evaluator = DetectionEvaluator(data, iou_type="bbox")
    evaluator.process(5, [{"category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}])
    evaluator.evaluate()
    assert_png(plot_pr_curves(evaluator.result, evaluator.frequencies, tmp_path / "empty.png"), (800, 400))


def coco_evaluation(coco_sample: Path, jitter: float,
                    tags: bool = False) -> tuple[DetectionEvaluator, dict[str, float]]:
    """The real COCO sample, each ground-truth box (moved by ``jitter`` of its size) named right
    six times in ten and twice more with random names, random scores; with ``tags``, LVIS-style
    frequency tags on the categories."""
    document = json.loads((coco_sample / "annotations.json").read_text())
    if tags:
        document["categories"] = [{**c, "frequency": "rcf"[c["id"] % 3]} for c in document["categories"]]
    category_ids = sorted(c["id"] for c in document["categories"])
    rng = np.random.default_rng(0)
    found: dict[int, list[dict[str, Any]]] = {image["id"]: [] for image in document["images"]}
    for annotation in (a for a in document["annotations"] if not a["iscrowd"]):
        x, y, w, h = annotation["bbox"]
        box = [x + rng.normal(0, jitter) * w, y + rng.normal(0, jitter) * h, w, h]
        right = rng.random() < 0.6
        names = [annotation["category_id"] if right else int(rng.choice(category_ids)),
                 *(int(rng.choice(category_ids)) for _ in range(2))]
        found[annotation["image_id"]] += [{"category_id": name, "bbox": box, "score": float(rng.random())}
                                          for name in names]
    evaluator = DetectionEvaluator(document, iou_type="bbox")
    for image_id, detections_of_image in found.items():
        evaluator.process(image_id, detections_of_image)
    return evaluator, evaluator.evaluate()


def assert_figure_draws(figure: Any, panels: list[Any]) -> None:
    """Each subplot of ``figure`` holds exactly its panel's curves."""
    for ax, panel in zip(figure.axes, panels, strict=True):
        lines = ax.get_lines()
        assert [line.get_label() for line in lines] == [curve.label for curve in panel.curves]
        for line, curve in zip(lines, panel.curves, strict=True):
            np.testing.assert_array_equal(line.get_ydata(), curve.precision)


def test_pr_panels_differ_on_coco_data_with_ground_truth_boxes(coco_sample: Path) -> None:
    """The old plot drew one "all" curve at IoU 0.50 and one at 0.50:0.95: with ground-truth boxes
    every match has IoU 1, so both panels were the same picture. Now one panel splits by size."""
    evaluator, metrics = coco_evaluation(coco_sample, jitter=0.0)
    result = evaluator.result
    assert result is not None and evaluator.frequencies is None
    panels = pr_panels(result, None)
    assert [panel.title.split("\n")[0] for panel in panels] == ["by object size", "by IoU threshold"]
    sizes, thresholds = panels
    assert [curve.label.split(" ")[0] for curve in sizes.curves] == ["small", "medium", "large", "all"]
    for curve, key in zip(sizes.curves, ("APs", "APm", "APl", "AP"), strict=True):
        assert curve.precision.mean() == pytest.approx(metrics[key]) and f" {100 * metrics[key]:.1f}" in curve.label
    for curve, key in zip(thresholds.curves, ("AP50", "AP75", "AP"), strict=True):
        assert curve.precision.mean() == pytest.approx(metrics[key])
    assert "coincide" in thresholds.title  # ground-truth boxes: IoU 1 for every match
    assert len({round(metrics[key], 3) for key in ("APs", "APm", "APl")}) == 3
    for size_curve in sizes.curves[:3]:
        assert all(np.abs(size_curve.precision - curve.precision).max() > 0.02 for curve in thresholds.curves)
    figure = pr_figure(panels, result.params.rec_thrs, title="COCO sample, GT boxes")
    assert_figure_draws(figure, panels)
    left, right = ([line.get_ydata() for line in ax.get_lines()] for ax in figure.axes)
    assert len(left) != len(right) or any(not np.array_equal(a, b) for a, b in zip(left, right, strict=True))
    assert_png(plot_pr_curves(result, None, ARTIFACTS / "pr_coco_gt_boxes.png", title="COCO sample, GT boxes"),
               (1000, 500))


def test_pr_panels_with_moved_boxes_and_frequency_tags(coco_sample: Path) -> None:
    evaluator, metrics = coco_evaluation(coco_sample, jitter=0.08, tags=True)
    result = evaluator.result
    assert result is not None and evaluator.frequencies is not None
    panels = pr_panels(result, evaluator.frequencies)
    assert [panel.title.split("\n")[0] for panel in panels] == ["by frequency group", "by object size",
                                                                  "by IoU threshold"]
    groups, _, thresholds = panels
    assert [curve.label.split(" ")[0] for curve in groups.curves] == ["rare", "common", "frequent", "all"]
    for curve, key in zip(groups.curves, ("APr", "APc", "APf", "AP"), strict=True):
        assert curve.precision.mean() == pytest.approx(metrics[key])
    assert "coincide" not in thresholds.title and metrics["AP50"] > metrics["AP75"] + 0.05
    assert (thresholds.curves[0].precision >= thresholds.curves[2].precision - 1e-12).all()  # IoU .5 is easiest
    assert_figure_draws(pr_figure(panels, result.params.rec_thrs), panels)
    assert_png(plot_pr_curves(result, evaluator.frequencies, ARTIFACTS / "pr_coco_moved_boxes_tags.png",
                              title="COCO sample, moved boxes, LVIS-style tags"), (1500, 500))
