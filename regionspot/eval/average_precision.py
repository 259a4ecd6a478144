"""COCO-style average precision for boxes and masks, vectorised with numpy, with LVIS v1
federated rules. Written here; it follows the published COCO and LVIS protocols so that its
numbers agree with pycocotools' ``COCOeval`` and with lvis-api's ``LVISEval``.

Conventions: boxes are xywh in absolute pixels (COCO results format); masks are COCO RLE dicts
``{"size": [H, W], "counts": bytes | str}``; metrics are fractions in [0, 1], NaN where nothing
could be measured (pycocotools prints -1 there).

The protocol:

- IoU thresholds 0.50:0.05:0.95 (T = 10); 101 recall points 0:0.01:1 (R = 101); precision at a
  recall point is the best precision at any recall at or above it (interpolated).
- Area ranges (bounds inclusive): all [0, 1e10], small [0, 32^2], medium [32^2, 96^2], large
  [96^2, 1e10]. A ground truth is compared by its annotated ``area``, a detection by its own area.
  A ground truth outside the range is ignored; an unmatched detection outside it is ignored.
- Greedy matching per (image, category): detections by descending score (stable sort), each takes
  the still-free ground truth of highest IoU >= threshold (ties: the later one), non-ignored ground
  truth first, ignored ones only when no non-ignored one qualifies. A detection matched to an
  ignored ground truth is ignored (neither true nor false positive).
- Crowd ground truth: IoU = intersection / detection area; it stays free after a match, so it
  absorbs any number of detections.
- ``max_dets`` (COCO mode): as pycocotools, a limit per (image, category): only the top
  ``max_dets[-1]`` detections of each pair are matched, and AR@d / AP use the top d of each pair.
  A per-image cap over all categories is the caller's job (:func:`top_per_image`).
- ``federated=True`` (LVIS v1): for each image only categories that are annotated in it (its
  positive set) or listed in its ``neg_category_ids`` are evaluated; a detection of any other
  category is dropped (not counted at all); a detection of a negative category, having no ground
  truth to match, is a false positive; in the image's ``not_exhaustive_category_ids`` unmatched
  detections are ignored while matched ones stay true positives. No per-(image, category) limit:
  LVIS caps detections per image (300, over all categories) before evaluation, which the caller does
  with :func:`top_per_image`; ``max_dets`` only labels AR then. lvis-api also leaves out detections
  and ground truth of area 0 (after the cap); that too is the caller's (``DetectionEvaluator``'s).
- Per-category AP is averaged into AP (and APr/APc/APf by frequency tag). Categories without
  any non-ignored ground truth in the evaluated images (for an area range) have no AP and are
  left out of every average, as in COCO and LVIS.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from pycocotools import mask as mask_utils

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
AREA_RANGES: tuple[tuple[str, float, float], ...] = (
    ("all", 0.0, 1e5**2), ("small", 0.0, 32.0**2), ("medium", 32.0**2, 96.0**2), ("large", 96.0**2, 1e5**2),
)
FREQUENCY_GROUPS = ("r", "c", "f")


@dataclass(frozen=True, eq=False)
class APParams:
    """Evaluation settings. ``max_dets``: increasing detection limits (see module docstring);
    ``federated``: LVIS rules; ``iou_thrs`` [T]; ``rec_thrs`` [R]; ``area_ranges``: (name, lo, hi),
    must include "all" first and may name "small", "medium", "large"."""

    max_dets: tuple[int, ...] = (1, 10, 100)
    federated: bool = False
    iou_thrs: np.ndarray = field(default_factory=IOU_THRESHOLDS.copy)
    rec_thrs: np.ndarray = field(default_factory=RECALL_THRESHOLDS.copy)
    area_ranges: tuple[tuple[str, float, float], ...] = AREA_RANGES


@dataclass(eq=False)
class GroundTruth:
    """N annotations of a dataset. ``image_ids``, ``category_ids``: int64 [N]; ``boxes``: float64
    [N, 4] xywh; ``areas``: float64 [N]; ``crowd``, ``ignore``: bool [N]; ``masks``: N RLE dicts or
    None (box evaluation). ``images``: int64 [I] all image ids, sorted; ``categories``: int64 [K]
    all category ids, sorted; ``neg_category_ids`` / ``not_exhaustive_category_ids``: per image id
    (federated mode only; missing images have empty sets)."""

    image_ids: np.ndarray
    category_ids: np.ndarray
    boxes: np.ndarray
    areas: np.ndarray
    crowd: np.ndarray
    ignore: np.ndarray
    masks: list[dict] | None
    images: np.ndarray
    categories: np.ndarray
    neg_category_ids: Mapping[int, frozenset[int]] = field(default_factory=dict)
    not_exhaustive_category_ids: Mapping[int, frozenset[int]] = field(default_factory=dict)


@dataclass(eq=False)
class Detections:
    """D detections. ``image_ids``, ``category_ids``: int64 [D]; ``boxes``: float64 [D, 4] xywh;
    ``scores``: float64 [D]; ``areas``: float64 [D]; ``masks``: D RLE dicts or None."""

    image_ids: np.ndarray
    category_ids: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    areas: np.ndarray
    masks: list[dict] | None = None

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def take(self, index: np.ndarray) -> Detections:
        """The detections at ``index`` (int [D'] or bool [D]), in that order."""
        index = np.flatnonzero(index) if index.dtype == bool else np.asarray(index, dtype=np.int64)
        masks = None if self.masks is None else [self.masks[i] for i in index]
        return Detections(self.image_ids[index], self.category_ids[index], self.boxes[index],
                          self.scores[index], self.areas[index], masks)


@dataclass(eq=False)
class APResult:
    """``precision``: float64 [T, R, K, A, M] (-1 where a category has no ground truth);
    ``recall``: float64 [T, K, A, M] (same); ``num_gt``: int64 [K, A] non-ignored ground truth;
    ``categories``: int64 [K]; M indexes ``params.max_dets``, A ``params.area_ranges``."""

    precision: np.ndarray
    recall: np.ndarray
    num_gt: np.ndarray
    categories: np.ndarray
    params: APParams


def box_iou_xywh(dt: np.ndarray, gt: np.ndarray, crowd: np.ndarray | None = None) -> np.ndarray:
    """IoU of xywh boxes, dt [D, 4] x gt [G, 4] -> [D, G]. Against a crowd gt (``crowd`` bool [G])
    the denominator is the detection's area alone."""
    dt = np.asarray(dt, dtype=np.float64).reshape(-1, 4)
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
    width = np.minimum(dt[:, None, 0] + dt[:, None, 2], gt[None, :, 0] + gt[None, :, 2]) - np.maximum(
        dt[:, None, 0], gt[None, :, 0])
    height = np.minimum(dt[:, None, 1] + dt[:, None, 3], gt[None, :, 1] + gt[None, :, 3]) - np.maximum(
        dt[:, None, 1], gt[None, :, 1])
    inter = np.clip(width, 0.0, None) * np.clip(height, 0.0, None)
    dt_area = (dt[:, 2] * dt[:, 3])[:, None]
    union = dt_area + (gt[:, 2] * gt[:, 3])[None, :] - inter
    if crowd is not None:
        union = np.where(np.asarray(crowd, dtype=bool)[None, :], dt_area, union)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
    return np.where(inter > 0, iou, 0.0)


def rle_iou(dt: Sequence[dict], gt: Sequence[dict], crowd: np.ndarray) -> np.ndarray:
    """IoU of RLE masks, dt (D) x gt (G) -> float64 [D, G] (pycocotools.mask.iou), crowd as above."""
    if not len(dt) or not len(gt):
        return np.zeros((len(dt), len(gt)))
    return np.asarray(mask_utils.iou(list(dt), list(gt), [int(c) for c in crowd]), dtype=np.float64)


def match_detections(ious: np.ndarray, gt_ignore: np.ndarray, crowd: np.ndarray,
                     iou_thrs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Greedy COCO matching of D detections (rows of ``ious`` [D, G], best score first) to G ground
    truths, for A ignore patterns (``gt_ignore`` bool [A, G], one per area range) and T thresholds
    at once. Returns (matched, matched_to_ignored), both bool [A, T, D]."""
    num_dt, num_gt = ious.shape
    shape = (gt_ignore.shape[0], len(iou_thrs), num_dt)
    matched, on_ignored = np.zeros(shape, dtype=bool), np.zeros(shape, dtype=bool)
    if num_dt == 0 or num_gt == 0:
        return matched, on_ignored
    thr = np.minimum(iou_thrs, 1 - 1e-10)[None, :, None]
    ignored = gt_ignore[:, None, :]
    reusable = np.asarray(crowd, dtype=bool)[None, None, :]
    taken = np.zeros((shape[0], shape[1], num_gt), dtype=bool)
    for d in np.flatnonzero(ious.max(axis=1) >= thr.min()):  # the others match nothing
        row = ious[d][None, None, :]
        free = (row >= thr) & ~(taken & ~reusable)
        regular = free & ~ignored
        has_regular = regular.any(axis=-1)
        pool = np.where(has_regular[..., None], regular, free & ignored)
        found = pool.any(axis=-1)
        best = num_gt - 1 - np.argmax(np.where(pool, row, -1.0)[..., ::-1], axis=-1)  # last of the max
        matched[:, :, d] = found
        on_ignored[:, :, d] = found & ~has_regular
        a_idx, t_idx = np.nonzero(found)
        taken[a_idx, t_idx, best[a_idx, t_idx]] = True
    return matched, on_ignored


def precision_recall(tp: np.ndarray, fp: np.ndarray, num_gt: int,
                     rec_thrs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """From bool ``tp``, ``fp`` [T, N] (detections of one category over all images, by descending
    score) and the number of non-ignored ground truths -> (interpolated precision [T, R] at the
    recall points ``rec_thrs`` [R], 0 beyond the reached recall; final recall [T])."""
    num_thrs, count = tp.shape
    tp_sum = np.cumsum(tp, axis=1).astype(np.float64)
    fp_sum = np.cumsum(fp, axis=1).astype(np.float64)
    recall_curve = tp_sum / num_gt
    precision_curve = tp_sum / (fp_sum + tp_sum + np.spacing(1))
    envelope = np.maximum.accumulate(precision_curve[:, ::-1], axis=1)[:, ::-1]
    precision = np.zeros((num_thrs, len(rec_thrs)))
    for t in range(num_thrs):
        idx = np.searchsorted(recall_curve[t], rec_thrs, side="left")
        valid = idx < count
        precision[t, valid] = envelope[t, idx[valid]]
    final_recall = recall_curve[:, -1] if count else np.zeros(num_thrs)
    return precision, final_recall


def top_per_image(dt: Detections, cap: int) -> np.ndarray:
    """Indices (ascending) of each image's ``cap`` highest-scoring detections over all categories
    (ties: earlier first), the LVIS per-image limit."""
    return _top_per_group(dt.image_ids, dt.scores, cap)


def top_per_category(dt: Detections, budget: int) -> np.ndarray:
    """Indices (ascending) of each category's ``budget`` highest-scoring detections over the whole
    dataset (ties: earlier first), the per-category budget of the LVIS "fixed AP" protocol."""
    return _top_per_group(dt.category_ids, dt.scores, budget)


def _top_per_group(keys: np.ndarray, scores: np.ndarray, limit: int) -> np.ndarray:
    order = np.lexsort((np.arange(len(keys)), -scores, keys))
    return np.sort(order[_rank_in_runs(keys[order]) < limit])


def _rank_in_runs(*sorted_keys: np.ndarray) -> np.ndarray:
    """Position of each element inside its run of equal key tuples (keys sorted together),
    each key [N] -> int64 [N]."""
    count = len(sorted_keys[0])
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    change = np.zeros(count, dtype=bool)
    change[0] = True
    for key in sorted_keys:
        change[1:] |= key[1:] != key[:-1]
    starts = np.flatnonzero(change)
    return np.arange(count) - np.repeat(starts, np.diff(np.r_[starts, count]))


def federated_masks(gt: GroundTruth, dt: Detections) -> tuple[np.ndarray, np.ndarray]:
    """LVIS rules per detection -> (evaluated bool [D]: its category is annotated in its image or
    listed in the image's ``neg_category_ids``; not_exhaustive bool [D]: its category is in the
    image's ``not_exhaustive_category_ids``)."""
    base = int(max(gt.categories.max(initial=0), dt.category_ids.max(initial=0))) + 1

    def keys(pairs: list[tuple[int, int]] | tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        images, cats = (np.array(pairs, dtype=np.int64).reshape(-1, 2).T if isinstance(pairs, list) else pairs)
        return images.astype(np.int64) * base + cats.astype(np.int64)

    positive = keys((gt.image_ids, gt.category_ids))
    negative = keys([(i, c) for i, cats in gt.neg_category_ids.items() for c in cats])
    partial = keys([(i, c) for i, cats in gt.not_exhaustive_category_ids.items() for c in cats])
    dt_keys = keys((dt.image_ids, dt.category_ids))
    return np.isin(dt_keys, positive) | np.isin(dt_keys, negative), np.isin(dt_keys, partial)


def _evaluated_rows(gt: GroundTruth, dt: Detections, params: APParams,
                    images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows taking part -> (gt rows sorted by (category, image, row); dt rows sorted by (category,
    image, -score, row); rank of each dt row within its (image, category) pair; not-exhaustive
    flag per dt row), with the federated filter and the COCO per-pair limit applied."""
    gt_rows = np.flatnonzero(np.isin(gt.image_ids, images))
    gt_rows = gt_rows[np.lexsort((gt_rows, gt.image_ids[gt_rows], gt.category_ids[gt_rows]))]
    keep = np.isin(dt.image_ids, images) & np.isin(dt.category_ids, gt.categories)
    partial = np.zeros(len(dt), dtype=bool)
    if params.federated:
        evaluated, partial = federated_masks(gt, dt)
        keep &= evaluated
    dt_rows = np.flatnonzero(keep)
    dt_rows = dt_rows[np.lexsort((dt_rows, -dt.scores[dt_rows], dt.image_ids[dt_rows], dt.category_ids[dt_rows]))]
    rank = _rank_in_runs(dt.category_ids[dt_rows], dt.image_ids[dt_rows])
    if not params.federated:
        within = rank < params.max_dets[-1]
        dt_rows, rank = dt_rows[within], rank[within]
    return gt_rows, dt_rows, rank, partial[dt_rows]


def evaluate(gt: GroundTruth, dt: Detections, params: APParams,
             image_ids: np.ndarray | None = None) -> APResult:
    """AP over the images ``image_ids`` (default: all of ``gt.images``); see the module docstring
    for the rules. Detections of images or categories outside the ground truth are not counted."""
    images = gt.images if image_ids is None else np.unique(np.asarray(image_ids, dtype=np.int64))
    gt_rows, dt_rows, rank, partial = _evaluated_rows(gt, dt, params, images)
    num_t, num_k = len(params.iou_thrs), len(gt.categories)
    num_a, num_m = len(params.area_ranges), len(params.max_dets)
    precision = -np.ones((num_t, len(params.rec_thrs), num_k, num_a, num_m))
    recall = -np.ones((num_t, num_k, num_a, num_m))
    num_gt = np.zeros((num_k, num_a), dtype=np.int64)
    gt_cats, dt_cats = gt.category_ids[gt_rows], dt.category_ids[dt_rows]
    g_lo, g_hi = np.searchsorted(gt_cats, gt.categories, "left"), np.searchsorted(gt_cats, gt.categories, "right")
    d_lo, d_hi = np.searchsorted(dt_cats, gt.categories, "left"), np.searchsorted(dt_cats, gt.categories, "right")
    for k in range(num_k):
        if g_lo[k] == g_hi[k]:
            continue  # no ground truth: no AP for this category
        part = slice(d_lo[k], d_hi[k])
        matched, ignored, num_gt[k] = _match_category(gt, dt, gt_rows[g_lo[k]:g_hi[k]], dt_rows[part],
                                                      partial[part], params)
        scores = dt.scores[dt_rows[part]]
        for a in np.flatnonzero(num_gt[k] > 0):
            for m, limit in enumerate(params.max_dets):
                keep = np.ones(len(scores), dtype=bool) if params.federated else rank[part] < limit
                order = np.argsort(-scores[keep], kind="stable")
                hit, skip = matched[a][:, keep][:, order], ignored[a][:, keep][:, order]
                precision[:, :, k, a, m], recall[:, k, a, m] = precision_recall(
                    hit & ~skip, ~hit & ~skip, int(num_gt[k, a]), params.rec_thrs)
    return APResult(precision, recall, num_gt, gt.categories.copy(), params)


def _match_category(gt: GroundTruth, dt: Detections, g_rows: np.ndarray, d_rows: np.ndarray,
                    partial: np.ndarray, params: APParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Match one category image by image. ``g_rows`` / ``d_rows``: rows sorted by image (dt then by
    descending score); ``partial`` bool [D]: not-exhaustive flag. Returns (matched bool [A, T, D],
    ignored bool [A, T, D], non-ignored ground-truth count int64 [A]), D in ``d_rows`` order."""
    lo = np.array([r[1] for r in params.area_ranges])[:, None]
    hi = np.array([r[2] for r in params.area_ranges])[:, None]
    gt_ignore = gt.ignore[g_rows][None, :] | (gt.areas[g_rows][None, :] < lo) | (gt.areas[g_rows][None, :] > hi)
    dt_outside = (dt.areas[d_rows][None, :] < lo) | (dt.areas[d_rows][None, :] > hi)
    shape = (len(params.area_ranges), len(params.iou_thrs), len(d_rows))
    matched, on_ignored = np.zeros(shape, dtype=bool), np.zeros(shape, dtype=bool)
    g_images, d_images = gt.image_ids[g_rows], dt.image_ids[d_rows]
    for image in np.unique(d_images):  # images without detections add only ground truth
        d_part = slice(np.searchsorted(d_images, image, "left"), np.searchsorted(d_images, image, "right"))
        g_part = slice(np.searchsorted(g_images, image, "left"), np.searchsorted(g_images, image, "right"))
        if g_part.start == g_part.stop:
            continue
        g_sel, d_sel = g_rows[g_part], d_rows[d_part]
        if gt.masks is not None and dt.masks is not None:
            ious = rle_iou([dt.masks[i] for i in d_sel], [gt.masks[j] for j in g_sel], gt.crowd[g_sel])
        else:
            ious = box_iou_xywh(dt.boxes[d_sel], gt.boxes[g_sel], gt.crowd[g_sel])
        matched[:, :, d_part], on_ignored[:, :, d_part] = match_detections(
            ious, gt_ignore[:, g_part], gt.crowd[g_sel], params.iou_thrs)
    unmatched_ignored = ~matched & (dt_outside | partial[None, :])[:, None, :]
    return matched, on_ignored | unmatched_ignored, (~gt_ignore).sum(axis=1)


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else float("nan")


def summarize(result: APResult, frequencies: Mapping[int, str] | None = None) -> dict[str, float]:
    """Headline metrics -> {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR@<d>" for each d in
    max_dets, "ARs", "ARm", "ARl"} and, when ``frequencies`` (category id -> 'r' | 'c' | 'f') is
    given, "APr", "APc", "APf". AP and AR use the largest max_dets; NaN where nothing is measured."""
    params, precision, recall = result.params, result.precision, result.recall
    areas = {name: i for i, (name, _, _) in enumerate(params.area_ranges)}
    t50 = int(np.argmin(np.abs(params.iou_thrs - 0.5)))
    t75 = int(np.argmin(np.abs(params.iou_thrs - 0.75)))
    metrics = {
        "AP": _mean_valid(precision[:, :, :, 0, -1]),
        "AP50": _mean_valid(precision[t50, :, :, 0, -1]),
        "AP75": _mean_valid(precision[t75, :, :, 0, -1]),
    }
    for name in ("small", "medium", "large"):
        if name in areas:
            metrics[f"AP{name[0]}"] = _mean_valid(precision[:, :, :, areas[name], -1])
    if frequencies is not None:
        tags = np.array([frequencies.get(int(c), "") for c in result.categories])
        for group in FREQUENCY_GROUPS:
            metrics[f"AP{group}"] = _mean_valid(precision[:, :, tags == group, 0, -1])
    for m, limit in enumerate(params.max_dets):
        metrics[f"AR@{limit}"] = _mean_valid(recall[:, :, 0, m])
    for name in ("small", "medium", "large"):
        if name in areas:
            metrics[f"AR{name[0]}"] = _mean_valid(recall[:, :, areas[name], -1])
    return metrics


def per_category_ap(result: APResult) -> np.ndarray:
    """AP of each category (area "all", largest max_dets) -> float64 [K], NaN without ground truth."""
    table = result.precision[:, :, :, 0, -1]
    valid = (table > -1).all(axis=(0, 1))
    return np.where(valid, table.mean(axis=(0, 1)), np.nan)
