"""Example pictures: the ground truth of a real COCO photo beside the predictions, every region
marked right (top-1 name = a ground-truth box of that class at IoU >= 0.5) or wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import regionspot.eval.examples as examples_module
from regionspot.eval.examples import (
    CORRECT,
    TRUTH,
    WRONG,
    Example,
    ImageTruth,
    example_picture,
    image_truths,
    judge_regions,
    prediction_tags,
    write_example_images,
)
from regionspot.ops.image import load_image
from regionspot.results import RegionResult

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "eval-examples"
IMAGE_ID = 25  # two giraffes (category 25), 640x427


@pytest.fixture(scope="module")
def annotation(coco_sample: Path) -> dict[str, Any]:
    return json.loads((coco_sample / "annotations.json").read_text())


@pytest.fixture(scope="module")
def category_ids(annotation: dict[str, Any]) -> list[int]:
    return sorted(c["id"] for c in annotation["categories"])


@pytest.fixture(scope="module")
def photo(coco_sample: Path, annotation: dict[str, Any]) -> np.ndarray:
    info = next(image for image in annotation["images"] if image["id"] == IMAGE_ID)
    return load_image(coco_sample / "images" / info["file_name"])


@pytest.fixture(scope="module")
def truth(annotation: dict[str, Any], category_ids: list[int]) -> ImageTruth:
    return image_truths(annotation, [IMAGE_ID], category_ids)[IMAGE_ID]


def predictions(truth: ImageTruth, photo: np.ndarray, vocabulary: list[str]) -> RegionResult:
    """Four regions on the photo: (0) the first giraffe's box, named giraffe: correct; (1) the
    second giraffe's box named zebra: wrong, gt giraffe; (2) a patch of sky named kite: wrong, no
    ground truth; (3) the first box moved by half its width, named giraffe: wrong (IoU < 0.5)."""
    first, second = truth.boxes
    giraffe, zebra, kite = (vocabulary.index(name) for name in ("giraffe", "zebra", "kite"))
    moved = first + np.array([0.5, 0, 0.5, 0]) * (first[2] - first[0])
    boxes = np.stack([first, second, [10, 10, 120, 60], moved])
    ids = [[giraffe, zebra], [zebra, giraffe], [kite, zebra], [giraffe, zebra]]
    scores = [[0.9, 0.05], [0.8, 0.1], [0.6, 0.2], [0.7, 0.1]]
    return RegionResult(boxes=boxes, topk_ids=ids, topk_scores=scores, vocabulary=vocabulary,
                        image_size=photo.shape[:2])


@pytest.fixture(scope="module")
def vocabulary(annotation: dict[str, Any], category_ids: list[int]) -> list[str]:
    names = {c["id"]: c["name"] for c in annotation["categories"]}
    return [names[i] for i in category_ids]


def count(picture: Image.Image, colour: tuple[int, int, int]) -> int:
    """Pixels of exactly ``colour``."""
    return int(np.all(np.asarray(picture) == np.asarray(colour, np.uint8), axis=2).sum())


def test_image_truths_keep_non_crowd_boxes_in_the_vocabulary(annotation: dict[str, Any],
                                                             category_ids: list[int]) -> None:
    truth = image_truths(annotation, [IMAGE_ID], category_ids)[IMAGE_ID]
    assert truth.file_name == "000000000025.jpg"
    boxes = [a["bbox"] for a in annotation["annotations"] if a["image_id"] == IMAGE_ID]
    assert np.allclose(truth.boxes, [[x, y, x + w, y + h] for x, y, w, h in boxes])  # xywh -> xyxy
    assert [category_ids[i] for i in truth.label_ids] == [25, 25]
    crowded = next(a["image_id"] for a in annotation["annotations"] if a["iscrowd"])
    with_crowd = image_truths(annotation, [crowded], category_ids)[crowded]
    plain = [a for a in annotation["annotations"] if a["image_id"] == crowded and not a["iscrowd"]]
    assert len(with_crowd.boxes) == len(plain)
    only_giraffes = image_truths(annotation, [IMAGE_ID], [25])[IMAGE_ID]  # other categories left out
    assert only_giraffes.label_ids.tolist() == [0, 0]


def test_judge_regions(truth: ImageTruth, photo: np.ndarray, vocabulary: list[str]) -> None:
    result = predictions(truth, photo, vocabulary)
    correct, truth_ids = judge_regions(result, truth)
    assert correct.tolist() == [True, False, False, False]
    giraffe = vocabulary.index("giraffe")
    assert truth_ids.tolist() == [giraffe, giraffe, -1, -1]
    assert prediction_tags(result, correct, truth_ids) == [
        "giraffe 0.90", "zebra 0.80 (gt: giraffe)", "kite 0.60 (gt: none)", "giraffe 0.70 (gt: none)"]
    empty = ImageTruth(1, "", np.zeros((0, 4)), np.zeros(0, dtype=np.int64))
    assert judge_regions(result, empty)[0].tolist() == [False] * 4


def test_example_picture_has_the_truth_beside_the_predictions(truth: ImageTruth, photo: np.ndarray,
                                                               vocabulary: list[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    drawn: list[dict[str, Any]] = []
    sheets: list[dict[str, Any]] = []
    draw, compose = examples_module.draw_regions, examples_module.side_by_side

    def record_draw(*args: Any, **kwargs: Any) -> Image.Image:
        drawn.append({"labels": list(args[2]), "colors": kwargs.get("colors")})
        return draw(*args, **kwargs)

    def record_sheet(panels: Any, **kwargs: Any) -> Image.Image:
        sheets.append({"panels": panels, **kwargs})
        return compose(panels, **kwargs)

    monkeypatch.setattr(examples_module, "draw_regions", record_draw)
    monkeypatch.setattr(examples_module, "side_by_side", record_sheet)
    result = predictions(truth, photo, vocabulary)
    picture = example_picture(Example(photo, result, truth, regions=9), max_regions=3)
    predicted, ground = drawn
    # the 3 best (kite 0.60 left out), drawn in rising score order so the best tag gets the first free place
    assert predicted["labels"] == ["giraffe 0.70 (gt: none)", "zebra 0.80 (gt: giraffe)", "giraffe 0.90"]
    assert predicted["colors"] == [WRONG, WRONG, CORRECT]
    assert ground == {"labels": ["giraffe", "giraffe"], "colors": [TRUTH, TRUTH]}
    (sheet,) = sheets
    assert sheet["title"] == "image 25 (000000000025.jpg): 1 of 3 regions named correctly"
    (left_heading, left), (right_heading, right) = sheet["panels"]
    assert left_heading == "ground truth: 2 boxes" and right_heading.startswith("predictions: the 3 best of 9")
    assert [color for color, _ in sheet["legend"]] == [CORRECT, WRONG, TRUTH]
    # the same photo in both panels: the truth's colour only on the left, right and wrong only on the right
    assert count(left, TRUTH) > 500 and count(left, CORRECT) == count(left, WRONG) == 0
    assert count(right, CORRECT) > 500 and count(right, WRONG) > 500 and count(right, TRUTH) == 0
    assert picture.width > 2 * photo.shape[1] and picture.height > photo.shape[0]  # two photos side by side
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    picture.save(ARTIFACTS / "example_coco_25.png")


def test_write_example_images(truth: ImageTruth, photo: np.ndarray, vocabulary: list[str], tmp_path: Path) -> None:
    result = predictions(truth, photo, vocabulary)
    paths = write_example_images([Example(photo, result, truth), Example(photo, result[[0]], truth)],
                                 tmp_path / "examples", max_regions=2)
    assert [p.name for p in paths] == ["example_000.png", "example_001.png"]
    with Image.open(paths[0]) as picture:
        assert picture.format == "PNG" and picture.width > 2 * photo.shape[1]
    with pytest.raises(ValueError, match="max_regions"):
        write_example_images([Example(photo, result, truth)], tmp_path, max_regions=0)
    with pytest.raises(ValueError, match="example 0"):
        write_example_images([Example(photo[:50], result, truth)], tmp_path)
