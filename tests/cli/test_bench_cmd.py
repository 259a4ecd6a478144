"""``regionspot bench predict``, ``train`` and ``proposals`` run end to end and write what they
measured (no timing asserts)."""

from __future__ import annotations

import json
import math
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
    # a difference of two timings: its sign is noise on a busy machine with one repeat; only its presence is checked
    assert math.isfinite(document["marginal_region_over_clip_crop"])
    assert set(document["mask_paste_ms_per_region"]) == {"paste_masks", "sam_interpolation"}
    assert "pasting one region's mask" in table
    compute = document["compute"]
    assert compute["matmul_peak_gflops"] > 0 and set(compute["encoders"]) == {"sam", "clip"}
    # papers quote multiply-accumulates: MobileSAM's encoder ~38 G (its paper), ViT-B/16 at 224 ~17.6 G; a FLOP
    # count (torch's) is twice that
    assert 65 < compute["encoders"]["sam"]["gflop"] < 90 and 30 < compute["encoders"]["clip"]["gflop"] < 40
    onnx = document["onnx"]  # the onnx extra is installed with the test extras: on by default on the CPU
    assert onnx["sam_image_encode_ms"] > 0 and [row["boxes"] for row in onnx["regions"]] == [1, 3]
    assert "onnxruntime beside PyTorch" in table and "GFLOP/s" in table


def test_bench_needs_a_sam_checkpoint(tmp_path: Path, capsys) -> None:
    assert main(["bench", "predict", "--sam", str(tmp_path / "missing.pt")]) == 2
    assert "fetch_mobile_sam" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_train_measures_three_modes(mobile_sam_checkpoint: Path, coco_sample: Path, tmp_path: Path,
                                          capsys) -> None:
    out = tmp_path / "train.json"
    code = main(["bench", "train", "--sam", str(mobile_sam_checkpoint),
                 "--annotations", str(coco_sample / "annotations.json"), "--images", str(coco_sample / "images"),
                 "--limit", "2", "--batch", "1", "--online-steps", "1", "--cached-steps", "2", "--workers", "2",
                 "--out", str(out)])
    assert code == 0
    document = json.loads(out.read_text())
    assert set(document["modes"]) == {"online", "tokens", "tokens+memory", "tokens, 2 workers"}
    assert all(row["regions_per_s"] > 0 and row["peak_rss_mib"] > 0 for row in document["modes"].values())
    assert "paper schedule" in capsys.readouterr().out


@pytest.mark.slow  # real MobileSAM end to end: runs in CI, kept out of the fast suite
def test_bench_proposals_measures_each_setting(mobile_sam_checkpoint: Path, coco_sample: Path, tmp_path: Path,
                                               capsys) -> None:
    from regionspot.backbones.mobile_sam import load_mobile_sam
    from regionspot.bench.proposals_bench import read_annotated_photos
    from regionspot.ops.boxes import box_iou_xyxy
    from regionspot.ops.image import load_image
    from regionspot.proposals.auto import AutoProposalConfig, propose_regions

    out = tmp_path / "proposals.json"
    code = main(["bench", "proposals", "--sam", str(mobile_sam_checkpoint), "--annotations",
                 str(coco_sample / "annotations.json"), "--images", str(coco_sample / "images"), "--limit", "1",
                 "--setting", "points_per_side=4", "--setting", "points_per_side=4,max_proposals=1",
                 "--no-progress", "--out", str(out)])
    assert code == 0
    assert "recall@.5" in capsys.readouterr().out
    document = json.loads(out.read_text())
    first, capped = document["settings"]
    assert capped["max_boxes"] == 1 and first["boxes_per_photo"] >= 1
    photo = read_annotated_photos(coco_sample / "annotations.json", coco_sample / "images", limit=1)[0]
    tokenizer = load_mobile_sam(mobile_sam_checkpoint)
    proposals = propose_regions(tokenizer, tokenizer.encode_image(load_image(photo.path)),
                                AutoProposalConfig(points_per_side=4))
    expected = (box_iou_xyxy(photo.boxes, proposals.boxes).max(axis=1) >= 0.5).mean()
    assert first["recall_50"] == pytest.approx(expected) and first["boxes_per_photo"] == len(proposals)
    assert document["photos"] == 1 and document["encode_seconds_per_photo"] > 0
    assert main(["bench", "proposals", "--sam", str(mobile_sam_checkpoint), "--setting", "points_per_side=0",
                 "--annotations", str(coco_sample / "annotations.json")]) == 2
    assert "points_per_side must be a positive integer" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_proposals_resumes_from_its_records(mobile_sam_checkpoint: Path, coco_sample: Path, tmp_path: Path,
                                                  capsys) -> None:
    """A second run reuses the first run's per-photo records and measures only the new photos; a
    line cut short by a kill is measured again."""
    out, records = tmp_path / "proposals.json", tmp_path / "proposals.records.jsonl"
    command = ["bench", "proposals", "--sam", str(mobile_sam_checkpoint), "--annotations",
               str(coco_sample / "annotations.json"), "--images", str(coco_sample / "images"),
               "--setting", "points_per_side=4", "--no-progress", "--out", str(out)]
    assert main([*command, "--limit", "1"]) == 0
    first = json.loads(out.read_text())["settings"][0]
    assert len(records.read_text().splitlines()) == 1
    records.write_text(records.read_text() + '{"key": "cut sh')  # a record half written when killed
    capsys.readouterr()
    assert main([*command, "--limit", "2"]) == 0
    assert "1 of 2 photos already measured" in capsys.readouterr().err
    lines = [json.loads(line) for line in records.read_text().splitlines()[2:]]
    assert len(lines) == 1  # only the second photo was measured
    assert main([*command, "--limit", "1"]) == 0  # all from the records: the same answer as measured
    again = json.loads(out.read_text())["settings"][0]
    assert (again["recall_50"], again["boxes_per_photo"]) == (first["recall_50"], first["boxes_per_photo"])
    assert len(records.read_text().splitlines()) == 3  # nothing measured again
    capped = [item if item != "points_per_side=4" else "points_per_side=4,max_proposals=1" for item in command]
    assert main([*capped, "--limit", "1"]) == 0
    assert len(records.read_text().splitlines()) == 4  # another setting: measured, not taken from the records
