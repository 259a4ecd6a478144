"""The region classifiers of the paper's Table 1 behind one interface, each driven through the
one inference path (:class:`regionspot.predictor.RegionPredictor`).

    classifier = build_classifier("clip-crop", model)
    result = classifier.classify(image, boxes, vocabulary, topk=5, with_masks=True)  # RegionResult

- ``"regionspot"``: a RegionSpot head (SAM tokens + CLIP memory + fusion head). Scores are the
  head's (``fusion.score_function``: per-(region, name) sigmoid probabilities by default, a
  softmax over the vocabulary for the authors' converted checkpoints). ``prompt="together"``
  sends all boxes of an image through the head together, so with region self-attention on they
  attend to each other (Table 5); ``prompt="alone"`` scores every box as if sent on its own.
- ``"clip-crop"`` / ``"clip-mask-crop"``: CLIP zero-shot on the box crop / on the crop with the
  pixels outside the box's SAM mask blanked (:mod:`regionspot.model.zero_shot`), softmax scores.

Masks, when asked for, always come from SAM box prompts, so mask AP of every method uses the same
SAM masks. Images are ``HxWx3`` uint8 RGB; boxes are float ``[R, 4]`` xyxy in absolute pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

from regionspot.backbones.protocols import SamImageEmbedding
from regionspot.config import ConfigError
from regionspot.model.loader import recognizer_for_method
from regionspot.model.recognizer import METHODS, Recognizer
from regionspot.results import RegionResult

if TYPE_CHECKING:
    from regionspot.model.loader import Model
    from regionspot.predictor import EncodedImage

__all__ = ["METHODS", "PROMPT_MODES", "PredictorClassifier", "RegionClassifier", "build_classifier"]

PROMPT_MODES = ("together", "alone")
DEFAULT_BATCH = 64


class RegionClassifier(Protocol):
    """Names regions of one image against a vocabulary."""

    name: str

    def classify(self, image: np.ndarray, boxes: np.ndarray, vocabulary: Sequence[str], topk: int,
                 with_masks: bool, sam_embedding: SamImageEmbedding | None = None,
                 encoded: EncodedImage | None = None) -> RegionResult:
        """``image`` HxWx3 uint8; ``boxes`` float [R, 4] xyxy absolute pixels -> top-``topk``
        (name, score) pairs per box, scores in [0, 1], SAM masks bool [R, H, W] when ``with_masks``.
        ``sam_embedding``: the image's SAM encoding when the caller already made one (reused);
        ``encoded``: the image through both towers already (from :meth:`encode_many`)."""
        ...

    def encode_many(self, images: Sequence[np.ndarray]) -> list[EncodedImage]:
        """Several images through both image towers, each tower once for all of them."""
        ...


def build_classifier(method: str, model: Model, *, prompt: str = "together",
                     region_batch_size: int = DEFAULT_BATCH) -> PredictorClassifier:
    """The classifier for ``method`` (one of :data:`METHODS`) on ``model``'s backbones.

    ``prompt`` (one of :data:`PROMPT_MODES`) only matters for ``"regionspot"``: the crop
    methods embed each crop on its own, so both modes give them the same results. Raises
    ConfigError for an unknown method or prompt mode, for ``regionspot`` on a model without a
    head, and for a crop method on a model without CLIP vision or whose pooled CLIP embedding
    width differs from the text width.
    """
    if prompt not in PROMPT_MODES:
        raise ConfigError(f"unknown prompt mode {prompt!r}; choose one of {', '.join(PROMPT_MODES)}")
    return PredictorClassifier(recognizer_for_method(method, model), prompt=prompt,
                               region_batch_size=region_batch_size)


class PredictorClassifier:
    """A recognizer through its predictor: set the image, predict, forget the image."""

    def __init__(self, recognizer: Recognizer, *, prompt: str = "together",
                 region_batch_size: int = DEFAULT_BATCH) -> None:
        from regionspot.predictor import RegionPredictor

        if prompt not in PROMPT_MODES:
            raise ConfigError(f"unknown prompt mode {prompt!r}; choose one of {', '.join(PROMPT_MODES)}")
        self.recognizer = recognizer
        self.name = recognizer.method
        self.prompt = prompt
        self.predictor = RegionPredictor(recognizer, region_batch_size=region_batch_size)

    def classify(self, image: np.ndarray, boxes: np.ndarray, vocabulary: Sequence[str], topk: int,
                 with_masks: bool, sam_embedding: SamImageEmbedding | None = None,
                 encoded: EncodedImage | None = None) -> RegionResult:
        """See :class:`RegionClassifier`. Scores are the recognizer's (see the module docstring)."""
        if encoded is not None:
            self.predictor.set_encoded(encoded)
        else:
            self.predictor.set_image(image, sam_embedding)
        try:
            return self.predictor.predict(boxes, vocabulary, topk=topk, with_masks=with_masks,
                                          together=self.prompt == "together")
        finally:
            self.predictor.reset_image()

    def encode_many(self, images: Sequence[np.ndarray]) -> list[EncodedImage]:
        """See :class:`RegionClassifier`."""
        return self.predictor.encode_many(images)
