"""Detector proposals (boxes to classify) read from a JSON file.

Accepted forms (a box score is optional; it is 1.0 where the file has none):

1. COCO results, boxes ``[x, y, w, h]``, as any detector's ``*_results.json``::

       [{"image_id": 397133, "bbox": [10.0, 20.0, 30.0, 40.0], "score": 0.9, "category_id": 1}, ...]

2. Per-image boxes, ``[x0, y0, x1, y1]`` absolute pixels of the annotated image, keyed by the
   image id (as a string, as JSON needs) or by the image's ``file_name`` (or its base name).
   This is the form of the GLIP-T proposals the RegionSpot authors released
   (``nms_results_glip_tiny_model_o365_goldg_cc_sbu_lvis_val.json``: keys are image ids, each
   value holds ``boxes``, ``scores`` and ``labels``)::

       {"397133": {"boxes": [[10, 20, 40, 60]], "scores": [0.9], "labels": [3]},
        "000000037777.jpg": {"boxes": [[0, 0, 5, 5]]}}

3. A list of such records naming their image by ``image_id`` or ``file_name``::

       [{"image_id": 397133, "boxes": [[10, 20, 40, 60]], "scores": [0.9]}, ...]

Labels, when present, are checked for length and otherwise ignored: a proposal is a box, the
classifier names it. The same box listed more than once for an image (equal to 0.001 px after
clipping; detectors list one box once per category) becomes one proposal with the highest score.
Boxes are clipped to the image; boxes narrower or lower than one pixel after clipping are
dropped. Each image's proposals are sorted by descending score (ties keep the file's order).
Images of the annotation without proposals get empty arrays.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from regionspot.datasets.coco_format import DatasetError
from regionspot.ops.boxes import box_sizes, clip_boxes, xywh_to_xyxy

MIN_BOX_SIZE = 1.0  # pixels; the predictor rejects anything smaller
DEDUP_DECIMALS = 3


@dataclass
class ImageProposals:
    """Proposals of one image, best first."""

    boxes: np.ndarray   # float64 [N, 4] xyxy absolute pixels
    scores: np.ndarray  # float64 [N]; 1.0 where the file has none

    def __len__(self) -> int:
        return int(self.scores.shape[0])


class _ImageIndex:
    """Maps proposal-file keys (image ids, id strings, file names) to the annotation's images."""

    def __init__(self, images: Sequence[Mapping[str, Any]], path: Path) -> None:
        self.path = path
        self.sizes: dict[int, tuple[int, int]] = {}
        self.by_name: dict[str, int] = {}
        self.by_base_name: dict[str, int] = {}
        for image in images:
            if "id" not in image or "height" not in image or "width" not in image:
                raise DatasetError(f"{path}: every annotation image needs id, height and width, got {dict(image)}")
            image_id = int(image["id"])
            self.sizes[image_id] = (int(image["height"]), int(image["width"]))
            if image.get("file_name"):
                self.by_name[str(image["file_name"])] = image_id
                self.by_base_name.setdefault(Path(str(image["file_name"])).name, image_id)

    def resolve(self, key: Any) -> int:
        """The image id a key names; DatasetError for a key naming no image of the annotation."""
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool) and int(key) in self.sizes:
            return int(key)
        if isinstance(key, str):
            text = key.strip()
            if text.lstrip("-").isdigit() and int(text) in self.sizes:
                return int(text)
            if text in self.by_name:
                return self.by_name[text]
            if Path(text).name in self.by_base_name:
                return self.by_base_name[Path(text).name]
        raise DatasetError(f"{self.path}: unknown image key {key!r}: not an image id or file_name of the "
                           f"annotation ({len(self.sizes)} images)")


def read_proposal_file(path: str | Path, images: Sequence[Mapping[str, Any]]) -> dict[int, ImageProposals]:
    """Proposals per image id of ``images`` (the annotation's ``images`` list: id, file_name,
    width, height) from a file in one of the forms of the module docstring. Raises DatasetError
    naming the path and the problem for a missing or malformed file."""
    path = Path(path)
    document = _read_json(path)
    index = _ImageIndex(images, path)
    collected: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {image_id: [] for image_id in index.sizes}
    for image_id, boxes, scores in _entries(document, index):
        collected[image_id].append((boxes, scores))
    result = {}
    for image_id, parts in collected.items():
        boxes = np.concatenate([b for b, _ in parts]) if parts else np.zeros((0, 4))
        scores = np.concatenate([s for _, s in parts]) if parts else np.zeros(0)
        result[image_id] = clean_proposals(boxes, scores, index.sizes[image_id])
    return result


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise DatasetError(f"proposal file not found: {path}")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: not a JSON file ({exc})") from None


def _entries(document: Any, index: _ImageIndex) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(image id, boxes xyxy [N, 4], scores [N]) per entry of any accepted form."""
    path = index.path
    if isinstance(document, Mapping):
        if "annotations" in document or "images" in document:
            raise DatasetError(f"{path}: this is an annotation file, not proposals (see regionspot.eval."
                               "proposal_files for the accepted forms)")
        return [(index.resolve(key), *_record_boxes(value, path, f"image {key!r}")) for key, value in document.items()]
    if not isinstance(document, list):
        raise DatasetError(f"{path}: proposals must be a JSON list or object, got {type(document).__name__}")
    if any(not isinstance(item, Mapping) for item in document):
        raise DatasetError(f"{path}: every item of the proposal list must be a JSON object")
    if document and "bbox" in document[0]:
        return _coco_results(document, index)
    entries = []
    for position, record in enumerate(document):
        key = record.get("image_id", record.get("file_name"))
        if key is None:
            raise DatasetError(f"{path}: record {position} names no image (give image_id or file_name) and has "
                               "no COCO 'bbox'")
        entries.append((index.resolve(key), *_record_boxes(record, path, f"record {position}")))
    return entries


def _coco_results(document: list[Mapping[str, Any]], index: _ImageIndex) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """COCO results (one box per item, xywh) grouped into one entry per image."""
    path = index.path
    grouped: dict[int, tuple[list[Any], list[Any]]] = {}
    for position, item in enumerate(document):
        if "bbox" not in item or "image_id" not in item:
            raise DatasetError(f"{path}: COCO result {position} needs image_id and bbox, got {dict(item)!r:.200}")
        boxes, scores = grouped.setdefault(index.resolve(item["image_id"]), ([], []))
        boxes.append(item["bbox"])
        scores.append(item.get("score", 1.0))
    entries = []
    for image_id, (boxes, scores) in grouped.items():
        what = f"image {image_id}"
        if not _is_nx4(boxes):
            raise DatasetError(f"{path}: {what}: every bbox must be [x, y, w, h] (4 numbers)")
        xywh = _number_array(boxes, path, what, "bbox").reshape(-1, 4)
        if np.any(xywh[:, 2:] < 0):
            raise DatasetError(f"{path}: {what}: a bbox has a negative width or height (COCO bbox is [x, y, w, h])")
        entries.append((image_id, xywh_to_xyxy(xywh), _number_array(scores, path, what, "score")))
    return entries


def _is_nx4(value: Any) -> bool:
    return all(isinstance(row, (list, tuple)) and len(row) == 4 for row in value)


def _number_array(value: Any, path: Path, what: str, field: str) -> np.ndarray:
    """float64 array of ``value``; DatasetError for non-numbers or NaN/infinity."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DatasetError(f"{path}: {what}: {field} must be numbers, got {value!r:.120}") from None
    if not np.isfinite(array).all():
        raise DatasetError(f"{path}: {what}: {field} has NaN or infinite values")
    return array


def _record_boxes(record: Any, path: Path, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(boxes xyxy [N, 4], scores [N]) of one per-image record ``{"boxes", "scores"?, "labels"?}``."""
    if not isinstance(record, Mapping) or "boxes" not in record:
        raise DatasetError(f"{path}: {what} must be an object with 'boxes' ([[x0, y0, x1, y1], ...]), "
                           f"got {record!r:.120}")
    raw = record["boxes"]
    if not isinstance(raw, list) or not _is_nx4(raw):
        raise DatasetError(f"{path}: {what}: boxes must be N x 4 [[x0, y0, x1, y1], ...], got {raw!r:.120}")
    boxes = _number_array(raw, path, what, "boxes").reshape(-1, 4)
    count = boxes.shape[0]
    scores = np.ones(count)
    if record.get("scores") is not None:
        scores = _number_array(record["scores"], path, what, "scores").reshape(-1)
    labels = record.get("labels")
    if labels is not None and not isinstance(labels, list):
        raise DatasetError(f"{path}: {what}: labels must be a list, got {labels!r:.120}")
    for field, values in (("scores", scores), ("labels", labels)):
        if values is not None and len(values) != count:
            raise DatasetError(f"{path}: {what}: {len(values)} {field} for {count} boxes")
    inverted = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if inverted.any():
        raise DatasetError(f"{path}: {what}: box {boxes[np.argmax(inverted)].tolist()} is inverted; boxes must be "
                           "[x0, y0, x1, y1] with x0 <= x1 and y0 <= y1 (COCO [x, y, w, h] belongs in a results "
                           "list with 'bbox')")
    return boxes, scores


def clean_proposals(boxes: np.ndarray, scores: np.ndarray, image_size: tuple[int, int]) -> ImageProposals:
    """Clip xyxy ``boxes`` [N, 4] to the image (H, W), drop those under one pixel wide or high,
    merge equal boxes (highest score kept) and sort by descending score (stable)."""
    boxes = clip_boxes(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), image_size)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    keep = box_sizes(boxes).min(axis=1) >= MIN_BOX_SIZE
    boxes, scores = boxes[keep], scores[keep]
    if boxes.shape[0]:
        _, first, group = np.unique(np.round(boxes, DEDUP_DECIMALS), axis=0, return_index=True, return_inverse=True)
        group = group.reshape(-1)
        best = np.full(first.shape[0], -np.inf)
        np.maximum.at(best, group, scores)
        order = np.argsort(first, kind="stable")  # groups in order of first appearance in the file
        boxes, scores = boxes[first[order]], best[order]
    ranking = np.argsort(-scores, kind="stable")
    return ImageProposals(boxes=boxes[ranking], scores=scores[ranking])
