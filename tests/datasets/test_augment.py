from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from regionspot.config import AugmentConfig
from regionspot.datasets.augment import (
    AugmentParams,
    augment_boxes,
    augment_image,
    draw_augment,
    identity_augment,
    resized_size,
)
from regionspot.ops.image import load_image

SMALL = AugmentConfig(min_short=120, max_short=200, max_long=300)


def painted_bbox(image: np.ndarray, threshold: int = 128) -> np.ndarray:
    """xyxy pixel-edge box of the pixels whose first channel is at least ``threshold``."""
    rows = np.flatnonzero((image[:, :, 0] >= threshold).any(axis=1))
    cols = np.flatnonzero((image[:, :, 0] >= threshold).any(axis=0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float64)


def test_identity_changes_nothing() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    boxes = np.array([[0, 0, 53, 37], [3.5, 4.25, 20, 30]], dtype=np.float32)
    params = identity_augment((37, 53))
    assert params.output_size == (37, 53) and not params.flip and params.scale == 1.0
    assert np.array_equal(augment_image(image, params), image)
    out, keep = augment_boxes(boxes, (37, 53), params)
    assert keep.all() and np.array_equal(out, boxes) and out.dtype == np.float32


def test_flip_is_an_involution() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (20, 31, 3), dtype=np.uint8)
    boxes = np.array([[1, 2, 10, 19], [20.5, 0, 31, 7]])
    flip = replace(identity_augment((20, 31)), flip=True)
    once, keep = augment_boxes(boxes, (20, 31), flip)
    assert keep.all() and np.allclose(once[0], [21, 2, 30, 19])
    twice, _ = augment_boxes(once, (20, 31), flip)
    assert np.allclose(twice, boxes)
    flipped = augment_image(image, flip)
    assert np.array_equal(flipped[:, 0], image[:, -1]) and not np.array_equal(flipped, image)
    assert np.array_equal(augment_image(flipped, flip), image)


def test_draw_is_deterministic_given_the_seed() -> None:
    config = AugmentConfig()
    draws = [draw_augment(np.random.default_rng(seed), (480, 640), config) for seed in range(20)]
    assert draws == [draw_augment(np.random.default_rng(seed), (480, 640), config) for seed in range(20)]
    assert len(set(draws)) == 20


def test_draw_ranges() -> None:
    flips = 0
    for seed in range(300):
        size = (int(60 + seed % 7 * 50), int(90 + seed % 5 * 80))
        params = draw_augment(np.random.default_rng(seed), size, SMALL)
        new_h, new_w = resized_size(size, params.scale)
        capped = max(new_h, new_w) == SMALL.max_long
        assert capped or SMALL.min_short <= min(new_h, new_w) <= SMALL.max_short
        assert max(new_h, new_w) <= SMALL.max_long
        x1, y1, x2, y2 = params.crop
        assert 0 <= x1 < x2 <= new_w and 0 <= y1 < y2 <= new_h
        assert x2 - x1 >= SMALL.crop_min_fraction * new_w and y2 - y1 >= SMALL.crop_min_fraction * new_h
        assert params.output_size == (y2 - y1, x2 - x1)
        flips += params.flip
    assert 110 < flips < 190
    plain = AugmentConfig(flip=False, crop=False, min_short=100, max_short=100)
    params = draw_augment(np.random.default_rng(0), (50, 80), plain)
    assert params == AugmentParams(flip=False, scale=2.0, crop=(0, 0, 160, 100), output_size=(100, 160))


def test_painted_rectangles_follow_their_boxes() -> None:
    height, width = 150, 220
    checked = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        x1, y1 = rng.uniform(0, width - 40), rng.uniform(0, height - 40)
        box = np.array([[x1, y1, x1 + rng.uniform(25, width - x1), y1 + rng.uniform(25, height - y1)]])
        image = np.zeros((height, width, 3), dtype=np.uint8)
        left, top, right, bottom = (round(v) for v in box[0].tolist())  # Python floats: round() gives ints
        image[top:bottom, left:right] = 255
        box_on_grid = np.round(box)  # the painted pixels' edges
        params = draw_augment(rng, (height, width), SMALL)
        out_image = augment_image(image, params)
        assert out_image.shape == (*params.output_size, 3)
        out_boxes, keep = augment_boxes(box_on_grid, (height, width), params, min_visible=0.0)
        if not keep[0]:
            assert (out_image[:, :, 0] < 200).all()  # nothing of the rectangle is left either
            continue
        assert np.abs(painted_bbox(out_image) - out_boxes[0]).max() <= 1.5, (seed, params)
        checked += 1
    assert checked >= 30


def test_real_photo_and_annotation_agree(coco_sample: Path) -> None:
    document = json.loads((coco_sample / "annotations.json").read_text())
    image_info = next(i for i in document["images"] if i["file_name"] == "000000000009.jpg")
    annotation = max((a for a in document["annotations"] if a["image_id"] == image_info["id"]),
                     key=lambda a: a["area"])
    photo = load_image(coco_sample / "images" / image_info["file_name"])
    x, y, w, h = annotation["bbox"]
    box = np.round([[x, y, x + w, y + h]])
    x1, y1, x2, y2 = box[0].astype(int)
    painted = photo.copy()
    region = painted[y1:y2, x1:x2]
    painted[y1:y2, x1:x2] = np.where(region > 127, 0, 255).astype(np.uint8)  # every value moves >= 128
    config = AugmentConfig()
    for seed in range(6):
        params = draw_augment(np.random.default_rng(seed), photo.shape[:2], config)
        out_boxes, keep = augment_boxes(box, photo.shape[:2], params, min_visible=0.0)
        diff = np.abs(augment_image(painted, params).astype(int) - augment_image(photo, params).astype(int))
        changed = diff.max(axis=2, keepdims=True) >= 64
        if not keep[0]:
            assert not changed[1:-1, 1:-1].any()
            continue
        found = painted_bbox(np.repeat(changed.astype(np.uint8) * 255, 3, axis=2))
        assert np.abs(found - out_boxes[0]).max() <= 2.0, (seed, params, found, out_boxes)


def test_min_visible_and_clipping() -> None:
    params = AugmentParams(flip=False, scale=1.0, crop=(50, 0, 100, 100), output_size=(100, 50))
    boxes = np.array([[30, 10, 70, 20],   # 50% inside the crop
                      [0, 0, 40, 40],     # wholly outside
                      [60, 10, 90, 40],   # wholly inside
                      [49, 0, 50.5, 5]])  # 1/3 inside, but only 0.5 px wide after clipping
    out, keep = augment_boxes(boxes, (100, 100), params, min_visible=0.3)
    assert keep.tolist() == [True, False, True, False]
    assert np.allclose(out, [[0, 10, 20, 20], [10, 10, 40, 40]])
    _, keep = augment_boxes(boxes, (100, 100), params, min_visible=0.6)
    assert keep.tolist() == [False, False, True, False]
    out, keep = augment_boxes(np.zeros((0, 4)), (100, 100), params)
    assert out.shape == (0, 4) and keep.shape == (0,)


def test_scaling_maps_boxes_with_the_image_size() -> None:
    params = AugmentParams(flip=True, scale=0.5, crop=(0, 0, 50, 25), output_size=(25, 50))
    out, keep = augment_boxes(np.array([[0, 0, 20, 10]]), (50, 100), params)
    assert keep.all() and np.allclose(out, [[40, 0, 50, 5]])


def test_errors() -> None:
    params = AugmentParams(flip=False, scale=1.0, crop=(0, 0, 40, 40), output_size=(40, 40))
    with pytest.raises(ValueError, match="does not fit"):
        augment_image(np.zeros((30, 30, 3), np.uint8), params)
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        augment_image(np.zeros((40, 40), np.uint8), params)
    with pytest.raises(ValueError, match=r"\[R, 4\]"):
        augment_boxes(np.zeros((2, 3)), (40, 40), params)
    with pytest.raises(ValueError, match="output_size"):
        AugmentParams(flip=False, scale=1.0, crop=(0, 0, 40, 40), output_size=(40, 39))
    with pytest.raises(ValueError, match="crop"):
        AugmentParams(flip=False, scale=1.0, crop=(10, 0, 10, 40), output_size=(40, 0))
    with pytest.raises(ValueError, match="min_short"):
        draw_augment(np.random.default_rng(0), (10, 10), AugmentConfig(min_short=900, max_short=800))
    with pytest.raises(ValueError, match="crop_min_fraction"):
        draw_augment(np.random.default_rng(0), (10, 10), AugmentConfig(crop_min_fraction=0))
