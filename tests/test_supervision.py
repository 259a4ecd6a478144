"""supervision interop (the optional ``supervision`` extra; CI installs it): results become
``sv.Detections`` and ``sv.Detections`` are accepted wherever boxes are."""

from __future__ import annotations

import numpy as np
import pytest

from regionspot.ops.boxes import as_box_array
from regionspot.results import RegionResult

sv = pytest.importorskip("supervision")


@pytest.fixture
def result() -> RegionResult:
    masks = np.zeros((2, 6, 8), dtype=bool)
    masks[0, 1:3, 1:4] = True
    masks[1, 2:6, 4:8] = True
    return RegionResult(boxes=np.array([[1.0, 1.0, 4.0, 3.0], [4.0, 2.0, 8.0, 6.0]]),
                        topk_ids=np.array([[2, 0], [1, 2]]), topk_scores=np.array([[0.9, 0.05], [0.6, 0.3]]),
                        vocabulary=["cat", "dog", "bowl"], image_size=(6, 8), masks=masks,
                        mask_scores=np.array([0.8, 0.7]))


def test_to_supervision_keeps_every_field(result: RegionResult) -> None:
    detections = result.to_supervision()
    assert isinstance(detections, sv.Detections) and len(detections) == 2
    np.testing.assert_allclose(detections.xyxy, result.boxes)
    np.testing.assert_array_equal(detections.mask, result.masks)
    np.testing.assert_allclose(detections.confidence, [0.9, 0.6], rtol=1e-6)
    np.testing.assert_array_equal(detections.class_id, [2, 1])
    assert list(detections.data["class_name"]) == ["bowl", "dog"]
    np.testing.assert_allclose(detections.data["mask_score"], [0.8, 0.7])
    subset = detections[detections.confidence > 0.7]  # supervision's own slicing keeps the fields together
    assert list(subset.data["class_name"]) == ["bowl"] and subset.mask.shape == (1, 6, 8)


def test_detections_are_accepted_as_boxes(result: RegionResult) -> None:
    detections = result.to_supervision()
    np.testing.assert_allclose(as_box_array(detections), result.boxes)
    annotated = sv.BoxAnnotator().annotate(np.zeros((6, 8, 3), dtype=np.uint8), detections)
    assert annotated.shape == (6, 8, 3)


def test_predictor_takes_detections(mobile_sam_model, coco_sample) -> None:
    predictor = mobile_sam_model.predictor()
    predictor.set_image(coco_sample / "images" / "000000000009.jpg")
    detections = sv.Detections(xyxy=np.array([[10.0, 20.0, 200.0, 240.0], [300.0, 40.0, 420.0, 300.0]]))
    from_detections = predictor.predict(boxes=detections, vocabulary=["cat", "dog"], with_masks=False)
    from_array = predictor.predict(boxes=detections.xyxy, vocabulary=["cat", "dog"], with_masks=False)
    np.testing.assert_array_equal(from_detections.topk_scores, from_array.topk_scores)


def test_empty_detections_give_an_empty_result(mobile_sam_model, coco_sample) -> None:
    predictor = mobile_sam_model.predictor()
    predictor.set_image(coco_sample / "images" / "000000000009.jpg")
    result = predictor.predict(boxes=sv.Detections.empty(), vocabulary=["cat", "dog"])
    assert len(result) == 0 and len(result.to_supervision()) == 0
