"""``regionspot find``: every instance of the queries, with the real MobileSAM and a tiny CLIP,
and its ``--max-labels`` picture option (with a stand-in model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image

from regionspot.cli.main import main
from regionspot.results import RegionResult
from regionspot.viz import region_color

PHOTO = "000000000009.jpg"


@pytest.fixture(scope="module")
def photo(coco_sample: Path) -> Path:
    return coco_sample / "images" / PHOTO


def run_cli(*args: str) -> int:
    return main([str(a) for a in args])


@pytest.mark.slow  # real MobileSAM end to end: runs in CI, kept out of the fast suite
def test_find_writes_every_instance_and_a_picture(mobile_sam_checkpoint, tiny_clip_dir, text_cache_dir, photo,
                                                  tmp_path, capsys) -> None:
    out, viz = tmp_path / "found.json", tmp_path / "found.png"
    assert run_cli("find", photo, "--query", "bowl,broccoli", "--boxes", "10,20,200,240;12,22,202,238;300,40,420,300",
                   "--threshold", "0", "--sam", mobile_sam_checkpoint, "--clip", tiny_clip_dir, "--out", out,
                   "--viz", viz, "--no-progress", "--set", f"text.cache_dir={text_cache_dir}") == 0
    document = json.loads(out.read_text())
    assert document["vocabulary"] == ["bowl", "broccoli"] and document["model"]["method"] == "clip-mask-crop"
    per_query = {name: [r for r in document["regions"] if r["label"] == name] for name in ("bowl", "broccoli")}
    assert all(len(regions) == 2 for regions in per_query.values())  # the two overlapping boxes: one kept per query
    assert viz.stat().st_size > 0 and "found: 2 bowl, 2 broccoli" in capsys.readouterr().err


def test_find_refuses_a_threshold_outside_0_1(photo, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        run_cli("find", photo, "--query", "dog", "--threshold", "1.5")
    assert exited.value.code == 2 and "not in [0, 1]" in capsys.readouterr().err


class _FakeFinder:
    """``find`` answers with the given boxes, the first query each, scores 0.9, 0.8, ... in box order."""

    def set_image(self, image: np.ndarray) -> None:
        self.image_size = image.shape[:2]

    def find(self, queries: list[str], *, boxes: np.ndarray, **_: object) -> RegionResult:
        scores = 0.9 - 0.1 * np.arange(len(boxes))
        return RegionResult(boxes=boxes, topk_ids=np.zeros((len(boxes), 1), int), topk_scores=scores[:, None],
                            vocabulary=queries, image_size=self.image_size)


class _FakeModel:
    def predictor(self) -> _FakeFinder:
        return _FakeFinder()

    def describe(self) -> dict[str, object]:
        return {"method": "clip-mask-crop", "trained": False, "origin": {}, "score_kind": "softmax"}


def test_find_max_labels_tags_only_the_best_finds(photo, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr("regionspot.cli.find_cmd.load_model_from_args", lambda *_: _FakeModel())
    out, viz = tmp_path / "found.json", tmp_path / "found.png"
    boxes = ";".join(f"{20 + 150 * i},200,{140 + 150 * i},400" for i in range(4))
    assert run_cli("find", photo, "--query", "bowl", "--boxes", boxes, "--max-labels", "1", "--out", out,
                   "--viz", viz) == 0
    assert len(json.loads(out.read_text())["regions"]) == 4  # the output keeps every find
    above = np.asarray(Image.open(viz).convert("RGB"))[:199]
    tagged = [bool(np.all(above == np.asarray(region_color(i), np.uint8), axis=2).sum() > 50) for i in range(4)]
    assert tagged == [True, False, False, False]
    capsys.readouterr()


@pytest.mark.parametrize(("value", "message"), [("0", "must be at least 1, got 0"),
                                                ("many", "'many' is not an integer")])
def test_find_refuses_a_bad_max_labels(photo, capsys, value: str, message: str) -> None:
    with pytest.raises(SystemExit) as exited:
        run_cli("find", photo, "--query", "dog", "--max-labels", value)
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert exited.value.code == 2 and errors == [f"regionspot find: error: argument --max-labels: {message}"]


class _RecordingFinder(_FakeFinder):
    """Records what ``find`` was asked with; finds nothing."""

    asked: ClassVar[dict[str, object]] = {}

    def find(self, queries: list[str], **options: object) -> RegionResult:
        _RecordingFinder.asked = options
        return RegionResult(boxes=np.zeros((0, 4)), topk_ids=np.zeros((0, 1), int), topk_scores=np.zeros((0, 1)),
                            vocabulary=queries, image_size=self.image_size)


@pytest.mark.parametrize(("flags", "side", "preset"), [((), 16, False), (("--high-recall",), 32, True),
                                                      (("--high-recall", "--points-per-side", "24"), 24, True),
                                                      (("--points-per-side", "8", "--nms", "mask"), 8, False),
                                                      (("--high-recall", "--crop-layers", "1"), 32, True)])
def test_find_proposal_settings_and_nms(photo, tmp_path, monkeypatch, capsys, flags: tuple[str, ...], side: int,
                                        preset: bool) -> None:
    from regionspot.proposals.auto import AutoProposalConfig

    model = _FakeModel()
    model.predictor = _RecordingFinder  # type: ignore[method-assign]  # a finder that records its options
    monkeypatch.setattr("regionspot.cli.find_cmd.load_model_from_args", lambda *_: model)
    assert run_cli("find", photo, "--query", "bowl", "--out", tmp_path / "f.json", *flags) == 0
    proposals = _RecordingFinder.asked["proposals"]
    base = AutoProposalConfig.high_recall() if preset else AutoProposalConfig()
    assert isinstance(proposals, AutoProposalConfig) and proposals.points_per_side == side
    assert proposals.pred_iou_thresh == base.pred_iou_thresh
    assert proposals.crop_layers == (1 if "--crop-layers" in flags else 0)
    assert _RecordingFinder.asked["nms"] == ("mask" if "mask" in flags else "box")
    assert "found: 0 bowl" in capsys.readouterr().err


@pytest.mark.parametrize("flag", [("--high-recall",), ("--crop-layers", "1")])
def test_find_refuses_proposal_settings_with_boxes(photo, capsys, flag: tuple[str, ...]) -> None:
    assert run_cli("find", photo, "--query", "dog", "--boxes", "1,1,50,50", *flag) == 2
    assert "with --boxes there are none to set" in capsys.readouterr().err


def test_find_refuses_too_many_crop_layers(photo, capsys) -> None:
    assert run_cli("find", photo, "--query", "dog", "--crop-layers", "9") == 2
    assert "crop_layers" in capsys.readouterr().err


@pytest.mark.parametrize(("value", "expected"), [("0.4", 0.4), ("0.2, 0.7", [0.2, 0.7])])
def test_find_takes_one_threshold_or_one_per_query(photo, tmp_path, monkeypatch, capsys, value: str,
                                                   expected: object) -> None:
    model = _FakeModel()
    model.predictor = _RecordingFinder  # type: ignore[method-assign]
    monkeypatch.setattr("regionspot.cli.find_cmd.load_model_from_args", lambda *_: model)
    assert run_cli("find", photo, "--query", "bowl,dog", "--threshold", value, "--out", tmp_path / "f.json") == 0
    assert _RecordingFinder.asked["threshold"] == expected
    capsys.readouterr()


def test_find_refuses_a_threshold_count_other_than_the_queries(photo, monkeypatch, capsys) -> None:
    monkeypatch.setattr("regionspot.cli.find_cmd.load_model_from_args", lambda *_: pytest.fail("model loaded"))
    assert run_cli("find", photo, "--query", "bowl,dog,cat", "--threshold", "0.2,0.7") != 0
    assert "--threshold has 2 values for 3 queries" in capsys.readouterr().err
