"""Fixtures for the HTTP server: a tiny model (real MobileSAM + tiny random CLIP) and a real
uvicorn server on a free loopback port (``live_server``, also used by the browser tests)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from regionspot.proposals.auto import AutoProposalConfig
from regionspot.serve.config import ServeConfig

PHOTOS = ("000000000009.jpg", "000000000025.jpg", "000000000030.jpg")

# a coarse proposal grid keeps /v1/propose at a few seconds on CPU
LIVE_SERVER_CONFIG = ServeConfig(proposals=AutoProposalConfig(points_per_side=8))


@pytest.fixture(scope="session")
def serve_model(mobile_sam_checkpoint: Path, tiny_clip_dir: Path, text_cache_dir: Path):
    """RegionSpot on the real MobileSAM and the tiny random CLIP, fresh head, region
    self-attention off, single prompt template (so built-in vocabularies embed quickly)."""
    import torch

    from regionspot.config import TextConfig
    from regionspot.model.regionspot import RegionSpot

    torch.manual_seed(0)
    return RegionSpot.from_backbones(
        sam=str(mobile_sam_checkpoint), clip=str(tiny_clip_dir),
        text=TextConfig(cache_dir=str(text_cache_dir), templates="single"),
        overrides=["fusion.region_self_attention=false"],
    )


def post_with_photo(client, route: str, photo: Path, fields: dict[str, object]) -> dict:
    """POST ``fields`` (non-strings sent as JSON) and ``photo`` as the ``image`` file to
    ``route`` of a TestClient; the JSON answer with its ``status`` added."""
    data = {key: value if isinstance(value, str) else json.dumps(value) for key, value in fields.items()}
    with photo.open("rb") as handle:
        response = client.post(route, data=data, files={"image": (photo.name, handle, "image/jpeg")})
    return {"status": response.status_code, **response.json()}


@pytest.fixture(scope="session")
def post_form():
    """:func:`post_with_photo`, for tests to call."""
    return post_with_photo


@pytest.fixture(scope="session")
def photo_paths(coco_sample: Path) -> list[Path]:
    return [coco_sample / "images" / name for name in PHOTOS]


@contextmanager
def running_server(app, startup_timeout_s: float = 60.0) -> Iterator[str]:
    """Run ``app`` with uvicorn on 127.0.0.1 (a free port) in a background thread; yields the
    base URL (``http://127.0.0.1:PORT``) and stops the server afterwards."""
    import uvicorn

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True,
                              name=f"uvicorn-{port}")
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            listener.close()
            pytest.fail(f"uvicorn did not start on 127.0.0.1:{port}")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        listener.close()


@pytest.fixture(scope="session")
def live_app(serve_model):
    """The app behind ``live_server`` (its ``state.session`` holds the embedding cache)."""
    from regionspot.serve.app import create_app

    return create_app(serve_model, LIVE_SERVER_CONFIG)


@pytest.fixture(scope="session")
def live_server(live_app) -> Iterator[str]:
    """Base URL (``http://127.0.0.1:PORT``, no trailing slash) of a real uvicorn server running
    the API and the web page on the tiny model, for the whole test session."""
    with running_server(live_app) as url:
        yield url
