"""``regionspot eval --detections``: any COCO results file, evaluated and reported."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from regionspot.cli.main import main


@pytest.fixture(scope="module")
def detections(coco_sample: Path, tmp_path_factory) -> Path:
    """Jittered ground-truth boxes with scores, some with the wrong category."""
    document = json.loads((coco_sample / "annotations.json").read_text())
    rng = np.random.default_rng(0)
    category_ids = [c["id"] for c in document["categories"]]
    results = []
    for annotation in document["annotations"]:
        x, y, w, h = annotation["bbox"]
        jitter = rng.normal(0, 0.05, 4) * [w, h, w, h]
        category = annotation["category_id"] if rng.random() > 0.2 else int(rng.choice(category_ids))
        results.append({"image_id": annotation["image_id"], "category_id": category,
                        "bbox": [float(v) for v in np.array([x, y, w, h]) + jitter], "score": float(rng.random())})
    path = tmp_path_factory.mktemp("det") / "results.json"
    path.write_text(json.dumps(results))
    return path


def test_eval_of_a_results_file_matches_pycocotools(coco_sample, detections, tmp_path, capsys) -> None:
    out = tmp_path / "report"
    assert main(["eval", "--data", str(coco_sample / "annotations.json"), "--detections", str(detections),
                 "--out", str(out), "--fixed-ap", "1000"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())["bbox"]["metrics"]
    gt = COCO(str(coco_sample / "annotations.json"))
    evaluation = COCOeval(gt, gt.loadRes(str(detections)), "bbox")
    evaluation.evaluate(), evaluation.accumulate(), evaluation.summarize()
    for index, name in enumerate(["AP", "AP50", "AP75", "APs", "APm", "APl"]):
        assert abs(metrics[name] - evaluation.stats[index]) < 1e-4, name
    report = (out / "report.md").read_text()
    assert "COCO rules" in report and "## Box AP" in report and "## Fixed AP" in report
    rows = list(csv.DictReader((out / "per_category.csv").open()))
    assert len(rows) == 80 and {"id", "name", "AP"} <= set(rows[0])
    assert "box AP (COCO rules" in capsys.readouterr().out


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"a": 1}', "JSON list"),
    ('[{"image_id": 123456789, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}]', "123456789"),
])
def test_bad_results_files_exit_2(coco_sample, tmp_path, capsys, content, message) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    assert main(["eval", "--data", str(coco_sample / "annotations.json"), "--detections", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err
