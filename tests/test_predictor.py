"""The predictor on a real COCO photo with the real MobileSAM and a tiny random CLIP."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from regionspot.model.regionspot import RegionSpot
from regionspot.ops.boxes import BoxError, xywh_to_xyxy
from regionspot.ops.image import ImageLoadError
from regionspot.predictor import PredictorStateError
from regionspot.vocab import VocabularyError

PHOTO = "000000000009.jpg"  # a COCO photo with several annotated objects
VOCABULARY = ["bowl", "broccoli", "orange", "dining table", "cup", "person"]


@pytest.fixture(scope="module")
def photo_and_boxes(coco_sample: Path) -> tuple[Path, np.ndarray]:
    annotations = json.loads((coco_sample / "annotations.json").read_text())
    image_id = next(i["id"] for i in annotations["images"] if i["file_name"] == PHOTO)
    boxes = [a["bbox"] for a in annotations["annotations"] if a["image_id"] == image_id and not a["iscrowd"]]
    return coco_sample / "images" / PHOTO, xywh_to_xyxy(np.array(boxes))


@pytest.fixture(scope="module")
def predictor(mobile_sam_model: RegionSpot, photo_and_boxes):
    predictor = mobile_sam_model.predictor(region_batch_size=3)
    predictor.set_image(photo_and_boxes[0])
    return predictor


def test_result_shapes_scores_and_topk_order(predictor, photo_and_boxes) -> None:
    path, boxes = photo_and_boxes
    height, width = np.asarray(Image.open(path)).shape[:2]
    result = predictor.predict(boxes, VOCABULARY, topk=4, with_masks=True)
    assert len(result) == len(boxes) >= 5
    assert result.masks.shape == (len(boxes), height, width) and result.masks.dtype == bool
    assert result.masks.any(axis=(1, 2)).all(), "every box should get a non-empty SAM mask"
    assert result.topk_scores.shape == (len(boxes), 4)
    assert ((result.topk_scores >= 0) & (result.topk_scores <= 1)).all()
    assert (np.diff(result.topk_scores, axis=1) <= 0).all(), "top-k must be best first"
    assert all(len(set(row)) == 4 for row in result.topk_ids.tolist())
    assert ((result.mask_scores > 0) & (result.mask_scores <= 1.5)).all()


def test_masks_stay_inside_their_boxes_mostly(predictor, photo_and_boxes) -> None:
    _, boxes = photo_and_boxes
    result = predictor.predict(boxes, VOCABULARY)
    for mask, (x1, y1, x2, y2) in zip(result.masks, boxes.round().astype(int), strict=True):
        inside = mask[max(y1 - 2, 0):y2 + 2, max(x1 - 2, 0):x2 + 2].sum()
        assert inside / mask.sum() > 0.9


def test_one_call_or_several_give_the_same_result(predictor, photo_and_boxes) -> None:
    _, boxes = photo_and_boxes
    together = predictor.predict(boxes, VOCABULARY, topk=3)
    parts = [predictor.predict(boxes[i:i + 2], VOCABULARY, topk=3) for i in range(0, len(boxes), 2)]
    np.testing.assert_array_equal(np.concatenate([p.topk_ids for p in parts]), together.topk_ids)
    np.testing.assert_allclose(np.concatenate([p.topk_scores for p in parts]), together.topk_scores, atol=1e-5)
    np.testing.assert_array_equal(np.concatenate([p.masks for p in parts]), together.masks)


def test_region_self_attention_makes_boxes_depend_on_each_other(mobile_sam_model, photo_and_boxes) -> None:
    model = RegionSpot(mobile_sam_model.config, mobile_sam_model.region_tokenizer, mobile_sam_model.image_encoder,
                       mobile_sam_model.text_embedder)
    assert model.config.fusion.region_self_attention is False
    from dataclasses import replace

    from regionspot.model.fusion import RegionFusion

    torch.manual_seed(0)  # scale 1: a random head's scores must not all saturate at sigmoid(large) = 1
    model.fusion = RegionFusion(replace(model.config.fusion, region_self_attention=True, logit_scale=1.0)).eval()
    predictor = model.predictor()
    predictor.set_image(photo_and_boxes[0])
    boxes = photo_and_boxes[1]
    together = predictor.predict(boxes, VOCABULARY, topk=len(VOCABULARY))
    alone = predictor.predict(boxes[:1], VOCABULARY, topk=len(VOCABULARY))
    assert not np.allclose(together.topk_scores[0], alone.topk_scores[0], atol=1e-6)


def test_boxes_outside_the_image_are_clipped(predictor) -> None:
    height, width = predictor.encoded.size
    result = predictor.predict([[-50, -20, 100, 90], [width - 40, height - 30, width + 500, height + 9]], VOCABULARY)
    assert result.boxes.tolist() == [[0, 0, 100, 90], [width - 40, height - 30, width, height]]


def test_attention_maps(predictor, photo_and_boxes) -> None:
    result = predictor.predict(photo_and_boxes[1][:2], VOCABULARY, with_attention=True, with_masks=False)
    maps = result.extras["attention"]
    assert maps.shape == (2, 4, 4)  # tiny CLIP: 32 px input, 8 px patches
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), 1.0, rtol=1e-5)
    assert result.masks is None


@pytest.mark.parametrize(("boxes", "error", "message"), [
    ([[]], BoxError, "shaped"),
    ([[10, 10, float("nan"), 50]], BoxError, "NaN"),
    ([[100, 10, 50, 50]], BoxError, "inverted"),
    ([[10000, 10000, 10100, 10100]], BoxError, "smaller than"),
])
def test_bad_boxes(predictor, boxes, error, message) -> None:
    with pytest.raises(error, match=message):
        predictor.predict(boxes, VOCABULARY)


def test_no_boxes_give_an_empty_result(predictor) -> None:
    """A detector that found nothing hands over no boxes: that is an answer, not an error."""
    result = predictor.predict(np.zeros((0, 4)), VOCABULARY, topk=3)
    assert len(result) == 0 and result.topk_ids.shape == (0, 3) and result.masks is not None
    assert result.masks.shape[0] == 0 and result.masks.shape[1:] == result.image_size
    assert predictor.predict([], VOCABULARY, with_masks=False).masks is None


@pytest.mark.parametrize(("vocabulary", "message"), [
    ([], "empty"),
    (["cat", "Cat "], "duplicate"),
    (["cat", ""], "empty"),
])
def test_bad_vocabularies(predictor, vocabulary, message) -> None:
    with pytest.raises(VocabularyError, match=message):
        predictor.predict([[10, 10, 50, 50]], vocabulary)


def test_topk_is_capped_and_validated(predictor) -> None:
    assert predictor.predict([[10, 10, 50, 50]], ["cat", "dog"], topk=10).topk_ids.shape == (1, 2)
    with pytest.raises(ValueError, match="topk"):
        predictor.predict([[10, 10, 50, 50]], ["cat"], topk=0)


def test_predict_before_set_image(mobile_sam_model) -> None:
    with pytest.raises(PredictorStateError, match="set_image"):
        mobile_sam_model.predictor().predict([[0, 0, 5, 5]], ["cat"])


def test_grayscale_rgba_and_corrupt_images(mobile_sam_model, photo_and_boxes, tmp_path: Path) -> None:
    rgb = np.asarray(Image.open(photo_and_boxes[0]).convert("RGB"))
    predictor = mobile_sam_model.predictor()
    gray = rgb.mean(axis=2).astype(np.uint8)
    predictor.set_image(gray)
    assert predictor.predict([[10, 10, 200, 200]], ["cat"]).masks.shape[1:] == gray.shape
    rgba = Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]), "RGBA")
    rgba.save(tmp_path / "rgba.png")
    predictor.set_image(tmp_path / "rgba.png")
    assert predictor.predict([[10, 10, 200, 200]], ["cat"]).masks.shape[1:] == rgb.shape[:2]
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ImageLoadError, match=r"broken\.jpg"):
        predictor.set_image(tmp_path / "broken.jpg")


@pytest.mark.slow
def test_encoding_images_in_a_batch_equals_one_by_one(mobile_sam_model, coco_sample: Path) -> None:
    """Two photos of different sizes through both towers as one batch: the same SAM embeddings
    and CLIP memories as encoding each alone (float rounding), and ``set_encoded`` answers as
    ``set_image`` does."""
    from regionspot.ops.image import load_image

    paths = sorted((coco_sample / "images").iterdir())
    photos = [load_image(path) for path in paths[:8]]
    photos = [photos[0], next(photo for photo in photos if photo.shape != photos[0].shape)]
    predictor = mobile_sam_model.predictor()
    batched = predictor.encode_many(photos)
    for photo, together in zip(photos, batched, strict=True):
        alone = predictor.encode(photo)
        assert together.sam.original_size == alone.sam.original_size == photo.shape[:2]
        assert together.sam.input_size == alone.sam.input_size
        torch.testing.assert_close(together.sam.embeddings, alone.sam.embeddings, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(together.context, alone.context, atol=1e-4, rtol=1e-4)
    boxes = np.array([[10.0, 20.0, 200.0, 300.0], [50.0, 60.0, 300.0, 400.0]])
    predictor.set_encoded(batched[1])
    from_batch = predictor.predict(boxes, ["cat", "dog", "person"], topk=3)
    predictor.set_image(photos[1])
    alone_result = predictor.predict(boxes, ["cat", "dog", "person"], topk=3)
    np.testing.assert_allclose(from_batch.topk_scores, alone_result.topk_scores, atol=1e-4)
    np.testing.assert_array_equal(from_batch.topk_ids, alone_result.topk_ids)
