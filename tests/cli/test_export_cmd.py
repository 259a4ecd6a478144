"""``regionspot export onnx`` then ``predict --runtime onnx``: the same JSON as ``--runtime torch``
from the same folder (scores within 1e-4), and one-line errors for what the runtime refuses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from regionspot.cli.main import main

BOXES = "10,20,200,300;50,60,400,400;0,0,100,100;300,100,630,470"


@pytest.mark.slow
def test_predict_with_the_onnx_runtime_answers_as_pytorch(tiny_onnx_export: Path, coco_sample: Path,
                                                          text_cache_dir: Path, tmp_path: Path, capsys) -> None:
    photo = sorted((coco_sample / "images").iterdir())[0]
    documents = []
    for runtime in ("torch", "onnx"):
        out = tmp_path / f"{runtime}.json"
        assert main(["predict", str(photo), "--checkpoint", str(tiny_onnx_export), "--runtime", runtime,
                     "--set", f"text.cache_dir={text_cache_dir}", "--boxes", BOXES, "--vocab", "cat,dog,pizza,person",
                     "--device", "cpu", "--out", str(out)]) == 0
        documents.append(json.loads(out.read_text()))
    torch_doc, onnx_doc = documents
    assert onnx_doc["model"]["runtime"] == "onnx" and "runtime" not in torch_doc["model"]
    for ours, theirs in zip(torch_doc["regions"], onnx_doc["regions"], strict=True):
        assert ours["box"] == theirs["box"] and ours["label"] == theirs["label"]
        np.testing.assert_allclose([t["score"] for t in theirs["topk"]], [t["score"] for t in ours["topk"]],
                                   atol=1e-4)
    assert "in onnxruntime" in capsys.readouterr().err  # the model line says what runs it


@pytest.mark.parametrize(("extra", "message"), [
    (["--device", "cuda"], "error: --runtime onnx runs on the CPU"),
    (["--precision", "bf16"], "error: --runtime onnx runs the exported float32 graphs"),
    (["--set", "fusion.depth=3"], "would change the exported graphs"),
])
@pytest.mark.slow
def test_what_the_onnx_runtime_refuses_is_one_line(tiny_onnx_export: Path, coco_sample: Path, extra: list[str],
                                                   message: str, capsys) -> None:
    photo = sorted((coco_sample / "images").iterdir())[0]
    assert main(["predict", str(photo), "--checkpoint", str(tiny_onnx_export), "--runtime", "onnx",
                 "--boxes", "1,1,50,50", "--vocab", "cat", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_export_needs_a_head_and_an_out_folder(tiny_sam_dir: Path, tmp_path: Path, capsys) -> None:
    assert main(["export", "onnx", "--sam", str(tiny_sam_dir), "--out", str(tmp_path / "x")]) == 2
    assert "only a RegionSpot head exports to ONNX" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", "onnx", "--untrained"])


@pytest.mark.slow
def test_predict_batch_and_eval_run_the_onnx_runtime(tiny_onnx_export: Path, coco_sample: Path,
                                                     text_cache_dir: Path, tmp_path: Path) -> None:
    """COCO-format ground-truth boxes through predict-batch and eval, each with both runtimes."""
    outputs = {}
    for runtime in ("torch", "onnx"):
        out = tmp_path / f"{runtime}.json"
        assert main(["predict-batch", "--data", str(coco_sample / "annotations.json"), "--checkpoint",
                     str(tiny_onnx_export), "--runtime", runtime, "--max-images", "2", "--vocab", "cat, dog, pizza",
                     "--set", f"text.cache_dir={text_cache_dir}", "--out", str(out), "--no-progress"]) == 0
        outputs[runtime] = json.loads(out.read_text())
    assert len(outputs["onnx"]) == len(outputs["torch"]) > 0
    for ours, theirs in zip(outputs["torch"], outputs["onnx"], strict=True):
        assert (ours["image_id"], ours["category_id"], ours["bbox"]) == (theirs["image_id"], theirs["category_id"],
                                                                         theirs["bbox"])
        assert abs(ours["score"] - theirs["score"]) <= 1e-4
    metrics = {}
    for runtime in ("torch", "onnx"):
        out = tmp_path / f"eval-{runtime}"
        assert main(["eval", "--data", str(coco_sample / "annotations.json"), "--checkpoint", str(tiny_onnx_export),
                     "--runtime", runtime, "--max-images", "2", "--fixed-ap", "100", "--out", str(out),
                     "--no-progress", "--set", f"text.cache_dir={text_cache_dir}"]) == 0
        metrics[runtime] = json.loads((out / "metrics.json").read_text())["bbox"]["metrics"]
    assert metrics["onnx"] == pytest.approx(metrics["torch"], abs=1e-3, nan_ok=True)  # no small objects: nan
