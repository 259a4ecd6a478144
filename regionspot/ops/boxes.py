"""Pure box operations. Boxes are xyxy in absolute pixels unless a name says otherwise."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


class BoxError(ValueError):
    """User-supplied boxes are malformed (wrong shape, NaN, inverted, empty after clipping)."""


def as_box_array(boxes: Any) -> np.ndarray:
    """Any box container (list of 4-sequences, numpy array, torch tensor, or a detector's result
    with an ``xyxy`` array such as ``supervision.Detections``) -> float64 [R, 4].

    A single box ``[x1, y1, x2, y2]`` is accepted as ``R = 1``, ``[]`` as ``R = 0``. Raises
    :class:`BoxError` for anything that is not R x 4 numbers (``[[]]`` too).
    """
    xyxy = getattr(boxes, "xyxy", None)
    if xyxy is not None and not isinstance(boxes, np.ndarray | torch.Tensor | list | tuple):
        boxes = xyxy  # supervision.Detections and alike
    if isinstance(boxes, torch.Tensor):
        boxes = boxes.detach().cpu().numpy()
    try:
        array = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond float64
        raise BoxError(f"boxes must be numbers shaped [R, 4] (x1, y1, x2, y2), got {boxes!r:.200}") from None
    if array.shape in ((0,), (0, 4)):  # no boxes (a detector that found nothing)
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


def box_iou_xyxy(a: Any, b: Any) -> np.ndarray:
    """Pairwise IoU float64 ``[N, M]`` of xyxy boxes ``a`` [N, 4] and ``b`` [M, 4] (arrays,
    tensors or lists). A pair whose union has no area has IoU 0."""
    a, b = as_box_array(a), as_box_array(b)
    area_a = box_sizes(a).clip(min=0).prod(axis=1)
    area_b = box_sizes(b).clip(min=0).prod(axis=1)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    intersection = (bottom_right - top_left).clip(min=0).prod(axis=2)
    union = area_a[:, None] + area_b[None, :] - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def nms(boxes: Any, scores: Any, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression.

    ``boxes``: xyxy [N, 4]; ``scores``: [N]. Going from the highest score down, a box is kept
    unless its IoU with an already kept box is greater than ``iou_threshold``. Equal scores keep
    input order (stable sort). Returns int64 indices into ``boxes`` of the kept boxes, best first.
    """
    boxes = as_box_array(boxes)
    scores = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64)
    if scores.shape != (boxes.shape[0],):
        raise BoxError(f"nms needs one score per box: {boxes.shape[0]} boxes, scores of shape {scores.shape}")
    order = np.argsort(-scores, kind="stable")
    areas = box_sizes(boxes).clip(min=0).prod(axis=1)
    kept: list[int] = []
    while order.size:
        best, order = order[0], order[1:]
        kept.append(int(best))
        top_left = np.maximum(boxes[best, :2], boxes[order, :2])
        bottom_right = np.minimum(boxes[best, 2:], boxes[order, 2:])
        intersection = (bottom_right - top_left).clip(min=0).prod(axis=1)
        union = areas[best] + areas[order] - intersection
        iou = np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)
        order = order[iou <= iou_threshold]
    return np.asarray(kept, dtype=np.int64)


def masks_to_boxes(masks: Any) -> np.ndarray:
    """Tight boxes float64 ``[N, 4]`` of boolean masks ``[N, H, W]`` (numpy or torch).

    Boxes follow pixel edges: a mask whose pixels span columns ``c0..c1`` and rows ``r0..r1``
    gets ``[c0, r0, c1 + 1, r1 + 1]`` (a one-pixel mask is a 1x1 box). An empty mask gets
    ``[0, 0, 0, 0]``.
    """
    if isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu().numpy()
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise BoxError(f"masks must be shaped [N, H, W], got shape {masks.shape}")
    columns, rows = masks.any(axis=1), masks.any(axis=2)  # [N, W], [N, H]
    boxes = np.zeros((masks.shape[0], 4), dtype=np.float64)
    present = columns.any(axis=1)
    boxes[present, 0] = columns[present].argmax(axis=1)
    boxes[present, 1] = rows[present].argmax(axis=1)
    boxes[present, 2] = masks.shape[2] - columns[present, ::-1].argmax(axis=1)
    boxes[present, 3] = masks.shape[1] - rows[present, ::-1].argmax(axis=1)
    return boxes


def _indices(indices: np.ndarray, limit: int = 10) -> str:
    shown = ", ".join(str(int(i)) for i in indices[:limit])
    return f"[{shown}{', ...' if indices.size > limit else ''}]"
