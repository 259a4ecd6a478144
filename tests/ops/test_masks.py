from __future__ import annotations

import json

import numpy as np
import pytest

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


def test_compressed_rle_runs_read_pycocotools_strings() -> None:
    from pycocotools import mask as mask_utils

    from regionspot.ops.masks import compressed_rle_runs, rle_covers

    rng = np.random.default_rng(3)
    for _ in range(20):
        runs = [int(v) for v in rng.integers(0, 300, size=int(rng.integers(1, 40)))]
        height, width = 1, sum(runs)
        if width == 0:
            continue
        compressed = mask_utils.frPyObjects({"size": [height, width], "counts": runs}, height, width)["counts"]
        assert compressed_rle_runs(compressed.decode("ascii")) == runs
        assert rle_covers(compressed.decode("ascii"), height, width)
        assert not rle_covers(compressed.decode("ascii"), height, width + 1)
    assert compressed_rle_runs("\x7f") == [-1] and not rle_covers("", 2, 2) and not rle_covers([1, True], 1, 2)


def test_deepest_point_is_farthest_from_the_boundary() -> None:
    from regionspot.ops.masks import deepest_point

    mask = np.zeros((40, 60), dtype=bool)
    mask[10:31, 5:56] = True  # 21 rows x 51 columns: the middle row, at the centre column
    assert deepest_point(mask) == (30.5, 20.5)
    ell = np.zeros((50, 50), dtype=bool)
    ell[5:45, 5:15] = True  # an L: a tall bar and a thicker foot
    ell[30:45, 5:45] = True  # deepest where the two meet, inside the foot
    x, y = deepest_point(ell)
    assert ell[int(y), int(x)] and 30 <= y < 45
    edge = np.zeros((20, 40), dtype=bool)
    edge[:, :12] = True  # touches the image's left edge, which counts as boundary
    assert deepest_point(edge) == (5.5, 9.5)  # columns 5-6, rows 9-10 are deepest; the first of them


def test_deepest_point_refuses_an_empty_mask() -> None:
    from regionspot.ops.masks import deepest_point

    with pytest.raises(ValueError, match="non-empty"):
        deepest_point(np.zeros((4, 4), dtype=bool))
