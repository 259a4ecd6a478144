"""The evaluation runner end to end on the COCO sample with the real MobileSAM and a tiny random
CLIP: every method with every box source (ground truth, auto proposals, proposal files in each
form) writes every output; an oracle classifier scores AP 1 through the whole pipeline; batch
prediction without evaluation; user mistakes are clear errors."""

from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from regionspot.config import RegionSpotConfig, TextConfig, ZeroShotConfig
from regionspot.datasets.coco_format import DatasetError
from regionspot.eval.batch_predict import run_batch_prediction
from regionspot.eval.config import EvalConfig, ModelSource, ProtocolConfig
from regionspot.eval.image_run import RunSetup, process_image
from regionspot.eval.jobs import BoxSource
from regionspot.eval.runner import evaluate_outputs, load_dataset, model_summary, run_evaluation
from regionspot.model.regionspot import RegionSpot
from regionspot.proposals.auto import AutoProposalConfig
from regionspot.results import RegionResult

SMALL_AUTO = AutoProposalConfig(points_per_side=4, pred_iou_thresh=0.5, stability_score_thresh=0.5, max_proposals=20)
FREQUENCIES = {1: "f", 18: "c", 51: "c", 55: "r", 56: "f", 61: "r"}  # a few tags, as an LVIS vocabulary file gives


def memoize_image_encoder(tokenizer: Any) -> None:
    """Encode each image with SAM once per session (the same embedding every time): a speed-up
    for running many methods and box sources over the same photos."""
    original, cache = tokenizer.encode_image, {}

    def encode_image(image: np.ndarray) -> Any:
        key = (image.shape, hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest())
        if key not in cache:
            cache[key] = original(image)
        return cache[key]

    tokenizer.encode_image = encode_image


@pytest.fixture(scope="module")
def model(mobile_sam_checkpoint: Path, tiny_clip_dir: Path, text_cache_dir: Path) -> RegionSpot:
    torch.manual_seed(0)
    built = RegionSpot.from_backbones(sam=str(mobile_sam_checkpoint), clip=str(tiny_clip_dir),
                                      text=TextConfig(cache_dir=str(text_cache_dir)))
    memoize_image_encoder(built.region_tokenizer)
    return built


@pytest.fixture(scope="module")
def annotation(coco_sample: Path) -> dict[str, Any]:
    return json.loads((coco_sample / "annotations.json").read_text())


@pytest.fixture(scope="module")
def proposal_files(annotation: dict[str, Any], tmp_path_factory) -> dict[str, Path]:
    """The first image's ground-truth boxes, jittered, plus a false box, in each file form."""
    folder = tmp_path_factory.mktemp("proposals")
    image = min(annotation["images"], key=lambda i: i["id"])
    boxes = [a["bbox"] for a in annotation["annotations"] if a["image_id"] == image["id"] and not a["iscrowd"]]
    xywh = [[x + 2, y - 1, w * 0.95, h * 1.02] for x, y, w, h in boxes] + [[0, 0, 60, 40]]
    xyxy = [[x, y, x + w, y + h] for x, y, w, h in xywh]
    scores = list(np.linspace(0.95, 0.3, len(xywh)))
    forms = {
        "coco_results": [{"image_id": image["id"], "bbox": b, "score": s, "category_id": 1}
                         for b, s in zip(xywh, scores, strict=True)],
        "by_image": {str(image["id"]): {"boxes": xyxy, "scores": scores, "labels": [1] * len(xyxy)}},
        "records": [{"file_name": image["file_name"], "boxes": xyxy}],
    }
    paths = {}
    for name, document in forms.items():
        paths[name] = folder / f"{name}.json"
        paths[name].write_text(json.dumps(document))
    return paths


def eval_config(coco_sample: Path, tiny_clip_dir: Path, mobile_sam_checkpoint: Path, **fields: Any) -> EvalConfig:
    defaults = {"annotations": str(coco_sample / "annotations.json"), "max_images": 1, "examples": 1,
                "auto": SMALL_AUTO,
                "model": ModelSource(untrained=True, sam=str(mobile_sam_checkpoint), clip=str(tiny_clip_dir))}
    return EvalConfig(**{**defaults, **fields})


def assert_metric_values(metrics: dict[str, float]) -> None:
    for name, value in metrics.items():
        assert isinstance(value, float) and (math.isnan(value) or 0.0 <= value <= 1.0), (name, value)


def assert_report_opens_with_the_model(report: str) -> list[str]:
    """The report's first lines: its title, then the model (checkpoint, method, head, backbones,
    inputs), then the protocol. Returns the model's bullet lines."""
    lines = report.splitlines()
    assert lines[0].startswith("# Evaluation: ") and lines[2] == "## Model"
    bullets = lines[4:lines.index("## Protocol") - 1]
    assert [line.split(":")[0] for line in bullets] == ["- checkpoint", "- method", "- head", "- SAM", "- CLIP",
                                                         "- inputs"]
    assert bullets[-1] in ("- inputs: native", "- inputs: official")
    return bullets


def assert_outputs_valid(out: Path, document: dict[str, Any], *, masks: bool, examples: int) -> None:
    """Every file an evaluation writes exists and is what it should be."""
    written = json.loads((out / "metrics.json").read_text())
    assert written["protocol"] == document["protocol"]
    for key in ("bbox", "segm") if masks else ("bbox",):
        assert_metric_values(written[key]["metrics"])
        image = Image.open(out / f"pr_curves_{key}.png")
        assert image.format == "PNG" and image.size[0] > 500
    assert ("segm" in written) == masks
    report = (out / "report.md").read_text()
    assert_report_opens_with_the_model(report)
    for words in ("## Protocol", "method:", "boxes:", "pairs per image:", "detections cap:", "prompt:",
                  "templates:", "images:", "## Box AP"):
        assert words in report, words
    rows = list(csv.DictReader((out / "per_category.csv").open()))
    assert len(rows) == 80 and {"id", "name", "AP", "num_gt"} <= set(rows[0]) and ("mask_AP" in rows[0]) == masks
    pictures = sorted((out / "examples").glob("example_*.png"))
    assert len(pictures) == examples and all(Image.open(p).format == "PNG" for p in pictures)
    assert written["timing"]["total_s"] > 0 and written["model"]["trainable_parameters"] > 0


@pytest.mark.slow
def test_regionspot_on_ground_truth_boxes_writes_every_output(model, coco_sample, tiny_clip_dir, mobile_sam_checkpoint,
                                                              annotation, tmp_path) -> None:
    frequencies = tmp_path / "frequencies.json"
    frequencies.write_text(json.dumps([{"id": k, "frequency": v} for k, v in FREQUENCIES.items()]))
    config = eval_config(coco_sample, tiny_clip_dir, mobile_sam_checkpoint, max_images=2, examples=2, masks=True,
                         save_detections=True, frequencies=str(frequencies),
                         protocol=ProtocolConfig(pairs_per_image=200, fixed_ap_budget=1000))
    run = run_evaluation(config, out=tmp_path / "out", model=model, progress=False)
    assert run is not None
    document = run.document
    assert_outputs_valid(tmp_path / "out", document, masks=True, examples=2)
    for key in ("APr", "APc", "APf"):
        assert key in document["bbox"]["metrics"] and key in document["segm"]["metrics"]
    assert {"fixed_ap", "fixed_ap_segm"} <= set(document)
    first_two = sorted(i["id"] for i in annotation["images"])[:2]
    gt_boxes = [a for a in annotation["annotations"] if a["image_id"] in first_two and not a["iscrowd"]]
    assert document["counts"]["boxes_classified"] == len(gt_boxes) == 10
    detections = json.loads((tmp_path / "out" / "results.json").read_text())
    per_image = {i: sum(d["image_id"] == i for d in detections) for i in first_two}
    assert sorted(per_image.values()) == [2 * 80, 200]  # 2 boxes x 80 names; 8 boxes x 80 capped at 200
    assert all("segmentation" in d for d in detections)
    assert "2 of 96" in document["protocol"]["images"] and "200 best" in document["protocol"]["pairs_per_image"]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["regionspot", "clip-crop", "clip-mask-crop"])
@pytest.mark.parametrize("boxes", ["gt", "auto", "coco_results"])
def test_every_method_with_every_box_source(model, coco_sample, tiny_clip_dir, mobile_sam_checkpoint,
                                            proposal_files, tmp_path, method, boxes) -> None:
    source = str(proposal_files[boxes]) if boxes in proposal_files else boxes
    config = eval_config(coco_sample, tiny_clip_dir, mobile_sam_checkpoint, method=method, boxes=source,
                         masks=method == "clip-mask-crop", prompt="alone" if method == "regionspot" else "together")
    run = run_evaluation(config, out=tmp_path, model=model, progress=False)
    assert run is not None
    assert_outputs_valid(tmp_path, run.document, masks=method == "clip-mask-crop", examples=1)
    protocol = run.document["protocol"]
    assert protocol["method"].startswith(method) and protocol["boxes"].startswith(
        {"gt": "ground-truth", "auto": "auto proposals"}.get(boxes, "proposals file"))
    assert run.document["counts"]["boxes_classified"] > 0
    if boxes == "coco_results":
        assert run.document["counts"]["boxes_classified"] == 9  # 8 jittered boxes + 1 false one


@pytest.mark.slow
@pytest.mark.parametrize("form", ["by_image", "records"])
def test_every_proposal_file_form(model, coco_sample, tiny_clip_dir, mobile_sam_checkpoint, proposal_files,
                                  form) -> None:
    config = eval_config(coco_sample, tiny_clip_dir, mobile_sam_checkpoint, boxes=str(proposal_files[form]))
    run = run_evaluation(config, model=model, progress=False)
    assert run is not None and run.document["counts"]["boxes_classified"] == 9
    assert_metric_values(run.document["bbox"]["metrics"])


class OracleClassifier:
    """Names every ground-truth box with its true category (score 1), the others lower."""

    name = "oracle"

    def __init__(self, annotation: dict[str, Any]) -> None:
        ids = sorted(c["id"] for c in annotation["categories"])
        self.truth = {tuple(np.round([x, y, x + w, y + h], 2)): ids.index(a["category_id"])
                      for a in annotation["annotations"] for x, y, w, h in [a["bbox"]]}

    def encode_many(self, images: list[np.ndarray]) -> list[Any]:
        return [None] * len(images)  # nothing to encode

    def classify(self, image: np.ndarray, boxes: np.ndarray, vocabulary: list[str], topk: int,
                 with_masks: bool, sam_embedding: Any = None, encoded: Any = None) -> RegionResult:
        ids = [[self.truth[tuple(np.round(box, 2))], *[(self.truth[tuple(np.round(box, 2))] + j) % len(vocabulary)
                                                          for j in range(1, topk)]] for box in boxes]
        scores = [[1.0, *np.linspace(0.5, 0.01, topk - 1)] for _ in boxes]
        return RegionResult(boxes=boxes, topk_ids=ids, topk_scores=scores, vocabulary=vocabulary,
                            image_size=image.shape[:2])


def oracle_outputs(config: EvalConfig, annotation: dict[str, Any]) -> tuple[Any, RunSetup, list[Any]]:
    data = load_dataset(config)
    setup = RunSetup(classifier=OracleClassifier(annotation), box_source=BoxSource("gt", data.jobs),
                     vocabulary=data.vocabulary, category_ids=data.category_ids, protocol=config.protocol, masks=False)
    return data, setup, [process_image(job, job.load(), setup) for job in data.jobs]


def test_an_oracle_scores_ap_one_through_the_pipeline(coco_sample, annotation, tiny_clip_dir,
                                                      mobile_sam_checkpoint) -> None:
    config = eval_config(coco_sample, tiny_clip_dir, mobile_sam_checkpoint, max_images=None)
    data, setup, outputs = oracle_outputs(config, annotation)
    metrics = evaluate_outputs(data, outputs, config)[0]["bbox"]["metrics"]
    assert metrics["AP"] == pytest.approx(1.0) and metrics["APs"] == pytest.approx(1.0)
    setup.protocol = ProtocolConfig(pairs_per_box=1)  # one name per box: the true one
    setup.category_ids = data.category_ids[1:] + data.category_ids[:1]  # vocabulary index -> the wrong id
    outputs = [process_image(job, job.load(), setup) for job in data.jobs]
    wrong = evaluate_outputs(data, outputs, config)[0]["bbox"]["metrics"]
    assert wrong["AP"] == 0.0


def test_an_oracle_under_lvis_rules(coco_sample, annotation, tiny_clip_dir, mobile_sam_checkpoint, tmp_path) -> None:
    lvis_style = {**annotation, "images": [{**image, "neg_category_ids": [], "not_exhaustive_category_ids": []}
                                           for image in annotation["images"]],
                  "categories": [{**c, "frequency": "rcf"[c["id"] % 3]} for c in annotation["categories"]]}
    (tmp_path / "lvis_style.json").write_text(json.dumps(lvis_style))
    config = eval_config(coco_sample, tiny_clip_dir, mobile_sam_checkpoint, max_images=12,
                         annotations=str(tmp_path / "lvis_style.json"), images=str(coco_sample / "images"))
    data, _, outputs = oracle_outputs(config, annotation)
    assert data.federated and data.frequencies is not None
    sections = evaluate_outputs(data, outputs, config)[0]
    assert sections["bbox"]["federated"] and "AR@300" in sections["bbox"]["metrics"]
    for key in ("AP", "APr", "APc", "APf"):
        assert sections["bbox"]["metrics"][key] == pytest.approx(1.0), key


@pytest.mark.slow
def test_batch_prediction_of_a_dataset(model, coco_sample, tiny_clip_dir, mobile_sam_checkpoint, tmp_path) -> None:
    config = eval_config(coco_sample, tiny_clip_dir, mobile_sam_checkpoint, max_images=2, masks=True,
                         protocol=ProtocolConfig(pairs_per_box=3))
    written = run_batch_prediction(config, tmp_path / "pred.json", output_format="json", model=model, progress=False)
    documents = json.loads((tmp_path / "pred.json").read_text())
    assert written is not None and written.written == written.total == sum(len(d["regions"]) for d in documents)
    assert [d["image"]["id"] for d in documents] == [9, 25] and len(documents[0]["regions"]) == 8
    assert all(len(r["topk"]) == 3 and "mask" in r for r in documents[0]["regions"])
    assert run_batch_prediction(config, tmp_path / "coco.json", model=model, progress=False) is not None
    results = json.loads((tmp_path / "coco.json").read_text())
    assert len(results) == 10 * 3
    assert {r["category_id"] for r in results} <= {c["id"] for c in json.loads(
        (coco_sample / "annotations.json").read_text())["categories"]}
    middle = float(np.median([r["score"] for r in results]))
    kept = run_batch_prediction(config, tmp_path / "kept.json", model=model, progress=False, min_score=middle)
    expected = [r for r in results if r["score"] >= middle]
    assert kept is not None and (kept.written, kept.total) == (len(expected), len(results))
    assert json.loads((tmp_path / "kept.json").read_text()) == expected


def test_user_mistakes_are_clear_errors(coco_sample, tiny_clip_dir, mobile_sam_checkpoint, annotation,
                                        tmp_path) -> None:
    config = eval_config(coco_sample, tiny_clip_dir, mobile_sam_checkpoint)
    copied = tmp_path / "annotations.json"
    copied.write_text(json.dumps(annotation))
    config.annotations = str(copied)
    with pytest.raises(DatasetError, match="pass --images"):
        load_dataset(config)
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError, match=r"1 of 1 images are missing.*000000000009.jpg"):
        load_dataset(config)
    config.boxes = str(tmp_path / "nothing.json")
    config.images = str(coco_sample / "images")
    with pytest.raises(DatasetError, match="proposal file not found"):
        BoxSource(config.boxes, load_dataset(config).jobs)


@pytest.mark.parametrize("method", ["regionspot", "clip-mask-crop"])
def test_auto_boxes_encode_each_image_once(model, coco_sample, tiny_clip_dir, mobile_sam_checkpoint,
                                           monkeypatch, method) -> None:
    """Proposals and the classifier share one SAM encoding of the image."""
    calls = []
    encode = model.region_tokenizer.encode_image
    monkeypatch.setattr(model.region_tokenizer, "encode_image", lambda image: calls.append(1) or encode(image))
    config = eval_config(coco_sample, tiny_clip_dir, mobile_sam_checkpoint, method=method, boxes="auto")
    config.max_images = 1
    run = run_evaluation(config, model=model, progress=False)
    assert run is not None and run.document["counts"]["boxes_classified"] > 0
    assert len(calls) == 1


def test_a_run_reports_the_model_first_and_draws_truth_beside_predictions(model, coco_sample, tiny_clip_dir,
                                                                           mobile_sam_checkpoint, tmp_path) -> None:
    config = eval_config(coco_sample, tiny_clip_dir, mobile_sam_checkpoint)  # image 9: 8 boxes
    run = run_evaluation(config, out=tmp_path, model=model, progress=False)
    assert run is not None
    bullets = assert_report_opens_with_the_model((tmp_path / "report.md").read_text())
    assert bullets[:3] == ["- checkpoint: none: untrained head (random weights)", "- method: regionspot",
                           "- head: UNTRAINED: random weights, so the names are meaningless (the masks are SAM's)"]
    assert bullets[3] == f"- SAM: `{mobile_sam_checkpoint}`" and bullets[4] == f"- CLIP: `{tiny_clip_dir}`"
    assert bullets[5] == f"- inputs: {getattr(model.config, 'inputs', 'native')}"
    assert run.document["model"]["summary"]["method"] == "regionspot"
    assert "model" not in run.document["protocol"]  # said once, in the model section
    with Image.open(tmp_path / "examples" / "example_000.png") as picture:
        assert picture.width > 2 * 640 and picture.height > 480  # the photo twice: truth, predictions


def fake_model(origin: dict[str, Any], config: Any = None) -> Any:
    return SimpleNamespace(origin=origin, config=config or RegionSpotConfig())


@pytest.mark.parametrize(("origin", "checkpoint", "head"), [
    ({"head": "checkpoint", "checkpoint": "{folder}"}, "`{folder}`", "trained"),
    ({"head": "checkpoint", "checkpoint": "someone/regionspot-bl"}, "`someone/regionspot-bl` (Hugging Face Hub id)",
     "trained"),
    ({"head": "official", "checkpoint": "regionspot_bl.pth", "variant": "bl"},
     "`regionspot_bl.pth` (the authors' RegionSpot-BL release, converted in memory)",
     "trained (the authors' released weights)"),
    ({"head": "untrained"}, "none: untrained head (random weights)", "UNTRAINED: random weights"),
])
def test_model_summary_of_regionspot(origin, checkpoint, head, tmp_path) -> None:
    origin = {key: value.format(folder=tmp_path) for key, value in origin.items()}
    model = fake_model(origin)
    summary = model_summary(model, "regionspot", model)
    assert summary["checkpoint"] == checkpoint.format(folder=tmp_path) and summary["head"].startswith(head)
    assert summary["method"] == "regionspot" and summary["SAM"] == f"`{RegionSpotConfig().sam.name_or_path}`"
    assert summary["CLIP"] == f"`{RegionSpotConfig().clip.name_or_path}`"
    assert summary["inputs"] == getattr(RegionSpotConfig(), "inputs", "native")


def test_model_summary_names_the_input_mode_and_what_is_off() -> None:
    config = SimpleNamespace(sam=SimpleNamespace(name_or_path="sam.pt"), inputs="official",
                             clip=SimpleNamespace(name_or_path="clip-b", enabled=False))
    model = fake_model({"head": "checkpoint", "checkpoint": "ckpt"}, config)
    summary = model_summary(model, "regionspot", model)
    assert summary["inputs"] == "official" and summary["CLIP"] == "`clip-b` (vision tower off: clip.enabled=false)"
    crop = model_summary(model, "clip-crop", SimpleNamespace(config=ZeroShotConfig()))  # the baseline on its towers
    assert crop["checkpoint"] == "`ckpt` (Hugging Face Hub id); only its SAM and CLIP are used (clip-crop has no head)"
    assert crop["head"].startswith("none (clip-crop") and crop["inputs"] == "native"
    baseline = model_summary(fake_model({"head": "untrained"}), "clip-mask-crop", SimpleNamespace())
    assert baseline["checkpoint"] == "none: zero-shot recognizer" and baseline["inputs"] == "native"
    zero_shot = fake_model({"head": "none (zero-shot)"}, ZeroShotConfig())
    summary = model_summary(zero_shot, "clip-mask-crop", zero_shot)
    assert summary["checkpoint"] == "none: zero-shot recognizer" and summary["inputs"] == "native"
    assert summary["head"] == "none (clip-mask-crop: CLIP zero-shot on each region's crop)"
