from __future__ import annotations

import json

import numpy as np

from regionspot.ops.masks import decode_rle, encode_rle, mask_iou


def test_rle_round_trip_and_json():
    rng = np.random.default_rng(0)
    masks = rng.random((3, 17, 23)) > 0.5
    rles = encode_rle(masks)
    json.dumps(rles)
    assert rles[0]["size"] == [17, 23]
    np.testing.assert_array_equal(decode_rle(rles), masks)


def test_mask_iou():
    a = np.zeros((2, 4, 4), bool)
    b = np.zeros((2, 4, 4), bool)
    a[0, :2] = True
    b[0, :1] = True
    np.testing.assert_allclose(mask_iou(a, b), [0.5, 0.0])
