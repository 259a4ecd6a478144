"""``RegionPredictor.find``: every instance of each query (real MobileSAM, tiny random CLIP, a
random head; so shapes, thresholds and NMS are checked here, the selection itself with an
oracle scorer in tests/ops/test_instances.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from regionspot.model.zero_shot import ZeroShotCLIP
from regionspot.ops.boxes import box_iou_xyxy

BOXES = np.array([[10.0, 20.0, 200.0, 240.0], [12.0, 22.0, 202.0, 238.0], [300.0, 40.0, 420.0, 300.0],
                  [100.0, 100.0, 150.0, 160.0]])


@pytest.fixture(scope="module")
def photo(coco_sample: Path) -> Path:
    return coco_sample / "images" / "000000000009.jpg"


def test_find_keeps_scores_above_the_threshold_one_per_overlap(mobile_sam_model, photo: Path) -> None:
    predictor = mobile_sam_model.predictor()
    predictor.set_image(photo)
    everything = predictor.predict(BOXES, ["bowl", "broccoli"], topk=2)
    found = predictor.find(["bowl", "broccoli"], boxes=BOXES, threshold=0.0, nms_iou=0.5)
    assert found.vocabulary == ["bowl", "broccoli"] and found.topk_ids.shape == (len(found), 1)
    assert found.masks is not None and found.masks.shape[1:] == (480, 640)
    for query in (0, 1):
        mine = found.boxes[found.label_ids == query]
        overlaps = box_iou_xyxy(mine, mine)[np.triu_indices(len(mine), 1)]
        assert len(mine) == 3 and (overlaps <= 0.5).all()  # boxes 0 and 1 overlap: one of them is dropped
    assert (np.diff(found.scores) <= 0).all()
    best = {(tuple(box), name): score for box, row in zip(everything.boxes, everything.topk, strict=True)
            for name, score in row}
    for box, name, score in zip(found.boxes, found.labels, found.scores, strict=True):
        assert score == pytest.approx(best[(tuple(box), name)])  # the predictor's own score for that pair
    high = float(np.median(found.scores))
    assert (predictor.find(["bowl", "broccoli"], boxes=BOXES, threshold=high).scores >= high).all()
    per_query = predictor.find(["bowl", "broccoli"], boxes=BOXES, threshold=[0.0, 1.0])
    assert set(per_query.labels) == {"bowl"}
    with pytest.raises(ValueError, match="one per query"):
        predictor.find(["bowl", "broccoli"], boxes=BOXES, threshold=[0.1, 0.2, 0.3])


def test_softmax_recognizers_also_score_distractors(mobile_sam_model, photo: Path) -> None:
    """With one query a softmax over the queries alone would give every region 1.0."""
    predictor = ZeroShotCLIP.from_model(mobile_sam_model, "clip-crop").predictor()
    predictor.set_image(photo)
    found = predictor.find(["bowl"], boxes=BOXES, threshold=0.0, with_masks=False)
    assert found.vocabulary == ["bowl"] and len(found) >= 1 and (found.scores < 0.5).all()


def test_find_on_auto_proposals_and_nothing_found(mobile_sam_model, photo: Path) -> None:
    from regionspot.proposals.auto import AutoProposalConfig

    predictor = mobile_sam_model.predictor()
    predictor.set_image(photo)
    found = predictor.find("bowl,broccoli", proposals=AutoProposalConfig(points_per_side=4), threshold=0.0,
                           with_masks=False)
    assert len(found) >= 1 and found.masks is None
    nothing = predictor.find(["bowl"], boxes=BOXES, threshold=1.0)
    assert len(nothing) == 0 and nothing.vocabulary == ["bowl"]


def test_masks_are_the_returned_regions_sams_and_mask_nms(mobile_sam_model, photo: Path) -> None:
    from regionspot.ops.masks import pairwise_mask_iou

    predictor = mobile_sam_model.predictor()
    predictor.set_image(photo)
    found = predictor.find(["bowl"], boxes=BOXES, threshold=0.0, nms="mask", nms_iou=0.5)
    named = predictor.predict(found.boxes, ["bowl"], topk=1)
    assert found.masks is not None and found.mask_scores is not None and named.masks is not None
    np.testing.assert_array_equal(found.masks, named.masks)  # the same masks predict gives those boxes
    np.testing.assert_allclose(found.mask_scores, named.mask_scores)
    nothing = predictor.find(["bowl"], boxes=BOXES, threshold=1.0)  # found nothing: empty masks, not None
    assert nothing.masks is not None and nothing.masks.shape == (0, 480, 640)
    overlaps = pairwise_mask_iou(found.masks)[np.triu_indices(len(found), 1)]
    assert len(found) == 3 and (overlaps <= 0.55).all()  # NMS judged low-res masks; these are at image size
    with pytest.raises(ValueError, match="nms must be"):
        predictor.find(["bowl"], boxes=BOXES, nms="boxes")
