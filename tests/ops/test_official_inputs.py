"""The authors' evaluation inputs, from their published code's rules: detectron2's 800/1333
test resize, CLIP's tensor resize without antialiasing, nearest-neighbour masks. Each expected
value is worked out from the rule itself, so a drift of our ``official`` mode fails here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from regionspot.ops.official_inputs import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    detectron2_test_resize,
    detectron2_test_size,
    nearest_resize_masks,
    scale_xyxy,
    tensor_resize_clip_pixels,
)


@pytest.mark.parametrize(("size", "expected"), [
    ((480, 640), (800, 1067)),    # short side to 800: 640 * 800 / 480 = 1066.7
    ((640, 480), (1067, 800)),    # portrait
    ((427, 640), (800, 1199)),    # 640 * 800 / 427 = 1199.06
    ((500, 500), (800, 800)),
    ((300, 1000), (400, 1333)),   # 1000 * 800 / 300 = 2667 > 1333: long side to 1333, short 300 * 1333 / 1000
    ((1600, 800), (1333, 667)),   # long side capped: 800 * 1333 / 1600 = 666.5 rounds half up
    ((800, 1067), (800, 1067)),   # already there
])
def test_detectron2_test_size_follows_the_short_800_long_1333_rule(size: tuple[int, int],
                                                                    expected: tuple[int, int]) -> None:
    assert detectron2_test_size(*size) == expected


def test_the_resize_is_pil_bilinear_on_the_uint8_image() -> None:
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    resized = detectron2_test_resize(image)
    expected = np.asarray(Image.fromarray(image).resize((1067, 800), Image.Resampling.BILINEAR))
    assert resized.dtype == np.uint8 and resized.shape == (800, 1067, 3)
    np.testing.assert_array_equal(resized, expected)


def test_clip_pixels_are_a_bilinear_tensor_resize_without_antialiasing() -> None:
    """Halving an image with half-pixel bilinear sampling and no antialiasing samples each output
    pixel exactly between four input pixels: their mean. An antialiased (or PIL) resize
    spreads over more pixels and fails this."""
    image = np.random.default_rng(1).integers(0, 256, (448, 448, 3), dtype=np.uint8)
    pixels = tensor_resize_clip_pixels(image, 224, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
    blocks = image.astype(np.float64).reshape(224, 2, 224, 2, 3).mean(axis=(1, 3)) / 255
    expected = (blocks - np.array(OPENAI_CLIP_MEAN)) / np.array(OPENAI_CLIP_STD)
    assert pixels.shape == (3, 224, 224) and pixels.dtype == torch.float32
    np.testing.assert_allclose(pixels.permute(1, 2, 0).numpy(), expected, atol=2e-5)


def test_openai_clip_normalisation_constants() -> None:
    assert OPENAI_CLIP_MEAN == (0.48145466, 0.4578275, 0.40821073)
    assert OPENAI_CLIP_STD == (0.26862954, 0.26130258, 0.27577711)


def test_boxes_move_between_frames_by_the_side_ratios() -> None:
    boxes = np.array([[48.0, 30.0, 480.0, 240.0]])
    scaled = scale_xyxy(boxes, (480, 640), (800, 1067))
    np.testing.assert_allclose(scaled, [[48 * 1067 / 640, 30 * 800 / 480, 480 * 1067 / 640, 240 * 800 / 480]])
    np.testing.assert_allclose(scale_xyxy(scaled, (800, 1067), (480, 640)), boxes)


def test_masks_return_to_the_photo_by_nearest_neighbour() -> None:
    masks = np.zeros((2, 4, 6), dtype=bool)
    masks[0, 1:3, 2:5] = True
    masks[1, 0, 0] = True
    resized = nearest_resize_masks(masks, (8, 12))
    np.testing.assert_array_equal(resized, masks.repeat(2, axis=1).repeat(2, axis=2))
    assert nearest_resize_masks(masks, (4, 6)) is masks
