"""The evaluation protocol as pure functions: which boxes an image is asked about, which
(box, category) pairs become detections, and the words that state the protocol in a report.

SPEC "Evaluation": each box is reported with several categories; an image keeps its best
``pairs_per_image`` (box, category) pairs (900 in the authors' release) ranked by the final score
= class score x proposal score (1 for ground-truth boxes); the evaluator then applies its own cap
(LVIS: 300 detections per image). Boxes are xyxy absolute pixels unless named otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from regionspot.ops.boxes import box_sizes, clip_boxes, xywh_to_xyxy, xyxy_to_xywh


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
    for box, vocab, score in zip(pairs.box_index.tolist(), pairs.vocab_index.tolist(), pairs.scores.tolist()):
        entry: dict[str, Any] = {"image_id": int(image_id), "category_id": int(category_ids[vocab]),
                                 "bbox": [round(float(v), 2) for v in xywh[box]], "score": float(score)}
        if rles is not None:
            entry["segmentation"] = rles[box]
        results.append(entry)
    return results


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
    finite = np.isfinite(boxes).all(axis=1)
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


def evaluator_cap(federated: bool, max_dets_per_image: int | None) -> tuple[tuple[int, ...] | None, Any]:
    """(``max_dets``, ``max_dets_per_image``) arguments of :class:`DetectionEvaluator` for the
    protocol's cap: None keeps the rules' defaults; N > 0 sets the image cap (and, under LVIS
    rules, the AR limit) to N; 0 removes the image cap."""
    if max_dets_per_image is None:
        return None, "auto"
    if max_dets_per_image == 0:
        return None, None
    return ((max_dets_per_image,) if federated else None), max_dets_per_image


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
