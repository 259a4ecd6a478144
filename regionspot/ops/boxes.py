"""Pure box operations. Boxes are xyxy in absolute pixels unless a name says otherwise."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch


class BoxError(ValueError):
    """User-supplied boxes are malformed (wrong shape, NaN, inverted, empty after clipping)."""


def as_box_array(boxes: Any) -> np.ndarray:
    """Any box container (list of 4-sequences, numpy array, torch tensor) -> float64 [R, 4].

    A single box ``[x1, y1, x2, y2]`` is accepted as ``R = 1``. Raises :class:`BoxError` for
    anything that is not R x 4 numbers.
    """
    if isinstance(boxes, torch.Tensor):
        boxes = boxes.detach().cpu().numpy()
    try:
        array = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError):
        raise BoxError(f"boxes must be numbers shaped [R, 4] (x1, y1, x2, y2), got {boxes!r:.200}") from None
    if array.size == 0:
        return array.reshape(0, 4)
    if array.ndim == 1 and array.shape[0] == 4:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != 4:
        raise BoxError(f"boxes must be shaped [R, 4] (x1, y1, x2, y2), got shape {array.shape}")
    return array


def validate_boxes(boxes: Any, image_size: tuple[int, int], min_size: float = 1.0) -> np.ndarray:
    """Check user boxes and clip them to the image.

    ``boxes``: anything :func:`as_box_array` takes, xyxy absolute pixels. ``image_size``:
    (H, W). Returns float64 [R, 4] clipped to ``[0, W] x [0, H]``. Raises :class:`BoxError`
    for an empty list, NaN/inf coordinates, inverted boxes (x2 < x1 or y2 < y1), and boxes
    narrower or lower than ``min_size`` pixels after clipping (for example a box wholly
    outside the image). The message names the offending box indices.
    """
    array = as_box_array(boxes)
    if array.shape[0] == 0:
        raise BoxError("no boxes given: pass at least one box [x1, y1, x2, y2]")
    bad = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if bad.size:
        raise BoxError(f"boxes {_indices(bad)} have NaN or infinite coordinates")
    inverted = np.flatnonzero((array[:, 2] < array[:, 0]) | (array[:, 3] < array[:, 1]))
    if inverted.size:
        raise BoxError(
            f"boxes {_indices(inverted)} are inverted (need x1 <= x2 and y1 <= y2, format xyxy): "
            f"first one is {array[inverted[0]].tolist()}"
        )
    height, width = image_size
    clipped = clip_boxes(array, image_size)
    degenerate = np.flatnonzero(box_sizes(clipped).min(axis=1) < min_size)
    if degenerate.size:
        raise BoxError(
            f"boxes {_indices(degenerate)} are smaller than {min_size} pixel(s) after clipping to the "
            f"{width}x{height} image (first: {array[degenerate[0]].tolist()})"
        )
    return clipped


def clip_boxes(boxes: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Clip xyxy boxes [R, 4] to an image of size (H, W)."""
    height, width = image_size
    clipped = boxes.copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, width)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, height)
    return clipped


def box_sizes(boxes: np.ndarray) -> np.ndarray:
    """Widths and heights [R, 2] of xyxy boxes [R, 4]."""
    return np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1)


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """COCO ``[x, y, w, h]`` [R, 4] -> xyxy [R, 4]."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """xyxy [R, 4] -> COCO ``[x, y, w, h]`` [R, 4]."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def parse_boxes_text(text: str) -> np.ndarray:
    """Inline boxes ``"x1,y1,x2,y2;x1,y1,x2,y2"`` -> float64 [R, 4]."""
    rows: list[Sequence[float]] = []
    for i, part in enumerate(p for p in text.split(";") if p.strip()):
        values = [v.strip() for v in part.split(",")]
        if len(values) != 4:
            raise BoxError(f"box {i} {part.strip()!r} must have 4 comma-separated numbers x1,y1,x2,y2")
        try:
            rows.append([float(v) for v in values])
        except ValueError:
            raise BoxError(f"box {i} {part.strip()!r} has a value that is not a number") from None
    return np.asarray(rows, dtype=np.float64).reshape(-1, 4)


def _indices(indices: np.ndarray, limit: int = 10) -> str:
    shown = ", ".join(str(int(i)) for i in indices[:limit])
    return f"[{shown}{', ...' if indices.size > limit else ''}]"
