"""Parsing and checking the text fields of the API's forms (pure functions).

A vocabulary sent by a client is never resolved as a file path on the server: it is a JSON
list, a built-in vocabulary name, or names separated by commas or newlines.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from regionspot.ops.boxes import BoxError, as_box_array
from regionspot.ops.prompts import PromptError, decode_rle_prompts, nested_arrays
from regionspot.serve.errors import ApiError
from regionspot.vocab import VocabularyError, builtin_vocabulary, validate_vocabulary

__all__ = ["check_positive_at_most", "is_builtin_vocabulary", "parse_boxes_field", "parse_vocabulary_field"]

#: Most clicks one region may have in a request (each costs SAM's decoder attention over the image).
MAX_CLICKS_PER_REGION = 64
_BUILTIN_SPELLINGS = frozenset({"lvis", "lvis_v1", "coco", "objects365", "o365"})
_NAME_SEPARATORS = re.compile(r"[,\r\n]")


def parse_boxes_field(text: str, max_boxes: int) -> np.ndarray:
    """``boxes`` form field: JSON ``[[x0, y0, x1, y1], ...]`` (xyxy absolute pixels) -> float64
    [R, 4] (``[]``: no regions, answered with none, as a detector that found nothing would send).
    Raises :class:`BoxError` for text that is not JSON or not R x 4 numbers, ``ApiError`` 422
    ``too_many_boxes`` above ``max_boxes``. NaN, inverted boxes and boxes outside the image are
    checked later against the image size."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):  # also integers of over 4300 digits, which Python refuses to parse
        raise BoxError("boxes must be JSON like [[x0, y0, x1, y1], ...] (xyxy pixels) with numbers of "
                       "ordinary size") from None
    boxes = as_box_array(data)
    if boxes.shape[0] > max_boxes:
        raise ApiError(422, "too_many_boxes", f"{boxes.shape[0]} boxes sent; at most max_boxes={max_boxes} "
                                              "per request")
    return boxes


def parse_points_field(points: str, labels: str | None,
                       max_regions: int) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """``points`` form field: JSON ``[[x, y], ...]`` (each click its own region) or
    ``[[[x, y], [x, y]], [[x, y]], ...]`` (the clicks of each region; counts may differ), xy
    absolute pixels, and ``point_labels`` nested the same way (1 foreground, 0 background;
    absent: all foreground) -> (per region float64 ``[P_r, 2]``, per region ``[P_r]`` or None).
    Raises :class:`PromptError` for text that is not such JSON, ``ApiError`` 422
    ``too_many_boxes`` above ``max_regions`` regions and ``too_many_points`` above
    :data:`MAX_CLICKS_PER_REGION` clicks in a region. Points outside the image and labels that do not
    match the clicks are checked later, by the predictor."""
    decoded: list[Any] = []
    for name, text in (("points", points), ("point_labels", labels)):
        try:
            decoded.append(None if text is None else json.loads(text))
        except (ValueError, TypeError, RecursionError):
            raise PromptError(f"{name} must be JSON like [[x, y], ...] or [[[x, y], [x, y]], ...] with numbers of "
                              "ordinary size") from None
    if _list_depth(decoded[0]) == 2:  # [[x, y], ...]: each click its own region, each label its own region's
        if decoded[1] is not None and _list_depth(decoded[1]) != 1:
            raise PromptError("point_labels must match the points: with points [[x, y], ...] send one label per "
                              "click, [1, 0, ...]")
        decoded = [[[click] for click in decoded[0]],
                   [[mark] for mark in decoded[1]] if isinstance(decoded[1], list) else decoded[1]]
    clicks = nested_arrays(decoded[0], "points", item_ndim=2)
    marks = None if decoded[1] is None else nested_arrays(decoded[1], "point_labels", item_ndim=1)
    if any(region.shape[-1] != 2 for region in clicks):  # nested_arrays refuses empty regions
        raise PromptError("points must be [[x, y], ...] or [[[x, y], ...], ...] with at least one click per region")
    if len(clicks) > max_regions:
        raise ApiError(422, "too_many_boxes", f"{len(clicks)} regions sent; at most max_boxes={max_regions} "
                                              "per request")
    crowded = next((index for index, region in enumerate(clicks) if len(region) > MAX_CLICKS_PER_REGION), None)
    if crowded is not None:
        raise ApiError(422, "too_many_points", f"region {crowded} has {len(clicks[crowded])} clicks; at most "
                                               f"{MAX_CLICKS_PER_REGION} per region")
    return clicks, marks


def _list_depth(value: Any) -> int:
    """How deeply the JSON value ``value`` nests lists, following first items."""
    depth = 0
    while isinstance(value, list) and value:
        depth, value = depth + 1, value[0]
    return depth


def parse_region_masks_field(text: str, image_size: tuple[int, int], max_regions: int,
                             max_pixels: int | None) -> np.ndarray:
    """``region_masks`` form field: JSON list of COCO RLE masks ``{"size": [H, W], "counts": str}``
    (as the answers' ``mask``; ``counts`` may also be a list of run lengths) at the image's size
    -> bool [R, H, W]. Sizes and run lengths are checked before anything is decoded:
    :class:`PromptError` for malformed or mis-sized masks, ``ApiError`` 422 above ``max_regions``
    (``too_many_boxes``) or ``max_pixels`` (``too_many_mask_pixels``)."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise PromptError('region_masks must be JSON: a list of COCO RLE masks {"size": [H, W], "counts": "..."}'
                          ) from None
    if not isinstance(data, list) or not data:
        raise PromptError("region_masks must be a non-empty list of COCO RLE masks")
    if len(data) > max_regions:
        raise ApiError(422, "too_many_boxes", f"{len(data)} regions sent; at most max_boxes={max_regions} per request")
    if max_pixels is not None and len(data) * image_size[0] * image_size[1] > max_pixels:
        raise ApiError(422, "too_many_mask_pixels", f"{len(data)} masks of this image exceed max_mask_pixels="
                                                    f"{max_pixels:,}; send fewer")
    return decode_rle_prompts(data, image_size, lambda index: f"region_masks[{index}]")


def is_builtin_vocabulary(text: str) -> bool:
    return text.strip().casefold() in _BUILTIN_SPELLINGS


def parse_vocabulary_field(text: str, max_names: int) -> list[str]:
    """``vocabulary`` form field -> validated names.

    Accepted: a built-in name (``lvis``, ``coco``, ``objects365``, case-insensitive; always
    allowed whatever ``max_names``), a JSON list of strings, or plain text with names separated
    by commas or newlines (blank entries skipped). Raises :class:`VocabularyError` for an empty
    or malformed vocabulary or duplicate names, ``ApiError`` 422 ``vocabulary_too_large`` for
    more than ``max_names`` names.
    """
    stripped = text.strip()
    if is_builtin_vocabulary(stripped):
        return builtin_vocabulary(stripped)
    if stripped.startswith("["):
        try:
            names = json.loads(stripped)
        except (ValueError, RecursionError):  # also integers of over 4300 digits
            raise VocabularyError("the vocabulary starts with '[' but is not a JSON list of names") from None
        if not isinstance(names, list):
            raise VocabularyError("the vocabulary must be a JSON list of names")
    else:
        names = [name for name in _NAME_SEPARATORS.split(stripped) if name.strip()]
    if not names:
        raise VocabularyError("the vocabulary is empty: send names, a JSON list of names or a built-in name "
                              "(lvis, coco, objects365)")
    if len(names) > max_names:
        raise ApiError(422, "vocabulary_too_large", f"{len(names)} names sent; at most max_vocabulary={max_names} "
                                                    "(built-in vocabularies are always allowed)")
    return validate_vocabulary(names)


def find_selection(threshold: str | None, queries: int, nms_iou: float, nms: str, max_per_query: int | None,
                   max_boxes: int) -> dict[str, Any]:
    """``/v1/find``'s selection fields, checked -> keyword arguments of ``RegionPredictor.find``
    (``threshold``: one number or one per query of the ``queries``, as a JSON list or separated
    by commas; ``nms_iou``, ``nms``, ``max_per_query``: default and most ``max_boxes``).
    ``ApiError`` 422 ``bad_<field>`` for a value out of range."""
    thresholds = None if threshold is None else parse_thresholds(threshold, queries)
    if not 0.0 <= nms_iou <= 1.0:
        raise ApiError(422, "bad_nms_iou", f"nms_iou must be between 0 and 1, got {nms_iou}")
    if nms not in ("box", "mask"):
        raise ApiError(422, "bad_nms", f"nms must be 'box' or 'mask', got {nms[:40]!r}")
    per_query = max_boxes if max_per_query is None else check_positive_at_most(max_per_query, max_boxes,
                                                                                 "max_per_query")
    return {"threshold": thresholds, "nms_iou": nms_iou, "nms": nms, "max_per_query": per_query}


def parse_thresholds(text: str, queries: int) -> float | list[float]:
    """``threshold`` as sent: ``0.3``, ``[0.3, 0.5]`` or ``0.3,0.5`` -> one value or one per
    query, each in [0, 1]; ``ApiError`` 422 ``bad_threshold`` otherwise."""
    stripped = text.strip()
    try:
        parsed = json.loads(stripped) if stripped.startswith("[") else [float(part) for part in stripped.split(",")]
    except ValueError:
        raise ApiError(422, "bad_threshold", f"threshold must be a number or a list of numbers, got {text[:60]!r}")\
            from None
    values = parsed if isinstance(parsed, list) else [parsed]
    if not values or any(isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 <= v <= 1.0 for v in values):
        raise ApiError(422, "bad_threshold", f"threshold values must be numbers between 0 and 1, got {text[:60]!r}")
    if len(values) not in (1, queries):
        raise ApiError(422, "bad_threshold", f"threshold has {len(values)} values for {queries} queries; send one "
                                             "value, or one per query")
    return float(values[0]) if len(values) == 1 else [float(v) for v in values]


def check_positive_at_most(value: int, limit: int, name: str) -> int:
    """``value`` when ``1 <= value <= limit``, else ``ApiError`` 422 ``bad_<name>``."""
    if value < 1 or value > limit:
        raise ApiError(422, f"bad_{name}", f"{name} must be between 1 and {limit}, got {value}")
    return value
