"""Training augmentation of the paper's training recipe (as in the authors' release): horizontal
flip, short-edge resize, random crop.

One :class:`AugmentParams` describes the geometry; the same parameters transform the image
(:func:`augment_image`) and its boxes (:func:`augment_boxes`), so SAM's box prompts (hence the
position-aware tokens) and the CLIP image always see the same scene. Order: flip the original
image, resize it by ``scale``, crop ``crop`` out of the resized image.

Coordinates are continuous pixel edges: pixel ``(i, j)`` covers ``[j, j+1] x [i, i+1]``, so a
flip maps ``x -> W - x`` and a resize from ``W`` to ``w`` columns maps ``x -> x * w / W`` (the
convention of PIL's resize). Sizes are ``(H, W)``, boxes xyxy absolute pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from regionspot.config import AugmentConfig

__all__ = [
    "AugmentParams",
    "augment_boxes",
    "augment_image",
    "draw_augment",
    "identity_augment",
    "resized_size",
]


@dataclass(frozen=True)
class AugmentParams:
    """The geometry of one augmented image.

    ``flip``: mirror left-right first. ``scale``: then resize by this factor; the resized
    size is :func:`resized_size` of the original size. ``crop``: then keep ``(x1, y1, x2, y2)``
    of the resized image (integer pixels, xyxy, inside the resized image). ``output_size``:
    ``(H, W)`` of the result, which is the crop's size.
    """

    flip: bool
    scale: float
    crop: tuple[int, int, int, int]
    output_size: tuple[int, int]

    def __post_init__(self) -> None:
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"scale must be a positive finite number, got {self.scale!r}")
        x1, y1, x2, y2 = self.crop
        if not (0 <= x1 < x2 and 0 <= y1 < y2):
            raise ValueError(f"crop {self.crop} must be x1 < x2, y1 < y2 with non-negative corners")
        if tuple(self.output_size) != (y2 - y1, x2 - x1):
            raise ValueError(f"output_size {self.output_size} is not the crop's size {(y2 - y1, x2 - x1)}")


def resized_size(image_size: tuple[int, int], scale: float) -> tuple[int, int]:
    """``(H, W)`` after resizing an ``(H, W)`` image by ``scale`` (rounded half up, >= 1)."""
    height, width = image_size
    return max(1, math.floor(height * scale + 0.5)), max(1, math.floor(width * scale + 0.5))


def identity_augment(image_size: tuple[int, int]) -> AugmentParams:
    """Parameters that leave an ``(H, W)`` image and its boxes unchanged."""
    height, width = _check_size(image_size)
    return AugmentParams(flip=False, scale=1.0, crop=(0, 0, width, height), output_size=(height, width))


def draw_augment(rng: np.random.Generator, image_size: tuple[int, int], config: AugmentConfig) -> AugmentParams:
    """Random parameters for an ``(H, W)`` image.

    Flip with probability 0.5 when ``config.flip``. The short edge goes to an integer drawn
    uniformly in ``[min_short, max_short]``, unless the long edge would then exceed
    ``max_long`` (then the long edge is ``max_long``). When ``config.crop``: a crop whose
    width and height are each drawn uniformly in ``[ceil(crop_min_fraction * side), side]``
    of the resized image, at a uniform position; otherwise the whole resized image. The same
    generator state gives the same parameters; the rng always advances by the same draws.
    """
    height, width = _check_size(image_size)
    _check_config(config)
    flip_draw = rng.random()
    short_target = int(rng.integers(config.min_short, config.max_short + 1))
    crop_draws = rng.random(4)
    scale = short_target / min(height, width)
    if max(height, width) * scale > config.max_long:
        scale = config.max_long / max(height, width)
    new_h, new_w = resized_size((height, width), scale)
    crop = (0, 0, new_w, new_h)
    if config.crop:
        crop_w = _draw_extent(crop_draws[0], new_w, config.crop_min_fraction)
        crop_h = _draw_extent(crop_draws[1], new_h, config.crop_min_fraction)
        x1 = min(int(crop_draws[2] * (new_w - crop_w + 1)), new_w - crop_w)
        y1 = min(int(crop_draws[3] * (new_h - crop_h + 1)), new_h - crop_h)
        crop = (x1, y1, x1 + crop_w, y1 + crop_h)
    return AugmentParams(flip=bool(config.flip and flip_draw < 0.5), scale=float(scale), crop=crop,
                         output_size=(crop[3] - crop[1], crop[2] - crop[0]))


def augment_image(image: np.ndarray, params: AugmentParams) -> np.ndarray:
    """Apply ``params`` to an ``HxWx3`` uint8 image; returns ``output_size + (3,)`` uint8.

    Resizing is PIL bilinear (PIL widens the filter when shrinking, i.e. antialiased).
    Raises ``ValueError`` if the image is not HxWx3 uint8 or the crop does not fit the
    resized image (parameters drawn for another image size).
    """
    if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3
            and image.dtype == np.uint8):
        raise ValueError(f"image must be an HxWx3 uint8 array, got "
                         f"{getattr(image, 'shape', type(image))} {getattr(image, 'dtype', '')}")
    new_h, new_w = _check_crop(image.shape[:2], params)
    if params.flip:
        image = image[:, ::-1]
    if (new_h, new_w) != image.shape[:2]:
        resized = Image.fromarray(np.ascontiguousarray(image)).resize((new_w, new_h), Image.Resampling.BILINEAR)
        image = np.asarray(resized)
    x1, y1, x2, y2 = params.crop
    return np.ascontiguousarray(image[y1:y2, x1:x2])


def augment_boxes(boxes: np.ndarray, image_size: tuple[int, int], params: AugmentParams,
                  min_visible: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``params`` to boxes of an ``(H, W)`` image.

    ``boxes``: [R, 4] xyxy in ORIGINAL image pixels. Returns ``(kept_boxes, keep)``:
    ``kept_boxes`` float32 [K, 4] xyxy in the augmented image, clipped to it; ``keep`` bool
    [R], True for the K kept boxes (in order). A box is kept when at least ``min_visible`` of
    its area inside the (resized) image lies inside the crop, and it is at least 1 pixel wide
    and high after clipping. Boxes of zero area are dropped.
    """
    array = np.asarray(boxes, dtype=np.float64)
    if array.size == 0:
        array = array.reshape(0, 4)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"boxes must be shaped [R, 4] (xyxy), got {array.shape}")
    if not 0.0 <= min_visible <= 1.0:
        raise ValueError(f"min_visible must be in [0, 1], got {min_visible}")
    height, width = _check_size(image_size)
    new_h, new_w = _check_crop(image_size, params)
    out = array.copy()
    if params.flip:
        out[:, [0, 2]] = width - array[:, [2, 0]]
    out[:, [0, 2]] *= new_w / width
    out[:, [1, 3]] *= new_h / height
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, new_w)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, new_h)
    full_area = _areas(out)
    x1, y1, x2, y2 = params.crop
    out[:, [0, 2]] = out[:, [0, 2]].clip(x1, x2) - x1
    out[:, [1, 3]] = out[:, [1, 3]].clip(y1, y2) - y1
    sizes = np.stack([out[:, 2] - out[:, 0], out[:, 3] - out[:, 1]], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        visible = np.where(full_area > 0, _areas(out) / np.where(full_area > 0, full_area, 1), 0.0)
    keep = (full_area > 0) & (visible >= min_visible) & (sizes.min(axis=1) >= 1.0)
    return out[keep].astype(np.float32), keep


def _areas(boxes: np.ndarray) -> np.ndarray:
    return np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)


def _draw_extent(uniform: float, side: int, min_fraction: float) -> int:
    """An integer in ``[ceil(min_fraction * side), side]`` from a uniform number in [0, 1)."""
    low = min(side, max(1, math.ceil(min_fraction * side)))
    return min(low + int(uniform * (side - low + 1)), side)


def _check_size(image_size: tuple[int, int]) -> tuple[int, int]:
    height, width = (int(v) for v in image_size)
    if height < 1 or width < 1:
        raise ValueError(f"image size must be (H, W) with positive sides, got {image_size}")
    return height, width


def _check_crop(image_size: tuple[int, int], params: AugmentParams) -> tuple[int, int]:
    """The resized size; raises if the crop does not lie inside it."""
    new_h, new_w = resized_size(_check_size(image_size), params.scale)
    _, _, x2, y2 = params.crop
    if x2 > new_w or y2 > new_h:
        raise ValueError(f"crop {params.crop} does not fit the {new_w}x{new_h} resized image "
                         f"(parameters drawn for another image size?)")
    return new_h, new_w


def _check_config(config: AugmentConfig) -> None:
    if not 1 <= config.min_short <= config.max_short:
        raise ValueError(f"augment: need 1 <= min_short <= max_short, got {config.min_short}, {config.max_short}")
    if config.max_long < 1:
        raise ValueError(f"augment: max_long must be positive, got {config.max_long}")
    if not 0.0 < config.crop_min_fraction <= 1.0:
        raise ValueError(f"augment: crop_min_fraction must be in (0, 1], got {config.crop_min_fraction}")
