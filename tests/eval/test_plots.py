"""PR-curve plot (its curves average to the evaluator's AP numbers) and example images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from regionspot.eval import DetectionEvaluator
from regionspot.eval.plots import mean_pr_curve, plot_pr_curves, write_example_images
from regionspot.results import RegionResult


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
    assert not np.array_equal(grouped, overall)


def test_pr_plot_without_ground_truth(tmp_path: Path) -> None:
    data = dataset()
    data["images"].append({"id": 5, "width": 100, "height": 100})
    evaluator = DetectionEvaluator(data, iou_type="bbox")
    evaluator.process(5, [{"category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}])
    evaluator.evaluate()
    assert_png(plot_pr_curves(evaluator.result, evaluator.frequencies, tmp_path / "empty.png"), (800, 400))


def example(height: int = 90, width: int = 120) -> tuple[np.ndarray, RegionResult]:
    """Two strong regions top-left, one weak region alone in the bottom-right corner."""
    image = np.full((height, width, 3), 90, np.uint8)
    boxes = np.array([[5, 20, 40, 50], [30, 25, 60, 55], [95, 70, 118, 88]], dtype=np.float64)
    masks = np.zeros((3, height, width), bool)
    for mask, (x0, y0, x1, y1) in zip(masks, boxes.astype(int), strict=True):
        mask[y0 + 2:y1 - 2, x0 + 2:x1 - 2] = True
    result = RegionResult(boxes=boxes, topk_ids=[[0, 1], [1, 0], [2, 0]], topk_scores=[[0.9, 0.1], [0.7, 0.2],
                          [0.05, 0.01]], vocabulary=["cat", "dog", "cup"], image_size=(height, width), masks=masks)
    return image, result


def test_example_images_keep_the_best_regions(tmp_path: Path) -> None:
    image, result = example()
    paths = write_example_images([(image, result), (image, result[[0]])], tmp_path / "examples", max_regions=2)
    assert [p.name for p in paths] == ["example_000.png", "example_001.png"]
    drawn = np.asarray(assert_png(paths[0], (120, 90)))
    assert drawn.shape == image.shape
    assert (drawn[66:, 92:] == image[66:, 92:]).all()  # the weakest region is left out
    assert (drawn[22:48, 7:38] != image[22:48, 7:38]).any()  # the best one is drawn with its mask
    everything = np.asarray(assert_png(write_example_images([(image, result)], tmp_path / "all")[0], (120, 90)))
    assert (everything[66:, 92:] != image[66:, 92:]).any()


def test_example_images_check_their_inputs(tmp_path: Path) -> None:
    image, result = example()
    with pytest.raises(ValueError, match="max_regions"):
        write_example_images([(image, result)], tmp_path, max_regions=0)
    with pytest.raises(ValueError, match="example 0"):
        write_example_images([(image[:50], result)], tmp_path)
