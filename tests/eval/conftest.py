"""Fixtures shared by the evaluator tests: the COCO sample's annotation, and pycocotools run on
it (the reference our AP is checked against)."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


@pytest.fixture(scope="module")
def coco_dataset(coco_sample: Path) -> dict[str, Any]:
    """The sample's annotation as a dict (tests copy it before changing it)."""
    return json.loads((coco_sample / "annotations.json").read_text(encoding="utf-8"))


def run_pycocotools(dataset: dict[str, Any], results: list[dict[str, Any]], iou_type: str,
                    image_ids: list[int] | None = None, *, max_dets: list[int] | None = None) -> COCOeval:
    """pycocotools' COCOeval on copies of ``dataset`` and ``results`` (evaluated, accumulated and
    summarised, quietly), on ``image_ids`` only and with ``max_dets`` when given."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = copy.deepcopy(dataset)
        gt.createIndex()
        evaluation = COCOeval(gt, gt.loadRes(copy.deepcopy(results)), iou_type)
        if image_ids is not None:
            evaluation.params.imgIds = image_ids
        if max_dets is not None:
            evaluation.params.maxDets = max_dets
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation


@pytest.fixture(name="pycocotools_eval", scope="session")
def pycocotools_eval_fixture() -> Callable[..., COCOeval]:
    """:func:`run_pycocotools`."""
    return run_pycocotools
