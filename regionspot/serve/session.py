"""One model per process: an LRU cache of encoded images and one lock around inference.

Requests run in FastAPI's thread pool. Image encoding, the prompt decoder and the head run
while holding ``InferenceSession``'s inference lock, and each call builds its own
:class:`RegionPredictor` pointed at the cached :class:`EncodedImage`, so no request ever sees
another one's predictor state. Decoding an upload happens before the lock, and so does embedding
the vocabulary (the text embedder's caches are thread-safe and it encodes one set of new names
at a time): a request with many new names never holds back requests whose vocabularies are
cached.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from regionspot.ops.memory import release_free_memory
from regionspot.predictor import EncodedImage, RegionPredictor
from regionspot.proposals.auto import AutoProposalConfig, Proposals
from regionspot.results import RegionResult
from regionspot.serve.errors import ApiError
from regionspot.serve.uploads import decode_image_bytes
from regionspot.vocab import find_vocabulary, validate_vocabulary

if TYPE_CHECKING:
    from regionspot.model.loader import Model

__all__ = ["ImageInput", "InferenceSession"]


@dataclass
class ImageInput:
    """The image of one request: an upload (``data``, ``key`` its sha256) or, with ``data``
    None, a reference to an image encoded by an earlier request (``key`` its image id)."""

    key: str
    data: bytes | None = None
    max_side: int = 4096
    _pixels: np.ndarray | None = field(default=None, init=False, repr=False)

    def pixels(self) -> np.ndarray:
        """HxWx3 uint8, decoded once. 404 ``unknown_image_id`` for a reference, 422 for a bad file."""
        if self._pixels is None:
            if self.data is None:
                raise ApiError(404, "unknown_image_id",
                               f"image_id {self.key[:80]!r} is unknown or has expired from the cache; "
                               "upload the image again")
            self._pixels = decode_image_bytes(self.data, self.max_side)
        return self._pixels


@dataclass
class FoundRegions:
    """What ``/v1/find`` answers: the regions ``found`` (best first) and how many more passed the
    threshold but were ``not_returned`` (over the server's ``max_boxes``)."""

    found: RegionResult
    not_returned: int


class InferenceSession:
    """Serialised inference on one recognizer with ``cache_size`` encoded images kept."""

    def __init__(self, model: Model, cache_size: int, max_mask_pixels: int | None = None) -> None:
        if cache_size < 1:
            raise ValueError("cache_size must be >= 1")
        self.model = model
        self.cache_size = cache_size
        self.max_mask_pixels = max_mask_pixels
        self._inference_lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._cache: OrderedDict[str, EncodedImage] = OrderedDict()

    def warm_up(self, vocabularies: Sequence[str]) -> None:
        """Compute (and cache on disk, where the text embedder does) the text embeddings of each
        vocabulary spec (a built-in name or a file), before requests arrive."""
        from regionspot.vocab import parse_vocabulary, validate_vocabulary

        for spec in vocabularies:
            names = validate_vocabulary(parse_vocabulary(spec))
            print(f"warming up text embeddings of {spec!r} ({len(names)} names)", flush=True)
            self.model.text_embeddings(names)

    def is_cached(self, key: str) -> bool:
        with self._cache_lock:
            return key in self._cache

    def cached_keys(self) -> list[str]:
        """Image ids in the cache, least recently used first."""
        with self._cache_lock:
            return list(self._cache)

    def recognize(self, image: ImageInput, boxes: np.ndarray | None, vocabulary: Sequence[str], topk: int,
                  with_masks: bool, with_attention: bool, *, points: Sequence[np.ndarray] | None = None,
                  point_labels: Sequence[np.ndarray] | None = None, masks: np.ndarray | None = None) -> RegionResult:
        """Name the regions of ``image`` against ``vocabulary``: ``boxes`` (float [R, 4] xyxy
        pixels), or clicks (``points``: per region [P_r, 2]; ``point_labels``: per region [P_r], or
        None), or ``masks``
        (bool [R, H, W]), as :meth:`RegionPredictor.predict` takes them. Raises
        BoxError/VocabularyError/ApiError (422 ``too_many_mask_pixels`` above ``max_mask_pixels``)."""
        regions = next((len(given) for given in (boxes, points, masks) if given is not None), 0)
        if with_masks or self.model.needs_region_masks or points is not None:
            self._check_mask_pixels(image, regions, with_masks)
        names = validate_vocabulary(list(vocabulary))
        try:
            self.model.text_embeddings(names)  # outside the inference lock; memoised for predict
            with self._inference_lock:
                predictor = self._predictor_for(image)
                return predictor.predict(boxes=boxes, vocabulary=names, topk=topk, with_masks=with_masks,
                                         with_attention=with_attention, points=points, point_labels=point_labels,
                                         masks=masks)
        finally:
            release_free_memory()

    def find(self, image: ImageInput, queries: Sequence[str], *, boxes: np.ndarray | None,
             proposals: AutoProposalConfig, with_masks: bool, max_regions: int, **selection: Any) -> FoundRegions:
        """Every instance of each query in ``image`` (:meth:`RegionPredictor.find`): among
        ``boxes`` (float [R, 4] xyxy pixels) or SAM's proposals made with ``proposals``;
        ``selection``: ``threshold``, ``nms_iou``, ``nms``, ``max_per_query``. At most
        ``max_regions`` are returned, best first. Regions are found first and masks made after,
        so the mask-pixel limit is checked on the regions returned (and, for a recognizer that
        crops by masks, on the candidates before they are scored)."""
        names = validate_vocabulary(list(queries))
        if self.model.needs_region_masks:
            self._check_mask_pixels(image, len(boxes) if boxes is not None else proposals.max_proposals, False)
        try:
            self.model.text_embeddings(find_vocabulary(names, self.model.score_kind))  # outside the lock
            with self._inference_lock:
                predictor = self._predictor_for(image)
                everything = predictor.find(names, boxes=boxes, proposals=proposals, with_masks=False, **selection)
            found = everything[:max_regions]
            if not with_masks:
                return FoundRegions(found, len(everything) - len(found))
            self._check_mask_pixels(image, len(found), True)
            with self._inference_lock:
                masks, scores = predictor.segment(found.boxes) if len(found) else \
                    (np.zeros((0, *found.image_size), dtype=bool), np.zeros(0))
            return FoundRegions(dataclasses.replace(found, masks=masks, mask_scores=scores),
                                len(everything) - len(found))
        finally:
            release_free_memory()

    def image_size(self, image: ImageInput) -> tuple[int, int]:
        """(H, W) of ``image`` (from the cache when it was encoded before)."""
        encoded = self._lookup(image.key)
        height, width = encoded.size if encoded is not None else image.pixels().shape[:2]
        return int(height), int(width)

    def _check_mask_pixels(self, image: ImageInput, regions: int, asked: bool) -> None:
        """422 when ``regions`` masks at ``image``'s size would exceed ``max_mask_pixels``."""
        if self.max_mask_pixels is None:
            return
        height, width = self.image_size(image)
        total = regions * height * width
        if total <= self.max_mask_pixels:
            return
        why = ("masks were asked for" if asked else
               f"this server's recognizer ({self.model.method}) crops each region by its mask")
        raise ApiError(422, "too_many_mask_pixels",
                       f"{regions} masks of a {width}x{height} image are {total:,} pixels, over max_mask_pixels="
                       f"{self.max_mask_pixels:,} ({why}); send fewer boxes, a smaller image"
                       + (", or masks=false" if asked and not self.model.needs_region_masks else ""))

    def propose(self, image: ImageInput, config: AutoProposalConfig,
                max_boxes: int | None = None) -> tuple[tuple[int, int], Proposals]:
        """Image size (H, W) and class-agnostic boxes of ``image``, at most ``max_boxes``."""
        if max_boxes is not None:
            config = dataclasses.replace(config, max_proposals=min(config.max_proposals, max_boxes))
        try:
            with self._inference_lock:
                predictor = self._predictor_for(image)
                assert predictor.encoded is not None
                return predictor.encoded.size, predictor.propose(config)
        finally:
            release_free_memory()

    def _predictor_for(self, image: ImageInput) -> RegionPredictor:
        """A fresh predictor on ``image``'s encoding, from the cache or encoded now (and cached).
        The caller holds the inference lock."""
        encoded = self._lookup(image.key)
        if encoded is None:
            pixels = image.pixels()
            encoded = self.model.predictor().encode(pixels)
            self._store(image.key, encoded)
        predictor = self.model.predictor()
        predictor.encoded = encoded
        return predictor

    def _lookup(self, key: str) -> EncodedImage | None:
        with self._cache_lock:
            encoded = self._cache.get(key)
            if encoded is not None:
                self._cache.move_to_end(key)
            return encoded

    def _store(self, key: str, encoded: EncodedImage) -> None:
        with self._cache_lock:
            self._cache[key] = encoded
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
