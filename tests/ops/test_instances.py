"""Selecting every instance of each query: per-query thresholds and per-query NMS, with an
oracle scorer (a region's score for a query is its IoU with that query's annotated boxes)."""

from __future__ import annotations

import numpy as np
import pytest

from regionspot.ops.boxes import box_iou_xyxy
from regionspot.ops.instances import nms_by_overlap, select_instances
from regionspot.ops.masks import mask_iou, pairwise_mask_iou

TRUTH = {0: np.array([[10.0, 10.0, 50.0, 50.0], [100.0, 10.0, 140.0, 60.0]]),  # two "dogs"
         1: np.array([[200.0, 100.0, 260.0, 180.0]])}                            # one "umbrella"


def proposals() -> np.ndarray:
    """Each annotated box, a near duplicate of each, and two boxes on nothing."""
    exact = np.concatenate(list(TRUTH.values()))
    return np.concatenate([exact, exact + 2.0, [[300.0, 300.0, 340.0, 330.0], [0.0, 200.0, 30.0, 240.0]]])


def oracle_scores(boxes: np.ndarray) -> np.ndarray:
    return np.stack([box_iou_xyxy(boxes, TRUTH[q]).max(axis=1) for q in sorted(TRUTH)], axis=1)


def test_the_oracle_scorer_finds_exactly_the_annotated_boxes() -> None:
    boxes = proposals()
    found = select_instances(oracle_scores(boxes), boxes, np.array([0.5, 0.5]), nms_iou=0.5, max_per_query=10)
    # the exact boxes, each for its own query; their near duplicates suppressed, nothing on the empty boxes
    assert sorted(zip(found.regions.tolist(), found.queries.tolist(), strict=True)) == [(0, 0), (1, 0), (2, 1)]
    np.testing.assert_allclose(found.scores, 1.0)
    assert (np.diff(found.scores) <= 0).all()  # best first


def test_thresholds_are_per_query_and_nms_too() -> None:
    boxes = proposals()
    scores = oracle_scores(boxes)
    only_umbrellas = select_instances(scores, boxes, np.array([1.1, 0.5]), nms_iou=0.5, max_per_query=10)
    assert only_umbrellas.queries.tolist() == [1] and only_umbrellas.regions.tolist() == [2]
    no_nms = select_instances(scores, boxes, np.array([0.5, 0.5]), nms_iou=1.0, max_per_query=10)
    assert len(no_nms.regions) == 6  # duplicates kept when no overlap is too much
    capped = select_instances(scores, boxes, np.array([0.5, 0.5]), nms_iou=1.0, max_per_query=1)
    assert sorted(capped.queries.tolist()) == [0, 1]


def test_a_region_can_be_two_queries_and_nothing_found_is_empty() -> None:
    boxes = np.array([[0.0, 0.0, 10.0, 10.0]])
    both = select_instances(np.array([[0.9, 0.8]]), boxes, np.array([0.5, 0.5]), 0.5, 5)
    assert both.regions.tolist() == [0, 0] and both.queries.tolist() == [0, 1]
    none = select_instances(np.array([[0.1, 0.2]]), boxes, np.array([0.5, 0.5]), 0.5, 5)
    assert none.regions.shape == (0,) and none.scores.shape == (0,)
    with pytest.raises(ValueError, match=r"scores must be \[R, Q\]"):
        select_instances(np.zeros((2, 2)), boxes, np.array([0.5, 0.5]), 0.5, 5)


def test_mask_overlaps_replace_box_iou() -> None:
    """Two regions whose boxes coincide but whose masks are disjoint (e.g. two people in one
    box) are both kept by mask NMS and one is dropped by box NMS."""
    boxes = np.array([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]])
    masks = np.zeros((3, 64, 64), dtype=bool)
    masks[0, :10, :5] = True
    masks[1, :10, 5:10] = True
    masks[2, 50:60, 50:60] = True
    scores = np.array([[0.9], [0.8], [0.7]])
    by_box = select_instances(scores, boxes, np.array([0.5]), nms_iou=0.5, max_per_query=10)
    by_mask = select_instances(scores, boxes, np.array([0.5]), 0.5, 10, overlaps=pairwise_mask_iou(masks))
    assert by_box.regions.tolist() == [0, 2] and by_mask.regions.tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="overlaps must be"):
        select_instances(scores, boxes, np.array([0.5]), 0.5, 10, overlaps=np.zeros((2, 2)))


def test_nms_by_overlap_is_greedy_from_the_best() -> None:
    overlaps = np.array([[1.0, 0.6, 0.0], [0.6, 1.0, 0.6], [0.0, 0.6, 1.0]])
    # 0 is best; 1 overlaps it and goes; 2 overlaps only the dropped 1, so it stays
    assert nms_by_overlap(overlaps, np.array([0.9, 0.8, 0.7]), 0.5).tolist() == [0, 2]
    assert nms_by_overlap(overlaps, np.array([0.9, 0.8, 0.7]), 0.6).tolist() == [0, 1, 2]  # not above 0.6
    assert nms_by_overlap(overlaps, np.array([0.5, 0.5, 0.5]), 0.5).tolist() == [0, 2]  # ties: input order


def test_pairwise_mask_iou_matches_paired_iou() -> None:
    rng = np.random.default_rng(0)
    masks = rng.random((5, 20, 30)) > 0.6
    masks[4] = False
    table = pairwise_mask_iou(masks)
    for i in range(5):
        np.testing.assert_allclose(table[i], mask_iou(np.repeat(masks[i:i + 1], 5, axis=0), masks))
    assert table[4, 4] == 0.0 and table[0, 0] == 1.0
