"""The HTTP API through FastAPI's test client: every route, every limit, bad input, the
embedding cache, and results equal to the predictor's (``regionspot predict``'s JSON)."""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from starlette.formparsers import MultiPartParser

from regionspot.ops.masks import decode_rle
from regionspot.proposals.auto import AutoProposalConfig
from regionspot.serve.app import create_app
from regionspot.serve.config import ServeConfig, ServeLimits
from regionspot.vocab import builtin_vocabulary

BOXES = [[10, 20, 200, 240], [300, 40, 420, 300]]
VOCAB = ["cat", "dog", "bowl", "broccoli"]
SMALL_LIMITS = ServeLimits(max_upload_bytes=30_000, max_form_bytes=10_000, max_image_side=700, max_boxes=2,
                           max_vocabulary=3, max_topk=4)


def png_bytes(width: int, height: int, noise: bool = False) -> bytes:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8) if noise else \
        np.full((height, width, 3), 128, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def error_of(response) -> tuple[int, str]:
    """(status, error type) of an error response, checking the body shape."""
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}, body
    assert body["error"]["message"]
    return response.status_code, body["error"]["type"]


def form(**fields) -> dict[str, str]:
    defaults = {"boxes": json.dumps(BOXES), "vocabulary": json.dumps(VOCAB)}
    return {**defaults, **{k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()}}


@pytest.fixture(scope="module")
def photo(photo_paths: list[Path]) -> Path:
    return photo_paths[0]


@pytest.fixture(scope="module")
def photo_bytes(photo: Path) -> bytes:
    return photo.read_bytes()


@pytest.fixture(scope="module")
def client(serve_model) -> TestClient:
    config = ServeConfig(proposals=AutoProposalConfig(points_per_side=4))
    return TestClient(create_app(serve_model, config))


@pytest.fixture(scope="module")
def limited_client(serve_model) -> TestClient:
    return TestClient(create_app(serve_model, ServeConfig(limits=SMALL_LIMITS)))


@pytest.fixture(scope="module")
def first_response(client: TestClient, photo_bytes: bytes) -> dict:
    """The photo uploaded once (masks and attention on, top 3); later tests use its image_id."""
    response = client.post("/v1/recognize", files={"image": ("photo.jpg", photo_bytes, "image/jpeg")},
                           data=form(topk="3", attention="true"))
    assert response.status_code == 200, response.text
    return response.json()


# ------------------------------------------------------------------ routes
def test_healthz(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert client.head("/healthz").status_code == 200  # load balancers probe with HEAD


@pytest.mark.parametrize(("field", "value", "kind"), [
    ("vocabulary", "_", "bad_vocabulary"),
    ("vocabulary", "cat, -other", "bad_vocabulary"),
    ("vocabulary", "x" * 5000, "bad_vocabulary"),
    ("vocabulary", "[" + "9" * 5000 + "]", "bad_vocabulary"),
    ("boxes", "[[1e400, 0, 10, 10]]", "bad_boxes"),
    ("boxes", "[[" + "9" * 5000 + ", 0, 10, 10]]", "bad_boxes"),
    ("boxes", "[[" + "9" * 400 + ", 0, 10, 10]]", "bad_boxes"),
])
def test_hostile_names_and_numbers_are_422(client: TestClient, photo_bytes: bytes, field: str, value: str,
                                           kind: str) -> None:
    data = {"boxes": "[[10, 20, 200, 240]]", "vocabulary": "cat, dog", field: value}
    response = client.post("/v1/recognize", files={"image": ("photo.jpg", photo_bytes, "image/jpeg")}, data=data)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["type"] == kind and "Traceback" not in response.text


def test_info_reports_backbones_vocabularies_limits(client: TestClient, limited_client: TestClient) -> None:
    info = client.get("/v1/info").json()
    assert info["vocabularies"] == {"lvis": 1203, "coco": 80, "objects365": 365}
    assert info["backbones"]["sam"]["family"] == "mobile_sam" and info["backbones"]["clip_vision"] is not None
    assert info["trained"] is False and info["version"]
    assert info["limits"]["max_boxes"] == ServeLimits().max_boxes
    limits = limited_client.get("/v1/info").json()["limits"]
    assert {k: limits[k] for k in ("max_upload_bytes", "max_image_side", "max_boxes", "max_vocabulary",
                                   "max_topk")} == {"max_upload_bytes": 30_000, "max_image_side": 700,
                                                    "max_boxes": 2, "max_vocabulary": 3, "max_topk": 4}
    assert info["method"] == "regionspot" and "UNTRAINED" in info["model"] and info["score_kind"] == "sigmoid"


def test_openapi_describes_the_form_fields(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert {"/healthz", "/v1/info", "/v1/recognize", "/v1/propose"} <= set(schema["paths"])
    recognize = {"image", "image_id", "boxes", "points", "point_labels", "region_masks", "vocabulary", "topk", "masks",
                 "attention"}
    for path, fields in {"/v1/recognize": recognize,
                         "/v1/propose": {"image", "image_id", "max_boxes"}}.items():
        body = schema["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
        if "$ref" in body:
            body = schema["components"]["schemas"][body["$ref"].split("/")[-1]]
        assert set(body["properties"]) == fields
    assert client.get("/docs").status_code == 200


def test_recognize_equals_the_predictor(first_response: dict, serve_model, photo: Path, photo_bytes: bytes) -> None:
    predictor = serve_model.predictor()
    predictor.set_image(photo)
    reference = predictor.predict(boxes=BOXES, vocabulary=VOCAB, topk=3, with_masks=True, with_attention=True)
    expected = reference.to_dict()
    for region, grid in zip(expected["regions"], reference.extras["attention"], strict=True):
        region["attention"] = grid.tolist()
    document = dict(first_response)
    assert document.pop("image_id") == hashlib.sha256(photo_bytes).hexdigest()
    assert document.pop("method") == "regionspot"
    assert document == expected
    region = document["regions"][0]
    assert decode_rle([region["mask"]])[0].shape == (480, 640) and len(region["topk"]) == 3


def test_attention_maps_are_grids_that_sum_to_one(first_response: dict) -> None:
    for region in first_response["regions"]:
        grid = np.asarray(region["attention"])
        assert grid.ndim == 2 and grid.shape[0] == grid.shape[1] > 1
        assert grid.sum() == pytest.approx(1.0, abs=1e-5) and (grid >= 0).all()


def test_by_image_id_without_masks_or_attention(client: TestClient, first_response: dict) -> None:
    response = client.post("/v1/recognize", data=form(image_id=first_response["image_id"], topk="3", masks="false"))
    assert response.status_code == 200, response.text
    document = response.json()
    assert document["image_id"] == first_response["image_id"]
    for region, earlier in zip(document["regions"], first_response["regions"], strict=True):
        assert "mask" not in region and "attention" not in region
        assert region["box"] == earlier["box"]
        assert [t["label"] for t in region["topk"]] == [t["label"] for t in earlier["topk"]]
        # need_attention takes another attention kernel: equal up to float rounding
        assert [t["score"] for t in region["topk"]] == pytest.approx([t["score"] for t in earlier["topk"]], rel=1e-5)


def test_builtin_vocabulary_name(client: TestClient, first_response: dict) -> None:
    response = client.post("/v1/recognize", data=form(image_id=first_response["image_id"], vocabulary=" COCO ",
                                                      masks="false"))
    assert response.status_code == 200, response.text
    document = response.json()
    assert document["vocabulary"] == builtin_vocabulary("coco")
    assert all(region["label"] in document["vocabulary"] for region in document["regions"])


@pytest.mark.parametrize(("text", "names"), [
    ("cat\ndog, bowl\n", ["cat", "dog", "bowl"]),
    ('["traffic light", "cat, sitting"]', ["traffic light", "cat, sitting"]),
    ("/etc/passwd", ["/etc/passwd"]),  # a name, never a file read on the server
])
def test_vocabulary_as_text_or_json(client: TestClient, first_response: dict, text: str, names: list[str]) -> None:
    response = client.post("/v1/recognize", data=form(image_id=first_response["image_id"], vocabulary=text,
                                                      masks="false"))
    assert response.status_code == 200, response.text
    assert response.json()["vocabulary"] == names


def test_propose_by_id_and_by_upload(client: TestClient, first_response: dict, photo_bytes: bytes) -> None:
    response = client.post("/v1/propose", data={"image_id": first_response["image_id"], "max_boxes": "2"})
    assert response.status_code == 200, response.text
    document = response.json()
    assert document["image_id"] == first_response["image_id"]
    assert document["image"] == {"height": 480, "width": 640}
    assert len(document["boxes"]) == len(document["scores"]) <= 2
    for x0, y0, x1, y1 in document["boxes"]:
        assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 480
    assert document["scores"] == sorted(document["scores"], reverse=True)
    again = client.post("/v1/propose", files={"image": ("p.jpg", photo_bytes, "image/jpeg")}, data={"max_boxes": "2"})
    assert again.status_code == 200 and again.json() == document


# ------------------------------------------------------------------ embedding cache
def test_same_image_is_encoded_once(serve_model, photo_bytes: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"sam": 0, "clip": 0}

    def counting(name: str, method):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return method(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(serve_model.region_tokenizer, "encode_image",
                        counting("sam", serve_model.region_tokenizer.encode_image))
    monkeypatch.setattr(serve_model.image_encoder, "encode_image",
                        counting("clip", serve_model.image_encoder.encode_image))
    client = TestClient(create_app(serve_model, ServeConfig(cache_size=2)))
    upload = {"image": ("photo.jpg", photo_bytes, "image/jpeg")}
    first = client.post("/v1/recognize", files=upload, data=form(masks="false"))
    assert first.status_code == 200 and calls == {"sam": 1, "clip": 1}
    second = client.post("/v1/recognize", files=upload, data=form(masks="false", vocabulary="dog, cat"))
    third = client.post("/v1/recognize", data=form(image_id=first.json()["image_id"], masks="false"))
    assert second.status_code == 200 and third.status_code == 200
    assert calls == {"sam": 1, "clip": 1}
    assert third.json() == first.json()


# ------------------------------------------------------------------ limits
def test_413_from_content_length(limited_client: TestClient) -> None:
    response = limited_client.post("/v1/recognize", files={"image": ("big.png", b"\0" * 50_000, "image/png")},
                                   data=form())
    assert error_of(response) == (413, "upload_too_large")


def test_413_while_reading_a_body_without_length(limited_client: TestClient) -> None:
    boundary = "regionspotboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode()

    def chunks():
        yield head
        for _ in range(20):
            yield b"\0" * 4096
        yield f"\r\n--{boundary}--\r\n".encode()

    response = limited_client.post("/v1/recognize", content=chunks(),
                                   headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert error_of(response) == (413, "upload_too_large")


def test_413_for_an_image_file_over_the_limit(limited_client: TestClient) -> None:
    response = limited_client.post("/v1/recognize", files={"image": ("big.png", b"\0" * 35_000, "image/png")},
                                   data=form(boxes=[[0, 0, 5, 5]], vocabulary="a"))
    status, kind = error_of(response)
    assert (status, kind) == (413, "upload_too_large") and "max_upload_bytes" in response.json()["error"]["message"]


@pytest.mark.parametrize("multipart", [True, False])
def test_413_for_a_form_field_over_the_limit(limited_client: TestClient, multipart: bool) -> None:
    files = {"image": ("small.png", png_bytes(4, 4), "image/png")} if multipart else None
    fields = form(vocabulary="x" * 15_000) if multipart else form(image_id="0" * 64, vocabulary="x" * 15_000)
    response = limited_client.post("/v1/recognize", files=files, data=fields)
    assert error_of(response) == (413, "upload_too_large")


def test_422_for_an_image_side_over_the_limit(limited_client: TestClient) -> None:
    response = limited_client.post("/v1/recognize", files={"image": ("wide.png", png_bytes(800, 10), "image/png")},
                                   data=form(boxes=[[0, 0, 5, 5]], vocabulary="a"))
    assert error_of(response) == (422, "image_too_large")


def test_422_for_too_many_boxes(limited_client: TestClient) -> None:
    response = limited_client.post("/v1/recognize", data=form(image_id="0" * 64, boxes=[[0, 0, 5, 5]] * 3,
                                                              vocabulary="a"))
    assert error_of(response) == (422, "too_many_boxes")


def test_vocabulary_size_limit_spares_builtin_vocabularies(limited_client: TestClient) -> None:
    too_many = limited_client.post("/v1/recognize", data=form(image_id="0" * 64, boxes=[[0, 0, 5, 5]],
                                                              vocabulary="a,b,c,d"))
    assert error_of(too_many) == (422, "vocabulary_too_large")
    builtin = limited_client.post("/v1/recognize", data=form(image_id="0" * 64, boxes=[[0, 0, 5, 5]],
                                                             vocabulary="coco"))
    assert error_of(builtin) == (404, "unknown_image_id")  # got past the vocabulary check


@pytest.mark.parametrize(("topk", "kind"), [("5", "bad_topk"), ("0", "bad_topk"), ("two", "invalid_request")])
def test_422_for_bad_topk(limited_client: TestClient, topk: str, kind: str) -> None:
    response = limited_client.post("/v1/recognize", data=form(image_id="0" * 64, boxes=[[0, 0, 5, 5]],
                                                              vocabulary="a", topk=topk))
    assert error_of(response) == (422, kind)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("data", [b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, b""])
def test_422_for_a_corrupt_image(client: TestClient, data: bytes) -> None:
    response = client.post("/v1/recognize", files={"image": ("x.png", data, "image/png")}, data=form())
    assert error_of(response) == (422, "bad_image")


def test_422_for_a_truncated_jpeg(client: TestClient, photo_bytes: bytes) -> None:
    response = client.post("/v1/recognize", files={"image": ("cut.jpg", photo_bytes[:3000], "image/jpeg")},
                           data=form())
    assert error_of(response) == (422, "bad_image")


def test_no_boxes_are_answered_with_no_regions(client: TestClient, first_response: dict) -> None:
    for path, fields in (("/v1/recognize", {}), ("/v1/find", {"queries": "cat"})):
        response = client.post(path, data=form(image_id=first_response["image_id"], boxes="[]", **fields))
        assert response.status_code == 200 and response.json()["regions"] == [], response.text


@pytest.mark.parametrize("boxes", ["not json", "[[]]", "[[1, 2, 3]]", "[[NaN, 0, 10, 10]]", "[[50, 50, 10, 10]]",
                                   '[["a", 0, 10, 10]]', "[[5000, 5000, 6000, 6000]]"])
def test_422_for_bad_boxes(client: TestClient, first_response: dict, boxes: str) -> None:
    response = client.post("/v1/recognize", data=form(image_id=first_response["image_id"], boxes=boxes))
    assert error_of(response) == (422, "bad_boxes")


@pytest.mark.parametrize("vocabulary", ["", " , \n", "cat, Cat", "[1, 2]", "[\"cat\"", "cat\tdog"])
def test_422_for_bad_vocabulary(client: TestClient, first_response: dict, vocabulary: str) -> None:
    response = client.post("/v1/recognize", data=form(image_id=first_response["image_id"], vocabulary=vocabulary))
    status, kind = error_of(response)
    assert status == 422 and kind in {"bad_vocabulary", "invalid_request"}


def test_404_for_an_unknown_image_id(client: TestClient) -> None:
    assert error_of(client.post("/v1/recognize", data=form(image_id="ab" * 32))) == (404, "unknown_image_id")
    assert error_of(client.post("/v1/propose", data={"image_id": "nope"})) == (404, "unknown_image_id")


@pytest.mark.parametrize(("fields", "expected"), [
    ({"vocabulary": "cat"}, "bad_regions"),  # neither boxes nor points
    ({"boxes": "[[0, 0, 5, 5]]"}, "invalid_request"),
    ({"boxes": "[[0, 0, 5, 5]]", "vocabulary": "cat"}, "invalid_request"),  # no image
])
def test_422_for_missing_fields(client: TestClient, fields: dict, expected: str) -> None:
    status, kind = error_of(client.post("/v1/recognize", data=fields))
    assert status == 422 and kind == expected


def test_422_for_image_and_image_id_together(client: TestClient, photo_bytes: bytes, first_response: dict) -> None:
    response = client.post("/v1/recognize", files={"image": ("p.jpg", photo_bytes, "image/jpeg")},
                           data=form(image_id=first_response["image_id"]))
    assert error_of(response) == (422, "invalid_request")


def test_propose_needs_an_image_and_a_positive_max_boxes(client: TestClient, first_response: dict) -> None:
    assert error_of(client.post("/v1/propose", data={})) == (422, "invalid_request")
    response = client.post("/v1/propose", data={"image_id": first_response["image_id"], "max_boxes": "0"})
    assert error_of(response) == (422, "bad_max_boxes")


def test_unknown_route_and_method_give_json_errors(client: TestClient) -> None:
    assert error_of(client.get("/v2/nothing")) == (404, "not_found")
    assert error_of(client.get("/v1/recognize")) == (405, "method_not_allowed")
    assert error_of(client.post("/v1/recognize", content=b"{}", headers={"content-type": "application/json"})) == \
        (422, "invalid_request")


def test_unexpected_error_is_a_bare_500(serve_model, first_response: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    app = create_app(serve_model)

    def explode(*args, **kwargs):
        raise RuntimeError("secret detail /srv/private/path")

    monkeypatch.setattr(app.state.session, "recognize", explode)
    client = TestClient(app, raise_server_exceptions=False)
    response = client.post("/v1/recognize", data=form(image_id=first_response["image_id"]))
    assert error_of(response) == (500, "internal_error")
    assert "secret" not in response.text and "Traceback" not in response.text


# ------------------------------------------------------------------ uploads stay in memory
def test_uploads_never_touch_the_disk(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    big = png_bytes(700, 700, noise=True)
    assert len(big) > MultiPartParser.spool_max_size  # Starlette alone would spool this to a temp file
    opened: list[str] = []
    for name in ("TemporaryFile", "NamedTemporaryFile", "mkstemp", "mkdtemp"):
        original = getattr(tempfile, name)
        monkeypatch.setattr(tempfile, name, lambda *a, _n=name, _o=original, **k: opened.append(_n) or _o(*a, **k))
    response = client.post("/v1/recognize", files={"image": ("big.png", big, "image/png")},
                           data=form(boxes="[[50, 50, 10, 10]]"))
    assert error_of(response) == (422, "bad_boxes")  # the form was parsed, the image read, the boxes checked
    assert opened == []


# ------------------------------------------------------------------ web page
def test_index_page_and_static_files(serve_model, tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<!doctype html><title>page</title>")
    (tmp_path / "app.js").write_text("console.log('hi');")
    client = TestClient(create_app(serve_model, static_dir=tmp_path))
    page = client.get("/")
    assert page.status_code == 200 and "<title>page</title>" in page.text
    script = client.get("/static/app.js")
    assert script.status_code == 200 and "console.log" in script.text
    assert error_of(client.get("/static/missing.js"))[0] == 404


def test_missing_page_gives_a_note(serve_model, tmp_path: Path) -> None:
    client = TestClient(create_app(serve_model, static_dir=tmp_path / "absent"))
    page = client.get("/")
    assert page.status_code == 200 and "/docs" in page.text
    assert error_of(client.get("/static/app.js")) == (404, "not_found")


def test_the_package_page_is_served(client: TestClient) -> None:
    from regionspot.serve.app import STATIC_DIR

    page = client.get("/")
    assert page.status_code == 200
    if (STATIC_DIR / "index.html").is_file():
        assert page.text == (STATIC_DIR / "index.html").read_text()


def test_a_zero_shot_server_says_so_and_answers(serve_model, photo_bytes: bytes) -> None:
    from regionspot.model.zero_shot import ZeroShotCLIP

    client = TestClient(create_app(ZeroShotCLIP.from_model(serve_model)))
    info = client.get("/v1/info").json()
    assert (info["method"], info["trained"], info["score_kind"], info["attention"]) == \
        ("clip-mask-crop", False, "softmax", False)
    assert "zero-shot" in info["model"] and "no trained head" in info["model"]
    upload = {"image": ("photo.jpg", photo_bytes, "image/jpeg")}
    answer = client.post("/v1/recognize", files=upload, data={"boxes": "[[10, 20, 200, 240]]",
                                                              "vocabulary": "cat, dog, bowl", "topk": "3"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["method"] == "clip-mask-crop"
    assert abs(sum(pair["score"] for pair in body["regions"][0]["topk"]) - 1.0) < 1e-4  # softmax over 3 names
    refused = client.post("/v1/recognize", data={"image_id": body["image_id"], "boxes": "[[10, 20, 200, 240]]",
                                                 "vocabulary": "cat", "attention": "true"})
    assert refused.status_code == 422 and refused.json()["error"]["type"] == "attention_unavailable"


@pytest.fixture(scope="module")
def bank_model(mobile_sam_checkpoint: Path, tiny_clip_dir: Path, shared_data: Path):
    """A head bound to the real COCO text bank (no CLIP text tower): it can score COCO names only."""
    from regionspot.config import TextConfig
    from regionspot.model.regionspot import RegionSpot

    bank = shared_data / "text-banks" / "coco_clip-vit-b32_a-name.npy"
    return RegionSpot.from_backbones(sam=str(mobile_sam_checkpoint), clip=str(tiny_clip_dir),
                                     text=TextConfig(bank=str(bank)), clip_vision=False)


def test_a_text_bank_head_offers_and_scores_only_its_names(bank_model, photo_bytes: bytes) -> None:
    client = TestClient(create_app(bank_model))
    assert client.get("/v1/info").json()["vocabularies"] == {"coco": 80}  # lvis, objects365 it cannot score
    upload = {"image": ("photo.jpg", photo_bytes, "image/jpeg")}
    ok = client.post("/v1/recognize", files=upload, data=form(vocabulary="cat, dog", attention="false"))
    assert ok.status_code == 200, ok.text
    refused = client.post("/v1/recognize", files=upload, data=form(vocabulary="cat, unicornfish", attention="false"))
    assert refused.status_code == 422 and refused.json()["error"]["type"] == "bad_vocabulary"
    assert "unicornfish" in refused.json()["error"]["message"]


def test_an_unexpected_error_closes_the_connection(serve_model, monkeypatch: pytest.MonkeyPatch,
                                                   photo_bytes: bytes) -> None:
    from regionspot.serve.session import InferenceSession

    client = TestClient(create_app(serve_model), raise_server_exceptions=False)
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(InferenceSession, "recognize", broken)
    answer = client.post("/v1/recognize", files={"image": ("photo.jpg", photo_bytes, "image/jpeg")},
                         data=form(vocabulary="cat"))
    assert answer.status_code == 500 and answer.headers["connection"] == "close"
    assert "a bug" not in answer.text and "Traceback" not in answer.text


def test_a_field_sent_twice_is_refused(client: TestClient, photo_bytes: bytes) -> None:
    twice = {"boxes": [json.dumps(BOXES), "[[0, 0, 5, 5]]"], "vocabulary": "cat"}
    answer = client.post("/v1/recognize", files=[("image", ("p.jpg", photo_bytes, "image/jpeg"))], data=twice)
    assert error_of(answer) == (422, "repeated_field") and "'boxes'" in answer.json()["error"]["message"]
    two_images = [("image", ("a.jpg", photo_bytes, "image/jpeg")), ("image", ("b.jpg", photo_bytes, "image/jpeg"))]
    answer = client.post("/v1/recognize", files=two_images, data=form())
    assert error_of(answer) == (422, "repeated_field")
