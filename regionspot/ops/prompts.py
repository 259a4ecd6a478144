"""Regions given as clicks or masks instead of boxes: checked, in the shapes SAM takes.

Points are xy absolute pixels of the image. ``[P, 2]`` is one region prompted by P clicks;
``[R, P, 2]`` is R regions of P clicks each. Labels are 1 (foreground: the object is here) or 0
(background: not this), one per click; every region needs a foreground click. Masks are
``[R, H, W]`` booleans at the image's size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from regionspot.ops.boxes import BoxError, masks_to_boxes


class PromptError(BoxError):
    """User-supplied point or mask prompts are malformed (shape, values, outside the image, empty)."""


def as_point_prompts(points: Any, labels: Any, image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(points float64 ``[R, P, 2]``, labels int64 ``[R, P]``) from ``points`` ``[P, 2]`` (one
    region) or ``[R, P, 2]`` and ``labels`` of the same leading shape (None: all foreground).
    Raises :class:`PromptError` naming the first bad click."""
    array = _as_array(points, "points").astype(np.float64)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[-1] != 2 or 0 in array.shape:
        raise PromptError(f"points must be [P, 2] (one region) or [R, P, 2] xy pixels, got shape {array.shape}")
    marks = np.ones(array.shape[:2], dtype=np.int64) if labels is None else _labels(labels, array.shape[:2])
    height, width = image_size
    inside = np.isfinite(array).all(axis=-1) & (array[..., 0] >= 0) & (array[..., 0] < width) \
        & (array[..., 1] >= 0) & (array[..., 1] < height)
    if not inside.all():
        region, click = (int(v) for v in np.argwhere(~inside)[0])
        raise PromptError(f"point {click} of region {region} ({array[region, click, 0]:g}, "
                          f"{array[region, click, 1]:g}) lies outside the {width}x{height} image")
    lacking = np.flatnonzero(~(marks == 1).any(axis=1))
    if lacking.size:
        raise PromptError(f"region {int(lacking[0])} has no foreground click (label 1): a background click only "
                          "says what the object is not")
    return array, marks


def as_mask_prompts(masks: Any, image_size: tuple[int, int]) -> np.ndarray:
    """Bool ``[R, H, W]`` masks at the image's size (``[H, W]``: one region). Raises
    :class:`PromptError` for another size, no masks or an empty mask."""
    array = _as_array(masks, "masks")
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[0] == 0:
        raise PromptError(f"masks must be [R, H, W] (or one [H, W]), got shape {array.shape}")
    if tuple(array.shape[1:]) != tuple(image_size):
        raise PromptError(f"masks are {array.shape[2]}x{array.shape[1]} but the image is "
                          f"{image_size[1]}x{image_size[0]}: give masks at the image's size")
    binary = array.astype(bool)
    empty = np.flatnonzero(~binary.reshape(binary.shape[0], -1).any(axis=1))
    if empty.size:
        raise PromptError(f"mask {int(empty[0])} is empty: a region needs at least one pixel")
    return binary


def parse_points_text(text: str) -> np.ndarray:
    """``'x,y;x,y'`` -> float ``[R, 1, 2]``: each click its own region (one foreground click)."""
    items = [item.strip() for item in text.split(";") if item.strip()]
    if not items:
        raise PromptError("no points given: write them as 'x,y;x,y'")
    points = []
    for index, item in enumerate(items):
        parts = item.split(",")
        try:
            values = [float(part) for part in parts]
        except ValueError:
            values = []
        if len(values) != 2:
            raise PromptError(f"point {index} {item!r} must be 2 comma-separated numbers x,y")
        points.append([values])
    return np.asarray(points, dtype=np.float64)


def region_boxes(masks: np.ndarray, points: np.ndarray | None = None) -> np.ndarray:
    """Tight xyxy boxes ``[R, 4]`` of bool masks ``[R, H, W]``; a region whose mask is empty gets
    a 1-pixel box at its first foreground click (``points`` ``[R, P, 2]``, labels aside), so it
    can still be recognised."""
    boxes = masks_to_boxes(masks)
    empty = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    if empty.any() and points is not None:
        height, width = masks.shape[1:]
        x = np.clip(np.floor(points[empty, 0, 0]), 0, width - 1)
        y = np.clip(np.floor(points[empty, 0, 1]), 0, height - 1)
        boxes[empty] = np.stack([x, y, x + 1, y + 1], axis=1)
    return boxes


def _as_array(value: Any, what: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise PromptError(f"{what} must be a (nested) list of numbers: {exc}") from None


def _labels(labels: Any, shape: tuple[int, ...]) -> np.ndarray:
    array = _as_array(labels, "point_labels")
    if array.shape == shape[1:] and shape[0] == 1:
        array = array[None]
    if array.shape != shape:
        raise PromptError(f"point_labels must match the points: shape {list(shape)}, got {list(array.shape)}")
    if not np.isin(array, (0, 1)).all():
        raise PromptError("point_labels must be 1 (foreground) or 0 (background)")
    return array.astype(np.int64)


def decode_rle_prompts(rles: list[Any], image_size: tuple[int, int], name: Callable[[int], str]) -> np.ndarray:
    """COCO RLE masks given as region prompts -> bool [R, H, W] at ``image_size`` (H, W).

    Each entry is ``{"size": [H, W], "counts": ...}`` with ``counts`` compressed text (as
    :func:`regionspot.ops.masks.encode_rle` writes) or a list of run lengths. Sizes and run
    lengths are checked before anything is decoded (pycocotools decodes runs that do not add up
    to ``H * W`` from memory it never wrote). :class:`PromptError` otherwise, its message starting
    with ``name(index)`` (e.g. ``"region_masks[2]"``)."""
    from pycocotools import mask as mask_utils

    from regionspot.ops.masks import decode_rle, rle_covers

    height, width = image_size
    prepared = []
    for index, rle in enumerate(rles):
        if not (isinstance(rle, dict) and isinstance(rle.get("size"), list) and len(rle["size"]) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in rle["size"])
                and isinstance(rle.get("counts"), (str, list))):
            raise PromptError(f'{name(index)} must be a COCO RLE {{"size": [H, W], "counts": "..."}}')
        if tuple(rle["size"]) != (height, width):
            raise PromptError(f"{name(index)} is {rle['size'][1]}x{rle['size'][0]} (WxH) but the image is "
                              f"{width}x{height}: give masks at the image's size")
        if not rle_covers(rle["counts"], height, width):
            raise PromptError(f"{name(index)}'s run lengths do not add up to its {height}x{width} pixels")
        counts = rle["counts"]
        prepared.append({"size": [height, width], "counts": counts} if isinstance(counts, str)
                        else dict(mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)))
    try:
        return decode_rle(prepared)
    except (ValueError, TypeError) as exc:
        raise PromptError(f"the masks could not be decoded as COCO RLE ({exc})") from None
