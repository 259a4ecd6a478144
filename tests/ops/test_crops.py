"""Region crops for CLIP: pixel bounds, box crops, mask fill, square padding."""

from __future__ import annotations

import numpy as np

from regionspot.ops.crops import box_pixel_bounds, crop_region, neutral_fill, pad_to_square

RED, BLUE = np.array([255, 0, 0], np.uint8), np.array([0, 0, 255], np.uint8)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
GREY = np.array([9, 9, 9], np.uint8)


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
    left = crop_region(picture, np.array([0.0, 0.0, 40.0, 40.0]), GREY)
    assert left.shape == (40, 40, 3) and (left == RED).all()
    middle = crop_region(picture, np.array([30.0, 10.0, 60.0, 20.0]), GREY)
    assert middle.shape == (10, 30, 3)
    assert (middle[:, :10] == RED).all() and (middle[:, 10:] == BLUE).all()
    assert picture[:, :40].tolist() == halves()[:, :40].tolist()  # the input is not modified


def test_crop_region_fills_outside_the_mask() -> None:
    picture = halves()
    mask = np.zeros(picture.shape[:2], bool)
    mask[12:18, 45:55] = True
    fill = neutral_fill(OPENAI_CLIP_MEAN)
    assert fill.tolist() == [123, 117, 104]
    crop = crop_region(picture, np.array([30.0, 10.0, 60.0, 20.0]), fill, mask=mask)
    inside = np.zeros(crop.shape[:2], bool)
    inside[2:8, 15:25] = True
    assert (crop[inside] == BLUE).all() and (crop[~inside] == fill).all()


def test_pad_to_square_centres_the_crop() -> None:
    crop = np.zeros((10, 30, 3), np.uint8)
    square = pad_to_square(crop, GREY)
    assert square.shape == (30, 30, 3)
    assert (square[10:20] == 0).all() and (square[:10] == 9).all() and (square[20:] == 9).all()
    assert pad_to_square(square, GREY) is square
