"""The evaluation protocol's pure functions on hand-built inputs: top (box, category) pairs per
image, proposal-score multiplication, category-id mapping, usable boxes, the evaluator cap, and
the eval config (overrides, validation, split of model and eval keys)."""

from __future__ import annotations

import typing

import numpy as np
import pytest

from regionspot.config import ConfigError, apply_overrides, from_dict, load_config, save_config, to_dict
from regionspot.eval.config import (
    ARCHITECTURE_KEYS,
    METHOD_CHOICES,
    PROMPT_CHOICES,
    EvalConfig,
    ModelSource,
    architecture_overrides,
    check_eval_config,
    split_overrides,
)
from regionspot.eval.protocol import (
    ImagePairs,
    category_index,
    classes_per_box,
    detections_cap,
    evaluator_cap,
    evaluator_image_cap,
    ground_truth_boxes,
    pairs_to_coco,
    select_pairs,
    stored_pairs,
    usable_boxes,
)

IDS = np.array([[2, 0, 1], [1, 2, 0]])
SCORES = np.array([[0.9, 0.5, 0.1], [0.8, 0.7, 0.6]])


def test_pairs_are_the_best_over_the_image_not_per_box() -> None:
    pairs = select_pairs(IDS, SCORES, None, pairs_per_image=4)
    assert pairs.box_index.tolist() == [0, 1, 1, 1]
    assert pairs.vocab_index.tolist() == [2, 1, 2, 0]
    np.testing.assert_allclose(pairs.scores, [0.9, 0.8, 0.7, 0.6])


def test_proposal_scores_multiply_class_scores() -> None:
    pairs = select_pairs(IDS, SCORES, np.array([1.0, 0.5]), pairs_per_image=3)
    # box 1's scores halve to 0.4, 0.35, 0.3: box 0's 0.5 now beats them
    assert list(zip(pairs.box_index.tolist(), pairs.vocab_index.tolist(), strict=True)) == [(0, 2), (0, 0), (1, 1)]
    np.testing.assert_allclose(pairs.scores, [0.9, 0.5, 0.4])


def test_pairs_per_box_and_ties() -> None:
    pairs = select_pairs(IDS, SCORES, None, pairs_per_image=900, pairs_per_box=1)
    assert pairs.box_index.tolist() == [0, 1] and pairs.vocab_index.tolist() == [2, 1]
    tied = select_pairs(np.array([[0, 1], [1, 0]]), np.full((2, 2), 0.5), None, pairs_per_image=3)
    assert list(zip(tied.box_index.tolist(), tied.vocab_index.tolist(), strict=True)) == [(0, 0), (0, 1), (1, 1)]
    empty = select_pairs(np.zeros((0, 3), dtype=int), np.zeros((0, 3)), None, pairs_per_image=5)
    assert len(empty) == 0


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"topk_ids": IDS, "topk_scores": SCORES[:, :2], "proposal_scores": None, "pairs_per_image": 3}, "both be"),
    ({"topk_ids": IDS, "topk_scores": SCORES, "proposal_scores": np.ones(3), "pairs_per_image": 3}, "3 proposal"),
    ({"topk_ids": IDS, "topk_scores": SCORES, "proposal_scores": None, "pairs_per_image": 0}, ">= 1"),
])
def test_select_pairs_rejects_bad_inputs(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        select_pairs(**kwargs)


def test_pairs_to_coco_maps_vocabulary_index_to_category_id() -> None:
    categories = [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}, {"id": 7, "name": "train"}]
    ids = category_index(categories)
    assert ids == [1, 7, 90]  # the vocabulary is built in id order
    boxes = np.array([[10.0, 20.0, 40.0, 60.0], [0.0, 0.0, 5.0, 5.0]])
    pairs = ImagePairs(box_index=np.array([1, 0]), vocab_index=np.array([2, 0]), scores=np.array([0.8, 0.3]))
    rles = [{"size": [1, 1], "counts": "a"}, {"size": [1, 1], "counts": "b"}]
    results = pairs_to_coco(42, boxes, pairs, ids, rles)
    assert results == [
        {"image_id": 42, "category_id": 90, "bbox": [0.0, 0.0, 5.0, 5.0], "score": 0.8, "segmentation": rles[1]},
        {"image_id": 42, "category_id": 1, "bbox": [10.0, 20.0, 30.0, 40.0], "score": 0.3, "segmentation": rles[0]},
    ]


def test_ground_truth_boxes_leave_out_crowd() -> None:
    annotations = [{"bbox": [1, 2, 3, 4], "iscrowd": 0}, {"bbox": [0, 0, 50, 50], "iscrowd": 1}, {"bbox": [5, 5, 1, 1]}]
    np.testing.assert_array_equal(ground_truth_boxes(annotations), [[1, 2, 4, 6], [5, 5, 6, 6]])
    assert ground_truth_boxes([]).shape == (0, 4)


def test_usable_boxes_drop_degenerate_and_outside() -> None:
    boxes = np.array([[0, 0, 10, 10], [5, 5, 5.5, 20], [200, 200, 300, 300], [np.nan, 0, 1, 1], [-5, -5, 3, 3]])
    assert usable_boxes(boxes, (100, 100)).tolist() == [0, 4]


def test_classes_per_box() -> None:
    assert classes_per_box(1203, 900, None) == 900
    assert classes_per_box(80, 900, None) == 80
    assert classes_per_box(80, 900, 5) == 5 and classes_per_box(80, 3, 5) == 3


def test_evaluator_cap_and_its_words() -> None:
    assert evaluator_cap(True, None) == (None, "auto") and evaluator_cap(False, 0) == (None, None)
    assert evaluator_cap(True, 100) == ((100,), 100) and evaluator_cap(False, 100) == (None, 100)
    assert "300" in detections_cap(True, None)
    assert "100 detections per image and category" in detections_cap(False, None)
    assert "at most 50" in detections_cap(True, 50)
    assert (evaluator_image_cap(True, None), evaluator_image_cap(False, None), evaluator_image_cap(True, 0)) == \
        (300, None, None)
    assert stored_pairs(900, 300, keep_all=False) == 300 and stored_pairs(900, 300, keep_all=True) == 900
    assert stored_pairs(900, None, keep_all=False) == 900 and stored_pairs(100, 300, keep_all=False) == 100


def test_storing_only_the_capped_pairs_changes_no_number() -> None:
    """The evaluator keeps an image's best ``cap`` detections (ties: earlier first); the image's
    first ``cap`` pairs (best first, ties in box order) are exactly those."""
    from regionspot.eval.evaluator import DetectionEvaluator

    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 50, (6, 2))
    boxes = np.concatenate([corners, corners + 20], axis=1)  # xyxy
    dataset = {"images": [{"id": 1, "height": 100, "width": 100, "neg_category_ids": [],
                           "not_exhaustive_category_ids": []}],
               "categories": [{"id": i, "name": f"c{i}"} for i in (1, 2, 3)],
               "annotations": [{"id": i + 1, "image_id": 1, "category_id": c, "bbox": [*corner, 20, 20], "area": 400}
                               for i, (corner, c) in enumerate(zip(corners[:4].tolist(), [1, 2, 3, 1], strict=True))]}
    scores = np.sort(np.round(rng.uniform(0, 1, (6, 3)), 1), axis=1)[:, ::-1]  # coarse: many ties
    ids = np.argsort(rng.uniform(size=(6, 3)), axis=1)
    ids[:3] = [[0, 1, 2], [1, 0, 2], [2, 1, 0]]  # the first boxes' true names first
    jittered = boxes + rng.normal(0, 2, boxes.shape)
    metrics = []
    for kept in (18, 7):  # every pair, or only the 7 the evaluator keeps
        evaluator = DetectionEvaluator(dataset, max_dets=(7,))
        evaluator.process(1, pairs_to_coco(1, jittered, select_pairs(ids, scores, None, kept), [1, 2, 3]))
        metrics.append(evaluator.evaluate())
    assert metrics[0]["AP"] > 0
    np.testing.assert_equal(metrics[0], metrics[1])  # NaN equals NaN here


def test_eval_config_round_trip_and_overrides(tmp_path) -> None:
    method_hint = typing.get_type_hints(EvalConfig)["method"]  # Method | None: None is the model's own
    assert typing.get_args(typing.get_args(method_hint)[0]) == METHOD_CHOICES
    assert EvalConfig().method is None and apply_overrides(EvalConfig(), ["method=null"]).method is None
    from regionspot.eval.methods import METHODS, PROMPT_MODES

    assert METHOD_CHOICES == METHODS and PROMPT_CHOICES == PROMPT_MODES
    config = apply_overrides(EvalConfig(), ["protocol.pairs_per_image=300", "auto.points_per_side=8",
                                            "method=clip-crop", "model.overrides=clip.enabled=false,fusion.depth=1"])
    assert (config.protocol.pairs_per_image, config.auto.points_per_side, config.method) == (300, 8, "clip-crop")
    assert config.model.overrides == ["clip.enabled=false", "fusion.depth=1"]
    save_config(config, tmp_path / "eval.yaml")
    assert load_config(EvalConfig, tmp_path / "eval.yaml") == config
    assert from_dict(EvalConfig, to_dict(config)) == config
    with pytest.raises(ConfigError, match="not one of"):
        apply_overrides(EvalConfig(), ["prompt=sideways"])


def test_check_eval_config() -> None:
    good = EvalConfig(model=ModelSource(checkpoint="ckpt"))
    assert check_eval_config(good) is good
    assert check_eval_config(EvalConfig()).model == ModelSource()  # no model named: the zero-shot recognizer
    for override, message in (("protocol.pairs_per_image=0", "pairs_per_image"), ("max_images=0", "max_images"),
                              ("auto.box_nms_thresh=2", "box_nms_thresh"),
                              ("protocol.max_dets_per_image=-1", "0: no cap")):
        with pytest.raises(ConfigError, match=message):
            check_eval_config(apply_overrides(good, [override]))


def test_split_and_architecture_overrides() -> None:
    model, evaluation = split_overrides(["fusion.depth=1", "protocol.pairs_per_image=9", "text.templates=single",
                                         "auto.points_per_side=4", "method=clip-crop"])
    assert model == ["fusion.depth=1", "text.templates=single"]
    assert evaluation == ["protocol.pairs_per_image=9", "auto.points_per_side=4", "method=clip-crop"]
    assert architecture_overrides(model) == ["fusion.depth=1"]
    from regionspot.config import RegionSpotConfig

    values = {"clip.enabled": "false", "sam.token_place": "prompt_encoder", "fusion.region_self_attention": "false"}
    for key in ARCHITECTURE_KEYS:  # every listed key is a real model-config field
        apply_overrides(RegionSpotConfig(), [f"{key}={values.get(key, 1)}"])
