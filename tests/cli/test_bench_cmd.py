"""``regionspot bench predict`` runs end to end and writes what it measured (no timing asserts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from regionspot.cli.main import main


@pytest.mark.slow
def test_bench_predict_writes_table_and_json(mobile_sam_checkpoint: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    code = main(["bench", "predict", "--sam", str(mobile_sam_checkpoint), "--boxes", "1,3", "--repeats", "1",
                 "--vocab-size", "20", "--out", str(out)])
    assert code == 0
    table = capsys.readouterr().out
    assert "each additional region" in table and "CLIP ViT-B/16" in table
    document = json.loads(out.read_text())
    assert [row["boxes"] for row in document["regions"]] == [1, 3]
    assert document["sam_image_encode_ms"] > 0 and document["clip_crop_single_ms"] > 0
    assert document["marginal_region_over_clip_crop"] > 0


def test_bench_needs_a_sam_checkpoint(tmp_path: Path, capsys) -> None:
    assert main(["bench", "predict", "--sam", str(tmp_path / "missing.pt")]) == 2
    assert "fetch_mobile_sam" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_train_measures_three_modes(mobile_sam_checkpoint: Path, coco_sample: Path, tmp_path: Path,
                                          capsys) -> None:
    out = tmp_path / "train.json"
    code = main(["bench", "train", "--sam", str(mobile_sam_checkpoint),
                 "--annotations", str(coco_sample / "annotations.json"), "--images", str(coco_sample / "images"),
                 "--limit", "2", "--batch", "1", "--online-steps", "1", "--cached-steps", "2", "--out", str(out)])
    assert code == 0
    document = json.loads(out.read_text())
    assert set(document["modes"]) == {"online", "tokens", "tokens+memory"}
    assert all(row["regions_per_s"] > 0 and row["peak_rss_mib"] > 0 for row in document["modes"].values())
    assert "paper schedule" in capsys.readouterr().out
