"""InferenceSession on a stand-in model: LRU cache of encodings, one encode per image, and
inference that never runs in two threads at once."""

from __future__ import annotations

import io
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from regionspot.predictor import RegionPredictor
from regionspot.serve.errors import ApiError
from regionspot.serve.session import ImageInput, InferenceSession
from regionspot.serve.uploads import upload_key


class RecordingTokenizer:
    """Stands in for the SAM side: records calls and how many run at the same time."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.calls = 0
        self.active = 0
        self.max_active = 0
        self.delay_s = delay_s
        self._lock = threading.Lock()

    def encode_image(self, image: np.ndarray) -> SimpleNamespace:
        with self._lock:
            self.calls += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        time.sleep(self.delay_s)
        with self._lock:
            self.active -= 1
        return SimpleNamespace(original_size=image.shape[:2], pixels_sum=int(image.sum()))


class StandInModel:
    """A recognizer whose SAM records its calls and which needs no other per-image work."""

    device = torch.device("cpu")
    precision = "fp32"
    method = "stand-in"
    needs_region_masks = False

    def __init__(self, delay_s: float = 0.0) -> None:
        self.region_tokenizer = RecordingTokenizer(delay_s)
        self.image_encoder = None
        self.embedded: list[tuple[str, ...]] = []

    def text_embeddings(self, names: list[str]) -> torch.Tensor:
        self.embedded.append(tuple(names))
        return torch.zeros(len(names), 4)

    def input_frame(self, image: np.ndarray) -> np.ndarray:
        return image

    def encode_context(self, image: np.ndarray) -> None:
        return None

    def predictor(self) -> RegionPredictor:
        return RegionPredictor(self)  # type: ignore[arg-type]


def png_bytes(value: int, size: tuple[int, int] = (8, 6)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def upload(value: int) -> ImageInput:
    data = png_bytes(value)
    return ImageInput(key=upload_key(data), data=data)


@pytest.fixture
def echo_predict(monkeypatch: pytest.MonkeyPatch) -> None:
    """``predict`` returns the predictor's encoding, so a test sees which image it ran on."""
    monkeypatch.setattr(RegionPredictor, "predict", lambda self, **kwargs: self.encoded)


def recognize(session: InferenceSession, image: ImageInput):
    return session.recognize(image, np.array([[0, 0, 4, 4]]), ["a"], 1, with_masks=False, with_attention=False)


def test_encodes_each_image_once_and_evicts_least_recently_used(echo_predict) -> None:
    model = StandInModel()
    session = InferenceSession(model, cache_size=2)  # type: ignore[arg-type]
    first, second, third = upload(10), upload(20), upload(30)
    assert recognize(session, first).sam.pixels_sum == 10 * 8 * 6 * 3
    recognize(session, ImageInput(key=first.key))  # by id: no new encode
    recognize(session, upload(10))  # same bytes again: no new encode
    assert model.region_tokenizer.calls == 1
    recognize(session, second)
    recognize(session, first)  # first is now the most recently used
    recognize(session, third)  # evicts second
    assert model.region_tokenizer.calls == 3
    assert session.cached_keys() == [first.key, third.key]
    with pytest.raises(ApiError) as caught:
        recognize(session, ImageInput(key=second.key))
    assert caught.value.status_code == 404 and caught.value.error_type == "unknown_image_id"


def test_concurrent_requests_run_one_at_a_time_and_encode_a_new_image_once(echo_predict) -> None:
    model = StandInModel(delay_s=0.05)
    session = InferenceSession(model, cache_size=4)  # type: ignore[arg-type]
    images = [upload(value) for value in (1, 2, 1, 2, 1, 2, 3, 3)]
    results: list[object] = [None] * len(images)

    def worker(index: int) -> None:
        results[index] = recognize(session, images[index])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(images))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert model.region_tokenizer.max_active == 1
    assert model.region_tokenizer.calls == 3  # three distinct images, each encoded once
    for image, result in zip(images, results, strict=True):  # every request got its own image's encoding
        assert result.sam.pixels_sum == int(image.pixels().sum())


def test_image_input_without_bytes_is_an_unknown_id() -> None:
    with pytest.raises(ApiError) as caught:
        ImageInput(key="0" * 64).pixels()
    assert caught.value.status_code == 404


def test_warm_up_embeds_each_vocabulary_once_before_requests() -> None:
    model = StandInModel()
    seen: list[list[str]] = []
    model.text_embeddings = lambda names: seen.append(list(names))  # type: ignore[attr-defined]
    InferenceSession(model, cache_size=2).warm_up(["coco", "cat, dog"])  # type: ignore[arg-type]
    assert len(seen) == 2 and len(seen[0]) == 80 and seen[1] == ["cat", "dog"]


def test_warm_up_refuses_a_bad_vocabulary() -> None:
    from regionspot.vocab import VocabularyError

    with pytest.raises(VocabularyError):
        InferenceSession(StandInModel(), cache_size=2).warm_up(["cat, cat"])  # type: ignore[arg-type]


def test_a_new_vocabulary_is_embedded_outside_the_inference_lock(echo_predict) -> None:
    """A request embedding many new names must not hold back a request whose vocabulary is ready."""
    model = StandInModel()
    release = threading.Event()
    started = threading.Event()

    def slow_text(names: list[str]) -> torch.Tensor:
        if names == ["slow"]:
            started.set()
            assert release.wait(timeout=30)
        return torch.zeros(len(names), 4)

    model.text_embeddings = slow_text  # type: ignore[method-assign]
    session = InferenceSession(model, cache_size=2)  # type: ignore[arg-type]
    slow = threading.Thread(target=lambda: session.recognize(upload(5), np.array([[0, 0, 4, 4]]), ["slow"], 1,
                                                             with_masks=False, with_attention=False))
    slow.start()
    assert started.wait(timeout=30)
    recognize(session, upload(6))  # answered while the slow one is still embedding its names
    assert slow.is_alive()
    release.set()
    slow.join(timeout=30)
    assert model.region_tokenizer.calls == 2


@pytest.mark.parametrize("needs_masks", [False, True])
def test_masks_over_the_pixel_limit_are_refused_before_any_work(echo_predict, needs_masks: bool) -> None:
    model = StandInModel()
    model.needs_region_masks = needs_masks  # type: ignore[misc]
    session = InferenceSession(model, cache_size=2, max_mask_pixels=2 * 8 * 6)  # type: ignore[arg-type]
    boxes = np.array([[0, 0, 4, 4]] * 3)
    with pytest.raises(ApiError) as caught:
        session.recognize(upload(7), boxes, ["a"], 1, with_masks=True, with_attention=False)
    error = caught.value
    assert error.status_code == 422 and error.error_type == "too_many_mask_pixels"
    assert "3 masks of a 8x6 image are 144 pixels, over max_mask_pixels=96" in error.message
    assert ("masks=false" in error.message) is not needs_masks
    assert model.region_tokenizer.calls == 0 and model.embedded == []
    session.recognize(upload(7), boxes[:2], ["a"], 1, with_masks=True, with_attention=False)  # at the limit
    if not needs_masks:  # without masks nothing is made at image size
        session.recognize(upload(7), boxes, ["a"], 1, with_masks=False, with_attention=False)
    else:
        with pytest.raises(ApiError, match="crops each region by its mask"):
            session.recognize(upload(7), boxes, ["a"], 1, with_masks=False, with_attention=False)
