"""Regions given as clicks or masks instead of boxes: checked, in the shapes SAM takes.

Points are xy absolute pixels of the image. ``[P, 2]`` is one region prompted by P clicks;
``[R, P, 2]`` is R regions of P clicks each. Labels are 1 (foreground: the object is here) or 0
(background: not this), one per click; every region needs a foreground click. Masks are
``[R, H, W]`` booleans (or 0/1, 0/255 numbers) at the image's size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from regionspot.ops.boxes import BoxError, masks_to_boxes


class PromptError(BoxError):
    """User-supplied point or mask prompts are malformed (shape, values, outside the image, empty)."""


@dataclass(frozen=True)
class ClickRegions:
    """The clicks of R regions: region ``r`` has ``points[r]`` float64 ``[P_r, 2]`` (xy absolute
    pixels) and ``labels[r]`` int64 ``[P_r]`` (1 foreground, 0 background); click counts may
    differ between regions."""

    points: list[np.ndarray]
    labels: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.points)

    def by_labels(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(region indices ``[G]``, points ``[G, P, 2]``, labels ``[G, P]``) per distinct label
        sequence: the regions of a group have the same clicks count and the same foreground and
        background places, so SAM treats each of them as it would alone (how many masks it
        gives and whether it refines depend on the labels), and no padding click is needed."""
        patterns: dict[tuple[int, ...], list[int]] = {}
        for region, labels in enumerate(self.labels):
            patterns.setdefault(tuple(int(label) for label in labels), []).append(region)
        return [(np.asarray(rows), np.stack([self.points[r] for r in rows]), np.stack([self.labels[r] for r in rows]))
                for rows in patterns.values()]

    def first_foreground(self) -> np.ndarray:
        """Each region's first foreground click, float ``[R, 2]``."""
        return np.stack([clicks[int(np.argmax(marks == 1))] for clicks, marks in zip(self.points, self.labels,
                                                                                       strict=True)])


def as_point_prompts(points: Any, labels: Any, image_size: tuple[int, int]) -> ClickRegions:
    """Clicks checked against the image's ``(H, W)``: ``points`` ``[P, 2]`` (one region),
    ``[R, P, 2]``, or a list of R regions' ``[P_r, 2]`` clicks; ``labels`` nested the same way
    (None: all foreground). Raises :class:`PromptError` naming the first bad click."""
    regions = nested_arrays(points, "points", item_ndim=2)  # each region holds at least one click
    if any(clicks.shape[-1] != 2 for clicks in regions):
        shapes = [list(clicks.shape) for clicks in regions[:3]]
        raise PromptError(f"points must be [P, 2] (one region), [R, P, 2] or a list of [P, 2] xy pixels, each region "
                          f"with at least one click; got regions shaped {shapes}")
    marks = [np.ones(len(clicks), dtype=np.int64) for clicks in regions] if labels is None \
        else _labels(labels, [len(clicks) for clicks in regions])
    height, width = image_size
    for region, clicks in enumerate(regions):
        inside = np.isfinite(clicks).all(axis=-1) & (clicks[:, 0] >= 0) & (clicks[:, 0] < width) \
            & (clicks[:, 1] >= 0) & (clicks[:, 1] < height)
        if not inside.all():
            click = int(np.flatnonzero(~inside)[0])
            raise PromptError(f"point {click} of region {region} ({clicks[click, 0]:g}, {clicks[click, 1]:g}) "
                              f"lies outside the {width}x{height} image")
        if not (marks[region] == 1).any():
            raise PromptError(f"region {region} has no foreground click (label 1): a background click only "
                              "says what the object is not")
    return ClickRegions(regions, marks)


def as_mask_prompts(masks: Any, image_size: tuple[int, int]) -> np.ndarray:
    """Bool ``[R, H, W]`` masks at the image's size (``[H, W]``: one region) from bool, or
    numbers holding 0 and one other value per mask (0/1, 0/255). Raises :class:`PromptError`
    for more values (a label image is not split here: silently merging its regions would be
    wrong), another size, no masks or an empty mask."""
    array = _as_array(masks, "masks")
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[0] == 0:
        raise PromptError(f"masks must be [R, H, W] (or one [H, W]), got shape {array.shape}")
    if tuple(array.shape[1:]) != tuple(image_size):
        raise PromptError(f"masks are {array.shape[2]}x{array.shape[1]} but the image is "
                          f"{image_size[1]}x{image_size[0]}: give masks at the image's size")
    if array.dtype != np.bool_:
        _check_binary(array)
    binary = array.astype(bool)
    empty = np.flatnonzero(~binary.reshape(binary.shape[0], -1).any(axis=1))
    if empty.size:
        raise PromptError(f"mask {int(empty[0])} is empty: a region needs at least one pixel")
    return binary


def _check_binary(masks: np.ndarray) -> None:
    """Each mask of ``masks`` ``[R, H, W]`` (numbers) must hold 0 and at most one other value
    (0/1, 0/255, ...): :class:`PromptError` for a label image or a probability map."""
    if masks.dtype.kind not in "biuf":
        raise PromptError(f"masks must be bool or numbers, got {masks.dtype}")
    if not np.isfinite(masks).all():
        raise PromptError("masks hold NaN or infinite values")
    for index, mask in enumerate(masks):
        values = np.unique(mask)
        if (values != 0).sum() > 1:
            raise PromptError(f"mask {index} holds {int((values != 0).sum())} different non-zero values: a mask is "
                              "0 outside its region and one value inside. A label image numbering regions 1, 2, "
                              "... must first be split (np.stack([labels == v for v in values])); a probability "
                              "map thresholded (mask > 0.5)")


def parse_points_text(text: str, labels_text: str | None = None) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """``'x,y;x,y+x,y'`` -> each region's clicks float ``[P_r, 2]`` (regions split by ``;``,
    the clicks of one region by ``+``) and, from ``labels_text`` nested the same way
    (``'1;1+0'``), each region's labels ``[P_r]`` (None: all foreground)."""
    regions = _split_regions(text, "points", "'x,y;x,y' (clicks of one region joined by +: 'x,y+x,y')")
    points = [np.asarray([_numbers(click, 2, _click_name(region, index, len(clicks)), "2 comma-separated numbers x,y")
                          for index, click in enumerate(clicks)], dtype=np.float64)
              for region, clicks in enumerate(regions)]
    if labels_text is None:
        return points, None
    marks = _split_regions(labels_text, "point labels", "'1;1+0' (1 foreground, 0 background), nested as the points")
    labels = [np.asarray([_numbers(mark, 1, f"label of {_click_name(region, index, len(clicks))}", "0 or 1")[0]
                          for index, mark in enumerate(clicks)])
              for region, clicks in enumerate(marks)]
    return points, labels


def _click_name(region: int, click: int, clicks: int) -> str:
    return f"point {region}" if clicks == 1 else f"point {click} of region {region}"


def _split_regions(text: str, what: str, form: str) -> list[list[str]]:
    regions = [[click.strip() for click in item.split("+")] for item in text.split(";") if item.strip()]
    if not regions:
        raise PromptError(f"no {what} given: write them as {form}")
    return regions


def _numbers(item: str, count: int, name: str, form: str) -> list[float]:
    try:
        values = [float(part) for part in item.split(",")]
    except ValueError:
        values = []
    if len(values) != count:
        raise PromptError(f"{name} {item!r} must be {form}")
    return values


def region_boxes(masks: np.ndarray, anchors: np.ndarray | None = None) -> np.ndarray:
    """Tight xyxy boxes ``[R, 4]`` of bool masks ``[R, H, W]``; a region whose mask is empty gets
    a 1-pixel box at its anchor (``anchors`` float ``[R, 2]`` xy, e.g. its first foreground
    click), so it can still be recognised."""
    boxes = masks_to_boxes(masks)
    empty = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    if empty.any() and anchors is not None:
        height, width = masks.shape[1:]
        x = np.clip(np.floor(anchors[empty, 0]), 0, width - 1)
        y = np.clip(np.floor(anchors[empty, 1]), 0, height - 1)
        boxes[empty] = np.stack([x, y, x + 1, y + 1], axis=1)
    return boxes


def _as_array(value: Any, what: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise PromptError(f"{what} must be a (nested) list of numbers: {exc}") from None


def nested_arrays(value: Any, what: str, item_ndim: int) -> list[np.ndarray]:
    """One float64 array per region (copies, never views of ``value``) from a ``[P, ...]`` (one
    region, ``item_ndim`` dims), a ``[R, P, ...]`` array or a list of R regions of different
    lengths. :class:`PromptError` for anything else."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        array = None
    if array is not None:
        if array.size == 0:
            raise PromptError(f"no {what} given")
        if array.ndim == item_ndim:
            return [array]
        if array.ndim == item_ndim + 1:
            return list(array)
        raise PromptError(f"{what} must be nested {item_ndim} or {item_ndim + 1} deep, got shape {list(array.shape)}")
    if not isinstance(value, (list, tuple)):
        raise PromptError(f"{what} must be a (nested) list of numbers, got {type(value).__name__}")
    regions = []
    for index, region in enumerate(value):
        try:
            regions.append(np.array(region.detach().cpu().numpy() if isinstance(region, torch.Tensor) else region,
                                    dtype=np.float64))
        except (TypeError, ValueError, OverflowError):
            raise PromptError(f"region {index}'s {what} must be a (nested) list of numbers") from None
        if regions[-1].size == 0:
            raise PromptError(f"region {index} has no {what}: each region needs at least one")
        if regions[-1].ndim != item_ndim:
            raise PromptError(f"region {index}'s {what} must be nested {item_ndim} deep, got shape "
                              f"{list(regions[-1].shape)}")
    return regions


def _labels(labels: Any, counts: list[int]) -> list[np.ndarray]:
    """Per-region int64 labels ``[P_r]`` matching the click counts ``counts``; a flat ``[R]``
    list serves R one-click regions."""
    regions = nested_arrays(labels, "point_labels", item_ndim=1)
    flat = all(np.ndim(label) == 0 for label in labels) if isinstance(labels, (list, tuple)) else np.ndim(labels) == 1
    if flat and len(counts) > 1 and len(regions[0]) == len(counts) and set(counts) == {1}:
        regions = [row[None] for row in regions[0]]  # [R] labels of R one-click regions
    if [len(region) for region in regions] != counts:
        raise PromptError(f"point_labels must match the points: click counts {counts[:10]}, got "
                          f"{[len(region) for region in regions[:10]]}")
    if not all(np.isin(region, (0, 1)).all() for region in regions):
        raise PromptError("point_labels must be 1 (foreground) or 0 (background)")
    return [region.astype(np.int64) for region in regions]


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
            raise PromptError(f"{name(index)} has size {rle['size']} ([H, W]: {rle['size'][1]} wide, "
                              f"{rle['size'][0]} high) but the image is [{height}, {width}] ({width} wide, "
                              f"{height} high): give masks at the image's size")
        if not rle_covers(rle["counts"], height, width):
            raise PromptError(f"{name(index)}'s run lengths do not add up to its {height}x{width} pixels")
        counts = rle["counts"]
        prepared.append({"size": [height, width], "counts": counts} if isinstance(counts, str)
                        else dict(mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)))
    try:
        return decode_rle(prepared)
    except (ValueError, TypeError) as exc:
        raise PromptError(f"the masks could not be decoded as COCO RLE ({exc})") from None
