from __future__ import annotations

import numpy as np
import pytest
import torch

from regionspot.ops.boxes import (BoxError, as_box_array, parse_boxes_text, validate_boxes, xywh_to_xyxy,
                                  xyxy_to_xywh)


def test_validate_clips_to_image_and_accepts_containers():
    for boxes in ([[-10, -5, 50, 40]], np.array([[-10, -5, 50, 40]]), torch.tensor([[-10.0, -5, 50, 40]]),
                  [-10, -5, 50, 40]):
        out = validate_boxes(boxes, (30, 40))
        assert out.tolist() == [[0, 0, 40, 30]]


@pytest.mark.parametrize("boxes, message", [
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
