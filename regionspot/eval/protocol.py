"""The evaluation protocol as pure functions: which inputs it accepts, which boxes an image is
asked about, which (box, category) pairs become detections, and the words that state the
protocol in a report.

The protocol of the paper's LVIS results (Table 1), as the authors' release implements it: each
box is reported with several categories; an image keeps its best ``pairs_per_image`` (box,
category) pairs (900 in the authors' release) ranked by the final score = class score x
proposal score (1 for ground-truth boxes); the evaluator then applies its own cap (LVIS: 300
detections per image). Boxes are xyxy absolute pixels unless named otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from regionspot.datasets.coco_format import (
    OBJECT_RULE,
    DatasetError,
    Rule,
    count_text,
    counted,
    enforce,
    inflect,
    is_finite_number,
    is_int,
    is_xywh,
    json_type,
    repeated,
)
from regionspot.eval.evaluator import DetectionEvaluator, resolve_frequencies
from regionspot.ops.boxes import box_sizes, clip_boxes, xywh_to_xyxy, xyxy_to_xywh

LOGGER = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- the inputs accepted
def _is_sized_xywh(box: Any) -> bool:
    return is_xywh(box) and box[2] >= 0 and box[3] >= 0


def _is_id_list(value: Any) -> bool:
    return isinstance(value, list) and all(is_int(v) for v in value)


_BOX = '[has|have] a "bbox" that is not [x, y, w, h] (4 finite numbers, w and h >= 0)'
_GROUND_TRUTH: dict[str, tuple[Rule, ...]] = {
    "images": tuple(Rule(key, _is_id_list, f'[has|have] a "{key}" that is not a list of integer category ids',
                         optional=True) for key in ("neg_category_ids", "not_exhaustive_category_ids")),
    "annotations": (Rule("bbox", _is_sized_xywh, _BOX),
                    Rule("area", lambda v: is_finite_number(v) and v >= 0,
                         '[has|have] an "area" that is not a finite number >= 0', optional=True),
                    Rule("iscrowd", lambda v: v in (0, 1) and not isinstance(v, float),
                         '[has|have] an "iscrowd" that is not 0 or 1', optional=True)),
}
_SEGMENTATION = Rule("segmentation", lambda v: isinstance(v, (list, dict)),
                     '[has|have] no "segmentation" (polygons or RLE; mask AP needs one)')
_RESULTS = (OBJECT_RULE, Rule("image_id", is_int, '[has|have] no integer "image_id"'),
            Rule("category_id", is_int, '[has|have] no integer "category_id"'),
            Rule("score", is_finite_number, '[has|have] a "score" that is missing, not a number, NaN or infinite'),
            Rule("bbox", _is_sized_xywh, _BOX, optional=True),
            Rule(None, lambda entry: "bbox" in entry or "segmentation" in entry,
                 '[has|have] neither "bbox" nor "segmentation"'))
_LISTS = {"image_id": "images", "category_id": "categories"}
_UNLISTED = {"image_id": "[names|name] an image id that is not in the annotation's images",
             "category_id": "[names|name] a category id that is not in the annotation's categories"}


def check_ground_truth(document: Mapping[str, Any], path: str | Path, *, masks: bool = False,
                       warn: bool = True) -> None:
    """Hold an annotation (read by :func:`~regionspot.datasets.coco_format.read_annotations`, or
    held to :func:`~regionspot.datasets.coco_format.coco_document`) to what an evaluation needs.
    ``path``: the file, or words naming the input.

    Refused (DatasetError naming ``path``, the count and the first entry), as each would change AP
    without a sign or fail later: no images or no categories, a ``bbox`` that is not 4 finite
    numbers with w, h >= 0 (a NaN box matches nothing), an ``area`` that is not a finite number
    >= 0, an ``iscrowd`` other than 0/1, LVIS
    ``neg_category_ids`` / ``not_exhaustive_category_ids`` that are not lists of ids, an image id
    listed twice (a model run would evaluate the image twice; its size is ambiguous), a category
    id listed twice (two names for one id), and with ``masks`` an annotation without
    ``segmentation``.

    Warned about with ``warn`` (one ``warning: ...`` line on the log, with the count and the
    first entry), as they change no AP: annotations of an image or category id the file does not
    list (left out of the evaluation, as pycocotools and lvis-api leave them out; a model run does
    not ask about their boxes either), and annotation ids used more than once (each entry is
    evaluated).
    """
    empty = [kind for kind in ("images", "categories") if not document[kind]]
    if empty:
        raise DatasetError(f"{path} lists no {' and no '.join(empty)}: there is nothing to evaluate")
    annotation_rules = (*_GROUND_TRUTH["annotations"], _SEGMENTATION) if masks else _GROUND_TRUTH["annotations"]
    enforce(path, document["images"], "images", _GROUND_TRUTH["images"])
    enforce(path, document["annotations"], "annotations", annotation_rules)
    for kind in ("images", "categories"):
        extra, first = repeated([entry["id"] for entry in document[kind]])
        if extra:
            raise DatasetError(f"{path}: {counted(extra, kind)} {inflect(extra, '[repeats|repeat]')} an id listed "
                               f"before (the first: id {first}); each of the {kind} must have its own id")
    if warn:
        _warn_about(document, path)


def _warn_about(document: Mapping[str, Any], path: str | Path) -> None:
    """The ``warning:`` lines of :func:`check_ground_truth`."""
    annotations = document["annotations"]
    for key in _LISTS:
        unlisted = _unlisted(annotations, document, key)
        if unlisted:
            found = count_text(annotations, unlisted, "annotations", _UNLISTED[key], key)
            left_out = inflect(len(unlisted), "[it is|they are] left out of the evaluation")
            LOGGER.warning(f"warning: {path}: {found}; {left_out}")
    extra, first = repeated([a["id"] for a in annotations if "id" in a])
    if extra:
        LOGGER.warning(f"warning: {path}: {counted(extra, 'annotations')} {inflect(extra, '[repeats|repeat]')} an "
                       f"annotation id listed before (the first: id {first}); each is evaluated, but the file may "
                       "have been merged wrongly")


def check_results(results: Any, document: Mapping[str, Any], path: str | Path, *, masks: bool = False
                  ) -> list[dict]:
    """A COCO results file (``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...]``)
    checked against its annotation ``document``; returned as given. ``path``: the file, or words
    naming the input.

    Refused (DatasetError naming ``path``, the count and the first entry's index; nothing is only
    warned about): what :func:`check_detections` refuses, and an ``image_id`` or ``category_id``
    not in the annotation (pycocotools refuses unknown images too; an unknown category is mostly a
    0-based or contiguous id mapping, which would score 0 AP).
    """
    check_detections(results, path, masks=masks)
    for key in _LISTS:
        unlisted = _unlisted(results, document, key)
        if unlisted:
            raise DatasetError(f"{path}: {count_text(results, unlisted, 'detections', _UNLISTED[key], key)}")
    return results


def check_detections(results: Any, path: str | Path, *, masks: bool = False) -> list[dict]:
    """COCO results checked on their own (not against an annotation); returned as given.
    DatasetError naming ``path`` for anything but a list of objects; an ``image_id`` or
    ``category_id`` that is not an integer; a ``score`` that is missing, not a number, NaN or
    infinite; a ``bbox`` that is not 4 finite numbers with w, h >= 0; neither ``bbox`` nor
    ``segmentation``; with ``masks``, no ``segmentation``."""
    if not isinstance(results, list):
        raise DatasetError(f"{path}: a COCO results file is a JSON list of detections, got {json_type(results)}")
    enforce(path, results, "detections", (*_RESULTS, _SEGMENTATION) if masks else _RESULTS)
    return results


def _unlisted(entries: list[dict[str, Any]], document: Mapping[str, Any], key: str) -> list[int]:
    """Indices of the entries whose ``key`` (image_id or category_id) the annotation does not list."""
    listed = {entry["id"] for entry in document[_LISTS[key]]}
    return [index for index, entry in enumerate(entries) if entry[key] not in listed]


# ----------------------------------------------------------------------------- pairs and boxes
@dataclass(frozen=True)
class ImagePairs:
    """An image's kept (box, category) pairs, best first: ``box_index`` int64 [P] rows of the
    image's boxes, ``vocab_index`` int64 [P] vocabulary indices, ``scores`` float64 [P] final
    scores (class score x proposal score)."""

    box_index: np.ndarray
    vocab_index: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def select_pairs(topk_ids: np.ndarray, topk_scores: np.ndarray, proposal_scores: np.ndarray | None,
                 pairs_per_image: int, pairs_per_box: int | None = None) -> ImagePairs:
    """The image's best pairs. ``topk_ids`` / ``topk_scores``: [R, k] per box, best first (a
    :class:`~regionspot.results.RegionResult`'s); ``proposal_scores``: [R] in [0, 1] or None
    (all 1). Each box contributes its first ``pairs_per_box`` (None: all k) pairs, scored
    class x proposal; the ``pairs_per_image`` best over the image are kept, ties in box then
    rank order."""
    ids = np.asarray(topk_ids, dtype=np.int64)
    scores = np.asarray(topk_scores, dtype=np.float64)
    if ids.ndim != 2 or ids.shape != scores.shape:
        raise ValueError(f"topk_ids {ids.shape} and topk_scores {scores.shape} must both be [R, k]")
    if pairs_per_image < 1 or (pairs_per_box is not None and pairs_per_box < 1):
        raise ValueError("pairs_per_image and pairs_per_box must be >= 1")
    keep = ids.shape[1] if pairs_per_box is None else min(pairs_per_box, ids.shape[1])
    ids, scores = ids[:, :keep], scores[:, :keep]
    if proposal_scores is not None:
        weights = np.asarray(proposal_scores, dtype=np.float64).reshape(-1)
        if weights.shape[0] != ids.shape[0]:
            raise ValueError(f"{weights.shape[0]} proposal scores for {ids.shape[0]} boxes")
        scores = scores * weights[:, None]
    flat = scores.reshape(-1)
    order = np.argsort(-flat, kind="stable")[:pairs_per_image]
    return ImagePairs(box_index=(order // max(keep, 1)).astype(np.int64), vocab_index=ids.reshape(-1)[order],
                      scores=flat[order])


def pairs_to_coco(image_id: int, boxes: np.ndarray, pairs: ImagePairs, category_ids: Sequence[int],
                  rles: Sequence[Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """COCO results, one per pair: ``bbox`` xywh of ``boxes[box_index]`` (xyxy [R, 4]),
    ``category_id = category_ids[vocab_index]``, the pair's score, and the box's RLE mask
    (``rles[box_index]``, one shared dict per box) when ``rles`` is given."""
    xywh = xyxy_to_xywh(np.asarray(boxes, dtype=np.float64).reshape(-1, 4))
    results = []
    columns = (pairs.box_index.tolist(), pairs.vocab_index.tolist(), pairs.scores.tolist())
    for box, vocab, score in zip(*columns, strict=True):
        entry: dict[str, Any] = {"image_id": int(image_id), "category_id": int(category_ids[vocab]),
                                 "bbox": [round(float(v), 2) for v in xywh[box]], "score": float(score)}
        if rles is not None:
            entry["segmentation"] = rles[box]
        results.append(entry)
    return results


def frequency_tags(categories: Sequence[Mapping[str, Any]], frequencies: str | None,
                   annotations: str | Path) -> dict[int, str] | None:
    """LVIS frequency tag ('r', 'c' or 'f') per category id, for APr/APc/APf: from the
    ``frequencies`` file when given, else from the ``annotations`` file's categories; None when
    neither has tags. DatasetError naming the file the tags came from when they are malformed."""
    try:
        return resolve_frequencies(categories, frequencies)
    except (ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise DatasetError(f"frequency tags from {frequencies or annotations}: {exc}") from None


def category_index(categories: Sequence[Mapping[str, Any]]) -> list[int]:
    """Category ids in increasing order: ``ids[vocab index]`` for a vocabulary built from the
    annotation's categories in id order."""
    return sorted(int(c["id"]) for c in categories)


def ground_truth_boxes(annotations: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """The non-crowd annotation boxes of one image, COCO xywh -> float64 [G, 4] xyxy. Crowd
    regions are left out: they cover several objects, and the evaluator ignores detections
    matched to them anyway."""
    boxes = [a["bbox"] for a in annotations if not a.get("iscrowd", 0)]
    return xywh_to_xyxy(np.asarray(boxes, dtype=np.float64).reshape(-1, 4))


def usable_boxes(boxes: np.ndarray, image_size: tuple[int, int], min_side: float = 1.0) -> np.ndarray:
    """Indices int64 [K] of the boxes (xyxy [R, 4]) that are finite and, clipped to the (H, W)
    image, at least ``min_side`` pixels wide and high (what the predictor accepts)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    finite = np.asarray(np.isfinite(boxes).all(axis=1))
    sizes = box_sizes(clip_boxes(np.where(finite[:, None], boxes, 0.0), image_size))
    return np.flatnonzero(finite & (sizes >= min_side).all(axis=1)).astype(np.int64)


def classes_per_box(vocabulary_size: int, pairs_per_image: int, pairs_per_box: int | None) -> int:
    """How many categories to ask the classifier for per box: ``pairs_per_box`` (None: all,
    since one box may hold all of an image's best pairs), never more than the vocabulary or
    ``pairs_per_image``."""
    wanted = pairs_per_image if pairs_per_box is None else min(pairs_per_box, pairs_per_image)
    return max(1, min(vocabulary_size, wanted))


def detections_cap(federated: bool, max_dets_per_image: int | None) -> str:
    """The evaluator's cap in words (``max_dets_per_image`` as :class:`ProtocolConfig`'s)."""
    if max_dets_per_image == 0:
        return "no per-image cap" + ("" if federated else "; COCO AP keeps 100 per image and category")
    if max_dets_per_image is None:
        return ("at most 300 detections per image (LVIS rule)" if federated
                else "no per-image cap; COCO AP keeps at most 100 detections per image and category")
    return f"at most {max_dets_per_image} detections per image over all categories"


def zero_area_text(federated: bool, keep: bool) -> str:
    """The rule for detections and ground truth of area 0 in words: left out under LVIS rules
    unless ``keep`` (lvis-api's rule), kept under COCO rules (pycocotools')."""
    area = "a detection's area is its box's w*h, else (no bbox; mask fixed AP) its mask's"
    if federated and not keep:
        return (f"detections and ground truth of area 0 are left out, detections after the caps (lvis-api's rule; "
                f"{area})")
    why = "--keep-zero-area; lvis-api leaves them out" if federated else "as pycocotools"
    return f"detections and ground truth of area 0 are kept ({why}): a zero-area detection is a false positive"


def fixed_ap_text(budget: int, masks: bool) -> str:
    """The fixed-AP protocol in words (``masks``: mask fixed AP too)."""
    kinds = ("box and mask; mask fixed AP sizes detections by their mask area, as the fixed-AP script"
             if masks else "box")
    return f"top {budget} detections per category over the dataset, no per-image cap ({kinds})"


def evaluator_cap(federated: bool, max_dets_per_image: int | None) -> tuple[tuple[int, ...] | None, Any]:
    """(``max_dets``, ``max_dets_per_image``) arguments of :class:`DetectionEvaluator` for the
    protocol's cap: None keeps the rules' defaults; N > 0 sets the image cap (and, under LVIS
    rules, the AR limit) to N; 0 removes the image cap."""
    if max_dets_per_image is None:
        return None, "auto"
    if max_dets_per_image == 0:
        return None, None
    return ((max_dets_per_image,) if federated else None), max_dets_per_image


def rules_name(federated: bool) -> str:
    """The evaluation rules by name."""
    return "LVIS federated rules" if federated else "COCO rules"


@dataclass(frozen=True)
class EvaluatorSettings:
    """What a :class:`~regionspot.eval.evaluator.DetectionEvaluator` is given for a protocol:
    ``max_dets`` and ``max_dets_per_image`` (see :func:`evaluator_cap`), ``drop_zero_area``
    (None: the rules' own; False: kept), and ``rules``, the rules and their cap in words."""

    max_dets: tuple[int, ...] | None
    max_dets_per_image: Any
    drop_zero_area: bool | None
    rules: str


def evaluator_settings(federated: bool, max_dets_per_image: int | None, keep_zero_area: bool) -> EvaluatorSettings:
    """The evaluator's settings for the rules, the protocol's cap and its zero-area choice."""
    max_dets, per_image = evaluator_cap(federated, max_dets_per_image)
    return EvaluatorSettings(max_dets, per_image, False if keep_zero_area else None,
                             f"{rules_name(federated)}, {detections_cap(federated, max_dets_per_image)}")


def iou_types(masks: bool) -> tuple[str, ...]:
    """The AP types evaluated: boxes, and masks when asked."""
    return ("bbox", "segm") if masks else ("bbox",)


#: The report section of fixed AP for each AP type.
FIXED_AP_SECTIONS = {"bbox": "fixed_ap", "segm": "fixed_ap_segm"}


def ap_section(evaluator: DetectionEvaluator, rules: str) -> dict[str, Any]:
    """A report section ``{"federated", "rules", "metrics", "per_category"}`` of an evaluator
    that has all its detections."""
    metrics = evaluator.evaluate()
    return {"federated": evaluator.federated, "rules": rules, "metrics": metrics,
            "per_category": evaluator.per_category()}


def evaluator_image_cap(federated: bool, max_dets_per_image: int | None) -> int | None:
    """The evaluator's per-image cap over all categories: LVIS 300 by default, N when set, None
    for no cap (COCO rules by default, or 0)."""
    if max_dets_per_image is None:
        return 300 if federated else None
    return max_dets_per_image or None


def stored_pairs(pairs_per_image: int, image_cap: int | None, keep_all: bool) -> int:
    """How many of an image's best pairs must be kept to evaluate it: the evaluator keeps only
    an image's ``image_cap`` best detections (ties: earlier first, the pairs' own order), so
    storing more changes no number; all ``pairs_per_image`` when ``keep_all`` (fixed AP, which
    has no per-image cap, or saved detections)."""
    return pairs_per_image if keep_all or image_cap is None else min(pairs_per_image, image_cap)
