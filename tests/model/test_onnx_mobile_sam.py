"""The ONNX export of RegionSpot on the real MobileSAM (and a tiny CLIP): every graph within 1e-4 of
PyTorch, and on real COCO photos with their annotated boxes, the onnxruntime predictor gives the
PyTorch predictor's scores (within 1e-4) and masks (a pixel may flip only where SAM's logit is
within about 1e-4 of 0)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from regionspot.model.onnx_export import PARITY_TOLERANCE, export_onnx
from regionspot.model.onnx_runtime import load_onnx_model
from regionspot.ops.boxes import xywh_to_xyxy
from regionspot.ops.image import load_image

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
pytestmark = pytest.mark.slow  # an export of MobileSAM: about a minute here

VOCABULARY = ["person", "dog", "bowl", "broccoli", "pizza", "car", "chair", "cup"]


def test_mobile_sam_export_answers_as_pytorch(mobile_sam_model, coco_sample: Path, text_cache_dir: Path,
                                              tmp_path: Path) -> None:
    manifest = export_onnx(mobile_sam_model, tmp_path)
    assert all(graph["max_rel_difference"] <= PARITY_TOLERANCE for graph in manifest["graphs"].values())
    onnx_model = load_onnx_model(tmp_path, overrides=[f"text.cache_dir={text_cache_dir}"])
    data = json.loads((coco_sample / "annotations.json").read_text())
    images = {image["id"]: image["file_name"] for image in data["images"]}
    by_image: dict[int, list[list[float]]] = {}
    for annotation in data["annotations"]:
        if not annotation.get("iscrowd"):
            by_image.setdefault(annotation["image_id"], []).append(annotation["bbox"])
    for image_id in sorted(by_image)[:3]:
        image = load_image(coco_sample / "images" / images[image_id])
        boxes = xywh_to_xyxy(np.asarray(by_image[image_id], float))
        results = []
        for model in (mobile_sam_model, onnx_model):
            predictor = model.predictor()
            predictor.set_image(image)
            results.append(predictor.predict(boxes, VOCABULARY, topk=len(VOCABULARY)))
        ours, theirs = results
        dense = [np.take_along_axis(r.topk_scores, np.argsort(r.topk_ids, axis=1), axis=1) for r in results]
        np.testing.assert_allclose(dense[1], dense[0], atol=1e-4)
        assert ours.masks is not None and theirs.masks is not None
        assert (ours.masks != theirs.masks).mean() <= 1e-5
        np.testing.assert_allclose(theirs.mask_scores, ours.mask_scores, atol=1e-4)
