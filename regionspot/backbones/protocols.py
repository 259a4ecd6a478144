"""The thin interfaces every frozen backbone implements, and what each feature needs of them.

A new backbone is one adapter file: a class (no need to subclass anything here) with the
members of the Protocols below that the features you want need. Nothing else in the library
knows which SAM or CLIP it is talking to. Adapters are frozen: their parameters have
``requires_grad=False`` and they stay in eval mode even when the owner calls ``.train()``
(see :func:`freeze`).

What an adapter must provide, by feature (each need is a :class:`Capability`, checked once,
and a missing member is a :class:`BackboneCapabilityError` naming the adapter's class and what
it lacks, e.g. "propose needs a SAM adapter with encode_points(embedding, points); MySam does
not have it"):

* ``predict`` (:meth:`RegionPredictor.predict <regionspot.predictor.RegionPredictor.predict>`,
  and through it eval, ``regionspot predict`` and ``serve``), any recognizer: a SAM-side
  :class:`RegionTokenizer` (``token_dim``, ``image_input_size``, ``encode_image``,
  ``encode_regions``, ``paste_masks``, ``describe``) and a :class:`TextEmbedder`
  (``embed_dim``, ``encode_text``, ``describe``). Checked at the predictor's first ``predict``
  (:data:`PREDICT_SAM`, :data:`PREDICT_TEXT`).
* ``propose`` (``auto`` boxes: :meth:`RegionPredictor.propose
  <regionspot.predictor.RegionPredictor.propose>`, ``--boxes auto``, ``POST /v1/propose``): the
  SAM adapter is also :class:`PointPromptable` (``image_input_size``, ``encode_points``), and with
  crop layers :class:`CropPromptable` (those and ``encode_image``).
  Checked when a :class:`~regionspot.proposals.auto.RegionProposer` is made: at the
  predictor's first ``propose``, and by each call of
  :func:`~regionspot.proposals.auto.propose_regions` (``PROPOSE_SAM`` in
  :mod:`regionspot.proposals.auto`).
* a RegionSpot head with CLIP vision (the whole-image memory its regions attend to): a CLIP-side
  :class:`ImageMemoryEncoder` (``width``, ``image_size``, ``preprocess``, ``encode_image``,
  ``describe``), whose ``width`` is the head's; none for the paper's "no CLIP vision" ablation
  (Table 4a). Declared as :data:`REGIONSPOT_CLIP`; RegionSpot reads ``width`` when it is built.
* the CLIP crop baselines (``clip-crop``, ``clip-mask-crop``: the paper's Table 1, and the
  default zero-shot model): a CLIP-side :class:`PooledImageEncoder` (``projection_dim``, not
  None and equal to the text ``embed_dim``; ``mean``; ``preprocess``; ``encode_pooled``;
  ``describe``). Checked when the :class:`~regionspot.model.zero_shot.ZeroShotCLIP` is built
  (:data:`CROP_CLIP`).

One CLIP adapter may serve both of the last two (the built-in
:class:`~regionspot.backbones.clip_vision.ClipVisionMemory` does), and one SAM adapter both of
the first two (the built-in :class:`~regionspot.backbones.sam_tokenizer.SamRegionTokenizer`
does). Members are looked up on the adapter object as Python does (``getattr``), so a
delegating ``__getattr__`` counts.

Conventions: images enter as ``HxWx3`` uint8 RGB numpy arrays; boxes are ``[R, 4]`` float
tensors, xyxy in absolute pixels of the original image.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeGuard, TypeVar, runtime_checkable

import numpy as np
import torch

from regionspot.config import ConfigError

T = TypeVar("T")


@dataclass
class SamImageEmbedding:
    """One image encoded by a SAM-family image encoder.

    ``embeddings``: ``[1, C, h, w]`` (C=256, h=w=64 for SAM at 1024 input).
    ``original_size``: (H, W) of the image given by the user.
    ``input_size``: (h, w) of the image after resizing its longest side to the encoder's
    input size, before padding to a square.
    """

    embeddings: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]


@dataclass
class RegionTokens:
    """SAM's outputs for R boxes of one image.

    ``tokens``: ``[R, token_dim]`` position-aware tokens (place chosen by the adapter's config).
    ``mask_logits``: ``[R, 256, 256]`` low-resolution mask logits in the padded input frame, or
    None when masks were not asked for.
    ``mask_scores``: ``[R]`` SAM's predicted IoU of each mask.
    """

    tokens: torch.Tensor
    mask_logits: torch.Tensor | None
    mask_scores: torch.Tensor


@runtime_checkable
class RegionTokenizer(Protocol):
    """SAM-family side, for ``predict``: encode an image once, then a token (and a mask) per box."""

    token_dim: int
    image_input_size: int

    def encode_image(self, image: np.ndarray) -> SamImageEmbedding:
        """``image``: ``HxWx3`` uint8 RGB. Runs the image encoder once."""
        ...

    def encode_regions(self, embedding: SamImageEmbedding, boxes: torch.Tensor,
                       with_masks: bool = True) -> RegionTokens:
        """``boxes``: ``[R, 4]`` xyxy absolute pixels of the original image (R >= 1). With
        ``with_masks`` False the adapter may skip mask decoding (``mask_logits`` None)."""
        ...

    def paste_masks(self, embedding: SamImageEmbedding, mask_logits: torch.Tensor) -> torch.Tensor:
        """Low-res ``[R, 256, 256]`` logits -> bool ``[R, H, W]`` masks at the original image size."""
        ...

    def describe(self) -> dict[str, object]:
        """What this backbone is (name, token place, widths), for ``regionspot info`` and caches."""
        ...


@runtime_checkable
class PointPromptable(Protocol):
    """SAM-family side, for ``propose``: decode single-point prompts (SAM's automatic masks)."""

    image_input_size: int

    def encode_points(self, embedding: SamImageEmbedding, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``points``: ``[P, 2]`` xy absolute pixels of the original image, each decoded alone as
        one foreground point. Returns mask logits ``[P, K, m, m]`` (low resolution, padded input
        frame like ``RegionTokens.mask_logits``; ``image_input_size / m`` input pixels a cell)
        and predicted IoU ``[P, K]`` of K mask outputs."""
        ...


@runtime_checkable
class CropPromptable(PointPromptable, Protocol):
    """SAM-family side, for ``propose`` with crop layers: also encode a crop of the image."""

    def encode_image(self, image: np.ndarray) -> SamImageEmbedding:
        """HxWx3 uint8 (a crop of the image) -> its embedding, as :meth:`RegionTokenizer.encode_image`."""
        ...


@runtime_checkable
class BatchImageEncodable(Protocol):
    """SAM-family side, optional: encode several images in one forward (``predict-batch`` and
    ``eval`` batch images this way; without it they encode one image at a time)."""

    def encode_images(self, images: Sequence[np.ndarray]) -> list[SamImageEmbedding]:
        """HxWx3 uint8 images (sizes may differ) -> one embedding each, as ``encode_image`` gives."""
        ...


@runtime_checkable
class ClickPromptable(Protocol):
    """SAM-family side, for ``predict(points=...)``: decode click prompts (foreground and
    background points) into masks."""

    def encode_point_prompts(self, embedding: SamImageEmbedding, points: torch.Tensor,
                             labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``points``: ``[R, P, 2]`` xy absolute pixels of the original image, the P clicks of
        each of R regions; ``labels`` ``[R, P]`` (1 foreground, 0 background). Returns mask
        logits ``[R, K, m, m]`` (low resolution, padded input frame like
        ``RegionTokens.mask_logits``) and predicted IoU ``[R, K]`` of K mask outputs."""
        ...


@runtime_checkable
class ImageMemoryEncoder(Protocol):
    """CLIP-family vision side, for a RegionSpot head: the whole image as feature tokens."""

    width: int
    image_size: int

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """``HxWx3`` uint8 RGB -> ``[3, S, S]`` float, resized (whole image, not cropped) and
        normalised with the tower's mean/std; S is ``image_size``."""
        ...

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` -> memory ``[B, T, width]``: every token of the last transformer
        layer before the final norm and projection (class token first when kept)."""
        ...

    def describe(self) -> dict[str, object]:
        """What this tower is, for ``regionspot info`` and caches."""
        ...


@runtime_checkable
class PooledImageEncoder(Protocol):
    """CLIP-family vision side, for the crop baselines: one CLIP image embedding per crop."""

    @property
    def projection_dim(self) -> int | None:
        """Width of the pooled embedding (the text ``embed_dim``); None: the tower has none."""
        ...

    @property
    def mean(self) -> Sequence[float]:
        """The tower's pixel mean, fractions in [0, 1] (RGB): the colour that pads crops."""
        ...

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """``HxWx3`` uint8 RGB -> ``[3, S, S]`` float, resized and normalised by the tower."""
        ...

    def encode_pooled(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` -> ``[B, projection_dim]`` L2-normalised CLIP image embeddings."""
        ...

    def describe(self) -> dict[str, object]:
        """What this tower is, for ``regionspot info`` and caches."""
        ...


@runtime_checkable
class TextEmbedder(Protocol):
    """Text side, for ``predict``: one L2-normalised embedding per category name."""

    embed_dim: int

    def encode_text(self, names: Sequence[str]) -> torch.Tensor:
        """``names`` (N) -> ``[N, embed_dim]`` float32, each row L2-normalised."""
        ...

    def describe(self) -> dict[str, object]:
        """What this text tower is (name, prompts), for ``regionspot info`` and caches."""
        ...


class BackboneCapabilityError(ConfigError, TypeError):
    """A backbone adapter lacks a member that a feature needs (see the module docstring)."""


@functools.cache
def protocol_members(protocol: type) -> dict[str, str]:
    """The members a Protocol class declares, its bases' first, each as an error shows it:
    ``name`` for an attribute or property, ``name(arg, ...)`` for a method."""
    members: dict[str, str] = {}
    for cls in reversed(protocol.__mro__):
        if cls is Protocol or not getattr(cls, "_is_protocol", False):
            continue
        for name in vars(cls).get("__annotations__", {}):
            members[name] = name
        for name, value in vars(cls).items():
            if inspect.isfunction(value):
                members[name] = f"{name}({', '.join(list(inspect.signature(value).parameters)[1:])})"
            elif isinstance(value, property):
                members[name] = name
    return {name: shown for name, shown in members.items() if not name.startswith("_")}


@dataclass(frozen=True)
class Capability(Generic[T]):
    """What one feature needs of one backbone: the members of ``protocol`` (a Protocol class
    whose type is ``T``). ``feature``: the feature in words (``"propose"``); ``side``: the
    backbone (``"SAM"``, ``"CLIP vision"``, ``"text"``); ``error``: what :meth:`require` raises;
    ``hint``: what to do instead, added to the error."""

    feature: str
    side: str
    protocol: type
    error: type[BackboneCapabilityError] = BackboneCapabilityError
    hint: str = ""

    def missing(self, backbone: object) -> list[str]:
        """The members ``backbone`` lacks (methods must be callable), as :func:`protocol_members`
        shows them; empty when it has them all."""
        return [shown for name, shown in protocol_members(self.protocol).items()
                if not (callable(getattr(backbone, name, None)) if shown != name else hasattr(backbone, name))]

    def provided_by(self, backbone: object) -> TypeGuard[T]:
        """Whether ``backbone`` has every member this feature needs."""
        return not self.missing(backbone)

    def require(self, backbone: object) -> T:
        """``backbone`` itself, typed, when it has every member; else ``error`` saying which
        feature needs which members and naming the backbone's class."""
        if self.provided_by(backbone):
            return backbone
        missing = self.missing(backbone)
        owner = "None" if backbone is None else type(backbone).__name__
        hint = f": {self.hint}" if self.hint else ""
        raise self.error(f"{self.feature} needs a {self.side} adapter with {', '.join(missing)}; {owner} does "
                         f"not have {'it' if len(missing) == 1 else 'them'}{hint}")


#: ``predict``, SAM side (checked by the predictor's first ``predict``).
PREDICT_SAM = Capability[RegionTokenizer]("predict", "SAM", RegionTokenizer)
#: ``predict(points=...)``, SAM side (checked by the first click-prompted ``predict``).
PREDICT_CLICKS = Capability[ClickPromptable]("predict with point prompts", "SAM", ClickPromptable)
#: Encoding several images in one forward (optional: the predictor loops without it).
BATCH_SAM = Capability[BatchImageEncodable]("encoding images in batches", "SAM", BatchImageEncodable)
#: ``predict``, text side (checked by the predictor's first ``predict``, and by the zero-shot
#: recognizer when it is built).
PREDICT_TEXT = Capability[TextEmbedder]("predict", "text", TextEmbedder)
#: A RegionSpot head with CLIP vision.
REGIONSPOT_CLIP = Capability[ImageMemoryEncoder]("a RegionSpot head", "CLIP vision", ImageMemoryEncoder,
                                                 hint="build the head without CLIP vision (clip.enabled=false) instead")
#: The CLIP crop baselines (checked when the zero-shot recognizer is built).
CROP_CLIP = Capability[PooledImageEncoder]("the zero-shot recognizer (clip-crop, clip-mask-crop)", "CLIP vision",
                                           PooledImageEncoder)


def freeze(module: torch.nn.Module) -> torch.nn.Module:
    """Switch off gradients and put ``module`` in eval mode, for good.

    ``module.train()`` afterwards keeps it in eval mode, so a frozen tower inside a trainable
    model never runs dropout or updates batch-norm statistics.
    """
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    module.eval()
    module.train = _stay_in_eval.__get__(module)  # type: ignore[method-assign]  # on purpose: frozen stays eval
    return module


def _stay_in_eval(self: torch.nn.Module, mode: bool = True) -> torch.nn.Module:
    return torch.nn.Module.train(self, False)
