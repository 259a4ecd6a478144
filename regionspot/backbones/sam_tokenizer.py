"""The frozen SAM-family :class:`~regionspot.backbones.protocols.RegionTokenizer`: any image encoder
plus a :class:`~regionspot.backbones.sam_prompt_head.SamPromptHead` (built and loaded by
``sam_hf`` and ``mobile_sam``), with SAM's pre-processing, box and point scaling and mask pasting."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from regionspot.backbones.mask_paste import paste_masks
from regionspot.backbones.protocols import RegionTokens, SamImageEmbedding, freeze
from regionspot.backbones.sam_geometry import (
    check_boxes,
    check_points,
    masks_to_original,
    preprocess_image,
    scale_boxes,
    scale_points,
)
from regionspot.backbones.sam_prompt_head import SamPromptHead


class SamRegionTokenizer(nn.Module):
    """A frozen SAM-family :class:`~regionspot.backbones.protocols.RegionTokenizer`: any image
    encoder (``[1, 3, S, S]`` normalised pixels -> ``[1, C, S/16, S/16]``) plus a
    :class:`SamPromptHead`. Runs under ``torch.no_grad`` (not inference mode, so the outputs can
    feed a trainable module). Outputs live on the device of the parameters.
    """

    def __init__(self, image_encoder: nn.Module, head: SamPromptHead, *, family: str, name_or_path: str,
                 details: dict[str, object] | None = None) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.head = head
        self.family = family
        self.name_or_path = name_or_path
        self.details = dict(details or {})
        self.token_dim = head.token_dim
        self.image_input_size = head.input_image_size
        self.mask_chunk_size = 32
        for module in self.modules():  # each one, so modules shared with a SamModel stay frozen too
            freeze(module)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def encode_image(self, image: np.ndarray) -> SamImageEmbedding:
        """``image``: ``HxWx3`` uint8 RGB. Embeddings ``[1, 256, 64, 64]`` for a 1024 encoder."""
        pixels, input_size = preprocess_image(image, self.image_input_size)
        embeddings = self.image_encoder(pixels.to(self.device))
        return SamImageEmbedding(embeddings=embeddings, original_size=(image.shape[0], image.shape[1]),
                                 input_size=input_size)

    @torch.no_grad()
    def encode_images(self, images: Sequence[np.ndarray]) -> list[SamImageEmbedding]:
        """Several images through the encoder in one batch (each padded to the same square)."""
        prepared = [preprocess_image(image, self.image_input_size) for image in images]
        embeddings = self.image_encoder(torch.cat([pixels for pixels, _ in prepared]).to(self.device))
        return [SamImageEmbedding(embeddings=embedding, original_size=(image.shape[0], image.shape[1]), input_size=size)
                for embedding, image, (_, size) in zip(embeddings.split(1), images, prepared, strict=True)]

    @torch.no_grad()
    def encode_regions(self, embedding: SamImageEmbedding, boxes: torch.Tensor,
                       with_masks: bool = True) -> RegionTokens:
        """``boxes``: ``[R, 4]`` float xyxy in original-image pixels. Tokens ``[R, token_dim]``,
        predicted IoU ``[R]``, and mask logits ``[R, 256, 256]`` (padded input frame) when
        ``with_masks`` (the mask upscaling is skipped otherwise)."""
        check_boxes(boxes)
        scaled = scale_boxes(boxes.to(embedding.embeddings), embedding.original_size, embedding.input_size)
        return self.head(embedding.embeddings, scaled, with_masks=with_masks)

    @torch.no_grad()
    def encode_points(self, embedding: SamImageEmbedding, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``points``: ``[P, 2]`` float xy in original-image pixels, each a single foreground
        prompt. Returns SAM's three multi-mask outputs per point: mask logits ``[P, 3, 256, 256]``
        (padded input frame, as ``encode_regions``) and predicted IoU ``[P, 3]``."""
        check_points(points)
        scaled = scale_points(points.to(embedding.embeddings), embedding.original_size, embedding.input_size)
        return self.head.decode_points(embedding.embeddings, scaled)

    @torch.no_grad()
    def encode_point_prompts(self, embedding: SamImageEmbedding, points: torch.Tensor,
                             labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``points``: ``[R, P, 2]`` float xy in original-image pixels, the P clicks of each of R
        regions; ``labels`` ``[R, P]`` (1 foreground, 0 background). Returns mask logits
        ``[R, K, 256, 256]`` (padded input frame) and predicted IoU ``[R, K]``: SAM's three
        ambiguity-aware outputs for one click (K = 3), its single output for several (K = 1), as
        SAM's own predictor advises. With background clicks, the answer to the foreground clicks
        is refined by all clicks with it as the mask prompt (K = 1), as SAM's demo does."""
        if points.dim() != 3 or points.shape[-1] != 2:
            raise ValueError(f"points must be [R, P, 2], got {tuple(points.shape)}")
        check_points(points.reshape(-1, 2))
        scaled = scale_points(points.to(embedding.embeddings), embedding.original_size, embedding.input_size)
        labels = labels.to(embedding.embeddings.device)
        if not (labels == 0).any():
            return self.head.decode_points(embedding.embeddings, scaled, labels, single=points.shape[1] > 1)
        # background clicks refine a first answer, as in SAM's interactive demo: the foreground
        # clicks alone first, then all clicks with that mask as the mask prompt
        foreground = torch.where(labels == 1, labels, torch.full_like(labels, -1))
        logits, iou = self.head.decode_points(embedding.embeddings, scaled, foreground,
                                              single=int((labels == 1).sum(dim=1).max()) > 1)
        first = logits[torch.arange(len(labels)), iou.argmax(dim=1)]
        return self.head.refine_points(embedding.embeddings, scaled, labels, first)

    @torch.no_grad()
    def masks_to_image(self, embedding: SamImageEmbedding, mask_logits: torch.Tensor) -> torch.Tensor:
        """``[R, 256, 256]`` low-res logits -> ``[R, H, W]`` logits at the original image size."""
        if mask_logits.dim() != 3:
            raise ValueError(f"mask_logits must be [R, h, w], got {tuple(mask_logits.shape)}")
        parts = [masks_to_original(chunk, embedding.input_size, embedding.original_size, self.image_input_size)
                 for chunk in mask_logits.split(self.mask_chunk_size)]
        return torch.cat(parts) if parts else mask_logits.new_zeros(0, *embedding.original_size)

    def paste_masks(self, embedding: SamImageEmbedding, mask_logits: torch.Tensor) -> torch.Tensor:
        """``[R, 256, 256]`` low-res logits -> bool ``[R, H, W]``: ``masks_to_image(...) > 0``, fast."""
        return paste_masks(mask_logits, embedding.input_size, embedding.original_size, self.image_input_size)

    def describe(self) -> dict[str, object]:
        """Family, weights, token place and widths (stable keys, for caches and ``info``)."""
        return {"family": self.family, "name_or_path": self.name_or_path, "token_place": self.head.token_place,
                "multimask": self.head.multimask, "token_dim": self.token_dim,
                "image_input_size": self.image_input_size,
                "decoder_layer_norm_eps": self.head.decoder_layer_norm_eps, **self.details}
