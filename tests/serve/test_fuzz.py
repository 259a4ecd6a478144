"""Fuzzing the form fields of ``/v1/recognize`` and ``/v1/propose``: whatever a client sends,
the answer is 200 or a 4xx JSON error, never a 500 and never a traceback (issue 10).

Bounded: a fixed number of examples, derandomized so CI runs the same ones every time.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from regionspot.proposals.auto import AutoProposalConfig
from regionspot.serve.app import create_app
from regionspot.serve.config import ServeConfig, ServeLimits

FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _png(side: int) -> bytes:
    rows, cols = np.mgrid[0:side, 0:side]
    pixels = np.stack([rows * 3, cols * 3, rows + cols], axis=-1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = _png(64)

numbers = st.one_of(
    st.integers(min_value=-10**6, max_value=10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["1e400", "9" * 400, "-0", "NaN", "Infinity", "null", "true", '"5"']),
)


def _number_text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


valid_boxes_text = st.lists(
    st.tuples(st.floats(-20, 60), st.floats(-20, 60), st.floats(1, 90), st.floats(1, 90)), min_size=1, max_size=8,
).map(lambda rows: json.dumps([[x, y, x + w, y + h] for x, y, w, h in rows]))
boxes_text = st.one_of(
    valid_boxes_text,
    st.text(max_size=60),
    st.lists(st.lists(numbers, min_size=0, max_size=5), min_size=0, max_size=4).map(
        lambda rows: "[" + ", ".join("[" + ", ".join(_number_text(v) for v in row) + "]" for row in rows) + "]"),
    st.sampled_from(["[[4, 4, 40, 40], [10, 12, 60, 50]]", "[[0, 0, 64, 64]]", "[[-5, -5, 500, 30.5]]"]),
    st.lists(st.tuples(st.floats(-10, 70), st.floats(-10, 70), st.floats(-10, 70), st.floats(-10, 70)),
             min_size=1, max_size=10).map(lambda rows: json.dumps([list(row) for row in rows])),
)
name = st.one_of(st.text(max_size=20), st.sampled_from(["_", "-other", "cat", "CAT", "a\tb", " ", "x" * 301]))
vocabulary_text = st.one_of(
    st.text(max_size=80),
    st.lists(name, max_size=6).map(json.dumps),
    st.lists(name, max_size=6).map(", ".join),
    st.sampled_from(["coco", "LVIS", "objects365", "o365", "[", "[1, 2]", '{"a": 1}', "null", "cat, dog"]),
    st.lists(st.text(st.characters(codec="utf-8"), min_size=1, max_size=30), min_size=1, max_size=5).map(json.dumps),
    st.lists(st.text(st.characters(categories=["L", "N", "Zs", "Pd"]), min_size=1, max_size=30), min_size=1,
             max_size=5, unique_by=str.casefold).map(json.dumps),
)
flag_text = st.one_of(st.sampled_from(["true", "false", "1", "0", "yes", "on", ""]), st.text(max_size=8))
topk_text = st.one_of(st.integers(-5, 100).map(str), st.sampled_from(["", "1e400", "3.5", "nan", "9" * 50]),
                      st.text(max_size=6))
image_part = st.sampled_from(["png", "image_id", "png", "image_id", "garbage", "empty", "none"])


@pytest.fixture(scope="module")
def fuzz_client(serve_model) -> TestClient:
    limits = ServeLimits(max_boxes=8, max_vocabulary=20, max_topk=10, max_mask_pixels=64 * 64 * 6)
    config = ServeConfig(limits=limits, proposals=AutoProposalConfig(points_per_side=4))
    return TestClient(create_app(serve_model, config), raise_server_exceptions=False)


def _image_fields(kind: str, known_id: str) -> tuple[dict, dict]:
    files = {"png": {"image": ("p.png", PNG, "image/png")},
             "garbage": {"image": ("g.png", b"\x89PNG not really", "image/png")},
             "empty": {"image": ("", b"", "application/octet-stream")}}.get(kind, {})
    data = {"image_id": known_id} if kind == "image_id" else {}
    return files, data


def _assert_handled(response) -> None:
    assert response.status_code in (200, 404, 413, 422), (response.status_code, response.text[:500])
    assert "Traceback" not in response.text
    if response.status_code != 200:
        error = response.json()["error"]
        assert error["type"] and error["message"]


@pytest.fixture(scope="module")
def known_id(fuzz_client: TestClient) -> str:
    answer = fuzz_client.post("/v1/recognize", files={"image": ("p.png", PNG, "image/png")},
                              data={"boxes": "[[4, 4, 40, 40]]", "vocabulary": "cat, dog"})
    assert answer.status_code == 200, answer.text
    return answer.json()["image_id"]


@FUZZ
@given(image=image_part, boxes=boxes_text, vocabulary=vocabulary_text, topk=st.one_of(st.none(), topk_text),
       masks=st.one_of(st.none(), flag_text), attention=st.one_of(st.none(), flag_text))
def test_recognize_never_answers_500(fuzz_client: TestClient, known_id: str, image: str, boxes: str,
                                     vocabulary: str, topk: str | None, masks: str | None,
                                     attention: str | None) -> None:
    files, data = _image_fields(image, known_id)
    fields = {"boxes": boxes, "vocabulary": vocabulary, "topk": topk, "masks": masks, "attention": attention}
    data.update({key: value for key, value in fields.items() if value is not None})
    _assert_handled(fuzz_client.post("/v1/recognize", files=files or None, data=data))


@settings(FUZZ, max_examples=80)
@given(image=st.sampled_from(["png", "image_id"]), boxes=boxes_text, vocabulary=vocabulary_text,
       topk=st.integers(1, 10), masks=st.booleans(), attention=st.booleans())
def test_recognize_well_formed_requests_with_any_content(fuzz_client: TestClient, known_id: str, image: str,
                                                         boxes: str, vocabulary: str, topk: int, masks: bool,
                                                         attention: bool) -> None:
    """Well-typed forms reach the box, vocabulary and model checks: any content still ends 200/4xx."""
    files, data = _image_fields(image, known_id)
    data.update(boxes=boxes, vocabulary=vocabulary, topk=str(topk), masks=str(masks).lower(),
                attention=str(attention).lower())
    _assert_handled(fuzz_client.post("/v1/recognize", files=files or None, data=data))


@pytest.mark.slow
@settings(FUZZ, max_examples=15)
@given(image=image_part, max_boxes=st.one_of(st.none(), topk_text), extra=st.text(max_size=10))
def test_propose_never_answers_500(fuzz_client: TestClient, known_id: str, image: str, max_boxes: str | None,
                                   extra: str) -> None:
    files, data = _image_fields(image, known_id)
    if max_boxes is not None:
        data["max_boxes"] = max_boxes
    data["unexpected"] = extra
    _assert_handled(fuzz_client.post("/v1/propose", files=files or None, data=data))
