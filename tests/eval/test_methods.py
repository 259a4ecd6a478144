"""The evaluation methods: RegionSpot together/alone against the predictor, the CLIP crop
baselines (softmax scores, the same SAM masks), and the configuration errors. Crop geometry is
tested in tests/ops/test_crops.py, crop scoring in tests/model/test_zero_shot.py."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch

from regionspot.config import ConfigError
from regionspot.eval.methods import METHODS, PROMPT_MODES, build_classifier
from regionspot.model.regionspot import RegionSpot
from regionspot.model.zero_shot import ZeroShotCLIP
from regionspot.results import RegionResult

VOCAB = ["cat", "dog", "car", "tree", "person", "cup"]
BOXES = np.array([[4.0, 6.0, 60.0, 50.0], [50.0, 30.0, 120.0, 90.0], [10.5, 40.2, 70.7, 95.9],
                  [90.0, 2.0, 126.0, 40.0]])


def dense_scores(result: RegionResult) -> np.ndarray:
    """Scores [R, V] from a result holding every name (topk == vocabulary size)."""
    scores = np.full((len(result), len(result.vocabulary)), np.nan)
    np.put_along_axis(scores, result.topk_ids, result.topk_scores, axis=1)
    assert not np.isnan(scores).any(), "topk must cover the whole vocabulary"
    return scores


@pytest.fixture(scope="module")
def image(synthetic_scene: np.ndarray) -> np.ndarray:
    return synthetic_scene


@pytest.fixture(scope="module")
def attending_model(mobile_sam_model: RegionSpot) -> RegionSpot:
    """The test backbones with a fresh head whose regions attend to each other; logit scale 1 so
    that sigmoid scores stay away from 0 and 1 and differences show."""
    fusion = dataclasses.replace(mobile_sam_model.config.fusion, region_self_attention=True, logit_scale=1.0)
    config = dataclasses.replace(mobile_sam_model.config, fusion=fusion)
    torch.manual_seed(1)
    return RegionSpot(config, mobile_sam_model.region_tokenizer, mobile_sam_model.image_encoder,
                      mobile_sam_model.text_embedder)


@pytest.fixture(scope="module")
def outputs(attending_model: RegionSpot, image: np.ndarray) -> dict[str, Any]:
    """Both prompt modes through the classifier, and the predictor's own answers."""
    topk = len(VOCAB)
    predictor = attending_model.predictor()
    predictor.set_image(image)
    return {
        "together": build_classifier("regionspot", attending_model).classify(image, BOXES, VOCAB, topk, True),
        "alone": build_classifier("regionspot", attending_model, prompt="alone").classify(
            image, BOXES, VOCAB, topk, True),
        "predict": predictor.predict(BOXES, VOCAB, topk=topk, with_masks=True),
        "predict_each": [predictor.predict(box[None], VOCAB, topk=topk, with_masks=True) for box in BOXES],
    }


def test_together_is_predictor_predict(outputs: dict[str, Any]) -> None:
    together, expected = outputs["together"], outputs["predict"]
    np.testing.assert_allclose(dense_scores(together), dense_scores(expected), atol=1e-6)
    np.testing.assert_array_equal(together.boxes, expected.boxes)
    np.testing.assert_array_equal(together.masks, expected.masks)
    assert together.vocabulary == VOCAB and together.image_size == (96, 128)


def test_alone_equals_one_predict_call_per_box(outputs: dict[str, Any]) -> None:
    alone, each = outputs["alone"], outputs["predict_each"]
    np.testing.assert_allclose(dense_scores(alone), np.concatenate([dense_scores(r) for r in each]), atol=1e-5)
    np.testing.assert_allclose(alone.mask_scores, np.concatenate([r.mask_scores for r in each]), atol=1e-5)
    same_pixels = (alone.masks == np.concatenate([r.masks for r in each])).mean()
    assert same_pixels > 0.999
    assert alone.masks.any(axis=(1, 2)).all()


def test_alone_differs_from_together_when_regions_attend(outputs: dict[str, Any]) -> None:
    difference = np.abs(dense_scores(outputs["alone"]) - dense_scores(outputs["together"])).max()
    assert difference > 1e-3


def test_alone_without_masks(attending_model: RegionSpot, image: np.ndarray, outputs: dict[str, Any]) -> None:
    result = build_classifier("regionspot", attending_model, prompt="alone").classify(image, BOXES[:2], VOCAB, 2, False)
    assert result.masks is None and result.topk_ids.shape == (2, 2)
    np.testing.assert_allclose(result.topk_scores, outputs["alone"].topk_scores[:2, :2], atol=1e-5)


@pytest.mark.slow
def test_clip_crop_scores_are_a_softmax_over_the_vocabulary(mobile_sam_model: RegionSpot, image: np.ndarray) -> None:
    classifier = build_classifier("clip-crop", mobile_sam_model)
    assert classifier.name == "clip-crop"
    result = classifier.classify(image, BOXES, VOCAB, len(VOCAB), False)
    scores = dense_scores(result)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)
    assert result.masks is None
    assert np.all(np.diff(result.topk_scores, axis=1) <= 0)
    top2 = classifier.classify(image, BOXES, VOCAB, 2, False)
    np.testing.assert_array_equal(top2.topk_ids, result.topk_ids[:, :2])


@pytest.mark.slow
def test_clip_mask_crop_uses_the_same_sam_masks_as_regionspot(
        mobile_sam_model: RegionSpot, image: np.ndarray, outputs: dict[str, Any]) -> None:
    masked = build_classifier("clip-mask-crop", mobile_sam_model).classify(image, BOXES, VOCAB, len(VOCAB), True)
    np.testing.assert_array_equal(masked.masks, outputs["predict"].masks)
    np.testing.assert_allclose(masked.mask_scores, outputs["predict"].mask_scores, atol=1e-6)
    np.testing.assert_allclose(dense_scores(masked).sum(axis=1), 1.0, atol=1e-5)
    plain = build_classifier("clip-crop", mobile_sam_model).classify(image, BOXES, VOCAB, len(VOCAB), False)
    assert np.abs(dense_scores(masked) - dense_scores(plain)).max() > 1e-6  # the fill changed the crops


# ----------------------------------------------------------------------------- errors
def test_crop_baselines_need_clip_vision(mobile_sam_model: RegionSpot) -> None:
    config = dataclasses.replace(mobile_sam_model.config,
                                 clip=dataclasses.replace(mobile_sam_model.config.clip, enabled=False))
    no_vision = RegionSpot(config, mobile_sam_model.region_tokenizer, None, mobile_sam_model.text_embedder)
    for method in ("clip-crop", "clip-mask-crop"):
        with pytest.raises(ConfigError, match="without CLIP vision"):
            build_classifier(method, no_vision)
    assert build_classifier("regionspot", no_vision).name == "regionspot"


def test_tiny_clip_projection_fits_its_text(mobile_sam_model: RegionSpot) -> None:
    assert mobile_sam_model.image_encoder.projection_dim == mobile_sam_model.text_embedder.embed_dim
    pooled = mobile_sam_model.image_encoder.encode_pooled(torch.zeros(2, 3, 32, 32))
    np.testing.assert_allclose(pooled.norm(dim=-1).numpy(), 1.0, atol=1e-5)


def test_unknown_method_or_prompt(mobile_sam_model: RegionSpot) -> None:
    with pytest.raises(ConfigError, match="clip-mask-crop"):
        build_classifier("clip", mobile_sam_model)
    with pytest.raises(ConfigError, match="together, alone"):
        build_classifier("regionspot", mobile_sam_model, prompt="single")
    assert set(METHODS) == {"regionspot", "clip-crop", "clip-mask-crop"} and PROMPT_MODES == ("together", "alone")


def test_zero_shot_model_cannot_be_asked_for_a_head(mobile_sam_model: RegionSpot) -> None:
    zero_shot = ZeroShotCLIP.from_model(mobile_sam_model)
    assert build_classifier("clip-mask-crop", zero_shot).recognizer is zero_shot
    assert build_classifier("clip-crop", zero_shot).name == "clip-crop"
    with pytest.raises(ConfigError, match="needs a RegionSpot head"):
        build_classifier("regionspot", zero_shot)
