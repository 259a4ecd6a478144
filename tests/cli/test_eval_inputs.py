"""``regionspot eval``: bad annotation and detection files end as one ``error:`` line naming the
right file (exit 2); faults that change no AP are one ``warning:`` line; valid files keep their AP."""

from __future__ import annotations

import copy
import json
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from regionspot.cli.main import main
from regionspot.eval.evaluator import evaluate_results_file

Document = dict[str, Any]


@pytest.fixture(scope="module")
def annotation(coco_sample: Path) -> Document:
    return json.loads((coco_sample / "annotations.json").read_text())


@pytest.fixture(scope="module")
def detections(annotation: Document) -> list[dict[str, Any]]:
    """One detection per annotation: its box, a score falling with the position."""
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
             "score": 1.0 - index / 1000} for index, a in enumerate(annotation["annotations"])]


def write(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value))
    return path


def run_eval(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = main(["eval", *[str(a) for a in args]])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_error(code: int, err: str, *parts: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err and err.startswith("error: ") and err.count("\n") == 1, err
    for part in parts:
        assert part in err, (part, err)


def _set(position: int, key: str, value: Any) -> Callable[[list[dict[str, Any]]], None]:
    def change(entries: list[dict[str, Any]]) -> None:
        entries[position][key] = value
    return change


BAD_BOX = 'has a "bbox" that is not [x, y, w, h]'


@pytest.mark.parametrize(("change", "parts"), [
    (_set(3, "bbox", [1, 2]), ["1 of 682 detections", BAD_BOX, "detections[3]: bbox = [1, 2]"]),
    (_set(3, "bbox", "1,2,3,4"), [BAD_BOX, "detections[3]: bbox = '1,2,3,4'"]),
    (_set(3, "bbox", ["a", 1, 2, 3]), [BAD_BOX, "detections[3]"]),
    (_set(3, "bbox", [float("nan"), 1, 2, 3]), [BAD_BOX, "detections[3]: bbox = [nan, 1, 2, 3]"]),
    (_set(5, "bbox", [1, 1, float("inf"), 3]), [BAD_BOX, "detections[5]"]),
    (_set(5, "bbox", [1, 1, -4, 3]), [BAD_BOX, "detections[5]"]),
    (_set(3, "score", float("nan")), ['1 of 682 detections has a "score" that is missing, not a number, NaN',
                                      "infinite; it is detections[3]: score = nan"]),
    (_set(7, "score", float("inf")), ["1 of 682 detections", "detections[7]: score = inf"]),
    (_set(3, "score", "high"), ["detections[3]: score = 'high'"]),
    (_set(3, "image_id", "9"), ['has no integer "image_id"', "detections[3]: image_id = '9'"]),
    (_set(3, "image_id", 123456789), ["names an image id that is not in the annotation's images",
                                      "detections[3]: image_id = 123456789"]),
    (_set(4, "category_id", 0), ["names a category id that is not in the annotation's categories",
                                 "detections[4]: category_id = 0"]),
    (lambda entries: entries.__setitem__(2, [1, 2]), ["is not a JSON object; it is detections[2] = [1, 2]"]),
], ids=["two-number-bbox", "string-bbox", "non-numeric-bbox", "nan-bbox", "inf-bbox", "negative-width", "nan-score",
        "inf-score", "string-score", "string-image-id", "unknown-image", "unknown-category", "not-an-object"])
def test_bad_detections_name_the_file_and_the_entry(annotation, detections, tmp_path, capsys, change, parts) -> None:
    broken = copy.deepcopy(detections)
    change(broken)
    path = write(tmp_path / "dets.json", broken)
    code, _, err = run_eval(capsys, "--data", write(tmp_path / "ann.json", annotation), "--detections", path)
    assert_one_error(code, err, f"error: {path}: ", *parts)


def test_nan_scores_are_counted(annotation, detections, tmp_path, capsys) -> None:
    broken = copy.deepcopy(detections)
    for index in (10, 20, 30):
        broken[index]["score"] = float("nan")
    path = write(tmp_path / "dets.json", broken)
    code, _, err = run_eval(capsys, "--data", write(tmp_path / "ann.json", annotation), "--detections", path)
    assert_one_error(code, err, '3 of 682 detections have a "score"', "; the first is detections[10]")


def test_a_detections_file_that_is_not_a_list_or_not_utf8(annotation, tmp_path, capsys) -> None:
    data = write(tmp_path / "ann.json", annotation)
    code, _, err = run_eval(capsys, "--data", data, "--detections", write(tmp_path / "d.json", {"a": 1}))
    assert_one_error(code, err, "d.json: a COCO results file is a JSON list of detections, got object")
    latin = tmp_path / "latin.json"
    latin.write_bytes('[{"image_id": 9, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1, "note": "ñ"}]'
                      .encode("latin-1"))
    code, _, err = run_eval(capsys, "--data", data, "--detections", latin)
    assert_one_error(code, err, f"{latin} is not UTF-8 text (byte 0xf1")


@pytest.mark.parametrize(("change", "parts"), [
    (lambda d: d.__setitem__("annotations", None), ['"annotations" must be a list of objects, got null']),
    (lambda d: d.__setitem__("images", {}), ['"images" must be a list of objects, got object']),
    (lambda d: d.__setitem__("categories", "x"), ['"categories" must be a list of objects, got string']),
    (lambda d: d["annotations"].__setitem__(0, "x"),
     ["malformed annotations: 1 of 682 annotations is not a JSON object", "annotations[0] = 'x'"]),
    (lambda d: d["images"][0].__setitem__("id", "abc"), ['malformed images: 1 of 96 images has no integer "id"',
                                                        "images[0]: id = 'abc'"]),
    (lambda d: d["images"][1].pop("height"), ['has no positive integer "height"', "it is images[1] (id ", "no height"]),
    (lambda d: d["annotations"][2].__setitem__("bbox", [float("nan"), 1, 2, 3]),
     ["1 of 682 annotations", BAD_BOX, "annotations[2] (id ", "bbox = [nan, 1, 2, 3]"]),
    (lambda d: d["annotations"][2].__setitem__("bbox", [1, 2]), [BAD_BOX, "bbox = [1, 2]"]),
    (lambda d: d["annotations"][2].__setitem__("area", float("nan")),
     ['has an "area" that is not a finite number >= 0']),
    (lambda d: d["annotations"][2].__setitem__("iscrowd", "0"), ['has an "iscrowd" that is not 0 or 1']),
    (lambda d: d["images"].append(dict(d["images"][0])),
     ["1 image repeats an id listed before (the first: id 9)"]),
    (lambda d: d["categories"].append({"id": 1, "name": "human"}),
     ["1 category repeats an id listed before (the first: id 1)"]),
    (lambda d: d.__setitem__("images", []), ["lists no images: there is nothing to evaluate"]),
], ids=["annotations-null", "images-object", "categories-string", "annotation-not-object", "string-image-id",
        "no-height", "nan-bbox", "two-number-bbox", "nan-area", "string-iscrowd", "repeated-image-id",
        "repeated-category-id", "no-images"])
def test_bad_annotations_name_the_annotation_not_the_detections(annotation, detections, tmp_path, capsys, change,
                                                                parts) -> None:
    broken = copy.deepcopy(annotation)
    change(broken)
    data = write(tmp_path / "ann.json", broken)
    dets = write(tmp_path / "dets.json", detections)
    code, _, err = run_eval(capsys, "--data", data, "--detections", dets)
    assert_one_error(code, err, f"error: {data}", *parts)
    assert str(dets) not in err


@pytest.mark.parametrize(("content", "message"), [
    ("latin-1", "is not UTF-8 text (byte 0xf3"),
    ("list", "holds a JSON list, not a COCO annotation object"),
])
def test_annotation_encoding_and_top_level(annotation, detections, tmp_path, capsys, content, message) -> None:
    data = tmp_path / "ann.json"
    if content == "latin-1":
        text = json.dumps(annotation, ensure_ascii=False).replace('"person"', '"persón"', 1)
        data.write_bytes(text.encode("latin-1"))
    else:
        write(data, [annotation])
    code, _, err = run_eval(capsys, "--data", data, "--detections", write(tmp_path / "dets.json", detections))
    assert_one_error(code, err, f"error: {data}", message)


def test_a_utf8_byte_order_mark_is_accepted(annotation, detections, tmp_path, capsys) -> None:
    data = tmp_path / "ann.json"
    data.write_bytes(b"\xef\xbb\xbf" + json.dumps(annotation).encode())
    assert run_eval(capsys, "--data", data, "--detections", write(tmp_path / "d.json", detections))[0] == 0


def _metrics(out: Path) -> dict[str, float]:
    return json.loads((out / "metrics.json").read_text())["bbox"]["metrics"]


@pytest.mark.parametrize(("key", "value", "warning"), [
    ("image_id", 123456789, "name an image id that is not in the annotation's images"),
    ("category_id", 9999, "name a category id that is not in the annotation's categories"),
])
def test_annotations_of_unlisted_ids_are_warned_about_and_left_out(annotation, detections, tmp_path, capsys, caplog,
                                                                   key, value, warning) -> None:
    broken = copy.deepcopy(annotation)
    for index in (2, 40):
        broken["annotations"][index][key] = value
    dets = write(tmp_path / "dets.json", detections)
    with caplog.at_level(logging.WARNING):
        code, _, err = run_eval(capsys, "--data", write(tmp_path / "ann.json", broken), "--detections", dets,
                                "--out", tmp_path / "warned")
    assert code == 0, err
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert record.getMessage().startswith(f"warning: {tmp_path / 'ann.json'}: 2 of 682 annotations {warning}")
    assert "the first is annotations[2]" in record.getMessage()
    assert "left out of the evaluation" in record.getMessage()
    dropped = copy.deepcopy(annotation)
    dropped["annotations"] = [a for i, a in enumerate(dropped["annotations"]) if i not in (2, 40)]
    assert run_eval(capsys, "--data", write(tmp_path / "dropped.json", dropped), "--detections", dets,
                    "--out", tmp_path / "dropped")[0] == 0
    assert _metrics(tmp_path / "warned") == _metrics(tmp_path / "dropped")


def test_repeated_annotation_ids_are_warned_about(annotation, detections, tmp_path, capsys, caplog) -> None:
    broken = copy.deepcopy(annotation)
    broken["annotations"][3]["id"] = broken["annotations"][2]["id"]
    with caplog.at_level(logging.WARNING):
        code, _, err = run_eval(capsys, "--data", write(tmp_path / "ann.json", broken), "--detections",
                                write(tmp_path / "dets.json", detections))
    assert code == 0, err
    assert "1 annotation repeats an annotation id listed before" in caplog.text


def test_valid_files_keep_their_ap(annotation, detections, coco_sample, tmp_path, capsys) -> None:
    dets = write(tmp_path / "dets.json", detections)
    data = coco_sample / "annotations.json"
    assert run_eval(capsys, "--data", data, "--detections", dets, "--out", tmp_path / "out")[0] == 0
    assert _metrics(tmp_path / "out") == evaluate_results_file(str(data), str(dets))


def test_bad_frequency_tags_name_their_file(annotation, detections, tmp_path, capsys) -> None:
    tags = write(tmp_path / "tags.json", {"1": "x"})
    code, _, err = run_eval(capsys, "--data", write(tmp_path / "ann.json", annotation), "--detections",
                            write(tmp_path / "dets.json", detections), "--frequencies", tags)
    assert_one_error(code, err, f"error: frequency tags from {tags}: frequency tags must be 'r', 'c' or 'f'")


@pytest.mark.parametrize(("name", "message"), [
    ("_", "name '_' is empty once cleaned for a prompt"),
    ("-other", "name '-other' is empty once cleaned for a prompt"),
    ("", "name is an empty name"),
    (5, "name is int 5, not a string"),
    (None, 'has no "name"'),
])
def test_a_model_run_refuses_category_names_that_cannot_be_prompts(annotation, coco_sample, tmp_path, capsys, name,
                                                                   message) -> None:
    broken = copy.deepcopy(annotation)
    if name is None:
        del broken["categories"][4]["name"]
    else:
        broken["categories"][4]["name"] = name
    data = write(tmp_path / "ann.json", broken)
    code, _, err = run_eval(capsys, "--data", data, "--images", coco_sample / "images", "--no-progress")
    assert_one_error(code, err, f"error: {data}: 1 of 80 category names cannot be a text prompt; it is "
                     "category id 5: " + message)


def test_a_model_run_refuses_nan_ground_truth_boxes(annotation, coco_sample, tmp_path, capsys) -> None:
    broken = copy.deepcopy(annotation)
    broken["annotations"][5]["bbox"][1] = float("nan")
    data = write(tmp_path / "ann.json", broken)
    code, _, err = run_eval(capsys, "--data", data, "--images", coco_sample / "images", "--no-progress")
    assert_one_error(code, err, f"error: {data}: 1 of 682 annotations {BAD_BOX}", "annotations[5]")


def console_script() -> list[str]:
    script = Path(sys.executable).with_name("regionspot")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "regionspot"]


@pytest.mark.slow
def test_through_the_console_script_one_line_each(annotation, detections, tmp_path) -> None:
    broken = copy.deepcopy(detections)
    broken[3]["bbox"] = [1, 2]
    data = write(tmp_path / "ann.json", annotation)
    run = subprocess.run([*console_script(), "eval", "--data", str(data), "--detections",
                          str(write(tmp_path / "bad.json", broken))],
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.startswith(f"error: {tmp_path / 'bad.json'}: 1 of 682 detections {BAD_BOX}")
    unlisted = copy.deepcopy(annotation)
    unlisted["annotations"][2]["image_id"] = 123456789
    run = subprocess.run([*console_script(), "eval", "--data", str(write(tmp_path / "u.json", unlisted)),
                          "--detections", str(write(tmp_path / "good.json", detections))],
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stderr.startswith(f"warning: {tmp_path / 'u.json'}: 1 of 682 annotations names an image id")
    assert run.stderr.count("\n") == 1, run.stderr
