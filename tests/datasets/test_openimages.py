from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from regionspot.datasets.coco_format import CocoDataset, DatasetError
from regionspot.datasets.openimages import convert_openimages, read_class_descriptions

HEADER = ("ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,IsTruncated,IsGroupOf,"
          "IsDepiction,IsInside")
CLASSES = '/m/0k4j,Car\n/m/01g317,Person\n/m/015qff,"Traffic_light"\n/m/0zz,Sofa-other\n'
ROWS = [
    "aaaa,xclick,/m/01g317,1,0.1,0.5,0.2,0.8,0,0,0,0,0",      # a: person, 4..20 x 4..16
    "aaaa,xclick,/m/0k4j,1,0,1,0,1,1,0,1,0,0",                # a: a group of cars -> crowd
    "bbbb,activemil,/m/015qff,1,0.5,1.2,-0.1,0.5,0,1,0,0,0",  # b: traffic light, clipped to the image
    "cccc,xclick,/m/0k4j,1,0.1,0.2,0.1,0.2,0,0,0,0,0",        # c: no image file
    "cccc,xclick,/m/0k4j,1,0.3,0.4,0.1,0.2,0,0,0,0,0",
    "bbbb,xclick,/m/0bad,1,0.1,0.2,0.1,0.2,0,0,0,0,0",        # unknown class
    "bbbb,xclick,/m/0k4j,1,0.3,0.3,0.1,0.2,0,0,0,0,0",        # zero width
    "bbbb,xclick,/m/0k4j,0,0.1,0.2,0.1,0.2,0,0,0,0,0",        # confidence 0
    "dddd,xclick,/m/0zz,1,0.25,0.75,0.5,1.0,0,0,0,1,0",       # d: EXIF-rotated image
    "eeee,xclick,/m/0k4j,1,0.1,0.9,0.1,0.9,0,0,1,0,0",        # e: only a crowd box
]


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (40, 20), (200, 10, 10)).save(images / "aaaa.jpg")
    Image.new("RGB", (30, 50), (10, 200, 10)).save(images / "bbbb.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees to display: stored 40x20, upright 20x40
    Image.new("RGB", (40, 20), (10, 10, 200)).save(images / "dddd.jpg", exif=exif)
    Image.new("RGB", (16, 16)).save(images / "eeee.jpg")
    (images / "zzzz.jpg").write_bytes(b"not listed in the CSV")
    boxes = tmp_path / "train-annotations-bbox.csv"
    boxes.write_text(HEADER + "\n" + "\n".join(ROWS) + "\n")
    classes = tmp_path / "class-descriptions-boxable.csv"
    classes.write_text(CLASSES)
    return {"images": images, "boxes": boxes, "classes": classes, "out": tmp_path / "out" / "oi.json"}


def convert(inputs: dict[str, Path], **kwargs):
    return convert_openimages(inputs["boxes"], inputs["classes"], inputs["images"], inputs["out"], **kwargs)


def test_convert_and_read_back(inputs: dict[str, Path]) -> None:
    seen = []
    report = convert(inputs, progress=lambda r: seen.append(r.rows), progress_every=4)
    assert seen == [4, 8]
    assert (report.rows, report.images, report.annotations, report.crowd) == (10, 4, 5, 2)
    assert (report.missing_images, report.skipped_missing_image, report.missing_examples) == (1, 2, ["cccc"])
    assert (report.skipped_unknown_class, report.skipped_degenerate, report.skipped_zero_confidence) == (1, 1, 1)
    assert report.exif_rotated == 1 and report.categories == 4
    assert sorted(p.name for p in inputs["out"].parent.iterdir()) == ["oi.json"]  # no partial files left

    document = json.loads(inputs["out"].read_text())
    assert [c["freebase_id"] for c in document["categories"]] == ["/m/015qff", "/m/01g317", "/m/0k4j", "/m/0zz"]
    assert [c["id"] for c in document["categories"]] == [1, 2, 3, 4]
    images = {i["openimages_id"]: i for i in document["images"]}
    assert (images["dddd"]["width"], images["dddd"]["height"]) == (20, 40)
    assert images["bbbb"]["file_name"] == "bbbb.png"
    assert document["annotations"][0]["bbox"] == pytest.approx([4, 4, 16, 12])
    assert document["annotations"][0]["is_occluded"] == 0 and document["annotations"][1]["is_occluded"] == 1

    dataset = CocoDataset(inputs["out"], inputs["images"], name="openimages")
    assert dataset.names == ["Traffic light", "Person", "Car", "Sofa"]
    assert dataset.stats.crowd == 2 and dataset.stats.images_without_boxes == 1  # eeee: only a crowd box
    records = {r.file_name: r for r in dataset.records}
    assert sorted(records) == ["aaaa.jpg", "bbbb.png", "dddd.jpg"]
    assert np.allclose(records["aaaa.jpg"].boxes, [[4, 4, 20, 16]]) and records["aaaa.jpg"].labels.tolist() == [1]
    assert np.allclose(records["bbbb.png"].boxes, [[15, 0, 30, 25]]) and records["bbbb.png"].labels.tolist() == [0]
    assert np.allclose(records["dddd.jpg"].boxes, [[5, 20, 15, 40]]) and records["dddd.jpg"].labels.tolist() == [3]
    for record in dataset.records:
        assert dataset.load_image(record).shape == (record.height, record.width, 3)


def test_conversion_is_stable(inputs: dict[str, Path]) -> None:
    convert(inputs)
    first = inputs["out"].read_bytes()
    convert(inputs)
    assert inputs["out"].read_bytes() == first


def test_class_descriptions(tmp_path: Path) -> None:
    path = tmp_path / "classes.csv"
    path.write_text('LabelName,DisplayName\n/m/b,"Tree, house"\n/m/a,Apple\n')
    assert read_class_descriptions(path) == [("/m/a", "Apple"), ("/m/b", "Tree, house")]
    path.write_text("/m/a,Apple\n/m/a,Pear\n")
    with pytest.raises(DatasetError, match="listed twice"):
        read_class_descriptions(path)
    path.write_text("/m/a,Apple,extra\n")
    with pytest.raises(DatasetError, match=r"classes\.csv:1"):
        read_class_descriptions(path)


def test_names_equal_after_cleaning_fail_before_streaming(inputs: dict[str, Path]) -> None:
    inputs["classes"].write_text("/m/a,Traffic light\n/m/b,traffic_light\n")
    with pytest.raises(DatasetError, match="same name"):
        convert(inputs)
    assert not inputs["out"].exists()


def test_bad_csv_is_reported_with_its_line(inputs: dict[str, Path]) -> None:
    inputs["boxes"].write_text(HEADER + "\n" + ROWS[0] + "\n" + ROWS[0].replace("0.5", "half") + "\n")
    with pytest.raises(DatasetError, match=r"annotations-bbox.csv:3"):
        convert(inputs)
    assert not inputs["out"].exists() and list(inputs["out"].parent.iterdir()) == []
    inputs["boxes"].write_text("ImageID,XMin\naaaa,0.1\n")
    with pytest.raises(DatasetError, match=r"columns .* missing"):
        convert(inputs)
    inputs["boxes"].write_text(HEADER + "\n../aaaa,xclick,/m/0k4j,1,0,1,0,1,0,0,0,0,0\n")
    with pytest.raises(DatasetError, match="plain file name"):
        convert(inputs)


def test_missing_inputs(inputs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="boxes CSV not found"):
        convert_openimages(tmp_path / "none.csv", inputs["classes"], inputs["images"], inputs["out"])
    with pytest.raises(DatasetError, match="image folder not found"):
        convert_openimages(inputs["boxes"], inputs["classes"], tmp_path / "none", inputs["out"])
    with pytest.raises(DatasetError, match="class descriptions file not found"):
        convert_openimages(inputs["boxes"], tmp_path / "none.csv", inputs["images"], inputs["out"])
