"""``inputs="official"``: a head converted from the authors' release is fed what their LVIS
evaluation fed it (detectron2's resize first, both towers on that image, SAM decoder eps 1e-5,
their text recipe); ``native`` keeps this library's pipeline. Checked against the parts put
together by hand from the published rules."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from regionspot.config import ORIGINAL_SAM_DECODER_EPS, SamBackboneConfig, TextConfig, backbone_config
from regionspot.model.official import official_config
from regionspot.model.recognizer import RegionBatch
from regionspot.model.regionspot import RegionSpot
from regionspot.ops.official_inputs import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    detectron2_test_resize,
    nearest_resize_masks,
    scale_xyxy,
    tensor_resize_clip_pixels,
)

VOCABULARY = ["aerosol_can", "dog", "wall-other-merged"]
BOXES = np.array([[10.0, 12.0, 60.0, 70.0], [40.0, 5.0, 120.0, 90.0]])


@pytest.fixture(scope="module")
def models(tiny_sam_dir: Path, tiny_clip_dir: Path, text_cache_dir: Path) -> dict[str, RegionSpot]:
    torch.manual_seed(0)
    native = RegionSpot.from_backbones(sam=str(tiny_sam_dir), clip=str(tiny_clip_dir),
                                       text=TextConfig(cache_dir=str(text_cache_dir)))
    official = RegionSpot.from_config(dataclasses.replace(native.config, inputs="official"))
    official.load_head_state(native.head_state())
    return {"native": native, "official": official}


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (96, 128, 3), dtype=np.uint8)


def test_the_sam_decoder_eps_comes_from_the_setting_not_the_loaded_config(models: dict[str, RegionSpot],
                                                                          tiny_sam_dir: Path) -> None:
    native, official = models["native"], models["official"]
    assert native.region_tokenizer.describe()["decoder_layer_norm_eps"] == pytest.approx(1e-6)  # HF's default
    assert official.region_tokenizer.describe()["decoder_layer_norm_eps"] == ORIGINAL_SAM_DECODER_EPS
    head = official.region_tokenizer.head  # type: ignore[attr-defined]
    norms = [getattr(layer, f"layer_norm{i}") for layer in head.mask_decoder.transformer.layers for i in range(1, 5)]
    assert len(norms) == 8 and all(norm.eps == ORIGINAL_SAM_DECODER_EPS for norm in norms)
    chosen = dataclasses.replace(native.config, sam=SamBackboneConfig(str(tiny_sam_dir), decoder_layer_norm_eps=1e-4))
    assert backbone_config(chosen).sam.decoder_layer_norm_eps == 1e-4  # native: as set
    assert backbone_config(dataclasses.replace(chosen, inputs="official")).sam.decoder_layer_norm_eps == 1e-5
    assert official.describe()["inputs"] == "official" and native.describe()["inputs"] == "native"


def test_official_text_is_the_authors_recipe(models: dict[str, RegionSpot]) -> None:
    official_text = models["official"].text_embedder
    assert official_text.describe()["templates"] == "official"
    assert models["native"].text_embedder.describe()["templates"] == "ensemble"
    rows = models["official"].text_embeddings(VOCABULARY).cpu()
    torch.testing.assert_close(rows, official_text.encode_text(VOCABULARY))


def test_official_towers_see_the_detectron2_resized_photo(models: dict[str, RegionSpot], photo: np.ndarray) -> None:
    model = models["official"]
    predictor = model.predictor()
    predictor.set_image(photo)
    encoded = predictor.encoded
    assert encoded is not None
    frame = detectron2_test_resize(photo)
    assert encoded.size == (96, 128) and encoded.frame_size == frame.shape[:2] == (800, 1067)
    torch.testing.assert_close(encoded.sam.embeddings, model.region_tokenizer.encode_image(frame).embeddings)
    pixels = tensor_resize_clip_pixels(frame, 32, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)  # the tiny CLIP's input
    assert model.image_encoder is not None and model.image_encoder.image_size == 32
    torch.testing.assert_close(encoded.context, model.image_encoder.encode_image(pixels[None]))


@torch.inference_mode()
def test_official_scores_and_masks_come_from_the_frame(models: dict[str, RegionSpot], photo: np.ndarray) -> None:
    model = models["official"]
    predictor = model.predictor()
    predictor.set_image(photo)
    result = predictor.predict(BOXES, VOCABULARY, topk=3)
    np.testing.assert_array_equal(result.boxes, BOXES)  # boxes stay in the photo's pixels
    frame = detectron2_test_resize(photo)
    embedding = model.region_tokenizer.encode_image(frame)
    regions = model.region_tokenizer.encode_regions(
        embedding, torch.as_tensor(scale_xyxy(BOXES, photo.shape[:2], frame.shape[:2]), dtype=torch.float32))
    assert predictor.encoded is not None
    scores = model.score_regions(RegionBatch(image=photo, context=predictor.encoded.context, boxes=BOXES,
                                             tokens=regions.tokens, masks=None,
                                             text=model.text_embeddings(VOCABULARY))).scores
    expected = scores.sort(dim=-1, descending=True).values.double().numpy()
    np.testing.assert_allclose(result.topk_scores, expected, rtol=1e-5, atol=1e-6)
    frame_masks = (model.region_tokenizer.masks_to_image(embedding, regions.mask_logits) > 0).numpy()
    assert result.masks is not None and result.masks.shape == (2, 96, 128)
    np.testing.assert_array_equal(result.masks, nearest_resize_masks(frame_masks, (96, 128)))


def test_native_and_official_differ_and_native_is_unchanged(models: dict[str, RegionSpot],
                                                            photo: np.ndarray) -> None:
    native = models["native"]
    predictor = native.predictor()
    predictor.set_image(photo)
    assert predictor.encoded is not None and predictor.encoded.frame_size == (96, 128)
    torch.testing.assert_close(predictor.encoded.sam.embeddings, native.region_tokenizer.encode_image(photo).embeddings)
    official = models["official"].predictor()
    official.set_image(photo)
    a = predictor.predict(BOXES, VOCABULARY, topk=3, with_masks=False).topk_scores
    b = official.predict(BOXES, VOCABULARY, topk=3, with_masks=False).topk_scores
    assert not np.allclose(a, b)


def test_a_converted_head_runs_with_the_authors_inputs_and_scoring() -> None:
    config = official_config("bl")
    assert config.inputs == "official" and config.fusion.score_function == "softmax"
    built = backbone_config(config)
    assert built.sam.decoder_layer_norm_eps == ORIGINAL_SAM_DECODER_EPS and built.text.templates == "official"


def test_a_checkpoint_without_a_recorded_eps_says_which_it_runs_with(models: dict[str, RegionSpot],
                                                                      tmp_path: Path) -> None:
    from regionspot.model.loader import load

    native = models["native"]
    assert native.config.sam.decoder_layer_norm_eps == pytest.approx(1e-6)  # built from backbones: recorded
    unrecorded = RegionSpot(dataclasses.replace(native.config, sam=dataclasses.replace(
        native.config.sam, decoder_layer_norm_eps=None)), native.region_tokenizer, native.image_encoder,
        native.text_embedder)  # as heads saved before the eps was recorded
    unrecorded.load_head_state(native.head_state())
    unrecorded.save_pretrained(tmp_path / "unrecorded")
    lines: list[str] = []
    load(str(tmp_path / "unrecorded"), log=lines.append)
    assert any(line.startswith("note: the checkpoint does not record the SAM decoder LayerNorm eps") and "(1e-06)"
               in line for line in lines), lines
    recorded = RegionSpot(dataclasses.replace(native.config, sam=dataclasses.replace(
        native.config.sam, decoder_layer_norm_eps=1e-5)), native.region_tokenizer, native.image_encoder,
        native.text_embedder)
    recorded.load_head_state(native.head_state())
    recorded.save_pretrained(tmp_path / "recorded")
    lines.clear()
    model = load(str(tmp_path / "recorded"), log=lines.append)
    assert not any("does not record" in line for line in lines)
    assert model.region_tokenizer.describe()["decoder_layer_norm_eps"] == 1e-5  # applied on load
