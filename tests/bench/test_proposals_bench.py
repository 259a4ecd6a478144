"""``regionspot bench proposals``' measures: recall at IoU 0.5, AR over 0.5:0.95 and recall by
COCO size, on hand-made boxes whose answers are known; settings parsing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from regionspot.bench.proposals_bench import (
    AnnotatedPhoto,
    best_overlaps,
    read_annotated_photos,
    setting_config,
    summarise,
)
from regionspot.config import ConfigError
from regionspot.proposals.auto import AutoProposalConfig


def test_recall_ar_and_sizes_on_known_overlaps() -> None:
    truth = np.array([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 100.0, 100.0], [200.0, 200.0, 300.0, 300.0]])
    proposals = np.array([[0.0, 0.0, 10.0, 7.0],  # IoU 0.7 with the small box
                          [0.0, 0.0, 100.0, 100.0]])  # exact on the large one; nothing on the third
    best = best_overlaps(truth, proposals)
    np.testing.assert_allclose(best, [0.7, 1.0, 0.0])
    photo = AnnotatedPhoto(Path("a.jpg"), truth, np.array([100.0, 10000.0, 10000.0]))
    row = summarise("test", AutoProposalConfig(), [photo], [best], [2], seconds=3.0)
    assert row.recall_50 == pytest.approx(2 / 3)
    # AR: the exact box counts at all 10 IoUs, the 0.7 one at 0.5..0.7 (5 of 10), the missed one never
    assert row.average_recall == pytest.approx((10 + 5) / 30)
    assert row.recall_50_by_size == {"small": 1.0, "large": 0.5}  # no medium objects: no entry
    assert (row.boxes_per_photo, row.max_boxes, row.seconds_per_photo) == (2.0, 2, 3.0)
    assert best_overlaps(truth, np.zeros((0, 4))).tolist() == [0.0, 0.0, 0.0]


def test_settings_are_config_overrides() -> None:
    assert setting_config("") == AutoProposalConfig()
    dense = setting_config("points_per_side=32, pred_iou_thresh=0.8")
    assert (dense.points_per_side, dense.pred_iou_thresh) == (32, 0.8)
    preset = setting_config("preset=recall,max_proposals=100")
    assert preset == AutoProposalConfig(**{**AutoProposalConfig.high_recall().__dict__, "max_proposals": 100})
    with pytest.raises(ConfigError, match="points_per_side"):
        setting_config("points_per_side=0")
    with pytest.raises(ConfigError, match="no_such_field"):
        setting_config("no_such_field=1")


def test_reads_non_crowd_boxes_of_annotated_photos(coco_sample: Path) -> None:
    photos = read_annotated_photos(coco_sample / "annotations.json", coco_sample / "images", limit=3)
    assert len(photos) == 3 and all(photo.path.is_file() for photo in photos)
    for photo in photos:
        assert photo.boxes.shape == (len(photo.areas), 4) and (photo.boxes[:, 2:] > photo.boxes[:, :2]).all()
