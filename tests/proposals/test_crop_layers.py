"""Crop layers of ``auto`` proposals: the crop geometry, the inner-edge rule, and real MobileSAM
proposing on crops of a COCO photo (more of its small objects, one encoder run per crop)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from regionspot.backbones.protocols import SamImageEmbedding
from regionspot.config import ConfigError
from regionspot.ops.boxes import box_iou_xyxy, xywh_to_xyxy
from regionspot.ops.image import load_image
from regionspot.proposals.auto import (
    AutoProposalConfig,
    RegionProposer,
    check_auto_config,
    crop_boxes,
    inside_crop,
)


def test_layer_one_is_four_overlapping_crops_covering_the_image() -> None:
    crops = crop_boxes((480, 640), layers=1, overlap=0.34)
    assert [layer for layer, _ in crops] == [1, 1, 1, 1]
    boxes = np.array([crop for _, crop in crops])
    covered = np.zeros((480, 640), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        covered[y0:y1, x0:x1] = True
    assert covered.all() and boxes[:, :2].min() == 0 and boxes[:, 2].max() == 640 and boxes[:, 3].max() == 480
    shared = int(0.34 * 480)
    # neighbours overlap (by a pixel more where the last crop is moved back to end at the image's edge)
    assert boxes[0, 2] - boxes[1, 0] in (shared, shared + 1) and boxes[0, 3] - boxes[2, 1] in (shared, shared + 1)
    assert len({(x1 - x0, y1 - y0) for x0, y0, x1, y1 in boxes}) == 1  # equal crops
    two = crop_boxes((480, 640), layers=2, overlap=0.34)
    assert len(two) == 4 + 16 and [layer for layer, _ in two].count(2) == 16
    assert crop_boxes((480, 640), layers=0, overlap=0.34) == []


def test_boxes_cut_by_an_inner_crop_edge_are_dropped() -> None:
    crop = (0, 0, 400, 300)  # the top-left crop of a 480 x 640 image: its right and bottom edges are inner
    boxes = np.array([[0.0, 0.0, 50.0, 50.0],     # on the image's own edges: kept
                      [300.0, 100.0, 398.0, 150.0],  # reaches the right inner edge: cut
                      [100.0, 250.0, 150.0, 299.0],  # reaches the bottom inner edge: cut
                      [100.0, 100.0, 380.0, 280.0]])  # 20 pixels from both: kept
    assert inside_crop(boxes, crop, (480, 640), margin=8.0).tolist() == [True, False, False, True]
    assert inside_crop(boxes, (0, 0, 640, 480), (480, 640), margin=8.0).all()  # the whole image: no inner edge


def test_crops_need_the_image(mobile_sam_model) -> None:
    tokenizer = mobile_sam_model.region_tokenizer
    embedding = tokenizer.encode_image(np.zeros((64, 80, 3), dtype=np.uint8))
    with pytest.raises(ConfigError, match="needs the image"):
        RegionProposer(tokenizer)(embedding, AutoProposalConfig(points_per_side=2, crop_layers=1))
    with pytest.raises(ConfigError, match="crop_layers must be a non-negative integer"):
        RegionProposer(tokenizer)(embedding, AutoProposalConfig(crop_layers=-1))


@pytest.mark.slow
def test_mobile_sam_on_crops_finds_more_small_objects(mobile_sam_model, coco_sample: Path) -> None:
    """A street scene with many small annotated objects: crop layer 1 encodes 4 crops and finds at
    least as many annotated objects as the whole image alone, with every box inside the image."""
    import json

    data = json.loads((coco_sample / "annotations.json").read_text())
    image_id = 164
    info = next(image for image in data["images"] if image["id"] == image_id)
    truth = xywh_to_xyxy(np.array([a["bbox"] for a in data["annotations"]
                                   if a["image_id"] == image_id and not a["iscrowd"]], dtype=float))
    image = load_image(coco_sample / "images" / info["file_name"])
    predictor = mobile_sam_model.predictor()
    predictor.set_image(image)
    encoded: list[tuple[int, int]] = []
    tokenizer = mobile_sam_model.region_tokenizer
    original = tokenizer.encode_image

    def counting(crop: np.ndarray) -> SamImageEmbedding:  # the adapter's own, counted
        encoded.append(crop.shape[:2])
        return original(crop)

    whole = predictor.propose(AutoProposalConfig(points_per_side=8))
    tokenizer.encode_image = counting
    try:
        cropped = predictor.propose(AutoProposalConfig(points_per_side=8, crop_layers=1))
    finally:
        del tokenizer.encode_image
    assert len(encoded) == 4 and all(0 < h < image.shape[0] and 0 < w < image.shape[1] for h, w in encoded)
    height, width = image.shape[:2]
    assert (cropped.boxes >= 0).all() and (cropped.boxes[:, [0, 2]] <= width).all()
    assert (cropped.boxes[:, [1, 3]] <= height).all()
    found = [(box_iou_xyxy(truth, p.boxes).max(axis=1) >= 0.5).sum() for p in (whole, cropped)]
    assert found[1] >= found[0] and len(cropped) > len(whole)


def test_tiny_images_never_get_empty_crops() -> None:
    for height, width in ((6, 6), (1, 9), (3, 2)):
        for _, (x0, y0, x1, y1) in crop_boxes((height, width), layers=3, overlap=0.34):
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    with pytest.raises(ConfigError, match="at most 3"):
        check_auto_config(AutoProposalConfig(crop_layers=4))
