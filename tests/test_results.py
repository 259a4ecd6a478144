from __future__ import annotations

import json

import numpy as np
import pytest

from regionspot.ops.masks import decode_rle
from regionspot.results import RegionResult


def make_result(with_masks: bool = True) -> RegionResult:
    masks = np.zeros((2, 10, 12), bool)
    masks[0, 2:5, 3:7] = True
    masks[1, 0:2, 0:2] = True
    return RegionResult(
        boxes=np.array([[3, 2, 7, 5], [0, 0, 2, 2]]), topk_ids=np.array([[1, 0], [2, 1]]),
        topk_scores=np.array([[0.9, 0.2], [0.6, 0.5]]), vocabulary=["cat", "dog", "car"],
        image_size=(10, 12), masks=masks if with_masks else None, mask_scores=np.array([0.8, 0.7]),
    )


def test_accessors():
    result = make_result()
    assert len(result) == 2
    assert result.labels == ["dog", "car"]
    np.testing.assert_allclose(result.scores, [0.9, 0.6])
    assert result.topk[1] == [("car", 0.6), ("dog", 0.5)]
    sub = result[[1]]
    assert sub.labels == ["car"] and sub.masks.shape == (1, 10, 12)
    assert result[np.array([True, False])].labels == ["dog"]


def test_to_dict_is_json_and_masks_decode():
    result = make_result()
    document = json.loads(json.dumps(result.to_dict()))
    assert document["image"] == {"height": 10, "width": 12}
    region = document["regions"][0]
    assert region["label"] == "dog" and region["topk"][1] == {"label": "cat", "score": 0.2}
    assert region["mask_score"] == 0.8
    np.testing.assert_array_equal(decode_rle([region["mask"]])[0], result.masks[0])


def test_to_coco_emits_topk_pairs_with_category_ids():
    entries = make_result().to_coco(image_id=7, category_ids=[10, 20, 30])
    assert [e["category_id"] for e in entries] == [20, 10, 30, 20]
    assert entries[0]["bbox"] == [3, 2, 4, 3] and entries[0]["image_id"] == 7
    assert "segmentation" in entries[0]
    assert len(make_result(False).to_coco(image_id=1, topk=1)) == 2
    assert make_result(False).to_coco(image_id=1)[0]["category_id"] == 2
    with pytest.raises(ValueError, match="category_ids"):
        make_result().to_coco(image_id=1, category_ids=[1])


@pytest.mark.parametrize(("change", "message"), [
    ({"topk_scores": np.array([[1.5, 0.2], [0.6, 0.5]])}, r"\[0, 1\]"),
    ({"topk_ids": np.array([[5, 0], [2, 1]])}, "outside the vocabulary"),
    ({"masks": np.zeros((2, 3, 3), bool)}, "masks must be"),
])
def test_validation(change, message):
    fields = dict(boxes=np.zeros((2, 4)), topk_ids=np.array([[1, 0], [2, 1]]),
                  topk_scores=np.array([[0.9, 0.2], [0.6, 0.5]]), vocabulary=["a", "b", "c"], image_size=(10, 12))
    fields.update(change)
    with pytest.raises(ValueError, match=message):
        RegionResult(**fields)


def make_rich_result(count: int = 5) -> RegionResult:
    """``count`` regions with masks, mask scores and per-region and image-level extras, all distinct per region."""
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 10, (count, 2))
    scores = np.sort(rng.uniform(0, 1, (count, 3)), axis=1)[:, ::-1]
    return RegionResult(
        boxes=np.concatenate([corners, corners + 1], axis=1), topk_ids=rng.integers(0, 4, (count, 3)),
        topk_scores=scores, vocabulary=["cat", "dog", "car", "tree"], image_size=(12, 14),
        masks=rng.uniform(size=(count, 12, 14)) > 0.5, mask_scores=rng.uniform(size=count),
        extras={"attention": rng.uniform(size=(count, 3, 3)), "names": [f"region {i}" for i in range(count)],
                "grid": (3, 3), "note": "image-level", "scale": np.float64(2.0), "meta": {"model": "x"}},
    )


@pytest.mark.parametrize(("index", "expected"), [
    (3, [3]),
    (-1, [4]),
    (np.int64(1), [1]),
    (slice(1, 4), [1, 2, 3]),
    (slice(None, None, -2), [4, 2, 0]),
    ([4, 0, 0], [4, 0, 0]),
    (np.array([2, 1]), [2, 1]),
    (np.array([True, False, False, True, True]), [0, 3, 4]),
    ([], []),
])
def test_slicing_keeps_every_per_region_field_consistent(index, expected):
    original = make_rich_result()
    sub = original[index]
    assert len(sub) == len(expected)
    for i, j in enumerate(expected):  # region i of the slice is region j of the original
        np.testing.assert_array_equal(sub.boxes[i], original.boxes[j])
        np.testing.assert_array_equal(sub.topk_ids[i], original.topk_ids[j])
        np.testing.assert_array_equal(sub.topk_scores[i], original.topk_scores[j])
        np.testing.assert_array_equal(sub.masks[i], original.masks[j])
        assert sub.mask_scores[i] == original.mask_scores[j]
        np.testing.assert_array_equal(sub.extras["attention"][i], original.extras["attention"][j])
        assert sub.extras["names"][i] == original.extras["names"][j]
        assert sub.topk[i] == original.topk[j]
    assert sub.extras["attention"].shape == (len(expected), 3, 3) and len(sub.extras["names"]) == len(expected)
    for key in ("grid", "note", "scale", "meta"):  # image-level extras are kept as they are
        assert sub.extras[key] == original.extras[key]


def test_slicing_does_not_share_the_extras_dict():
    original = make_rich_result()
    sub = original[[0]]
    sub.extras["added"] = 1
    assert "added" not in original.extras and len(original.extras["names"]) == 5


@pytest.mark.parametrize("extras", [{"attention": np.zeros((3, 2, 2))}, {"names": ["a"]}])
def test_per_region_extras_must_have_one_entry_per_region(extras):
    with pytest.raises(ValueError, match="per region"):
        RegionResult(boxes=np.zeros((2, 4)), topk_ids=np.array([[0], [1]]), topk_scores=np.array([[0.5], [0.5]]),
                     vocabulary=["a", "b"], image_size=(4, 4), extras=extras)
