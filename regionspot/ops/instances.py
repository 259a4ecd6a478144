"""Every instance of each query among scored regions: threshold per query, then non-maximum
suppression per query by box IoU or by any given pairwise overlap, such as mask IoU (the
selection step of ``RegionPredictor.find``). Pure functions; boxes xyxy absolute pixels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from regionspot.ops.boxes import nms

#: Default ``find`` thresholds by the recognizer's score kind. Starting points, not calibrated
#: (no trained head's scores were available here): a focal-loss sigmoid head scores low, a
#: softmax over queries plus distractors splits the mass among the names.
FIND_THRESHOLDS = {"sigmoid": 0.3, "softmax": 0.5}


def find_thresholds(threshold: float | Sequence[float] | None, queries: int, score_kind: str) -> np.ndarray:
    """One threshold per query, float64 [Q], each in [0, 1] (ValueError otherwise); None: the
    :data:`FIND_THRESHOLDS` default of ``score_kind``."""
    if threshold is None:
        threshold = FIND_THRESHOLDS.get(score_kind, 0.5)
    values = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (queries,)) if np.ndim(threshold) == 0 \
        else np.asarray(threshold, dtype=np.float64)
    if values.shape != (queries,) or not ((values >= 0) & (values <= 1)).all():
        raise ValueError(f"threshold must be one value or one per query ({queries}), each in [0, 1]; got {threshold!r}")
    return values


@dataclass(frozen=True)
class Instances:
    """Selected (region, query) pairs, best score first: ``regions`` int64 [N] row indices of
    the scored regions, ``queries`` int64 [N] query indices, ``scores`` float64 [N]."""

    regions: np.ndarray
    queries: np.ndarray
    scores: np.ndarray


def nms_by_overlap(overlaps: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression on a precomputed pairwise overlap ``overlaps`` [N, N]
    (e.g. mask IoU) of N items scored ``scores`` [N]: from the best score down, an item is kept
    unless it overlaps an already kept one by more than ``iou_threshold``. Equal scores keep
    input order. Returns int64 indices of the kept items, best first."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    kept: list[int] = []
    while order.size:
        best, order = int(order[0]), order[1:]
        kept.append(best)
        order = order[overlaps[best, order] <= iou_threshold]
    return np.asarray(kept, dtype=np.int64)


def select_instances(scores: np.ndarray, boxes: np.ndarray, thresholds: np.ndarray, nms_iou: float,
                     max_per_query: int, overlaps: np.ndarray | None = None) -> Instances:
    """``scores`` [R, Q] of R regions (``boxes`` [R, 4]) for Q queries; ``thresholds`` [Q].

    For each query: the regions scoring at least its threshold, best first, minus any region
    that overlaps a better one of the same query by more than ``nms_iou``, at most
    ``max_per_query``. Overlap is box IoU, or ``overlaps`` [R, R] when given (e.g. mask IoU;
    only the rows and columns of regions above some threshold are read). A region may be kept
    for several queries. All queries' instances are returned together, best score first
    (ties: query order, then region order)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] != len(boxes) or len(thresholds) != scores.shape[1]:
        raise ValueError(f"scores must be [R, Q] for {len(boxes)} boxes and {len(thresholds)} thresholds, "
                         f"got shape {scores.shape}")
    if overlaps is not None and overlaps.shape != (len(boxes), len(boxes)):
        raise ValueError(f"overlaps must be [R, R] for {len(boxes)} boxes, got shape {overlaps.shape}")
    regions, queries, kept_scores = [], [], []
    for query in range(scores.shape[1]):
        candidates = np.flatnonzero(scores[:, query] >= thresholds[query])
        if not candidates.size:
            continue
        if overlaps is None:
            kept = nms(boxes[candidates], scores[candidates, query], nms_iou)
        else:
            kept = nms_by_overlap(overlaps[np.ix_(candidates, candidates)], scores[candidates, query], nms_iou)
        survivors = candidates[kept][:max_per_query]
        regions.append(survivors)
        queries.append(np.full(len(survivors), query))
        kept_scores.append(scores[survivors, query])
    if not regions:
        empty = np.zeros(0, dtype=np.int64)
        return Instances(empty, empty.copy(), np.zeros(0))
    region_array, query_array, score_array = np.concatenate(regions), np.concatenate(queries), \
        np.concatenate(kept_scores)
    order = np.lexsort((region_array, query_array, -score_array))
    return Instances(region_array[order].astype(np.int64), query_array[order].astype(np.int64), score_array[order])
