"""Proposal files: COCO results, the per-image form of the authors' GLIP file, record lists;
de-duplication, clipping, ordering, and the errors a malformed file gives."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from regionspot.datasets.coco_format import DatasetError
from regionspot.eval.proposal_files import ImageProposals, clean_proposals, read_proposal_file

IMAGES = [
    {"id": 7, "file_name": "val2017/000000000007.jpg", "width": 100, "height": 80},
    {"id": 9, "file_name": "000000000009.jpg", "width": 50, "height": 40},
    {"id": 12, "file_name": "000000000012.jpg", "width": 60, "height": 60},
]


def write(tmp_path: Path, document: Any, name: str = "proposals.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return path


def test_coco_results_merge_a_box_listed_per_category(tmp_path: Path) -> None:
    document = [
        {"image_id": 7, "bbox": [10, 10, 20, 30], "score": 0.3, "category_id": 1},
        {"image_id": 7, "bbox": [10, 10, 20, 30], "score": 0.8, "category_id": 2},
        {"image_id": 7, "bbox": [10, 10, 20, 30], "score": 0.5, "category_id": 3},
        {"image_id": 7, "bbox": [50, 40, 10, 10], "score": 0.6, "category_id": 1},
        {"image_id": 9, "bbox": [40, 30, 30, 30], "score": 0.9},  # reaches past the 50x40 image
    ]
    proposals = read_proposal_file(write(tmp_path, document), IMAGES)
    assert set(proposals) == {7, 9, 12}
    np.testing.assert_allclose(proposals[7].boxes, [[10, 10, 30, 40], [50, 40, 60, 50]])
    np.testing.assert_allclose(proposals[7].scores, [0.8, 0.6])
    np.testing.assert_allclose(proposals[9].boxes, [[40, 30, 50, 40]])
    assert len(proposals[12]) == 0 and proposals[12].boxes.shape == (0, 4) and proposals[12].scores.shape == (0,)
    assert proposals[7].boxes.dtype == np.float64 and proposals[7].scores.dtype == np.float64


def test_authors_per_image_form_keyed_by_image_id(tmp_path: Path) -> None:
    document = {
        "7": {"boxes": [[1.0, 2.0, 30.0, 40.0], [5.0, 5.0, 150.0, 60.0]], "scores": [0.2, 0.7], "labels": [3, 4]},
        "12": {"boxes": [], "scores": [], "labels": []},
    }
    proposals = read_proposal_file(write(tmp_path, document), IMAGES)
    np.testing.assert_allclose(proposals[7].boxes, [[5, 5, 100, 60], [1, 2, 30, 40]])  # clipped, best first
    np.testing.assert_allclose(proposals[7].scores, [0.7, 0.2])
    assert len(proposals[9]) == 0 and len(proposals[12]) == 0


def test_generic_dict_keyed_by_file_name_without_scores(tmp_path: Path) -> None:
    document = {"000000000007.jpg": {"boxes": [[0, 0, 10, 10], [20, 20, 40, 30]]},
                "000000000009.jpg": {"boxes": [[3, 3, 9, 9]], "scores": None}}
    proposals = read_proposal_file(write(tmp_path, document), IMAGES)
    np.testing.assert_allclose(proposals[7].scores, [1.0, 1.0])
    np.testing.assert_allclose(proposals[7].boxes, [[0, 0, 10, 10], [20, 20, 40, 30]])  # ties keep file order
    np.testing.assert_allclose(proposals[9].scores, [1.0])


def test_record_list_by_image_id_or_file_name(tmp_path: Path) -> None:
    document = [
        {"image_id": 9, "boxes": [[1, 1, 11, 11]], "scores": [0.4]},
        {"file_name": "val2017/000000000007.jpg", "boxes": [[2, 2, 12, 12]], "scores": [0.5]},
        {"image_id": 9, "boxes": [[1, 1, 11, 11], [0, 0, 5, 5]], "scores": [0.9, 0.1]},  # same image again
    ]
    proposals = read_proposal_file(write(tmp_path, document), IMAGES)
    np.testing.assert_allclose(proposals[9].boxes, [[1, 1, 11, 11], [0, 0, 5, 5]])
    np.testing.assert_allclose(proposals[9].scores, [0.9, 0.1])
    np.testing.assert_allclose(proposals[7].scores, [0.5])


def test_degenerate_boxes_are_dropped() -> None:
    boxes = np.array([[0, 0, 10, 10], [5, 5, 5.5, 9], [90, 10, 120, 20], [200, 0, 210, 10], [3, 3, 3, 3]])
    cleaned = clean_proposals(boxes, np.array([0.1, 0.9, 0.5, 0.8, 0.7]), (80, 100))
    assert isinstance(cleaned, ImageProposals)
    np.testing.assert_allclose(cleaned.boxes, [[90, 10, 100, 20], [0, 0, 10, 10]])
    np.testing.assert_allclose(cleaned.scores, [0.5, 0.1])


def test_boxes_equal_after_clipping_merge() -> None:
    boxes = np.array([[90, 0, 120, 10], [90, 0, 130, 10], [90.0001, 0, 100, 10]])
    cleaned = clean_proposals(boxes, np.array([0.2, 0.6, 0.4]), (80, 100))
    np.testing.assert_allclose(cleaned.boxes, [[90, 0, 100, 10]])
    np.testing.assert_allclose(cleaned.scores, [0.6])


@pytest.mark.parametrize(("document", "message"), [
    ({"123": {"boxes": [[0, 0, 5, 5]]}}, "unknown image key '123'"),
    ([{"image_id": 8, "bbox": [0, 0, 5, 5], "score": 1.0}], "unknown image key 8"),
    ({"7": {"boxes": [[0, 0, 5]]}}, "N x 4"),
    ({"7": {"boxes": [0, 0, 5, 5]}}, "N x 4"),
    ({"7": {"boxes": [[0, 0, 5, "a"]]}}, "must be numbers"),
    ({"7": {"boxes": [[0, 0, 5, 5]], "scores": [0.1, 0.2]}}, "2 scores for 1 boxes"),
    ({"7": {"boxes": [[0, 0, 5, 5]], "labels": [1, 2]}}, "2 labels for 1 boxes"),
    ({"7": {"boxes": [[0, 0, 5, 5]], "scores": [float("nan")]}}, "NaN or infinite"),
    ({"7": {"boxes": [[0, 0, 1e999, 5]]}}, "NaN or infinite"),
    ({"7": {"boxes": [[10, 10, 5, 20]]}}, "inverted"),
    ({"7": [[0, 0, 5, 5]]}, "must be an object with 'boxes'"),
    ([{"image_id": 7, "bbox": [0, 0, -5, 5], "score": 1.0}], "negative width"),
    ([{"image_id": 7, "bbox": [0, 0, 5], "score": 1.0}], r"\[x, y, w, h\]"),
    ([{"image_id": 7, "bbox": [0, 0, 5, 5], "score": 0.5}, {"image_id": 7}], "needs image_id and bbox"),
    ([{"boxes": [[0, 0, 5, 5]]}], "names no image"),
    ({"images": [], "annotations": []}, "annotation file"),
    ("boxes", "JSON list or object"),
])
def test_malformed_files_name_the_problem(tmp_path: Path, document: Any, message: str) -> None:
    path = write(tmp_path, document)
    with pytest.raises(DatasetError, match=message) as info:
        read_proposal_file(path, IMAGES)
    assert str(path) in str(info.value)


def test_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        read_proposal_file(tmp_path / "nope.json", IMAGES)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(DatasetError, match="not a JSON file"):
        read_proposal_file(broken, IMAGES)


def test_empty_list_gives_empty_proposals_everywhere(tmp_path: Path) -> None:
    proposals = read_proposal_file(write(tmp_path, []), IMAGES)
    assert {k: len(v) for k, v in proposals.items()} == {7: 0, 9: 0, 12: 0}


def test_real_sample_ground_truth_as_coco_results(tmp_path: Path, coco_sample: Path) -> None:
    """The shared sample's annotations written as a results file read back box for box."""
    dataset = json.loads((coco_sample / "annotations.json").read_text())
    annotations = [a for a in dataset["annotations"] if not a.get("iscrowd", 0)][:200]
    document = [{"image_id": a["image_id"], "bbox": a["bbox"], "score": 0.5, "category_id": a["category_id"]}
                for a in annotations]
    proposals = read_proposal_file(write(tmp_path, document), dataset["images"])
    assert set(proposals) == {image["id"] for image in dataset["images"]}
    sizes = {image["id"]: (image["height"], image["width"]) for image in dataset["images"]}
    for image_id, found in proposals.items():
        height, width = sizes[image_id]
        assert (found.boxes[:, [0, 2]] <= width).all() and (found.boxes[:, [1, 3]] <= height).all()
        assert (found.boxes[:, 2:] - found.boxes[:, :2] >= 1.0).all()
    total = sum(len(p) for p in proposals.values())
    expected = len({(a["image_id"], tuple(np.round(a["bbox"], 3))) for a in annotations
                    if min(a["bbox"][2], a["bbox"][3]) >= 1.0})
    assert total == expected
