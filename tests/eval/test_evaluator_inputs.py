"""The evaluation's Python API refuses what ``regionspot eval`` refuses, with the same words: a
NaN score or box, a malformed entry or an unknown id in a results list or file, a ground truth
that cannot be evaluated; valid inputs keep their AP to the last bit. Batch prediction names the
annotation file by its full path."""

from __future__ import annotations

import copy
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from regionspot.cli.main import main
from regionspot.datasets.coco_format import DatasetError
from regionspot.eval.average_precision import APParams, evaluate, summarize
from regionspot.eval.batch_predict import prediction_inputs
from regionspot.eval.config import EvalConfig
from regionspot.eval.evaluator import (
    IN_MEMORY_ANNOTATION,
    IN_MEMORY_RESULTS,
    DetectionEvaluator,
    detections_from_results,
    evaluate_results_file,
    evaluator_for_results,
    fixed_ap,
    ground_truth_from_dataset,
)

Document = dict[str, Any]
BAD_SCORE = '1 of 682 detections has a "score" that is missing, not a number, NaN or infinite'
BAD_BOX = 'has a "bbox" that is not [x, y, w, h] (4 finite numbers, w and h >= 0)'


@pytest.fixture(scope="module")
def annotation(coco_sample: Path) -> Document:
    return json.loads((coco_sample / "annotations.json").read_text())


@pytest.fixture(scope="module")
def detections(annotation: Document) -> list[dict[str, Any]]:
    """One detection per annotation, shifted by a pixel so that AP is not 1, scores falling."""
    return [{"image_id": a["image_id"], "category_id": a["category_id"],
             "bbox": [a["bbox"][0] + 1, a["bbox"][1], a["bbox"][2], a["bbox"][3]], "score": 1.0 - index / 1000}
            for index, a in enumerate(annotation["annotations"])]


def write(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value))
    return path


def broken(entries: list[dict[str, Any]], position: int, key: str, value: Any) -> list[dict[str, Any]]:
    changed = copy.deepcopy(entries)
    changed[position][key] = value
    return changed


def same(a: dict[str, float], b: dict[str, float]) -> bool:
    """Equal keys and bit-equal values, NaN equal to NaN."""
    return a.keys() == b.keys() and all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


# ----------------------------------------------------------------------------- results
@pytest.mark.parametrize(("position", "key", "value", "parts"), [
    (3, "score", float("nan"), [BAD_SCORE, "; it is detections[3]: score = nan"]),
    (3, "score", float("inf"), [BAD_SCORE, "detections[3]: score = inf"]),
    (5, "score", None, [BAD_SCORE, "detections[5]: score = None"]),
    (3, "bbox", [float("nan"), 1, 2, 3], [f"1 of 682 detections {BAD_BOX}", "detections[3]: bbox = [nan, 1, 2, 3]"]),
    (3, "bbox", [1, 2], [BAD_BOX, "detections[3]: bbox = [1, 2]"]),
    (3, "bbox", [1, 2, -3, 4], [BAD_BOX, "detections[3]"]),
    (3, "category_id", 0, ["names a category id that is not in the annotation's categories",
                           "detections[3]: category_id = 0"]),
    (3, "image_id", "9", ['has no integer "image_id"', "detections[3]: image_id = '9'"]),
], ids=["nan-score", "inf-score", "null-score", "nan-bbox", "two-number-bbox", "negative-width", "unknown-category",
        "string-image-id"])
def test_a_results_list_is_refused_like_the_cli_refuses_the_file(annotation, detections, position, key, value,
                                                                  parts) -> None:
    with pytest.raises(DatasetError) as info:
        evaluate_results_file(annotation, broken(detections, position, key, value))
    message = str(info.value)
    assert message.startswith(f"{IN_MEMORY_RESULTS}: "), message
    for part in parts:
        assert part in message, (part, message)


def test_a_results_file_gets_the_cli_message_word_for_word(annotation, detections, coco_sample, tmp_path,
                                                           capsys) -> None:
    data = coco_sample / "annotations.json"
    path = write(tmp_path / "dets.json", broken(detections, 3, "score", float("nan")))
    with pytest.raises(DatasetError) as info:
        evaluate_results_file(data, path)
    assert main(["eval", "--data", str(data), "--detections", str(path)]) == 2
    assert capsys.readouterr().err == f"error: {info.value}\n"
    assert str(info.value).startswith(f"{path}: {BAD_SCORE}")


def test_many_faults_are_counted_and_the_first_named(annotation, detections) -> None:
    nan = copy.deepcopy(detections)
    for index in (10, 20, 30):
        nan[index]["score"] = float("nan")
    with pytest.raises(DatasetError, match=r"3 of 682 detections have a \"score\" .*; the first is detections\[10\]"):
        evaluator_for_results(annotation, nan)


@pytest.mark.parametrize(("results", "message"), [
    ({"image_id": 9}, "a COCO results file is a JSON list of detections, got object"),
    ([[9, 1, 0.5]], "1 of 1 detection is not a JSON object; it is detections[0] = [9, 1, 0.5]"),
    ([{"image_id": 9, "category_id": 1, "score": 0.5}], 'has neither "bbox" nor "segmentation"'),
], ids=["object", "list-entry", "no-box"])
def test_malformed_results_lists(annotation, results, message) -> None:
    with pytest.raises(DatasetError) as info:
        evaluate_results_file(annotation, results)
    assert message in str(info.value), str(info.value)


def test_a_results_file_that_is_not_utf8_json(annotation, tmp_path) -> None:
    latin = tmp_path / "latin.json"
    latin.write_bytes('[{"note": "ñ"}]'.encode("latin-1"))
    with pytest.raises(DatasetError, match=r"latin.json is not UTF-8 text \(byte 0xf1"):
        evaluate_results_file(annotation, latin)


def test_fixed_ap_refuses_nan_scores_too(annotation, detections) -> None:
    with pytest.raises(DatasetError, match=BAD_SCORE):
        fixed_ap(annotation, broken(detections, 3, "score", float("nan")), per_category_budget=100)


def test_mask_ap_refuses_inputs_without_masks(annotation, detections) -> None:
    with pytest.raises(DatasetError, match=r'^results \(in memory\): 682 of 682 detections have no "segmentation"'):
        evaluator_for_results(annotation, detections, iou_type="segm")
    document = copy.deepcopy(annotation)
    del document["annotations"][7]["segmentation"]
    with pytest.raises(DatasetError, match=r'1 of 682 annotations has no "segmentation" .*; it is annotations\[7\]'):
        DetectionEvaluator(document, iou_type="segm")
    DetectionEvaluator(document, iou_type="bbox")  # box AP needs no masks


# ----------------------------------------------------------------------------- ground truth
@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["annotations"][2].__setitem__("bbox", [float("nan"), 1, 2, 3]),
     f"1 of 682 annotations {BAD_BOX}; it is annotations[2] (id "),
    (lambda d: d["annotations"][2].__setitem__("area", -1), 'has an "area" that is not a finite number >= 0'),
    (lambda d: d["images"].append(dict(d["images"][0])), "1 image repeats an id listed before (the first: id 9)"),
    (lambda d: d.__setitem__("categories", []), "lists no categories: there is nothing to evaluate"),
    (lambda d: d.__setitem__("annotations", None), '"annotations" must be a list of objects, got null'),
    (lambda d: d["images"][0].__setitem__("id", "9"), 'malformed images: 1 of 96 images has no integer "id"'),
], ids=["nan-bbox", "negative-area", "repeated-image", "no-categories", "annotations-null", "string-id"])
def test_a_ground_truth_in_memory_is_refused_by_name(annotation, detections, change, message) -> None:
    document = copy.deepcopy(annotation)
    change(document)
    with pytest.raises(DatasetError) as info:
        evaluate_results_file(document, detections)
    assert str(info.value).startswith(f"{IN_MEMORY_ANNOTATION}") and message in str(info.value), str(info.value)
    with pytest.raises(DatasetError):
        DetectionEvaluator(document)


def test_a_ground_truth_file_is_named(annotation, tmp_path) -> None:
    document = copy.deepcopy(annotation)
    document["annotations"][4]["bbox"] = [1, 2]
    path = write(tmp_path / "ann.json", document)
    with pytest.raises(DatasetError, match=rf"^{tmp_path / 'ann.json'}: 1 of 682 annotations has a \"bbox\""):
        DetectionEvaluator(path)
    latin = tmp_path / "latin.json"
    latin.write_bytes(json.dumps({"images": [], "note": "ñ"}, ensure_ascii=False).encode("latin-1"))
    with pytest.raises(DatasetError, match=r"latin.json is not UTF-8 text"):
        evaluate_results_file(str(latin), [])


def test_left_out_annotations_are_warned_about_when_the_api_reads_the_file(annotation, detections, tmp_path,
                                                                          caplog) -> None:
    document = copy.deepcopy(annotation)
    document["annotations"][2]["image_id"] = 123456789
    path = write(tmp_path / "ann.json", document)
    with caplog.at_level(logging.WARNING):
        from_file = evaluate_results_file(path, detections)
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert record.getMessage().startswith(f"warning: {path}: 1 of 682 annotations names an image id that is not "
                                          "in the annotation's images; it is annotations[2]")
    assert record.getMessage().endswith("; it is left out of the evaluation")
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # a document in memory: its reader warns (the CLI does)
        in_memory = evaluate_results_file(document, detections)
    assert not caplog.records and same(from_file, in_memory)


# ----------------------------------------------------------------------------- process()
def test_process_refuses_an_images_nan_scores_and_malformed_boxes(annotation) -> None:
    evaluator = DetectionEvaluator(annotation)
    image = annotation["images"][0]["id"]
    good = {"category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}
    with pytest.raises(DatasetError, match=rf"^detections of image {image}: 1 of 2 detections has a \"score\" .*; "
                                           r"it is detections\[1\]: score = nan"):
        evaluator.process(image, [good, {**good, "score": float("nan")}])
    with pytest.raises(DatasetError, match=r"2 of 3 detections have a \"bbox\" .*; the first is detections\[0\]"):
        evaluator.process(image, [{**good, "bbox": [1, 2]}, {**good, "bbox": [0, 0, math.inf, 1]}, good])
    with pytest.raises(DatasetError, match=r"1 of 1 detection is not a JSON object"):
        evaluator.process(image, [[0, 0, 5, 5]])
    with pytest.raises(ValueError, match="passed for image"):
        evaluator.process(image, [{**good, "image_id": image + 1}])
    evaluator.process(image, [good, {**good, "image_id": image}])  # image_id may be left out or given
    with pytest.raises(ValueError, match=r"unknown image .* or category 99999"):
        evaluator.process(image, [{**good, "category_id": 99999}])  # an unknown category: refused at once


# ----------------------------------------------------------------------------- valid inputs
def unchecked_metrics(annotation: Document, detections: list[dict[str, Any]]) -> dict[str, float]:
    """COCO AP over every image computed straight from the arrays, with no input checks."""
    gt = ground_truth_from_dataset(annotation, iou_type="bbox", federated=False)
    sizes = {image["id"]: (image["height"], image["width"]) for image in annotation["images"]}
    order = sorted(range(len(detections)), key=lambda i: detections[i]["image_id"])  # as grouped per image
    dt = detections_from_results([detections[i] for i in order], gt, sizes, iou_type="bbox")
    return summarize(evaluate(gt, dt, APParams(max_dets=(1, 10, 100), federated=False),
                              np.array(sorted(gt.images.tolist()), dtype=np.int64)), None)


def test_valid_inputs_keep_their_ap_to_the_bit(annotation, detections, coco_sample, tmp_path) -> None:
    expected = unchecked_metrics(annotation, detections)
    assert 0.0 < expected["AP"] < 1.0
    from_memory = evaluate_results_file(annotation, detections)
    from_tuple = evaluate_results_file(annotation, tuple(detections))
    from_files = evaluate_results_file(coco_sample / "annotations.json", write(tmp_path / "d.json", detections))
    assert same(from_memory, expected) and same(from_tuple, expected) and same(from_files, expected)


# ----------------------------------------------------------------------------- batch prediction
def test_batch_prediction_names_the_annotation_by_its_full_path(annotation, coco_sample, tmp_path) -> None:
    document = copy.deepcopy(annotation)
    document["categories"][4]["name"] = "-other"
    path = write(tmp_path / "annotations.json", document)
    with pytest.raises(DatasetError) as info:
        prediction_inputs(EvalConfig(annotations=str(path), images=str(coco_sample / "images")))
    assert str(info.value).startswith(f"{path}: 1 of 80 category names cannot be a text prompt; it is category id 5")
