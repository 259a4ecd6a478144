"""What every recognizer offers the one inference path (:class:`regionspot.predictor.RegionPredictor`).

Two recognizers implement it: :class:`~regionspot.model.regionspot.RegionSpot` (SAM tokens + CLIP
memory + the trained fusion head) and :class:`~regionspot.model.zero_shot.ZeroShotCLIP` (CLIP on
each region's crop, no training). The predictor does everything they share (image loading, SAM
encoding, box and vocabulary checks, SAM tokens and masks, top-k, the result); a recognizer only
says what extra image context it needs and how it scores regions against text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from regionspot.backbones.protocols import RegionTokenizer, TextEmbedder

#: The methods a recognizer can be: the trained head, or CLIP zero-shot on crops (paper Table 1).
METHODS: tuple[str, ...] = ("regionspot", "clip-crop", "clip-mask-crop")
#: How a model can be run: PyTorch, or the graphs of ``regionspot export onnx`` in onnxruntime.
RUNTIMES: tuple[str, ...] = ("torch", "onnx")


@dataclass
class RegionBatch:
    """The regions of one ``predict`` call, ready to score.

    ``image``: HxWx3 uint8. ``context``: what :meth:`Recognizer.encode_context` gave for the image
    (CLIP memory [1, T, width] for RegionSpot) or None. ``boxes``: float [R, 4] xyxy pixels,
    clipped. ``tokens``: SAM tokens [R, token_dim]. ``masks``: bool [R, H, W] SAM masks at image
    size, or None (present when the recognizer ``needs_region_masks``). ``text``: unit text
    embeddings [N, text_dim] on the recognizer's device. ``together``: regions of the call may
    attend to each other (False: each region is scored as if sent alone).
    """

    image: np.ndarray
    context: torch.Tensor | None
    boxes: np.ndarray
    tokens: torch.Tensor
    masks: np.ndarray | None
    text: torch.Tensor
    together: bool = True
    with_attention: bool = False


@dataclass
class RegionScores:
    """``scores``: float [R, N] in [0, 1]; ``attention``: float [R, P] over the CLIP patch
    tokens, class token dropped (RegionSpot, when asked for), else None."""

    scores: torch.Tensor
    attention: torch.Tensor | None = None


@runtime_checkable
class Recognizer(Protocol):
    """A model that names regions; see the module docstring.

    ``method``: one of :data:`METHODS`. ``score_kind``: how to read its scores (``"sigmoid"``:
    independent per (region, name); ``"softmax"``: they sum to 1 over the vocabulary).
    ``needs_region_masks``: scoring needs the SAM masks at image size. ``precision``: ``fp32``,
    ``bf16`` or ``fp16`` (the predictor runs under autocast when not fp32). ``has_attention``:
    it can return cross-attention maps.
    """

    precision: str
    region_tokenizer: RegionTokenizer
    text_embedder: TextEmbedder

    @property
    def method(self) -> str: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def score_kind(self) -> str: ...

    @property
    def needs_region_masks(self) -> bool: ...

    @property
    def has_attention(self) -> bool: ...

    def input_frame(self, image: np.ndarray) -> np.ndarray:
        """The HxWx3 uint8 image both towers are given for ``image`` (usually ``image`` itself;
        a resized copy for a head that must see the authors' inputs). Boxes and masks are
        mapped between the two frames by the predictor."""
        ...

    def encode_context(self, image: np.ndarray) -> torch.Tensor | None:
        """Per-image work besides SAM's encoder (the input frame, HxWx3 uint8 -> e.g. CLIP
        memory), or None."""
        ...

    def encode_contexts(self, images: Sequence[np.ndarray]) -> list[torch.Tensor | None]:
        """:meth:`encode_context` of several input frames, in one batch where the tower allows."""
        ...

    def text_embeddings(self, names: Sequence[str]) -> torch.Tensor:
        """Unit text embeddings [N, text_dim] float32 on the recognizer's device."""
        ...

    def score_regions(self, batch: RegionBatch) -> RegionScores:
        """Scores of each region of ``batch`` against each of its text embeddings."""
        ...

    def describe_backbones(self) -> dict[str, Any]: ...

    def describe(self) -> dict[str, Any]:
        """What answers: method, whether a head is trained, backbones (for outputs and reports)."""
        ...
