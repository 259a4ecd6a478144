"""``regionspot convert``: openimages and check; and check_coco itself."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from regionspot.cli.main import main
from regionspot.datasets.coco_format import CocoDataset
from regionspot.datasets.convert import check_coco

HEADER = ("ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,IsTruncated,IsGroupOf,"
          "IsDepiction,IsInside")


def run_cli(*args: object) -> int:
    return main([str(a) for a in args])


def write_coco(tmp_path: Path, **changes) -> Path:
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    Image.new("RGB", (20, 10)).save(images / "a.jpg")
    document = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 10, "width": 20},
                   {"id": 2, "file_name": "gone.jpg", "height": 10, "width": 20}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [1, 1, 5, 5], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [1, 1, 5, 5], "iscrowd": 1},
            {"id": 3, "image_id": 1, "category_id": 3, "bbox": [30, 1, 5, 5], "iscrowd": 0},
            {"id": 4, "image_id": 2, "category_id": 3, "bbox": [0, 0, 0.5, 3], "iscrowd": 0},
        ],
        "categories": [{"id": 7, "name": "traffic_light"}, {"id": 3, "name": "sofa-other"}],
    }
    document.update(changes)
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(document))
    return path


def test_check_counts_match_what_coco_dataset_keeps(coco_sample: Path) -> None:
    report = check_coco(coco_sample / "annotations.json", coco_sample / "images", check_sizes=True)
    dataset = CocoDataset(coco_sample / "annotations.json", coco_sample / "images")
    assert report.usable_boxes == dataset.stats.kept and report.usable_images == len(dataset)
    assert (report.crowd, report.degenerate) == (dataset.stats.crowd, dataset.stats.degenerate)
    assert report.categories == 80 and report.missing_files == 0 and report.size_mismatch == 0
    assert report.problems() == []


def test_check_finds_problems(tmp_path: Path) -> None:
    path = write_coco(tmp_path)
    report = check_coco(path, tmp_path / "images", check_sizes=True)
    assert (report.usable_boxes, report.crowd, report.degenerate, report.usable_images) == (1, 1, 2, 1)
    assert report.missing_files == 1 and report.missing_examples == ["gone.jpg"]
    assert report.renamed_categories == 2 and "'sofa-other' -> 'sofa'" in report.rename_examples
    assert any("missing" in p for p in report.problems())

    Image.new("RGB", (20, 11)).save(tmp_path / "images" / "gone.jpg")
    report = check_coco(path, tmp_path / "images", check_sizes=True)
    assert report.missing_files == 0 and report.size_mismatch == 1
    assert report.size_examples == ["gone.jpg: 20x11, JSON 20x10"]

    path = write_coco(tmp_path, categories=[{"id": 7, "name": "Sofa"}, {"id": 3, "name": "sofa-other"}],
                      annotations=[{"id": 1, "image_id": 9, "category_id": 7, "bbox": [1, 1, 5, 5]},
                                   {"id": 1, "image_id": 1, "category_id": 8, "bbox": [1, 1, 5, 5]},
                                   {"id": 3, "image_id": 1, "category_id": 7, "bbox": [1, 1, "x", 5]}])
    report = check_coco(path)
    assert (report.unknown_image, report.unknown_category, report.malformed_boxes) == (1, 1, 1)
    assert report.duplicate_annotation_ids == 1 and len(report.duplicate_names) == 1
    assert report.missing_files is None and len(report.problems()) == 6


def test_cli_check(tmp_path: Path, capsys) -> None:
    path = write_coco(tmp_path)
    assert run_cli("convert", "check", path, "--images", tmp_path / "images") == 1
    out = capsys.readouterr().out
    assert "usable 1" in out and "problem: 1 image files are missing" in out
    Image.new("RGB", (20, 10)).save(tmp_path / "images" / "gone.jpg")
    assert run_cli("convert", "check", path, "--images", tmp_path / "images", "--sizes", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["problems"] == [] and report["usable_boxes"] == 1 and report["size_mismatch"] == 0


def test_cli_user_errors_exit_2(tmp_path: Path, capsys) -> None:
    assert run_cli("convert", "check", tmp_path / "none.json") == 2
    assert "error: annotation file not found" in capsys.readouterr().err
    path = write_coco(tmp_path)
    assert run_cli("convert", "check", path, "--sizes") == 2
    assert "--sizes needs --images" in capsys.readouterr().err
    assert run_cli("convert", "check", path, "--images", tmp_path / "nowhere") == 2
    assert "image folder not found" in capsys.readouterr().err
    (tmp_path / "broken.json").write_text('{"images": [{"file_name": "a.jpg"}], "annotations": [], '
                                          '"categories": []}')
    assert run_cli("convert", "check", tmp_path / "broken.json") == 2
    assert "malformed" in capsys.readouterr().err


def test_cli_openimages(tmp_path: Path, capsys) -> None:
    images = tmp_path / "img"
    images.mkdir()
    Image.new("RGB", (40, 20)).save(images / "abc.jpg")
    boxes = tmp_path / "boxes.csv"
    boxes.write_text(HEADER + "\nabc,xclick,/m/01,1,0.25,0.75,0,0.5,0,0,0,0,0\n"
                              "missing,xclick,/m/01,1,0.25,0.75,0,0.5,0,0,0,0,0\n")
    classes = tmp_path / "classes.csv"
    classes.write_text("/m/01,Dog\n")
    out = tmp_path / "oi.json"
    assert run_cli("convert", "openimages", "--boxes", boxes, "--classes", classes, "--images", images,
                   "--out", out) == 0
    err = capsys.readouterr().err
    assert "images 1, annotations 1" in err and "missing or unreadable image files: 1" in err
    dataset = CocoDataset(out, images)
    assert dataset.names == ["Dog"] and dataset[0].boxes.tolist() == [[10, 0, 30, 10]]
    assert run_cli("convert", "check", out, "--images", images, "--quiet") == 0

    boxes.write_text("ImageID,XMin\n")
    assert run_cli("convert", "openimages", "--boxes", boxes, "--classes", classes, "--images", images,
                   "--out", out) == 2
    assert "not an OpenImages box CSV" in capsys.readouterr().err


def test_check_lvis_style_images_without_file_name(tmp_path: Path, capsys) -> None:
    (tmp_path / "val2017").mkdir()
    Image.new("RGB", (20, 10)).save(tmp_path / "val2017" / "000000397133.jpg")
    document = {"images": [{"id": 1, "coco_url": "http://images.cocodataset.org/val2017/000000397133.jpg",
                            "height": 10, "width": 20},
                           {"id": 2, "coco_url": "http://images.cocodataset.org/train2017/000000000001.jpg",
                            "height": 10, "width": 20},
                           {"id": 3, "height": 10, "width": 20}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}],
                "categories": [{"id": 1, "name": "aerosol_can"}]}
    path = tmp_path / "lvis.json"
    path.write_text(json.dumps(document))
    report = check_coco(path, tmp_path, check_sizes=True)
    assert report.missing_file_name == 1 and report.missing_files == 2 and report.size_mismatch == 0
    assert report.missing_examples == ["train2017/000000000001.jpg", "(image 3: no name)"]
    assert run_cli("convert", "check", path, "--images", tmp_path) == 1
    assert "1 images have neither file_name nor coco_url" in capsys.readouterr().out
