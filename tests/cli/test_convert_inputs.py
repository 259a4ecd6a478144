"""``regionspot convert check``: files that are not UTF-8 COCO JSON are one ``error:`` line (exit
2); category names that would crash a run later and repeated category ids are problems (exit 1)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from regionspot.cli.main import main


def document(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 10, "width": 20}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [1, 1, 5, 5], "iscrowd": 0}],
        "categories": [{"id": 7, "name": "traffic_light"}, {"id": 3, "name": "sofa"}],
    }
    return {**base, **changes}


def check(capsys: pytest.CaptureFixture[str], path: Path) -> tuple[int, str, str]:
    code = main(["convert", "check", str(path), "--quiet"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_valid_file_passes(tmp_path: Path, capsys) -> None:
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(document()))
    code, out, _ = check(capsys, path)
    assert code == 0 and "problem" not in out


@pytest.mark.parametrize(("content", "message"), [
    (json.dumps(document(categories=[{"id": 7, "name": "señal"}]), ensure_ascii=False).encode("latin-1"),
     "is not UTF-8 text (byte 0xf1 at offset"),
    (json.dumps([document()]).encode(), "holds a JSON list, not a COCO annotation object"),
    (json.dumps(document(annotations=None)).encode(), '"annotations" must be a list of objects, got null'),
    (json.dumps(document(images={})).encode(), '"images" must be a list of objects, got object'),
    (json.dumps(document(images=[{"id": 1.5, "height": 10, "width": 20}])).encode(),
     'malformed images: 1 of 1 image has no integer "id"; it is images[0]: id = 1.5'),
], ids=["latin-1", "list", "annotations-null", "images-object", "float-image-id"])
def test_files_that_are_not_coco_json_are_one_error_line(tmp_path: Path, capsys, content: bytes, message: str) -> None:
    path = tmp_path / "ann.json"
    path.write_bytes(content)
    code, _, err = check(capsys, path)
    assert code == 2 and err.startswith(f"error: {path}") and err.count("\n") == 1, err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(("category", "found"), [
    ({"id": 3, "name": "_"}, "category id 3: name '_' is empty once cleaned for a prompt"),
    ({"id": 3, "name": "-other"}, "category id 3: name '-other' is empty once cleaned for a prompt"),
    ({"id": 3, "name": ""}, "category id 3: name is an empty name"),
    ({"id": 3, "name": "   "}, "category id 3: name is an empty name"),
    ({"id": 3}, 'category id 3: has no "name"'),
    ({"id": 3, "name": 5}, "category id 3: name is int 5, not a string"),
    ({"id": 3, "name": None}, "category id 3: name is NoneType None, not a string"),
    ({"id": 3, "name": "x" * 301}, "category id 3: name is 301 characters long; a name may have at most 300"),
    ({"id": 3, "name": "sofa\nbed"}, "contains a control character"),
], ids=["underscore", "other-mark", "empty", "blank", "missing", "number", "null", "too-long", "newline"])
def test_names_that_cannot_be_prompts_fail_the_check(tmp_path: Path, capsys, category: dict, found: str) -> None:
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(document(categories=[{"id": 7, "name": "traffic_light"}, category])))
    code, out, err = check(capsys, path)
    assert code == 1 and err == "", err
    assert "problem: 1 category names cannot be text prompts" in out
    code = main(["convert", "check", str(path), "--quiet", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and report["unusable_names"] == 1
    assert found in report["unusable_name_examples"][0]


def test_repeated_category_ids_fail_the_check(tmp_path: Path, capsys) -> None:
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(document(categories=[{"id": 7, "name": "signal"}, {"id": 7, "name": "sofa"}])))
    code, out, _ = check(capsys, path)
    assert code == 1 and "problem: duplicate ids: 0 image, 0 annotation, 1 category" in out
