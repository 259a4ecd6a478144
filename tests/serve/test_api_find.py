"""``POST /v1/find``: the predictor's ``find`` answer (on boxes and on SAM's proposals), masks
only for the regions found, and one 422 JSON error for each bad field."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from regionspot.proposals.auto import AutoProposalConfig
from regionspot.serve.app import create_app
from regionspot.serve.config import ServeConfig, ServeLimits

QUERIES = ["bowl", "broccoli"]
BOXES = [[10.0, 20.0, 200.0, 240.0], [12.0, 22.0, 202.0, 238.0], [300.0, 40.0, 420.0, 300.0],
         [100.0, 100.0, 150.0, 160.0]]
PROPOSALS = AutoProposalConfig(points_per_side=4)


@pytest.fixture(scope="module")
def client(serve_model) -> TestClient:
    config = ServeConfig(proposals=PROPOSALS, limits=ServeLimits(max_boxes=10, max_mask_pixels=3 * 480 * 640))
    return TestClient(create_app(serve_model, config), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def photo(photo_paths: list[Path]) -> Path:
    return photo_paths[0]


@pytest.fixture(scope="module")
def post(client: TestClient, photo: Path, post_form: Callable[..., dict]) -> Callable[..., dict]:
    """POST the photo and ``fields`` to /v1/find; the JSON answer with its ``status``."""
    return lambda **fields: post_form(client, "/v1/find", photo, {"queries": QUERIES, **fields})


def test_find_gives_the_predictors_answer(serve_model, photo: Path, post: Callable[..., dict]) -> None:
    predictor = serve_model.predictor()
    predictor.set_image(photo)
    answer = post(boxes=BOXES, threshold=0.0, nms="mask", masks="false")
    assert answer.pop("status") == 200, answer
    expected = predictor.find(QUERIES, boxes=BOXES, threshold=0.0, nms="mask", max_per_query=10, with_masks=False)
    assert answer["vocabulary"] == QUERIES and answer["regions"] == expected.to_dict()["regions"]
    assert answer["method"] == "regionspot" and len(answer["image_id"]) == 64
    auto = post(threshold=0.0, max_per_query=1, masks="false")  # SAM's proposals
    assert auto.pop("status") == 200, auto
    proposed = predictor.find(QUERIES, proposals=PROPOSALS, threshold=0.0, max_per_query=1, with_masks=False)
    assert auto["regions"] == proposed.to_dict()["regions"] and len(auto["regions"]) == 2


@pytest.mark.parametrize("sent", ["[0.0, 1.0]", "0.0, 1.0"])
def test_a_threshold_per_query(serve_model, photo: Path, post: Callable[..., dict], sent: str) -> None:
    answer = post(boxes=BOXES, threshold=sent, masks="false")
    assert answer.pop("status") == 200, answer
    predictor = serve_model.predictor()
    predictor.set_image(photo)
    expected = predictor.find(QUERIES, boxes=BOXES, threshold=[0.0, 1.0], max_per_query=10, with_masks=False)
    assert answer["regions"] == expected.to_dict()["regions"]
    assert {region["label"] for region in answer["regions"]} == {"bowl"}  # broccoli needs a score of 1


def test_masks_are_made_for_the_regions_found_within_the_limit(serve_model, photo: Path,
                                                                post: Callable[..., dict]) -> None:
    predictor = serve_model.predictor()
    predictor.set_image(photo)
    answer = post(boxes=BOXES, threshold=0.0, max_per_query=1)
    assert answer.pop("status") == 200, answer
    assert answer["regions"] == predictor.find(QUERIES, boxes=BOXES, threshold=0.0, max_per_query=1).to_dict(
        include_masks=True)["regions"]
    assert all("mask" in region for region in answer["regions"])
    # 4 boxes x 2 queries kept with threshold 0 and no NMS: 8 masks, over this server's 3-mask limit
    over = post(boxes=BOXES, threshold=0.0, nms_iou=1.0)
    assert over["status"] == 422 and over["error"]["type"] == "too_many_mask_pixels"
    none = post(boxes=BOXES, threshold=1.0)
    assert none["status"] == 200 and none["regions"] == [] and none["not_returned"] == 0


@pytest.mark.slow
def test_at_most_max_boxes_regions_are_returned(serve_model, photo: Path, post_form: Callable[..., dict]) -> None:
    """Many queries x max_per_query could make a huge answer: the best max_boxes come back and
    not_returned counts the rest."""
    client = TestClient(create_app(serve_model, ServeConfig(proposals=PROPOSALS, limits=ServeLimits(max_boxes=3))),
                        raise_server_exceptions=False)
    queries = ["bowl", "broccoli", "orange", "table"]
    answer = post_form(client, "/v1/find", photo, {"queries": queries, "boxes": BOXES[:3], "threshold": 0.0,
                                                   "nms_iou": 1.0, "masks": "false"})
    assert answer.pop("status") == 200, answer
    predictor = serve_model.predictor()
    predictor.set_image(photo)
    everything = predictor.find(queries, boxes=BOXES[:3], threshold=0.0, nms_iou=1.0, with_masks=False)
    assert len(everything) == 12 and answer["not_returned"] == 9
    assert answer["regions"] == everything[:3].to_dict()["regions"]
    too_many = post_form(client, "/v1/find", photo, {"queries": queries, "boxes": BOXES})
    assert too_many["status"] == 422 and too_many["error"]["type"] == "too_many_boxes"


@pytest.mark.parametrize(("fields", "error_type", "message"), [
    ({"threshold": 1.5}, "bad_threshold", "between 0 and 1"),
    ({"nms_iou": -0.1}, "bad_nms_iou", "between 0 and 1"),
    ({"nms": "boxes"}, "bad_nms", "'box' or 'mask'"),
    ({"max_per_query": 0}, "bad_max_per_query", "between 1 and 10"),
    ({"max_per_query": 11}, "bad_max_per_query", "between 1 and 10"),
    ({"queries": " , "}, "bad_vocabulary", "empty"),
    ({"boxes": [[0, 0, 10]]}, "bad_boxes", ""),
    ({"boxes": [[700, 500, 900, 900]]}, "bad_boxes", ""),
    ({"threshold": "high"}, "bad_threshold", "a number or a list"),
    ({"threshold": "[0.1, 0.2, 0.3]"}, "bad_threshold", "3 values for 2 queries"),
    ({"threshold": "[0.1, true]"}, "bad_threshold", "between 0 and 1"),
    ({"threshold": "0.1,NaN"}, "bad_threshold", "between 0 and 1"),
])
def test_bad_fields_are_422_json(fields: dict, error_type: str, message: str, post: Callable[..., dict]) -> None:
    answer = post(**fields)
    assert answer["status"] == 422 and answer["error"]["type"] == error_type, answer
    assert message in answer["error"]["message"]


def test_find_needs_an_image(client: TestClient) -> None:
    response = client.post("/v1/find", data={"queries": "bowl"})
    assert response.status_code == 422 and "image" in response.json()["error"]["message"]
    missing = client.post("/v1/find", data={"queries": "bowl", "image_id": "0" * 64})
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "unknown_image_id"
