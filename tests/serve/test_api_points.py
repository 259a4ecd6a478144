"""``POST /v1/recognize`` with clicks instead of boxes: the predictor's answer, and one 422
JSON error for each malformed click field."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from regionspot.ops.masks import decode_rle, encode_rle
from regionspot.serve.app import create_app

VOCAB = ["cat", "dog", "bowl", "broccoli"]
CLICKS = [[320, 240], [100, 300]]


@pytest.fixture(scope="module")
def client(serve_model) -> TestClient:
    return TestClient(create_app(serve_model), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def photo(photo_paths: list[Path]) -> Path:
    return photo_paths[0]


@pytest.fixture(scope="module")
def post(client: TestClient, photo: Path, post_form: Callable[..., dict]) -> Callable[..., dict]:
    """POST the photo and ``fields`` to /v1/recognize; the JSON answer with its ``status``."""
    return lambda **fields: post_form(client, "/v1/recognize", photo, {"vocabulary": VOCAB, **fields})


def test_clicks_give_the_predictors_answer(serve_model, photo: Path, post: Callable[..., dict]) -> None:
    predictor = serve_model.predictor()
    predictor.set_image(photo)
    for fields, prompt in (({"points": CLICKS}, {"points": [[c] for c in CLICKS]}),
                           ({"points": [[[320, 240], [330, 250]]], "point_labels": [[1, 0]]},
                            {"points": [[[320, 240], [330, 250]]], "point_labels": [[1, 0]]}),
                           ({"points": [[[320, 240], [420, 240]], [[100, 300]]], "point_labels": [[1, 0], [1]]},
                            {"points": [[[320, 240], [420, 240]], [[100, 300]]], "point_labels": [[1, 0], [1]]})):
        answer = post(topk=3, **fields)
        assert answer.pop("status") == 200, answer
        expected = predictor.predict(vocabulary=VOCAB, topk=3, **prompt).to_dict()
        assert answer["regions"] == expected["regions"]


def test_region_masks_give_the_predictors_answer(serve_model, photo: Path, post: Callable[..., dict]) -> None:
    masks = np.zeros((2, 480, 640), dtype=bool)
    masks[0, 100:200, 150:300] = True
    masks[1, 250:400, 50:120] = True
    answer = post(topk=3, region_masks=encode_rle(masks))
    assert answer.pop("status") == 200, answer
    predictor = serve_model.predictor()
    predictor.set_image(photo)
    assert answer["regions"] == predictor.predict(masks=masks, vocabulary=VOCAB, topk=3).to_dict()["regions"]
    assert np.array_equal(decode_rle([r["mask"] for r in answer["regions"]]), masks)  # returned as given


@pytest.mark.parametrize(("rles", "message"), [
    ("[{", "region_masks must be JSON"),
    ([], "non-empty list"),
    ([{"size": [10, 10], "counts": "abc"}],
     "region_masks[0] has size [10, 10] ([H, W]: 10 wide, 10 high) but the image is [480, 640]"),
    ([{"size": [480, 640], "counts": 5}], "region_masks[0] must be a COCO RLE"),
    ([{"size": [480, 640], "counts": [480 * 640]}, {"size": [480, 640], "counts": [3]}],
     "region_masks[1]'s run lengths do not add up to its 480x640 pixels"),
    ([{"size": [480, 640], "counts": ""}], "run lengths do not add up"),  # pycocotools would read garbage
    ([{"size": [480, 640], "counts": "0d"}], "run lengths do not add up"),
])
def test_bad_region_masks_are_422_json(rles: object, message: str, post: Callable[..., dict]) -> None:
    answer = post(region_masks=rles)
    assert answer["status"] == 422 and answer["error"]["type"] == "bad_prompt", answer
    assert message in answer["error"]["message"]


@pytest.mark.parametrize(("fields", "error_type", "message"), [
    ({"points": [[9000, 10]]}, "bad_prompt", "lies outside the 640x"),
    ({"points": "[[1, 2"}, "bad_prompt", "points must be JSON"),
    ({"points": [[1, 2, 3]]}, "bad_prompt", "points must be"),
    ({"points": [[10, 10]], "point_labels": [0]}, "bad_prompt", "no foreground click"),
    ({"points": [[10, 10]], "point_labels": [[1, 1]]}, "bad_prompt", "point_labels must match the points"),
    ({"points": [[[10, 10]], []]}, "bad_prompt", "region 1 has no points"),
    ({"points": [[[10, 10]] * 65]}, "too_many_points", "region 0 has 65 clicks; at most 64"),
    ({"points": [[10, 10]], "boxes": [[0, 0, 5, 5]]}, "bad_regions", "as points or as region_masks"),
    ({}, "bad_regions", "as points or as region_masks"),
])
def test_bad_clicks_are_422_json(fields: dict, error_type: str, message: str, post: Callable[..., dict]) -> None:
    answer = post(**fields)
    assert answer["status"] == 422 and answer["error"]["type"] == error_type, answer
    assert message in answer["error"]["message"] and "Traceback" not in json.dumps(answer)
