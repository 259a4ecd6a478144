"""``regionspot serve --runtime onnx``: boxes are recognised as the PyTorch model recognises them,
and what an ONNX export cannot do (clicks, automatic proposals) is a 501 JSON error, not a 500."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from regionspot.model.loader import ModelSource, load
from regionspot.serve.app import create_app

# Every test here uses the tiny ONNX export (about 30 s to make): CI runs them, -m 'not slow' skips them.
pytestmark = pytest.mark.slow

VOCAB = ["cat", "dog", "bowl", "broccoli"]
BOXES = [[10, 20, 200, 300], [300, 100, 630, 470]]


@pytest.fixture(scope="module")
def clients(tiny_onnx_export: Path, text_cache_dir: Path) -> dict[str, TestClient]:
    overrides = [f"text.cache_dir={text_cache_dir}"]
    return {runtime: TestClient(create_app(load(ModelSource(checkpoint=str(tiny_onnx_export), runtime=runtime,
                                                            overrides=overrides), device="cpu", log=None)),
                                raise_server_exceptions=False)
            for runtime in ("torch", "onnx")}


def test_boxes_get_the_pytorch_answer(clients: dict[str, TestClient], photo_paths: list[Path],
                                      post_form: Callable[..., dict]) -> None:
    answers = {runtime: post_form(client, "/v1/recognize", photo_paths[0], {"vocabulary": VOCAB, "boxes": BOXES})
               for runtime, client in clients.items()}
    assert answers["onnx"]["status"] == 200
    assert [clients[runtime].get("/v1/info").json()["runtime"] for runtime in ("torch", "onnx")] == ["torch", "onnx"]
    for ours, theirs in zip(answers["torch"]["regions"], answers["onnx"]["regions"], strict=True):
        assert ours["label"] == theirs["label"]
        np.testing.assert_allclose(theirs["score"], ours["score"], atol=1e-4)


@pytest.mark.parametrize(("route", "fields", "error_type"), [
    ("/v1/recognize", {"vocabulary": VOCAB, "points": [[100, 100]]}, "unsupported_by_model"),
    ("/v1/propose", {}, "proposals_unavailable"),
])
def test_what_an_export_cannot_do_is_501(clients: dict[str, TestClient], photo_paths: list[Path],
                                         post_form: Callable[..., dict], route: str, fields: dict,
                                         error_type: str) -> None:
    answer = post_form(clients["onnx"], route, photo_paths[0], fields)
    assert answer["status"] == 501 and answer["error"]["type"] == error_type
    assert "onnx" in answer["error"]["message"].lower() or "encode_point" in answer["error"]["message"]
