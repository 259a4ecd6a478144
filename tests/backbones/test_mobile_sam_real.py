"""The real MobileSAM checkpoint: strict load, and mask quality on real COCO photos.

Ground-truth COCO boxes (xywh converted to xyxy) are given to MobileSAM in single-mask mode; the
masks (logits > 0) are compared with the annotated masks decoded by pycocotools. Crowd
annotations are excluded. MobileSAM's published box-prompt quality is close to SAM ViT-H's, so
a mean IoU below 0.70 means the encoder, the conversion or the pre/post-processing is wrong.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

from regionspot.backbones.sam import build_region_tokenizer
from regionspot.backbones.sam_convert import hf_to_original, read_checkpoint
from regionspot.backbones.sam_tokenizer import SamRegionTokenizer
from regionspot.backbones.tiny_vit import CLASSIFIER_HEAD_KEYS
from regionspot.config import SamBackboneConfig

MIN_MEAN_IOU = 0.70
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools + numpy 2
FAST_IMAGES = 3  # the default suite's share; the slow test below checks all 96 photos


@pytest.fixture(scope="module")
def mobile_sam(mobile_sam_checkpoint: Path) -> SamRegionTokenizer:
    tokenizer = build_region_tokenizer(SamBackboneConfig(name_or_path=str(mobile_sam_checkpoint)))
    assert isinstance(tokenizer, SamRegionTokenizer)
    return tokenizer


def test_checkpoint_loads_strictly(mobile_sam: SamRegionTokenizer, mobile_sam_checkpoint: Path) -> None:
    """Every checkpoint tensor is in the model, unchanged, except the dropped classifier head."""
    checkpoint = read_checkpoint(str(mobile_sam_checkpoint))
    info = mobile_sam.describe()
    assert info["family"] == "mobile_sam" and info["token_dim"] == 256
    dropped = {f"image_encoder.{name}" for name in CLASSIFIER_HEAD_KEYS}
    assert set(info["dropped_keys"]) == dropped
    used = {f"image_encoder.{k}": v for k, v in mobile_sam.image_encoder.state_dict().items()}
    used.update(hf_to_original(mobile_sam.head.state_dict()))
    assert set(used) | dropped == set(checkpoint) and not set(used) & dropped
    for key, value in used.items():
        assert torch.equal(value, checkpoint[key]), key


def _coco_mean_iou(tokenizer: SamRegionTokenizer, root: Path, max_images: int | None) -> tuple[float, int, int]:
    """(mean IoU, number of masks, number of images) over the first ``max_images`` images."""
    coco = COCO(str(root / "annotations.json"))
    ious: list[float] = []
    image_ids = sorted(coco.getImgIds())[:max_images]
    for image_id in image_ids:
        info = coco.loadImgs(image_id)[0]
        annotations = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id)) if not a["iscrowd"]]
        if not annotations:
            continue
        image = np.asarray(Image.open(root / "images" / info["file_name"]).convert("RGB"))
        boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in annotations)],
                             dtype=torch.float32)
        embedding = tokenizer.encode_image(image)
        masks = tokenizer.masks_to_image(embedding, tokenizer.encode_regions(embedding, boxes).mask_logits) > 0
        for annotation, mask in zip(annotations, masks, strict=True):
            truth = torch.from_numpy(coco.annToMask(annotation)).bool()
            union = (truth | mask).sum().item()
            ious.append((truth & mask).sum().item() / union if union else 0.0)
    return float(np.mean(ious)), len(ious), len(image_ids)


def _check_quality(tokenizer: SamRegionTokenizer, root: Path, max_images: int | None) -> None:
    start = time.perf_counter()
    mean_iou, masks, images = _coco_mean_iou(tokenizer, root, max_images)
    print(f"\nMobileSAM single-mask, GT boxes: mean IoU {mean_iou:.4f} over {masks} masks of {images} "
          f"COCO images ({time.perf_counter() - start:.1f} s)")
    assert masks > 0 and mean_iou >= MIN_MEAN_IOU


def test_masks_match_coco_annotations_fast(mobile_sam: SamRegionTokenizer, coco_sample: Path) -> None:
    _check_quality(mobile_sam, coco_sample, FAST_IMAGES)


@pytest.mark.slow
def test_masks_match_coco_annotations_all_images(mobile_sam: SamRegionTokenizer, coco_sample: Path) -> None:
    _check_quality(mobile_sam, coco_sample, None)
