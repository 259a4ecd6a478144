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


@pytest.mark.parametrize(("content", "message"), [
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


# ----------------------------------------------------------------------------- a model over the dataset
@pytest.fixture(scope="module")
def checkpoint(mobile_sam_model, tmp_path_factory) -> Path:
    return mobile_sam_model.save_pretrained(tmp_path_factory.mktemp("ckpt"))


@pytest.mark.slow
def test_eval_of_a_checkpoint_with_a_proposals_file(coco_sample, checkpoint, tmp_path, capsys) -> None:
    annotation = json.loads((coco_sample / "annotations.json").read_text())
    image = min(annotation["images"], key=lambda i: i["id"])
    boxes = [a["bbox"] for a in annotation["annotations"] if a["image_id"] == image["id"]]
    proposals = tmp_path / "proposals.json"
    proposals.write_text(json.dumps([{"image_id": image["id"], "bbox": b, "score": 0.5} for b in boxes]))
    frequencies = tmp_path / "frequencies.json"
    frequencies.write_text(json.dumps({"1": "f", "51": "c", "56": "r"}))
    out = tmp_path / "report"
    assert main(["eval", "--data", str(coco_sample / "annotations.json"), "--checkpoint", str(checkpoint),
                 "--boxes", str(proposals), "--prompt", "alone", "--max-images", "1", "--masks", "--fixed-ap", "100",
                 "--frequencies", str(frequencies), "--out", str(out), "--no-progress", "--examples", "1",
                 "--set", "protocol.pairs_per_image=100", "text.templates=single"]) == 0
    printed = capsys.readouterr().out
    assert "box AP (COCO rules" in printed and "mask AP (COCO rules" in printed and "APr" in printed
    document = json.loads((out / "metrics.json").read_text())
    protocol = document["protocol"]
    assert protocol["prompt"].startswith("alone") and protocol["pairs_per_image"].startswith("100 best")
    assert protocol["boxes"] == f"proposals file {proposals} (score = the file's box score, 1 where absent)"
    assert protocol["templates"].startswith("single") and protocol["images"].startswith("1 of 96")
    assert document["model"]["origin"]["checkpoint"] == str(checkpoint) and document["model"]["trained"]
    assert document["config"]["model"]["overrides"] == ["text.templates=single"]
    assert len(json.loads((out / "metrics.json").read_text())["bbox"]["per_category"]) == 80
    for name in ("report.md", "per_category.csv", "pr_curves_bbox.png", "pr_curves_segm.png",
                 "examples/example_000.png"):
        assert (out / name).stat().st_size > 0, name
    report = (out / "report.md").read_text()
    assert report.index("## Protocol") < report.index("## Box AP") and "## Fixed AP (mask)" in report


def test_an_architecture_override_on_a_checkpoint_says_why_it_fails(coco_sample, checkpoint, capsys) -> None:
    code = main(["eval", "--data", str(coco_sample / "annotations.json"), "--checkpoint", str(checkpoint),
                 "--max-images", "1", "--set", "fusion.depth=1"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: cannot load the fusion head")
    assert "['fusion.depth=1'] change the head's architecture" in err and "trained with them" in err


@pytest.mark.parametrize(("arguments", "message"), [
    (["--sam", "sam.pt"], "give the annotation: --data"),
    (["--data", "{annotations}", "--detections", "r.json", "--checkpoint", "c"], "--detections evaluates"),
    (["--data", "{annotations}", "--detections", "r.json", "--runtime", "onnx"], "--runtime would run a model"),
    (["--data", "{annotations}", "--detections", "r.json", "--precision", "bf16"], "--precision would run a model"),
    (["--data", "{annotations}", "--sam", "sam.pt", "--images", "/nonexistent"], "image folder not found"),
    (["--data", "{annotations}", "--sam", "sam.pt", "--set", "protocol.pairs_per_image=0"], "pairs_per_image"),
    (["--data", "{annotations}", "--sam", "sam.pt", "--set", "protocol.nothing=1"], "unknown key 'nothing'"),
])
def test_model_mode_mistakes_exit_2_before_loading_anything(coco_sample, capsys, arguments, message) -> None:
    arguments = [a.format(annotations=coco_sample / "annotations.json") for a in arguments]
    assert main(["eval", *arguments]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err


def test_flags_override_the_config_file(tmp_path) -> None:
    from regionspot.cli.dataset_args import config_from_args
    from regionspot.cli.main import build_parser
    from regionspot.config import apply_overrides, save_config
    from regionspot.eval.config import EvalConfig

    saved = apply_overrides(EvalConfig(), ["method=clip-crop", "boxes=auto", "protocol.pairs_per_image=300",
                                           "model.checkpoint=ckpt", "model.overrides=text.templates=single"])
    save_config(saved, tmp_path / "eval.yaml")
    args = build_parser().parse_args(["eval", "--config", str(tmp_path / "eval.yaml"), "--data", "a.json",
                                      "--method", "regionspot", "--pairs-per-box", "5", "--sam", "sam.pt",
                                      "--set", "fusion.depth=1", "auto.points_per_side=4"])
    config = config_from_args(args)
    assert (config.method, config.boxes, config.annotations) == ("regionspot", "auto", "a.json")
    assert (config.protocol.pairs_per_image, config.protocol.pairs_per_box) == (300, 5)
    assert (config.model.checkpoint, config.model.sam) == ("ckpt", "sam.pt")  # --sam replaces the head's SAM
    assert config.model.overrides == ["text.templates=single", "fusion.depth=1"]
    assert config.auto.points_per_side == 4


# ----------------------------------------------------------------------------- the evaluator's options
def top_per_image(results: list[dict], cap: int) -> list[dict]:
    """Each image's ``cap`` highest-scoring detections (ties: the file's order), in file order."""
    kept: set[int] = set()
    for image_id in {r["image_id"] for r in results}:
        rows = [i for i, r in enumerate(results) if r["image_id"] == image_id]
        rows.sort(key=lambda i: -results[i]["score"])
        kept.update(rows[:cap])
    return [r for i, r in enumerate(results) if i in kept]


def test_the_image_cap_applies_to_a_results_file(coco_sample, detections, tmp_path, capsys) -> None:
    annotations = str(coco_sample / "annotations.json")
    results = json.loads(detections.read_text())
    capped_file = tmp_path / "capped.json"
    capped_file.write_text(json.dumps(top_per_image(results, 3)))
    assert len(json.loads(capped_file.read_text())) < len(results)

    def metrics(*args: str) -> dict[str, float]:
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        assert main(["eval", "--data", annotations, "--out", str(out), *args]) == 0
        return json.loads((out / "metrics.json").read_text())["bbox"]["metrics"]

    uncapped = metrics("--detections", str(detections))
    capped = metrics("--detections", str(detections), "--max-dets-per-image", "3")
    assert capped["AP"] < uncapped["AP"] - 0.01
    assert capped == metrics("--detections", str(capped_file))  # the cap is the pre-capped file's AP
    gt = COCO(annotations)
    evaluation = COCOeval(gt, gt.loadRes(str(capped_file)), "bbox")
    evaluation.evaluate(), evaluation.accumulate(), evaluation.summarize()
    assert abs(capped["AP"] - evaluation.stats[0]) < 1e-4
    printed = capsys.readouterr().out
    assert "box AP (COCO rules, at most 3 detections per image over all categories)" in printed


def lvis_style(folder: Path) -> Path:
    """One 100x100 image, categories 1 and 2 annotated (boxes, box-shaped polygons), 3 negative."""
    boxes = {1: [10.0, 10.0, 40.0, 40.0], 2: [55.0, 50.0, 40.0, 30.0]}
    document = {
        "images": [{"id": 1, "height": 100, "width": 100, "neg_category_ids": [3], "not_exhaustive_category_ids": []}],
        "categories": [{"id": c, "name": f"c{c}", "frequency": "f"} for c in (1, 2, 3)],
        "annotations": [{"id": c, "image_id": 1, "category_id": c, "bbox": b, "area": b[2] * b[3],
                         "segmentation": [polygon(b)]} for c, b in boxes.items()],
    }
    path = folder / "lvis_style.json"
    path.write_text(json.dumps(document))
    return path


def polygon(box: list[float]) -> list[float]:
    x, y, w, h = box
    return [x, y, x, y + h, x + w, y + h, x + w, y]


def test_mask_fixed_ap_with_masks(tmp_path, capsys) -> None:
    """Exact boxes, masks of their left halves (mask IoU 1/2): box fixed AP 100, mask fixed AP 10."""
    annotation = lvis_style(tmp_path)
    results = [{"image_id": 1, "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.5,
                "segmentation": [polygon([a["bbox"][0], a["bbox"][1], a["bbox"][2] / 2, a["bbox"][3]])]}
               for a in json.loads(annotation.read_text())["annotations"]]
    detections = tmp_path / "results.json"
    detections.write_text(json.dumps(results))
    out = tmp_path / "report"
    assert main(["eval", "--data", str(annotation), "--detections", str(detections), "--masks",
                 "--fixed-ap", "100", "--out", str(out)]) == 0
    document = json.loads((out / "metrics.json").read_text())
    assert document["fixed_ap"]["metrics"]["AP"] == pytest.approx(1.0)
    assert document["fixed_ap_segm"]["metrics"]["AP"] == pytest.approx(0.1)  # a match at IoU 0.5 only
    assert document["fixed_ap_segm"]["budget"] == 100 and "mask area" in document["protocol"]["fixed_ap"]
    report = (out / "report.md").read_text()
    assert "## Fixed AP (box)" in report and "## Fixed AP (mask)" in report
    printed = capsys.readouterr().out
    assert "fixed box AP (top 100" in printed and "fixed mask AP (top 100" in printed


def test_zero_area_detections_under_lvis_rules_and_keep_zero_area(tmp_path, capsys) -> None:
    annotation = lvis_style(tmp_path)
    exact = [{"image_id": 1, "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.5}
             for a in json.loads(annotation.read_text())["annotations"]]
    zero = {"image_id": 1, "category_id": 1, "bbox": [10.0, 10.0, 0.0, 0.0], "score": 0.9}
    files = {}
    for name, results in (("exact", exact), ("zero", [*exact, zero])):
        files[name] = tmp_path / f"{name}.json"
        files[name].write_text(json.dumps(results))

    def metrics(name: str, *args: str) -> tuple[dict[str, float], str]:
        out = tmp_path / f"out-{name}-{len(args)}"
        assert main(["eval", "--data", str(annotation), "--detections", str(files[name]), "--out", str(out),
                     *args]) == 0
        return json.loads((out / "metrics.json").read_text())["bbox"]["metrics"], (out / "report.md").read_text()

    dropped, report = metrics("zero")
    assert dropped == metrics("exact")[0] and dropped["AP"] == pytest.approx(1.0)
    assert "zero area: detections and ground truth of area 0 are left out" in report
    kept, report = metrics("zero", "--keep-zero-area")
    assert kept["AP"] == pytest.approx((0.5 + 1.0) / 2)  # cat 1: a false positive ranked first
    assert "are kept (--keep-zero-area" in report
    capsys.readouterr()


def test_keep_zero_area_reaches_a_model_run_and_its_report(monkeypatch, tmp_path) -> None:
    from regionspot.cli.dataset_args import config_from_args
    from regionspot.cli.main import build_parser
    from regionspot.eval import runner

    args = build_parser().parse_args(["eval", "--data", "a.json", "--sam", "sam.pt", "--keep-zero-area"])
    assert config_from_args(args).protocol.keep_zero_area is True
    default = build_parser().parse_args(["eval", "--data", "a.json", "--sam", "sam.pt"])
    assert config_from_args(default).protocol.keep_zero_area is False
    assert runner.zero_area_text(True, True).startswith("detections and ground truth of area 0 are kept")
