"""The zero-shot recognizer: the right pixels reach CLIP (box and mask crops), its scores equal
CLIP zero-shot computed here independently with transformers' CLIPModel, and its errors."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer, CLIPModel

from regionspot.backbones.clip_vision import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    preprocess_image,
)
from regionspot.backbones.protocols import RegionTokens, SamImageEmbedding
from regionspot.backbones.templates import build_prompts, resolve_templates
from regionspot.backbones.text import build_text_embedder
from regionspot.config import ConfigError, TextConfig, ZeroShotConfig
from regionspot.model.regionspot import RegionSpot
from regionspot.model.zero_shot import ZeroShotCLIP

RED, BLUE = np.array([255, 0, 0], np.uint8), np.array([0, 0, 255], np.uint8)
VOCAB = ["cat", "dog", "car", "tree", "person", "cup"]
BOXES = np.array([[4.0, 6.0, 60.0, 50.0], [50.0, 30.0, 120.0, 90.0], [10.5, 40.2, 70.7, 95.9]])


def halves(height: int = 40, width: int = 80) -> np.ndarray:
    picture = np.empty((height, width, 3), np.uint8)
    picture[:, : width // 2] = RED
    picture[:, width // 2:] = BLUE
    return picture


class ColourEncoder:
    """Fake CLIP vision tower: the pooled embedding is the mean colour of the preprocessed crop
    around CLIP's pixel mean (which the neutral fill maps to zero), so it names colours."""

    projection_dim: int | None = 3
    mean = OPENAI_CLIP_MEAN

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        return preprocess_image(image, 8, self.mean, (1.0, 1.0, 1.0))

    def encode_pooled(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(pixels.mean(dim=(2, 3)), dim=-1)

    def describe(self) -> dict[str, object]:
        return {"kind": "colours"}


class ColourText:
    embed_dim = 3
    table: ClassVar[dict[str, list[float]]] = {
        "red": [1.0, 0.0, 0.0], "green": [0.0, 1.0, 0.0], "blue": [0.0, 0.0, 1.0],
    }

    def encode_text(self, names: list[str]) -> torch.Tensor:
        return torch.tensor([self.table[n] for n in names])

    def describe(self) -> dict[str, object]:
        return {"kind": "colour names"}


class FixedMaskSam:
    """Fake SAM whose box masks are given up front (bool [R, H, W])."""

    token_dim = 4
    image_input_size = 16

    def __init__(self, masks: np.ndarray) -> None:
        self.masks = masks

    def encode_image(self, image: np.ndarray) -> SamImageEmbedding:
        return SamImageEmbedding(torch.zeros(1, 1, 1, 1), image.shape[:2], image.shape[:2])

    def encode_regions(self, embedding: SamImageEmbedding, boxes: torch.Tensor,
                       with_masks: bool = True) -> RegionTokens:
        count = boxes.shape[0]
        logits = torch.zeros(count, 1, 1) if with_masks else None
        return RegionTokens(torch.zeros(count, 4), logits, torch.full((count,), 0.75))

    def paste_masks(self, embedding: SamImageEmbedding, mask_logits: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.masks[: mask_logits.shape[0]])

    def describe(self) -> dict[str, object]:
        return {"kind": "fixed masks"}


def colour_recognizer(method: str, masks: np.ndarray) -> ZeroShotCLIP:
    return ZeroShotCLIP(ZeroShotConfig(method=method), FixedMaskSam(masks), ColourEncoder(),  # type: ignore[arg-type]
                        ColourText())


def test_crops_see_the_right_pixels() -> None:
    picture = halves()
    boxes = np.array([[0.0, 0.0, 40.0, 40.0], [40.0, 0.0, 80.0, 40.0], [10.0, 0.0, 50.0, 40.0]])
    masks = np.zeros((3, 40, 80), bool)
    masks[0, :, :40] = masks[1, :, 40:] = True
    masks[2, :, 40:50] = True  # only the blue quarter of the straddling box
    vocab = ["red", "green", "blue"]
    plain = colour_recognizer("clip-crop", masks).predictor()
    plain.set_image(picture)
    assert plain.predict(boxes, vocab, 1, with_masks=False).labels == ["red", "blue", "red"]
    masked = colour_recognizer("clip-mask-crop", masks).predictor()
    masked.set_image(picture)
    result = masked.predict(boxes, vocab, 3, with_masks=True)
    assert result.labels == ["red", "blue", "blue"]
    np.testing.assert_array_equal(result.masks, masks)
    np.testing.assert_allclose(result.mask_scores, 0.75)
    np.testing.assert_allclose(result.topk_scores.sum(axis=1), 1.0, atol=1e-6)
    without = masked.predict(boxes, vocab, 3, with_masks=False)  # masks are still used for the crops
    assert without.masks is None and without.labels == ["red", "blue", "blue"]


def test_needs_a_projection_matching_the_text() -> None:
    bare = ColourEncoder()
    bare.projection_dim = None
    masks = np.zeros((1, 2, 2), bool)
    with pytest.raises(ConfigError, match="no visual projection"):
        ZeroShotCLIP(ZeroShotConfig(), FixedMaskSam(masks), bare, ColourText())  # type: ignore[arg-type]
    wide = ColourText()
    wide.embed_dim = 16
    with pytest.raises(ConfigError, match="3-d and the text embedding 16-d"):
        ZeroShotCLIP(ZeroShotConfig(), FixedMaskSam(masks), ColourEncoder(), wide)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="without CLIP vision"):
        ZeroShotCLIP(ZeroShotConfig(), FixedMaskSam(masks), None, ColourText())  # type: ignore[arg-type]


def test_attention_is_refused_and_topk_checked() -> None:
    predictor = colour_recognizer("clip-crop", np.zeros((1, 40, 80), bool)).predictor()
    predictor.set_image(halves())
    with pytest.raises(ValueError, match="no attention maps"):
        predictor.predict([[0, 0, 10, 10]], ["red", "blue"], with_attention=True)
    with pytest.raises(ValueError, match="topk"):
        predictor.predict([[0, 0, 10, 10]], ["red", "blue"], topk=0)


# ----------------------------------------------------------------------------- oracle: CLIP itself
def clip_zero_shot(clip: CLIPModel, tokenizer, crops: list[np.ndarray], names: list[str]) -> np.ndarray:
    """CLIP zero-shot written out here: pad each crop to a square with CLIP's mean colour, resize
    bicubic to the tower's size, normalise; 100 x cosine against the names' single-template text
    embeddings, softmax over the names."""
    size = clip.config.vision_config.image_size
    fill = np.round(np.asarray(OPENAI_CLIP_MEAN) * 255).astype(np.uint8)
    pixels = []
    for crop in crops:
        side = max(crop.shape[:2])
        square = np.empty((side, side, 3), np.uint8)
        square[:] = fill
        top, left = (side - crop.shape[0]) // 2, (side - crop.shape[1]) // 2
        square[top:top + crop.shape[0], left:left + crop.shape[1]] = crop
        resized = np.asarray(Image.fromarray(square).resize((size, size), Image.Resampling.BICUBIC), np.float32)
        normalised = (resized / 255.0 - np.asarray(OPENAI_CLIP_MEAN)) / np.asarray(OPENAI_CLIP_STD)
        pixels.append(torch.from_numpy(normalised.astype(np.float32)).permute(2, 0, 1))
    with torch.no_grad():
        images = clip.get_image_features(pixel_values=torch.stack(pixels))
        prompts = [build_prompts(name, resolve_templates("single"))[0] for name in names]
        tokens = tokenizer(prompts, padding=True, return_tensors="pt")
        texts = clip.get_text_features(**tokens)
    images = getattr(images, "pooler_output", images)
    texts = getattr(texts, "pooler_output", texts)
    images = torch.nn.functional.normalize(images, dim=-1)
    texts = torch.nn.functional.normalize(texts, dim=-1)
    return torch.softmax(100.0 * images @ texts.t(), dim=-1).numpy()


@pytest.fixture(scope="module")
def picture(synthetic_scene: np.ndarray) -> np.ndarray:
    return synthetic_scene


@pytest.mark.parametrize("method", ["clip-crop", "clip-mask-crop"])
def test_scores_equal_clip_zero_shot(method: str, mobile_sam_model: RegionSpot, tiny_clip_dir: Path,
                                     text_cache_dir: Path, picture: np.ndarray) -> None:
    config = ZeroShotConfig(sam=mobile_sam_model.config.sam, clip=mobile_sam_model.config.clip,
                            text=TextConfig(templates="single", cache_dir=str(text_cache_dir)), method=method)
    model = ZeroShotCLIP(config, mobile_sam_model.region_tokenizer, mobile_sam_model.image_encoder,
                         build_text_embedder(config.text, str(tiny_clip_dir)))
    predictor = model.predictor()
    predictor.set_image(picture)
    result = predictor.predict(BOXES, VOCAB, topk=len(VOCAB), with_masks=True)
    scores = np.zeros((len(BOXES), len(VOCAB)))
    np.put_along_axis(scores, result.topk_ids, result.topk_scores, axis=1)
    crops = []
    for i, box in enumerate(BOXES):
        x0, y0 = int(np.floor(box[0])), int(np.floor(box[1]))
        x1, y1 = int(np.ceil(box[2])), int(np.ceil(box[3]))
        crop = picture[y0:y1, x0:x1].copy()
        if method == "clip-mask-crop":
            crop[~result.masks[i, y0:y1, x0:x1]] = np.round(np.asarray(OPENAI_CLIP_MEAN) * 255).astype(np.uint8)
        crops.append(crop)
    expected = clip_zero_shot(CLIPModel.from_pretrained(tiny_clip_dir), AutoTokenizer.from_pretrained(tiny_clip_dir),
                              crops, VOCAB)
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    assert result.masks is not None and result.masks.any(axis=(1, 2)).all()
    assert model.describe()["method"] == method and model.describe()["trained"] is False


def test_from_model_shares_the_towers(mobile_sam_model: RegionSpot) -> None:
    zero_shot = ZeroShotCLIP.from_model(mobile_sam_model, "clip-crop")
    assert zero_shot.region_tokenizer is mobile_sam_model.region_tokenizer
    assert zero_shot.image_encoder is mobile_sam_model.image_encoder
    assert zero_shot.method == "clip-crop" and zero_shot.score_kind == "softmax"
