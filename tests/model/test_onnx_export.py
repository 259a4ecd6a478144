"""``regionspot export onnx`` and ``--runtime onnx`` on tiny random SAM and CLIP: every graph equals
PyTorch within 1e-4, the runtime gives the PyTorch predictor's answer on a real photo for any number
of boxes, the one-graph region path equals it too, and what the runtime cannot do is refused clearly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from regionspot.backbones.onnx_backbones import OnnxGraph
from regionspot.backbones.protocols import BackboneCapabilityError
from regionspot.backbones.sam_geometry import scale_boxes
from regionspot.config import ConfigError
from regionspot.devices import DeviceError
from regionspot.model.loader import ModelSource, load
from regionspot.model.onnx_export import PARITY_TOLERANCE, export_onnx
from regionspot.model.onnx_runtime import OnnxRegionSpot
from regionspot.ops.image import load_image
from regionspot.weights import CheckpointError

# Every test here uses the tiny ONNX export (about 30 s to make): CI runs them, -m 'not slow' skips them.
pytestmark = pytest.mark.slow

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

NAMES = ["cat", "dog", "red car", "person", "pizza"]
HEAD = ["fusion.depth=2", "fusion.heads=4", "fusion.ffn_dim=64", "fusion.logit_scale=5"]  # conftest's TINY_HEAD


def tiny_source(tiny_sam_dir: Path, tiny_clip_dir: Path, text_cache_dir: Path, *extra: str) -> ModelSource:
    return ModelSource(untrained=True, sam=str(tiny_sam_dir), clip=str(tiny_clip_dir),
                       overrides=[f"text.cache_dir={text_cache_dir}", *HEAD, *extra])


@pytest.fixture(scope="module")
def exported(tiny_onnx_export: Path, text_cache_dir: Path) -> tuple[torch.nn.Module, Path, dict]:
    """The PyTorch model (the export folder is its checkpoint), the folder and its manifest."""
    model = load(ModelSource(checkpoint=str(tiny_onnx_export), overrides=[f"text.cache_dir={text_cache_dir}"]),
                 device="cpu", log=None)
    return model, tiny_onnx_export, json.loads((tiny_onnx_export / "onnx.json").read_text())


@pytest.fixture(scope="module")
def onnx_model(exported, text_cache_dir: Path) -> OnnxRegionSpot:
    model = load(ModelSource(checkpoint=str(exported[1]), runtime="onnx",
                             overrides=[f"text.cache_dir={text_cache_dir}"]), log=None)
    assert isinstance(model, OnnxRegionSpot)
    return model


@pytest.fixture(scope="module")
def street(coco_sample: Path) -> np.ndarray:
    return load_image(sorted((coco_sample / "images").iterdir())[0])


def boxes_for(image: np.ndarray, count: int) -> np.ndarray:
    """``count`` boxes spread over the photo, xyxy pixels."""
    height, width = image.shape[:2]
    rng = np.random.default_rng(count)
    corner = rng.uniform(0, 0.6, (count, 2)) * [width, height]
    return np.concatenate([corner, corner + rng.uniform(0.1, 0.4, (count, 2)) * [width, height]], axis=1)


def test_every_graph_matches_pytorch(exported) -> None:
    _, folder, manifest = exported
    assert set(manifest["graphs"]) == {"sam_image_encoder", "clip_image_memory", "sam_box_tokens", "sam_box_masks",
                                       "region_head", "region_path"}
    for name, graph in manifest["graphs"].items():
        assert (folder / graph["file"]).is_file(), name
        assert 0 <= graph["max_rel_difference"] <= PARITY_TOLERANCE, name
        assert graph["max_abs_difference"] <= 1e-4, name
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()  # still a checkpoint


@pytest.mark.parametrize("count", [1, 7, 70])
def test_the_onnx_runtime_gives_the_pytorch_answer(exported, onnx_model, street: np.ndarray, count: int) -> None:
    """Traced on 3 boxes, run on 1, 7 and 70 (three graph runs of at most 32): the box count is dynamic."""
    model, _, _ = exported
    boxes = boxes_for(street, count)
    answers = []
    for recognizer in (model, onnx_model):
        predictor = recognizer.predictor()
        predictor.set_image(street)
        together = predictor.predict(boxes, NAMES, topk=len(NAMES), with_attention=True)
        alone = predictor.predict(boxes, NAMES, topk=len(NAMES), together=False)
        answers.append((together, alone))
    for torch_result, onnx_result in zip(*answers, strict=True):
        dense = [np.take_along_axis(r.topk_scores, np.argsort(r.topk_ids, axis=1), axis=1)
                 for r in (torch_result, onnx_result)]
        np.testing.assert_allclose(dense[1], dense[0], atol=1e-4)
        assert torch_result.masks is not None and onnx_result.masks is not None
        assert (torch_result.masks != onnx_result.masks).mean() <= 1e-4  # logits within 1e-4 of 0 may flip
        np.testing.assert_allclose(onnx_result.mask_scores, torch_result.mask_scores, atol=1e-4)
    np.testing.assert_allclose(answers[1][0].extras["attention"], answers[0][0].extras["attention"], atol=1e-4)
    assert onnx_model.describe()["runtime"] == "onnx"
    assert onnx_model.describe_backbones()["sam"]["runtime"] == "onnxruntime"


def test_the_region_path_graph_is_the_runtimes_answer(exported, onnx_model, street: np.ndarray) -> None:
    """The one-graph region path (for runtimes outside Python) scores as the predictor does."""
    _, folder, _ = exported
    boxes = boxes_for(street, 4)
    predictor = onnx_model.predictor()
    predictor.set_image(street)
    result = predictor.predict(boxes, NAMES, topk=len(NAMES))
    encoded = predictor.encoded
    assert encoded is not None
    scaled = scale_boxes(torch.as_tensor(boxes, dtype=torch.float32), encoded.sam.original_size,
                         encoded.sam.input_size)
    scores, mask_logits, mask_scores = OnnxGraph(folder / "region_path.onnx")(
        embeddings=encoded.sam.embeddings, boxes=scaled, text=onnx_model.text_embeddings(NAMES),
        memory=encoded.context)
    np.testing.assert_allclose(np.take_along_axis(scores.numpy(), result.topk_ids, axis=1), result.topk_scores,
                               atol=1e-5)
    assert mask_logits.shape == (4, 4 * encoded.sam.embeddings.shape[-2], 4 * encoded.sam.embeddings.shape[-1])
    np.testing.assert_allclose(mask_scores.numpy(), result.mask_scores, atol=1e-5)


@pytest.mark.slow  # two more exports: about 30 s each here
@pytest.mark.parametrize("extra", [["sam.multimask=true"], ["clip.enabled=false"]])
def test_multimask_and_no_clip_vision_heads_export(tiny_sam_dir: Path, tiny_clip_dir: Path, text_cache_dir: Path,
                                                   tmp_path: Path, street: np.ndarray, extra: list[str]) -> None:
    model = load(tiny_source(tiny_sam_dir, tiny_clip_dir, text_cache_dir, *extra), device="cpu", log=None)
    manifest = export_onnx(model, tmp_path)  # raises when a graph differs from PyTorch by more than 1e-4
    assert ("clip_image_memory" in manifest["graphs"]) == (extra != ["clip.enabled=false"])
    runtime = load(ModelSource(checkpoint=str(tmp_path), runtime="onnx",
                               overrides=[f"text.cache_dir={text_cache_dir}"]), log=None)
    results = []
    for recognizer in (model, runtime):
        predictor = recognizer.predictor()
        predictor.set_image(street)
        results.append(predictor.predict(boxes_for(street, 5), NAMES, topk=2, with_masks=False))
    np.testing.assert_allclose(results[1].topk_scores, results[0].topk_scores, atol=1e-4)


def test_what_the_runtime_cannot_do_is_refused(exported, onnx_model, street: np.ndarray, tmp_path: Path,
                                               tiny_sam_dir: Path) -> None:
    model, folder, _ = exported
    with pytest.raises(ConfigError, match="without --sam"):
        load(ModelSource(checkpoint=str(folder), runtime="onnx", sam=str(tiny_sam_dir)), log=None)
    for change in ("fusion.depth=1", "inputs=official"):  # inputs also sets the SAM decoder's eps, in the graphs
        with pytest.raises(ConfigError, match="would change the exported graphs"):
            load(ModelSource(checkpoint=str(folder), runtime="onnx", overrides=[change]), log=None)
    with pytest.raises(DeviceError, match="runs on the CPU"):
        load(ModelSource(checkpoint=str(folder), runtime="onnx"), device="cuda", log=None)
    with pytest.raises(DeviceError, match="float32"):
        load(ModelSource(checkpoint=str(folder), runtime="onnx"), precision="bf16", log=None)
    model.save_pretrained(tmp_path)  # a plain checkpoint: no graphs
    with pytest.raises(CheckpointError, match="regionspot export onnx"):
        load(ModelSource(checkpoint=str(tmp_path), runtime="onnx"), log=None)
    predictor = onnx_model.predictor()
    predictor.set_image(street)
    with pytest.raises(BackboneCapabilityError, match="encode_points"):
        predictor.propose()
    with pytest.raises(ConfigError, match="already runs in onnxruntime"):
        export_onnx(onnx_model, tmp_path / "again")


def copy_export(folder: Path, target: Path) -> Path:
    shutil.copytree(folder, target)
    return target


@pytest.mark.parametrize(("damage", "message"), [
    (lambda folder: (folder / "region_head.onnx").write_bytes(b"not a graph"), "not a usable ONNX graph"),
    (lambda folder: (folder / "sam_box_masks.onnx").unlink(), "is missing"),
    (lambda folder: (folder / "onnx.json").write_text("{"), "not valid JSON"),
    (lambda folder: (folder / "onnx.json").write_text(json.dumps({"format": "regionspot-onnx", "format_version": 1,
                                                                   "graphs": {}})), "must list the graphs"),
    (lambda folder: (folder / "onnx.json").write_text(json.dumps({"format": "regionspot-onnx",
                                                                   "format_version": 9})), "format version 9"),
    (lambda folder: (folder / "config.json").write_text((folder / "config.json").read_text().replace(
        '"logit_scale": 5.0', '"logit_scale": 6.0')), "changed since the export"),
])
def test_a_damaged_export_is_one_clear_error(exported, tmp_path: Path, text_cache_dir: Path, damage,
                                             message: str) -> None:
    folder = copy_export(exported[1], tmp_path / "export")
    damage(folder)
    with pytest.raises(CheckpointError, match=message):
        load(ModelSource(checkpoint=str(folder), runtime="onnx", overrides=[f"text.cache_dir={text_cache_dir}"]),
             log=None)


def test_an_export_on_the_hub_runs(exported, tmp_path: Path, text_cache_dir: Path, street: np.ndarray,
                                   monkeypatch: pytest.MonkeyPatch, add_to_hub_cache) -> None:
    """A Hub repo id (here from a Hub cache laid out by the test, offline) gets its graphs too."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    add_to_hub_cache(cache, "org/regionspot-onnx", lambda folder: shutil.copytree(exported[1], folder,
                                                                                   dirs_exist_ok=True))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = load(ModelSource(checkpoint="org/regionspot-onnx", runtime="onnx",
                             overrides=[f"text.cache_dir={text_cache_dir}"]), log=None)
    predictor = model.predictor()
    predictor.set_image(street)
    assert predictor.predict(boxes_for(street, 2), NAMES, topk=1).boxes.shape == (2, 4)


def test_a_failed_export_leaves_no_manifest(exported, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An export stopped part-way (here: a graph that fails) removes the old manifest first, so
    the half-written folder is not taken for a usable export."""
    import regionspot.model.onnx_export as onnx_export

    folder = copy_export(exported[1], tmp_path / "export")

    def fail(spec, path) -> None:
        raise ConfigError("stopped")

    monkeypatch.setattr(onnx_export, "export_graph", fail)
    with pytest.raises(ConfigError, match="stopped"):
        export_onnx(exported[0], folder)
    assert not (folder / "onnx.json").exists() and (folder / "region_head.onnx").exists()
