"""Load test: 50 concurrent /v1/recognize requests against the real uvicorn server on loopback,
mixing photos, box sets and vocabularies; every one succeeds and equals its single request."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

CONCURRENT_REQUESTS = 50

# (photo index, boxes, vocabulary, masks): six kinds over three photos
KINDS = [
    (0, [[10, 20, 200, 240]], "cat, dog, bowl", False),
    (0, [[300, 40, 420, 300], [0, 0, 640, 480]], "broccoli\ncarrot\ntable", True),
    (1, [[50, 50, 300, 300]], '["giraffe", "tree", "grass"]', False),
    (1, [[0, 0, 100, 100], [100, 100, 400, 400], [5, 5, 50, 60]], "coco", False),
    (2, [[20, 30, 250, 260]], "person, umbrella", False),
    (2, [[100, 50, 300, 200], [10, 10, 90, 90]], "lamp, chair, cup, plant", False),
]


def send(client: httpx.Client, url: str, photos: list[bytes], kind: int) -> httpx.Response:
    photo, boxes, vocabulary, masks = KINDS[kind]
    return client.post(f"{url}/v1/recognize", files={"image": (f"photo{photo}.jpg", photos[photo], "image/jpeg")},
                       data={"boxes": json.dumps(boxes), "vocabulary": vocabulary, "topk": "3",
                             "masks": str(masks).lower()})


@pytest.mark.slow
def test_fifty_concurrent_requests_equal_single_requests(live_server: str, live_app, serve_model,
                                                         photo_paths: list[Path],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    photos = [path.read_bytes() for path in photo_paths]
    encodes = []
    original = serve_model.region_tokenizer.encode_image
    monkeypatch.setattr(serve_model.region_tokenizer, "encode_image",
                        lambda *args, **kwargs: encodes.append(1) or original(*args, **kwargs))
    uncached = {photo for photo, *_ in KINDS if not _is_cached(live_app, photos[photo])}
    # the first photo's single requests go first; the other photos are first seen under load
    with httpx.Client(timeout=300, limits=httpx.Limits(max_connections=CONCURRENT_REQUESTS)) as client:
        single = {kind: send(client, live_server, photos, kind) for kind in (0, 1)}
        order = [i % len(KINDS) for i in range(CONCURRENT_REQUESTS)]
        with ThreadPoolExecutor(max_workers=CONCURRENT_REQUESTS) as pool:
            responses = list(pool.map(lambda kind: send(client, live_server, photos, kind), order))
        single.update({kind: send(client, live_server, photos, kind) for kind in range(2, len(KINDS))})
    assert all(response.status_code == 200 for response in single.values())
    for kind, response in zip(order, responses, strict=True):
        assert response.status_code == 200, response.text
        assert response.json() == single[kind].json(), f"request of kind {kind} differs from its single request"
    documents = [single[kind].json() for kind in range(len(KINDS))]
    assert len({json.dumps(document["regions"]) for document in documents}) == len(KINDS)  # kinds tell apart
    assert len(encodes) == len(uncached)  # each new photo encoded once, even when first seen by many requests


def _is_cached(app, data: bytes) -> bool:
    from regionspot.serve.uploads import upload_key

    return app.state.session.is_cached(upload_key(data))
