from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from regionspot.datasets.coco_format import CocoDataset, DatasetError


def test_real_coco_sample(coco_sample: Path) -> None:
    dataset = CocoDataset(coco_sample / "annotations.json", coco_sample / "images", name="coco")
    document = json.loads((coco_sample / "annotations.json").read_text())
    crowd = sum(a["iscrowd"] for a in document["annotations"])
    assert len(dataset.names) == 80 and dataset.names[0] == "person"
    assert dataset.stats.crowd == crowd
    assert dataset.stats.kept + dataset.stats.crowd + dataset.stats.degenerate == len(document["annotations"])
    assert sum(len(r.boxes) for r in dataset.records) == dataset.stats.kept
    record = dataset[0]
    assert record.boxes.dtype == np.float32 and (record.boxes[:, 2:] > record.boxes[:, :2]).all()
    assert dataset.load_image(record).shape == (record.height, record.width, 3)


def write(tmp_path: Path, annotations: list[dict], categories=None) -> Path:
    (tmp_path / "images").mkdir(exist_ok=True)
    document = {"images": [{"id": 1, "file_name": "a.jpg", "height": 10, "width": 20},
                           {"id": 2, "file_name": "b.jpg", "height": 10, "width": 20}],
                "annotations": annotations,
                "categories": categories or [{"id": 7, "name": "traffic_light"}, {"id": 3, "name": "sofa-other"}]}
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(document))
    return path


def test_crowd_degenerate_and_empty_images_are_dropped(tmp_path: Path) -> None:
    path = write(tmp_path, [
        {"id": 1, "image_id": 1, "category_id": 7, "bbox": [1, 1, 5, 5], "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [1, 1, 5, 5], "iscrowd": 1},
        {"id": 3, "image_id": 1, "category_id": 3, "bbox": [30, 1, 5, 5], "iscrowd": 0},  # outside the image
        {"id": 4, "image_id": 2, "category_id": 3, "bbox": [0, 0, 0.5, 3], "iscrowd": 0},  # too thin
    ])
    dataset = CocoDataset(path, tmp_path / "images")
    assert dataset.names == ["sofa", "traffic light"]  # id order, cleaned
    assert len(dataset) == 1
    assert dataset[0].labels.tolist() == [1] and dataset[0].annotation_ids.tolist() == [1]
    assert (dataset.stats.crowd, dataset.stats.degenerate, dataset.stats.images_without_boxes) == (1, 2, 1)


def test_given_vocabulary_must_match_category_count(tmp_path: Path) -> None:
    path = write(tmp_path, [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [1, 1, 5, 5]}])
    assert CocoDataset(path, tmp_path / "images", vocabulary="couch,signal").names == ["couch", "signal"]
    with pytest.raises(DatasetError, match="1 names for 2 categories"):
        CocoDataset(path, tmp_path / "images", vocabulary="couch")


def test_missing_files_are_clear(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        CocoDataset(tmp_path / "none.json", tmp_path)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(DatasetError, match="missing"):
        CocoDataset(tmp_path / "bad.json", tmp_path)


def test_lvis_style_images_use_coco_url(tmp_path: Path) -> None:
    from regionspot.datasets.coco_format import image_file_name

    assert image_file_name({"id": 1, "coco_url": "http://images.cocodataset.org/val2017/000000397133.jpg"}) \
        == "val2017/000000397133.jpg"
    assert image_file_name({"id": 1, "file_name": "a.jpg", "coco_url": "x/y/z.jpg"}) == "a.jpg"
    with pytest.raises(DatasetError, match="neither"):
        image_file_name({"id": 3})
