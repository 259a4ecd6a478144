"""``regionspot predict-batch`` over a folder (auto proposals) and over a COCO annotation
(ground-truth boxes), with the real MobileSAM and a tiny CLIP head checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from regionspot.cli.main import main
from regionspot.ops.masks import decode_rle

PHOTOS = ("000000000009.jpg", "000000000025.jpg")
SMALL_AUTO = ["auto.points_per_side=4", "auto.pred_iou_thresh=0.5", "auto.stability_score_thresh=0.5",
              "auto.max_proposals=10"]


@pytest.fixture(scope="module")
def checkpoint(mobile_sam_model, tmp_path_factory) -> Path:
    return mobile_sam_model.save_pretrained(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def folder(coco_sample: Path, tmp_path_factory) -> Path:
    images = tmp_path_factory.mktemp("photos")
    for name in PHOTOS:
        shutil.copy(coco_sample / "images" / name, images / name)
    (images / "notes.txt").write_text("not an image")
    return images


@pytest.mark.slow
def test_a_folder_with_auto_proposals_as_json(checkpoint, folder, tmp_path, capsys) -> None:
    out = tmp_path / "pred.json"
    assert main(["predict-batch", "--images", str(folder), "--vocab", "coco", "--checkpoint", str(checkpoint),
                 "--format", "json", "--masks", "--topk", "3", "--out", str(out), "--no-progress",
                 "--set", *SMALL_AUTO]) == 0
    assert f"wrote {out}: 2 images" in capsys.readouterr().out
    documents = json.loads(out.read_text())
    assert [d["image"]["id"] for d in documents] == [9, 25]  # the digits of the file names
    assert [d["image"]["file"] for d in documents] == list(PHOTOS)
    regions = [r for d in documents for r in d["regions"]]
    assert 0 < len(regions) <= 20 and all(len(r["topk"]) == 3 and 0 <= r["box_score"] <= 1 for r in regions)
    first = documents[0]
    assert decode_rle([first["regions"][0]["mask"]]).shape[1:] == (first["image"]["height"], first["image"]["width"])
    assert len(first["vocabulary"]) == 80


def test_a_dataset_with_ground_truth_boxes_as_coco_results(checkpoint, coco_sample, tmp_path) -> None:
    out = tmp_path / "results.json"
    assert main(["predict-batch", "--data", str(coco_sample / "annotations.json"), "--checkpoint", str(checkpoint),
                 "--max-images", "1", "--vocab", "cat, dog", "--out", str(out), "--no-progress"]) == 0
    results = json.loads(out.read_text())
    assert len(results) == 8 * 2  # 8 non-crowd boxes x both names
    assert {r["category_id"] for r in results} == {1, 2} and {r["image_id"] for r in results} == {9}
    assert all(len(r["bbox"]) == 4 and "segmentation" not in r for r in results)


@pytest.mark.slow
@pytest.mark.parametrize("boxes", ["gt", "auto"])
def test_background_workers_and_image_batches_give_the_same_results(checkpoint, coco_sample, tmp_path,
                                                                    boxes: str) -> None:
    """Photos decoded ahead by two DataLoader workers, and encoded 2 at a time (a batch and a
    last, short one): the same detections as decoding and encoding one photo at a time."""
    results = []
    for settings in (["image_workers=0", "image_batch=1"], ["image_workers=2", "image_batch=2"]):
        out = tmp_path / f"{settings[1]}.json"
        assert main(["predict-batch", "--data", str(coco_sample / "annotations.json"), "--checkpoint",
                     str(checkpoint), "--max-images", "3", "--vocab", "cat, dog", "--out", str(out), "--no-progress",
                     "--boxes", boxes, "--set", *settings, *(SMALL_AUTO if boxes == "auto" else [])]) == 0
        results.append(json.loads(out.read_text()))
    assert len({r["image_id"] for r in results[0]}) == 3 and len(results[0]) == len(results[1])
    for one, batched in zip(*results, strict=True):
        assert (one["image_id"], one["category_id"]) == (batched["image_id"], batched["category_id"])
        np.testing.assert_allclose(batched["bbox"], one["bbox"], atol=1e-3)  # encoders batched: float rounding
        assert batched["score"] == pytest.approx(one["score"], abs=1e-4)


@pytest.mark.parametrize(("arguments", "message"), [
    (["--images", "{folder}", "--vocab", "cat", "--boxes", "gt"], "no ground-truth boxes"),
    (["--images", "{folder}"], "give --vocab"),
    (["--vocab", "cat"], "give the images"),
    (["--images", "{folder}", "--vocab", "cat", "--boxes", "missing.json"], "proposal file not found"),
])
def test_mistakes_exit_2(checkpoint, folder, tmp_path, capsys, arguments, message) -> None:
    arguments = [a.format(folder=folder) for a in arguments]
    assert main(["predict-batch", *arguments, "--checkpoint", str(checkpoint), "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err


@pytest.mark.parametrize(("output_format", "written", "kept"), [
    ("coco", [{"image_id": 9, "score": s} for s in (0.9, 0.3, 0.6, 0.1)], [0.9, 0.6]),
    ("json", [{"image": {"id": 9}, "regions": [{"score": 0.9}, {"score": 0.2}]},
              {"image": {"id": 25}, "regions": [{"score": 0.4}, {"score": 0.7}]}], [0.9, 0.7]),
])
def test_min_score_drops_low_scores_from_the_output(output_format, written, kept) -> None:
    from regionspot.eval.batch_predict import drop_low_scores

    assert drop_low_scores(written, output_format, 0.5) == (2, 4)
    scores = ([pair["score"] for pair in written] if output_format == "coco"
              else [region["score"] for doc in written for region in doc["regions"]])
    assert scores == kept


def test_min_score_reaches_the_batch_run(folder, tmp_path, monkeypatch) -> None:
    """The command passes --min-score to the run, which filters before its one write."""
    asked: dict[str, object] = {}

    def fake_run(config, out: Path, **options: object) -> None:
        asked.update(options)

    monkeypatch.setattr("regionspot.eval.batch_predict.run_batch_prediction", fake_run)
    assert main(["predict-batch", "--images", str(folder), "--vocab", "cat", "--min-score", "0.5", "--out",
                 str(tmp_path / "pred.json"), "--no-progress"]) == 0
    assert asked["min_score"] == 0.5


def test_min_score_outside_0_1_is_refused(folder, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["predict-batch", "--images", str(folder), "--vocab", "cat", "--out", "x.json", "--min-score", "7"])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert exited.value.code == 2
    assert errors == ["regionspot predict-batch: error: argument --min-score: 7 is not in [0, 1]"]
