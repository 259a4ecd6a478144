"""What :func:`read_annotations` and :func:`dataset_vocabulary` refuse, and how they say it (the
file, the first faulty entry, how many share the fault); :class:`CocoDataset` inherits it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from regionspot.datasets import coco_format
from regionspot.datasets.coco_format import (
    CocoDataset,
    DatasetError,
    read_annotations,
    read_json,
)


def write(tmp_path: Path, value: Any, name: str = "ann.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(value))
    return path


def coco(**changes: Any) -> dict[str, Any]:
    return {"images": [{"id": 1, "file_name": "a.jpg", "height": 10, "width": 20}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [1, 1, 5, 5]}],
            "categories": [{"id": 7, "name": "traffic_light"}], **changes}


def test_read_json_names_the_file_and_the_fault(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"detections file not found: .*none\.json"):
        read_json(tmp_path / "none.json", "detections")
    latin = tmp_path / "latin.json"
    latin.write_bytes('["caf\xe9"]'.encode("latin-1"))
    with pytest.raises(DatasetError, match=r"latin.json is not UTF-8 text \(byte 0xe9 at offset 5\)"):
        read_json(latin, "annotation")
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf[1]")
    assert read_json(bom, "annotation") == [1]
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DatasetError, match="is not valid JSON"):
        read_json(tmp_path / "deep.json", "annotation")


@pytest.mark.parametrize(("value", "message"), [
    ([], "holds a JSON list, not a COCO annotation object"),
    ("text", "holds a JSON string, not a COCO annotation object"),
    (coco(images=None), '"images" must be a list of objects, got null'),
    (coco(categories={"id": 7}), '"categories" must be a list of objects, got object'),
    (coco(annotations=[1, {"id": 2}]),
     "malformed annotations: 1 of 2 annotations is not a JSON object; it is annotations[0] = 1"),
    (coco(annotations=[{"id": 4, "image_id": True, "category_id": 7}]),
     '1 of 1 annotation has no integer "image_id"; it is annotations[0] (id 4): image_id = True'),
    (coco(annotations=[{"id": 4, "image_id": 1}]),
     'has no integer "category_id"; it is annotations[0] (id 4): no category_id'),
    (coco(images=[{"id": 1, "height": 0, "width": 20}]), 'has no positive integer "height"'),
    (coco(images=[{"id": 1, "height": 10, "width": 20.5}]), 'has no positive integer "width"'),
    (coco(categories=[{"name": "x"}]), 'malformed categories: 1 of 1 category has no integer "id"'),
], ids=["list", "string", "images-null", "categories-object", "annotation-number", "boolean-image-id",
        "no-category-id", "zero-height", "fractional-width", "category-without-id"])
def test_read_annotations_refuses_what_is_not_coco(tmp_path: Path, value: Any, message: str) -> None:
    path = write(tmp_path, value)
    with pytest.raises(DatasetError) as info:
        read_annotations(path)
    assert str(info.value).startswith(str(path)) and message in str(info.value), str(info.value)


def test_category_name_problem_reuses_the_vocabulary_rules() -> None:
    assert coco_format.category_name_problem({"id": 1, "name": "traffic_light"}) is None
    assert coco_format.category_name_problem({"id": 1}) == 'has no "name"'
    assert coco_format.category_name_problem({"id": 1, "name": "_"}).startswith("name '_' is empty once cleaned")
    assert coco_format.category_name_problem({"id": 1, "name": "x" * 301}).startswith("name is 301 characters long")


def test_dataset_vocabulary_names_the_file_and_the_category() -> None:
    categories = [{"id": 1, "name": "cat"}, {"id": 2, "name": "-other"}, {"id": 3, "name": 4}]
    with pytest.raises(DatasetError, match=r"^ann.json: 2 of 3 category names cannot be text prompts; the first is "
                                           r"category id 2: name '-other' is empty once cleaned"):
        coco_format.dataset_vocabulary(categories, None, "ann.json")
    with pytest.raises(DatasetError, match=r"^ann.json: category names .* duplicated"):
        coco_format.dataset_vocabulary([{"id": 1, "name": "Cat_"}, {"id": 2, "name": "cat"}], None, "ann.json")
    assert coco_format.dataset_vocabulary(categories, "a,b,c", "ann.json") == ["a", "b", "c"]  # the JSON's names unused


def test_coco_dataset_refuses_names_that_cannot_be_prompts(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    path = write(tmp_path, coco(categories=[{"id": 7, "name": "_"}]))
    with pytest.raises(DatasetError, match=r"^lvis \(.*ann\.json\): 1 of 1 category name cannot be a text prompt; "
                                           r"it is category id 7"):
        CocoDataset(path, tmp_path / "images", name="lvis")


def test_whole_number_float_sizes_are_read_as_integers(tmp_path: Path) -> None:
    document = read_annotations(write(tmp_path, coco(images=[{"id": 1, "height": 480.0, "width": 640.0}])))
    image = document["images"][0]
    assert (image["height"], image["width"]) == (480, 640) and isinstance(image["height"], int)


TRAINING_BOX = 'has a "bbox" that is not [x, y, w, h] (4 finite numbers)'


def two_boxes(second: dict[str, Any]) -> dict[str, Any]:
    """Two annotations of image 1: a good box, then ``second`` merged into a copy of it."""
    good = {"id": 1, "image_id": 1, "category_id": 7, "bbox": [1, 1, 5, 5]}
    return coco(annotations=[good, {**good, "id": 2, **second}])


@pytest.mark.parametrize(("bbox", "shown"), [
    ([float("nan"), 1, 2, 3], "bbox = [nan, 1, 2, 3]"),
    ([1, 1, float("inf"), 3], "bbox = [1, 1, inf, 3]"),
    ([1, 2], "bbox = [1, 2]"),
    ("1,2,3,4", "bbox = '1,2,3,4'"),
    ([1, 2, "3", 4], "bbox = [1, 2, '3', 4]"),
    (None, "bbox = None"),
], ids=["nan", "inf", "two-numbers", "string", "string-number", "null"])
def test_training_refuses_a_malformed_box_naming_the_file_and_the_entry(tmp_path: Path, bbox: Any, shown: str) -> None:
    (tmp_path / "images").mkdir()
    path = write(tmp_path, two_boxes({"bbox": bbox}))
    with pytest.raises(DatasetError) as info:
        CocoDataset(path, tmp_path / "images", name="lvis")
    assert str(info.value) == f"{path}: 1 of 2 annotations {TRAINING_BOX}; it is annotations[1] (id 2): {shown}"


def test_training_counts_the_malformed_boxes_and_needs_one_on_every_annotation(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    document = two_boxes({})
    document["annotations"] += [{"id": 3, "image_id": 1, "category_id": 7, "iscrowd": 1},
                                {"id": 4, "image_id": 1, "category_id": 7, "bbox": [float("nan")] * 4}]
    with pytest.raises(DatasetError, match=r"2 of 4 annotations have a \"bbox\" .*; the first is annotations\[2\] "
                                           r"\(id 3\): no bbox$"):
        CocoDataset(write(tmp_path, document), tmp_path / "images")


def test_negative_and_empty_boxes_are_still_dropped_as_degenerate(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    dataset = CocoDataset(write(tmp_path, two_boxes({"bbox": [4, 4, -3, 2]})), tmp_path / "images")
    assert (dataset.stats.kept, dataset.stats.degenerate) == (1, 1)
    assert dataset.records[0].annotation_ids.tolist() == [1]


def test_extract_tokens_ends_with_one_error_line_for_a_nan_box(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from regionspot.cli.main import main

    (tmp_path / "images").mkdir()
    path = write(tmp_path, two_boxes({"bbox": [1, float("nan"), 2, 2]}))
    code = main(["extract-tokens", "--data", str(path), "--images", str(tmp_path / "images"), "--sam", "no-such-sam",
                 "--out", str(tmp_path / "tokens")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err == (f"error: {path}: 1 of 2 annotations {TRAINING_BOX}; "
                   "it is annotations[1] (id 2): bbox = [1, nan, 2, 2]\n")
