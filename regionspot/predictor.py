"""Encode an image once, then recognise any boxes against any vocabulary (like SamPredictor)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from regionspot.backbones.protocols import SamImageEmbedding
from regionspot.ops.boxes import validate_boxes
from regionspot.ops.image import load_image
from regionspot.proposals.auto import AutoProposalConfig, Proposals, propose_regions
from regionspot.results import RegionResult
from regionspot.vocab import parse_vocabulary, validate_vocabulary

if TYPE_CHECKING:
    from regionspot.model.regionspot import RegionSpot


class PredictorStateError(RuntimeError):
    """``predict`` was called before ``set_image``."""


@dataclass
class EncodedImage:
    """Both towers' outputs for one image. ``memory``: [1, T, width] or None."""

    image: np.ndarray
    sam: SamImageEmbedding
    memory: torch.Tensor | None

    @property
    def size(self) -> tuple[int, int]:
        return self.sam.original_size


class RegionPredictor:
    """``set_image`` runs SAM's and CLIP's image encoders once; ``predict`` then costs only the
    prompt decoder and the small fusion head per box.

    Scores depend on which boxes are sent together when the head's region self-attention is on
    (SPEC: regions attend to each other); with ``fusion.region_self_attention=False`` a box's
    result is the same whether it is sent alone, in a batch, or split over several calls.
    """

    def __init__(self, model: RegionSpot, region_batch_size: int = 64) -> None:
        if region_batch_size < 1:
            raise ValueError("region_batch_size must be >= 1")
        self.model = model
        self.region_batch_size = region_batch_size
        self.encoded: EncodedImage | None = None

    @torch.inference_mode()
    def set_image(self, image: Any, sam_embedding: SamImageEmbedding | None = None) -> None:
        """``image``: a path, a PIL image or an HxWx3 uint8 array (grayscale and RGBA are
        converted, see :func:`regionspot.ops.image.load_image`). Encodes it with both towers;
        ``sam_embedding``: this image's SAM encoding when the caller already has one."""
        self.encoded = self.encode(load_image(image), sam_embedding)

    def encode(self, image: np.ndarray, sam_embedding: SamImageEmbedding | None = None) -> EncodedImage:
        """Both towers on one HxWx3 uint8 image (no state change); SAM's image encoder is skipped
        when ``sam_embedding`` (of this image, e.g. from proposals) is given."""
        model = self.model
        if sam_embedding is None:
            sam_embedding = model.region_tokenizer.encode_image(image)
        elif tuple(sam_embedding.original_size) != tuple(image.shape[:2]):
            raise ValueError(f"sam_embedding is of a {sam_embedding.original_size} image, not {image.shape[:2]}")
        memory = None
        if model.image_encoder is not None:
            pixels = model.image_encoder.preprocess(image).unsqueeze(0).to(model.device)
            memory = model.image_encoder.encode_image(pixels)
        return EncodedImage(image=image, sam=sam_embedding, memory=memory)

    def reset_image(self) -> None:
        self.encoded = None

    @torch.inference_mode()
    def predict(
        self,
        boxes: Any,
        vocabulary: str | Sequence[str],
        topk: int = 5,
        with_masks: bool = True,
        with_attention: bool = False,
    ) -> RegionResult:
        """Name each box.

        ``boxes``: [R, 4] xyxy absolute pixels (list, array or tensor); boxes reaching outside
        the image are clipped, empty/NaN/inverted/degenerate boxes raise ``BoxError``.
        ``vocabulary``: names, or a built-in vocabulary name (``lvis``, ``coco``, ``objects365``).
        ``topk``: pairs kept per region (capped at the vocabulary size).
        ``with_attention``: also return, in ``result.extras["attention"]``, each region's
        last-block cross-attention over the CLIP patch grid, float [R, g, g].
        """
        if self.encoded is None:
            raise PredictorStateError("call set_image(image) before predict(...)")
        if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
            raise ValueError(f"topk must be a positive integer, got {topk!r}")
        names = validate_vocabulary(parse_vocabulary(vocabulary))
        clipped = validate_boxes(boxes, self.encoded.size)
        text = self.model.text_embeddings(names)
        box_tensor = torch.as_tensor(clipped, dtype=torch.float32)
        regions = self.model.region_tokenizer.encode_regions(self.encoded.sam, box_tensor, with_masks=with_masks)
        embeddings, attention = self._fuse(regions.tokens, with_attention)
        scores = self.model.fusion.scores(embeddings, text).cpu()
        top_scores, top_ids = scores.topk(min(topk, len(names)), dim=-1)
        masks = None
        if regions.mask_logits is not None:
            masks = self._masks_at_image_size(regions.mask_logits)
        extras: dict[str, Any] = {}
        if attention is not None:
            extras["attention"] = attention_to_grid(attention, self.model.config.clip.use_class_token)
        return RegionResult(
            boxes=clipped, topk_ids=top_ids.numpy(), topk_scores=top_scores.double().numpy(),
            vocabulary=names, image_size=self.encoded.size, masks=masks,
            mask_scores=regions.mask_scores.float().cpu().numpy(), extras=extras,
        )

    @torch.inference_mode()
    def propose(self, config: AutoProposalConfig | None = None) -> Proposals:
        """Class-agnostic ``auto`` boxes of the current image from SAM's point-grid masks
        (:func:`regionspot.proposals.auto.propose_regions`), best first, ready for ``predict``."""
        if self.encoded is None:
            raise PredictorStateError("call set_image(image) before propose(...)")
        return propose_regions(self.model.region_tokenizer, self.encoded.sam, config)

    def _fuse(self, tokens: torch.Tensor, with_attention: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """All regions of the call through the head together: [R, token_dim] -> [R, text_dim]."""
        assert self.encoded is not None
        device = self.model.device
        embeddings, attention = self.model.fusion(
            tokens.to(device).unsqueeze(0), self.encoded.memory, need_attention=with_attention
        )
        return embeddings[0], (attention[0].cpu() if attention is not None else None)

    def _masks_at_image_size(self, mask_logits: torch.Tensor) -> np.ndarray:
        """Low-res logits [R, 256, 256] -> bool [R, H, W], pasted back in chunks to bound memory."""
        assert self.encoded is not None
        chunks = []
        for start in range(0, mask_logits.shape[0], self.region_batch_size):
            logits = self.model.region_tokenizer.masks_to_image(
                self.encoded.sam, mask_logits[start:start + self.region_batch_size]
            )
            chunks.append((logits > 0).cpu().numpy())
        return np.concatenate(chunks, axis=0)


def attention_to_grid(attention: torch.Tensor, has_class_token: bool) -> np.ndarray:
    """Cross-attention [R, T] over CLIP tokens -> [R, g, g] over the patch grid (the class
    token's weight is dropped; each map is rescaled to sum to 1)."""
    patches = attention[:, 1:] if has_class_token else attention
    side = math.isqrt(patches.shape[1])
    if side * side != patches.shape[1]:
        raise ValueError(f"{patches.shape[1]} patch tokens do not form a square grid")
    grid = patches.reshape(-1, side, side).float()
    grid = grid / grid.sum(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    return grid.numpy()
