"""Cutting regions out of an image for CLIP (the crop baselines of the paper's Table 1 and the
zero-shot recognizer). Images are ``HxWx3`` uint8 RGB; boxes xyxy in absolute pixels."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def neutral_fill(mean: Sequence[float]) -> np.ndarray:
    """A tower's pixel mean (fractions in [0, 1]) as a uint8 RGB colour [3]: the colour that
    normalises to zero, used for padding and for pixels outside a mask."""
    return np.clip(np.round(np.asarray(mean, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def box_pixel_bounds(box: np.ndarray, image_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Integer pixel bounds (x0, y0, x1, y1), end-exclusive, of the pixels an xyxy box touches:
    floor of the low edges, ceil of the high ones, clipped to the image of size (H, W), at
    least one pixel each way."""
    height, width = image_size
    x0 = int(np.clip(np.floor(box[0]), 0, width - 1))
    y0 = int(np.clip(np.floor(box[1]), 0, height - 1))
    x1 = int(np.clip(np.ceil(box[2]), x0 + 1, width))
    y1 = int(np.clip(np.ceil(box[3]), y0 + 1, height))
    return x0, y0, x1, y1


def crop_region(image: np.ndarray, box: np.ndarray, fill: np.ndarray, *, mask: np.ndarray | None = None) -> np.ndarray:
    """The pixels of ``image`` (HxWx3 uint8) inside ``box`` (xyxy absolute pixels) -> hxwx3
    uint8 (a new array). With ``mask`` (bool [H, W]) the pixels outside the mask are set to
    ``fill`` (uint8 RGB [3], e.g. :func:`neutral_fill` of the tower's mean) first."""
    x0, y0, x1, y1 = box_pixel_bounds(np.asarray(box, dtype=np.float64), image.shape[:2])
    crop = image[y0:y1, x0:x1].copy()
    if mask is not None:
        if mask.shape != image.shape[:2]:
            raise ValueError(f"mask must be {image.shape[:2]} (H, W), got {mask.shape}")
        crop[~mask[y0:y1, x0:x1]] = fill
    return crop


def pad_to_square(crop: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """hxwx3 uint8 -> sxsx3 uint8 with s = max(h, w): the crop centred, the rest ``fill``
    (uint8 RGB [3]). A square crop is returned as is."""
    height, width = crop.shape[:2]
    side = max(height, width)
    if height == width:
        return crop
    square = np.empty((side, side, 3), dtype=np.uint8)
    square[:] = fill
    top, left = (side - height) // 2, (side - width) // 2
    square[top:top + height, left:left + width] = crop
    return square
