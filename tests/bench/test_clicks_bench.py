"""``regionspot bench clicks``: objects read with their masks, the report's arithmetic on known
rows, and a run end to end on a real photo with a tiny random SAM (the real-MobileSAM answers are
compared with the authors' predictor in tests/test_predictor_prompts.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from regionspot.bench.clicks_bench import read_click_objects, run_click_bench, summarise
from regionspot.cli.main import main

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools + numpy 2


def test_reads_large_non_crowd_objects_with_their_masks(coco_sample: Path) -> None:
    photos = read_click_objects(coco_sample / "annotations.json", coco_sample / "images", limit=5, per_photo=2)
    assert len(photos) == 5
    document = json.loads((coco_sample / "annotations.json").read_text())
    by_id = {a["id"]: a for a in document["annotations"]}
    for objects in photos:
        assert 1 <= len(objects) <= 2 and len({item.photo for item in objects}) == 1
        for item in objects:
            assert item.mask.dtype == bool and item.mask.sum() >= 48 * 48 * 0.9  # polygon area ~ pixel count
    areas = [a["area"] for a in by_id.values() if not a["iscrowd"]]
    assert min(areas) < 48 * 48  # the sample has small objects, which were left out


def test_the_report_counts_each_way_of_choosing() -> None:
    rows = [
        {"candidate_ious": [0.2, 0.5, 0.9], "rating": [0.9, 0.8, 0.7], "reference_choice": 0, "reference_iou": 0.2},
        {"candidate_ious": [0.7, 0.6, 0.3], "rating": [0.1, 0.2, 0.9], "reference_choice": 1, "reference_iou": 0.6},
    ]
    result = summarise(rows, photos=1, iou=0.6)
    by_choice = {row.choice.split(" (")[0]: (row.share_at_iou, row.mean_iou) for row in result.choices}
    assert by_choice["best rated"] == (0.0, pytest.approx(0.25))  # kept 0.2 and 0.3
    assert by_choice["candidate 1"] == (0.5, pytest.approx(0.45))
    assert by_choice["candidate 3"] == (0.5, pytest.approx(0.6))
    assert by_choice["best of the three"] == (1.0, pytest.approx(0.8))
    assert result.reference is not None
    assert result.reference["same_candidate"] == 0.5  # the second row's rating keeps candidate 3, the reference 2
    assert result.reference["largest_iou_difference"] == pytest.approx(0.3)


def test_runs_on_a_real_photo_and_writes_every_objects_ious(tiny_sam_dir: Path, coco_sample: Path,
                                                            tmp_path: Path, capsys) -> None:
    out = tmp_path / "clicks.json"
    code = main(["bench", "clicks", "--sam", str(tiny_sam_dir), "--annotations", str(coco_sample / "annotations.json"),
                 "--images", str(coco_sample / "images"), "--limit", "1", "--out", str(out), "--no-progress"])
    assert code == 0
    table = capsys.readouterr().out
    assert "best rated (what predict returns)" in table and "best of the three (oracle)" in table
    document = json.loads(out.read_text())
    assert document["photos"] == 1 and document["objects"] == len(document["per_object"]) >= 1
    for row in document["per_object"]:
        assert len(row["candidate_ious"]) == 3 and len(row["rating"]) == 3 and len(row["click"]) == 2
    ious = np.array([row["candidate_ious"] for row in document["per_object"]])
    kept = ious[np.arange(len(ious)), np.array([row["rating"] for row in document["per_object"]]).argmax(axis=1)]
    assert document["choices"][0]["mean_iou"] == pytest.approx(kept.mean())


def test_a_wrong_reference_folder_fails_before_any_photo(tiny_sam_dir: Path, coco_sample: Path,
                                                         tmp_path: Path) -> None:
    from regionspot.config import ConfigError

    photos = read_click_objects(coco_sample / "annotations.json", coco_sample / "images", limit=1)
    with pytest.raises(ConfigError, match="not a checkout"):
        run_click_bench(tiny_sam_dir, photos, reference=tmp_path, progress=False)
