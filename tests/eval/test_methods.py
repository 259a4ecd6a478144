"""The evaluation methods: RegionSpot together/alone against the predictor, the CLIP crop
baselines (softmax scores, crop geometry, mask fill, SAM masks), and the configuration errors."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch

from regionspot.backbones.clip_vision import OPENAI_CLIP_MEAN, preprocess_image
from regionspot.backbones.protocols import RegionTokens, SamImageEmbedding
from regionspot.config import ConfigError
from regionspot.eval.methods import (
    METHODS, PROMPT_MODES, ClipCropClassifier, box_pixel_bounds, build_classifier, crop_region, neutral_fill,
    pad_to_square,
)
from regionspot.model.regionspot import RegionSpot
from regionspot.results import RegionResult

VOCAB = ["cat", "dog", "car", "tree", "person", "cup"]
BOXES = np.array([[4.0, 6.0, 60.0, 50.0], [50.0, 30.0, 120.0, 90.0], [10.5, 40.2, 70.7, 95.9],
                  [90.0, 2.0, 126.0, 40.0]])
RED, BLUE = np.array([255, 0, 0], np.uint8), np.array([0, 0, 255], np.uint8)


def dense_scores(result: RegionResult) -> np.ndarray:
    """Scores [R, V] from a result holding every name (topk == vocabulary size)."""
    scores = np.full((len(result), len(result.vocabulary)), np.nan)
    np.put_along_axis(scores, result.topk_ids, result.topk_scores, axis=1)
    assert not np.isnan(scores).any(), "topk must cover the whole vocabulary"
    return scores


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """96x128 synthetic scene: a gradient with three coloured rectangles."""
    rows, cols = np.mgrid[0:96, 0:128]
    picture = np.stack([rows * 2, cols * 2, (rows + cols)], axis=-1).astype(np.uint8)
    picture[10:45, 8:55] = (220, 40, 40)
    picture[35:85, 55:115] = (30, 160, 60)
    picture[5:35, 92:125] = (20, 40, 200)
    return picture


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


def test_clip_crop_scores_are_a_softmax_over_the_vocabulary(mobile_sam_model: RegionSpot, image: np.ndarray) -> None:
    classifier = build_classifier("clip-crop", mobile_sam_model)
    assert classifier.name == "clip-crop"
    result = classifier.classify(image, BOXES, VOCAB, len(VOCAB), False)
    scores = dense_scores(result)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)
    assert result.masks is None and result.mask_scores is None
    assert np.all(np.diff(result.topk_scores, axis=1) <= 0)
    top2 = classifier.classify(image, BOXES, VOCAB, 2, False)
    np.testing.assert_array_equal(top2.topk_ids, result.topk_ids[:, :2])


def test_clip_mask_crop_uses_the_same_sam_masks_as_regionspot(
        mobile_sam_model: RegionSpot, image: np.ndarray, outputs: dict[str, Any]) -> None:
    masked = build_classifier("clip-mask-crop", mobile_sam_model).classify(image, BOXES, VOCAB, len(VOCAB), True)
    np.testing.assert_array_equal(masked.masks, outputs["predict"].masks)
    np.testing.assert_allclose(masked.mask_scores, outputs["predict"].mask_scores, atol=1e-6)
    np.testing.assert_allclose(dense_scores(masked).sum(axis=1), 1.0, atol=1e-5)
    plain = build_classifier("clip-crop", mobile_sam_model).classify(image, BOXES, VOCAB, len(VOCAB), False)
    assert np.abs(dense_scores(masked) - dense_scores(plain)).max() > 1e-6  # the fill changed the crops


# ----------------------------------------------------------------------------- crop geometry
def halves(height: int = 40, width: int = 80) -> np.ndarray:
    """Left half red, right half blue."""
    picture = np.empty((height, width, 3), np.uint8)
    picture[:, : width // 2] = RED
    picture[:, width // 2:] = BLUE
    return picture


def test_box_pixel_bounds_cover_the_box_and_stay_inside() -> None:
    assert box_pixel_bounds(np.array([2.3, 4.0, 10.7, 9.2]), (20, 30)) == (2, 4, 11, 10)
    assert box_pixel_bounds(np.array([-5.0, -1.0, 40.0, 25.0]), (20, 30)) == (0, 0, 30, 20)
    assert box_pixel_bounds(np.array([29.6, 19.5, 30.0, 20.0]), (20, 30)) == (29, 19, 30, 20)


def test_crop_region_takes_the_box_pixels() -> None:
    picture = halves()
    left = crop_region(picture, np.array([0.0, 0.0, 40.0, 40.0]))
    assert left.shape == (40, 40, 3) and (left == RED).all()
    middle = crop_region(picture, np.array([30.0, 10.0, 60.0, 20.0]))
    assert middle.shape == (10, 30, 3)
    assert (middle[:, :10] == RED).all() and (middle[:, 10:] == BLUE).all()
    assert picture[:, :40].tolist() == halves()[:, :40].tolist()  # the input is not modified


def test_crop_region_fills_outside_the_mask() -> None:
    picture = halves()
    mask = np.zeros(picture.shape[:2], bool)
    mask[12:18, 45:55] = True
    crop = crop_region(picture, np.array([30.0, 10.0, 60.0, 20.0]), mask=mask)
    fill = neutral_fill()
    assert fill.tolist() == [123, 117, 104]
    inside = np.zeros(crop.shape[:2], bool)
    inside[2:8, 15:25] = True
    assert (crop[inside] == BLUE).all() and (crop[~inside] == fill).all()


def test_pad_to_square_centres_the_crop() -> None:
    crop = np.zeros((10, 30, 3), np.uint8)
    square = pad_to_square(crop, np.array([9, 9, 9], np.uint8))
    assert square.shape == (30, 30, 3)
    assert (square[10:20] == 0).all() and (square[:10] == 9).all() and (square[20:] == 9).all()
    assert pad_to_square(square) is square


class ColourEncoder:
    """Fake CLIP vision tower: the pooled embedding is the mean colour of the preprocessed crop
    around CLIP's pixel mean (which the neutral fill maps to zero), so it names colours."""

    projection_dim = 3
    mean = OPENAI_CLIP_MEAN

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        return preprocess_image(image, 8, self.mean, (1.0, 1.0, 1.0))

    def encode_pooled(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(pixels.mean(dim=(2, 3)), dim=-1)


class FixedMaskSam:
    """Fake SAM whose box masks are given up front (bool [R, H, W])."""

    def __init__(self, masks: np.ndarray) -> None:
        self.masks = masks

    def encode_image(self, image: np.ndarray) -> SamImageEmbedding:
        return SamImageEmbedding(torch.zeros(1, 1, 1, 1), image.shape[:2], image.shape[:2])

    def encode_regions(self, embedding: SamImageEmbedding, boxes: torch.Tensor,
                       with_masks: bool = True) -> RegionTokens:
        count = boxes.shape[0]
        return RegionTokens(torch.zeros(count, 4), torch.zeros(count, 1, 1), torch.full((count,), 0.75))

    def masks_to_image(self, embedding: SamImageEmbedding, mask_logits: torch.Tensor) -> torch.Tensor:
        return torch.where(torch.from_numpy(self.masks[: mask_logits.shape[0]]), 1.0, -1.0)


def colour_text(names: list[str]) -> torch.Tensor:
    table = {"red": [1.0, 0.0, 0.0], "green": [0.0, 1.0, 0.0], "blue": [0.0, 0.0, 1.0]}
    return torch.tensor([table[n] for n in names])


def test_crop_classifiers_see_the_right_pixels() -> None:
    picture = halves()
    boxes = np.array([[0.0, 0.0, 40.0, 40.0], [40.0, 0.0, 80.0, 40.0], [10.0, 0.0, 50.0, 40.0]])
    masks = np.zeros((3, 40, 80), bool)
    masks[0, :, :40] = masks[1, :, 40:] = True
    masks[2, :, 40:50] = True  # only the blue quarter of the straddling box
    vocab = ["red", "green", "blue"]
    plain = ClipCropClassifier(ColourEncoder(), colour_text, FixedMaskSam(masks), text_dim=3, mask_crop=False)
    masked = ClipCropClassifier(ColourEncoder(), colour_text, FixedMaskSam(masks), text_dim=3, mask_crop=True)
    assert masked.name == "clip-mask-crop"
    assert plain.classify(picture, boxes, vocab, 1, False).labels == ["red", "blue", "red"]
    result = masked.classify(picture, boxes, vocab, 3, True)
    assert result.labels == ["red", "blue", "blue"]
    np.testing.assert_array_equal(result.masks, masks)
    np.testing.assert_allclose(result.mask_scores, 0.75)
    np.testing.assert_allclose(result.topk_scores.sum(axis=1), 1.0, atol=1e-6)


# ----------------------------------------------------------------------------- errors
def test_crop_baselines_need_clip_vision(mobile_sam_model: RegionSpot) -> None:
    config = dataclasses.replace(mobile_sam_model.config,
                                 clip=dataclasses.replace(mobile_sam_model.config.clip, enabled=False))
    no_vision = RegionSpot(config, mobile_sam_model.region_tokenizer, None, mobile_sam_model.text_embedder)
    for method in ("clip-crop", "clip-mask-crop"):
        with pytest.raises(ConfigError, match="without CLIP vision"):
            build_classifier(method, no_vision)
    assert build_classifier("regionspot", no_vision).name == "regionspot"


def test_crop_baselines_need_a_projection_matching_the_text() -> None:
    bare = ColourEncoder()
    bare.projection_dim = None  # type: ignore[assignment]
    with pytest.raises(ConfigError, match="no visual projection"):
        ClipCropClassifier(bare, colour_text, FixedMaskSam(np.zeros((1, 2, 2), bool)), text_dim=3, mask_crop=False)
    with pytest.raises(ConfigError, match="3-d and the text embedding 16-d"):
        ClipCropClassifier(ColourEncoder(), colour_text, FixedMaskSam(np.zeros((1, 2, 2), bool)), text_dim=16,
                           mask_crop=True)


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


def test_bad_topk_is_a_value_error() -> None:
    classifier = ClipCropClassifier(ColourEncoder(), colour_text, FixedMaskSam(np.zeros((1, 40, 80), bool)),
                                    text_dim=3, mask_crop=False)
    with pytest.raises(ValueError, match="topk"):
        classifier.classify(halves(), np.array([[0.0, 0.0, 10.0, 10.0]]), ["red", "blue"], 0, False)
