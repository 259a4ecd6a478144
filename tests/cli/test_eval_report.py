"""``regionspot eval --detections``: report.md says at the top that a detections file, not a
model, was evaluated."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from regionspot.cli.main import main


def test_a_results_file_report_names_the_file_instead_of_a_model(coco_sample: Path, tmp_path: Path,
                                                                 write_coco_subset: Callable[..., Path]) -> None:
    annotations = write_coco_subset(coco_sample, tmp_path / "subset.json")
    truth = json.loads(annotations.read_text())["annotations"]
    detections = tmp_path / "their_results.json"
    detections.write_text(json.dumps([{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
                                       "score": 0.5} for a in truth]))
    out = tmp_path / "report"
    assert main(["eval", "--data", str(annotations), "--detections", str(detections), "--out", str(out)]) == 0
    lines = (out / "report.md").read_text().splitlines()
    assert lines[:8] == ["# Evaluation: their_results.json on subset.json", "", "## Model", "",
                         f"- detections: `{detections}`, evaluated as given",
                         "- model: none run here (the file's own boxes, labels and scores)", "", "## Protocol"]
    assert not any(line.startswith(("- inputs:", "- checkpoint:")) for line in lines)  # no model to describe
