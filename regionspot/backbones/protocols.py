"""The thin interfaces every frozen backbone implements.

A new backbone is one adapter file that satisfies one of these Protocols; nothing else in the
library knows which SAM or CLIP it is talking to. All adapters are frozen: their parameters
have ``requires_grad=False`` and they stay in eval mode even when the owner calls ``.train()``.

Conventions: images enter as ``HxWx3`` uint8 RGB numpy arrays; boxes are ``[R, 4]`` float
tensors, xyxy in absolute pixels of the original image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

import numpy as np
import torch


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
    """SAM-family side: encode an image once, then give a token (and a mask) per box."""

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

    def masks_to_image(self, embedding: SamImageEmbedding, mask_logits: torch.Tensor) -> torch.Tensor:
        """Low-res ``[R, 256, 256]`` logits -> ``[R, H, W]`` logits at the original image size."""
        ...

    def describe(self) -> dict[str, object]:
        """What this backbone is (name, token place, widths), for ``regionspot info`` and caches."""
        ...


@runtime_checkable
class PointPromptable(Protocol):
    """A region tokenizer that can also decode single-point prompts (SAM's automatic masks)."""

    image_input_size: int

    def encode_points(self, embedding: SamImageEmbedding, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``points``: ``[P, 2]`` xy absolute pixels of the original image, each decoded alone as
        one foreground point. Returns mask logits ``[P, K, m, m]`` (low resolution, padded input
        frame like ``RegionTokens.mask_logits``) and predicted IoU ``[P, K]`` of K mask outputs."""
        ...


@runtime_checkable
class ImageMemoryEncoder(Protocol):
    """CLIP-family vision side: the whole image as a sequence of feature tokens."""

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
        ...


@runtime_checkable
class TextEmbedder(Protocol):
    """Text side: one L2-normalised embedding per category name."""

    embed_dim: int

    def encode_text(self, names: Sequence[str]) -> torch.Tensor:
        """``names`` (N) -> ``[N, embed_dim]`` float32, each row L2-normalised."""
        ...

    def describe(self) -> dict[str, object]:
        ...


def freeze(module: torch.nn.Module) -> torch.nn.Module:
    """Switch off gradients and put ``module`` in eval mode, for good.

    ``module.train()`` afterwards keeps it in eval mode, so a frozen tower inside a trainable
    model never runs dropout or updates batch-norm statistics.
    """
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    module.eval()
    module.train = _stay_in_eval.__get__(module)  # type: ignore[method-assign]
    return module


def _stay_in_eval(self: torch.nn.Module, mode: bool = True) -> torch.nn.Module:
    return torch.nn.Module.train(self, False)
