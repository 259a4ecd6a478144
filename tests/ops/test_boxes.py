from __future__ import annotations

import numpy as np
import pytest
import torch

from regionspot.ops.boxes import BoxError, as_box_array, parse_boxes_text, validate_boxes, xywh_to_xyxy, xyxy_to_xywh


def test_validate_clips_to_image_and_accepts_containers():
    for boxes in ([[-10, -5, 50, 40]], np.array([[-10, -5, 50, 40]]), torch.tensor([[-10.0, -5, 50, 40]]),
                  [-10, -5, 50, 40]):
        out = validate_boxes(boxes, (30, 40))
        assert out.tolist() == [[0, 0, 40, 30]]


@pytest.mark.parametrize(("boxes", "message"), [
    ([], "no boxes"),
    ([[0, 0, float("nan"), 5]], "NaN"),
    ([[0, 0, float("inf"), 5]], "NaN or infinite"),
    ([[10, 0, 5, 5]], "inverted"),
    ([[0, 10, 5, 5]], "inverted"),
    ([[200, 200, 300, 300]], "smaller than"),
    ([[5, 5, 5, 20]], "smaller than"),
    ([[1, 2, 3]], r"\[R, 4\]"),
    ([["a", 1, 2, 3]], r"\[R, 4\]"),
])
def test_bad_boxes_raise_clear_errors(boxes, message):
    with pytest.raises(BoxError, match=message):
        validate_boxes(boxes, (100, 100))


def test_error_names_the_offending_indices():
    with pytest.raises(BoxError, match=r"boxes \[1, 3\]"):
        validate_boxes([[0, 0, 5, 5], [5, 0, 1, 5], [0, 0, 9, 9], [9, 9, 1, 1]], (100, 100))


def test_xywh_round_trip():
    boxes = np.array([[1.0, 2.0, 3.0, 4.0], [0, 0, 10, 10]])
    np.testing.assert_allclose(xyxy_to_xywh(xywh_to_xyxy(boxes)), boxes)
    assert xywh_to_xyxy(boxes)[0].tolist() == [1, 2, 4, 6]


def test_parse_inline_boxes():
    assert parse_boxes_text("1,2,3,4; 5,6,7,8;").tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert parse_boxes_text("").shape == (0, 4)
    with pytest.raises(BoxError, match="4 comma-separated"):
        parse_boxes_text("1,2,3")
    with pytest.raises(BoxError, match="not a number"):
        parse_boxes_text("1,2,3,x")


def test_as_box_array_shape():
    assert as_box_array(np.zeros((0, 4))).shape == (0, 4)


# --- box IoU, NMS, boxes of masks ---------------------------------------------------------------

from regionspot.ops.boxes import box_iou_xyxy, masks_to_boxes, nms  # noqa: E402


def _brute_force_iou(a: list[float], b: list[float]) -> float:
    """IoU by counting covered cells of a fine grid (boxes with coordinates on a 0.5 lattice)."""
    ys, xs = np.mgrid[0:40:0.5, 0:40:0.5] + 0.25
    inside_a = (xs > a[0]) & (xs < a[2]) & (ys > a[1]) & (ys < a[3])
    inside_b = (xs > b[0]) & (xs < b[2]) & (ys > b[1]) & (ys < b[3])
    union = (inside_a | inside_b).sum()
    return float((inside_a & inside_b).sum() / union) if union else 0.0


def test_box_iou_matches_counting_and_handles_degenerate_boxes():
    a = [[0, 0, 10, 10], [5, 5, 15, 20], [30, 30, 30, 35]]  # the last has no area
    b = torch.tensor([[0.0, 0, 10, 10], [5, 0, 10, 5], [20, 20, 30, 30], [2.5, 2.5, 7.5, 7.5]])
    iou = box_iou_xyxy(a, b)
    assert iou.shape == (3, 4) and iou.dtype == np.float64
    expected = [[_brute_force_iou(x, y) for y in b.tolist()] for x in a]
    np.testing.assert_allclose(iou, expected, atol=1e-12)
    assert iou[0, 0] == 1.0 and iou[0, 3] == 0.25 and iou[0, 2] == 0.0  # corner-touching boxes do not overlap
    assert box_iou_xyxy(np.zeros((0, 4)), b).shape == (0, 4)


def test_nms_keeps_the_best_of_each_overlapping_group_best_first():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60], [0, 0, 10, 10.5], [51, 50, 61, 60],
                      [100, 0, 110, 10]])
    scores = np.array([0.5, 0.9, 0.3, 0.8, 0.7, 0.1])
    # 1 (0.9) suppresses 0 and 3 (IoU 0.82, 0.79); 4 (0.7) suppresses 2 (IoU 0.82); 5 overlaps nothing
    assert nms(boxes, scores, 0.7).tolist() == [1, 4, 5]
    # at 0.85 only 0 goes, suppressed by the kept 3 (IoU 100/105 = 0.95)
    assert nms(boxes, scores, 0.85).tolist() == [1, 3, 4, 2, 5]
    assert nms(boxes, scores, 0.96).tolist() == [1, 3, 4, 0, 2, 5]  # nothing overlaps that much
    assert sorted(nms(boxes, scores, 1.0).tolist()) == list(range(6))


def test_nms_threshold_is_strict_and_ties_keep_input_order():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 5, 10], [20, 0, 30, 10]])
    scores = np.array([0.5, 0.5, 0.5, 0.5])
    # equal scores: the first of the identical boxes 0 and 1 wins; box 2 has IoU exactly 0.5 with
    # box 0, which is not above a threshold of 0.5
    assert nms(boxes, scores, 0.5).tolist() == [0, 2, 3]
    assert nms(boxes, scores, 0.49).tolist() == [0, 3]
    assert nms(boxes[[1, 0, 2, 3]], scores, 0.49).tolist() == [0, 3]


def test_nms_on_random_boxes_keeps_a_greedy_cover():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 200, (300, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 60, (300, 2))], axis=1)
    scores = rng.uniform(size=300)
    kept = nms(boxes, scores, 0.5)
    assert (np.diff(scores[kept]) <= 0).all() and len(set(kept.tolist())) == len(kept)
    iou = box_iou_xyxy(boxes, boxes)
    assert iou[np.ix_(kept, kept)][np.triu_indices(len(kept), k=1)].max() <= 0.5
    dropped = np.setdiff1d(np.arange(300), kept)
    assert 0 < len(dropped) < 300
    for index in dropped:  # each dropped box overlaps a kept box that scores at least as high
        culprits = kept[iou[index, kept] > 0.5]
        assert culprits.size and scores[culprits].max() >= scores[index]


def test_nms_empty_input_and_bad_scores():
    kept = nms(np.zeros((0, 4)), np.zeros(0), 0.5)
    assert kept.dtype == np.int64 and kept.shape == (0,)
    assert nms([[0, 0, 1, 1]], torch.tensor([0.3]), 0.5).tolist() == [0]
    with pytest.raises(BoxError, match="one score per box"):
        nms(np.zeros((2, 4)), np.zeros(3), 0.5)


def test_masks_to_boxes_follows_pixel_edges():
    masks = np.zeros((4, 6, 8), dtype=bool)
    masks[0, 2, 3] = True  # one pixel
    masks[1, 1:5, 2:7] = True
    masks[2, 0, 0] = masks[2, 5, 7] = True  # two far-apart pixels
    boxes = masks_to_boxes(masks)
    assert boxes.dtype == np.float64
    assert boxes.tolist() == [[3, 2, 4, 3], [2, 1, 7, 5], [0, 0, 8, 6], [0, 0, 0, 0]]
    np.testing.assert_array_equal(masks_to_boxes(torch.from_numpy(masks)), boxes)
    assert masks_to_boxes(np.zeros((0, 6, 8), dtype=bool)).shape == (0, 4)
    with pytest.raises(BoxError, match=r"\[N, H, W\]"):
        masks_to_boxes(masks[0])
