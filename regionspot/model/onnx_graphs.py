"""The model's parts as the ONNX graphs ``regionspot export onnx`` writes (issue: deployment).

Each graph is a small ``nn.Module`` over the model's own modules (no second implementation of
SAM or the head), with tensor-only inputs and outputs:

=====================  ==========================================================================
graph                  inputs -> outputs (shapes; R boxes, N names, B images are dynamic)
=====================  ==========================================================================
sam_image_encoder      pixels [1, 3, S, S] (SAM-normalised, padded) -> embeddings [1, C, h, w]
clip_image_memory      pixels [B, 3, s, s] (CLIP-normalised) -> memory [B, T, width]
sam_box_tokens         embeddings, boxes [R, 4] (xyxy, SAM input frame) -> tokens [R, d],
                       mask_scores [R]
sam_box_masks          the same, and mask_logits [R, 4h, 4w] (SAM's low-resolution masks)
region_head            tokens [B, R, d], memory [B, T, width] -> embeddings [B, R, D] (unit),
                       attention [B, R, T] (last block, heads averaged)
region_path            embeddings, boxes, memory [1, T, width], text [N, D] -> scores [R, N],
                       mask_logits [R, 4h, 4w], mask_scores [R]: prompt encoder + mask decoder
                       + fusion head + scoring in one graph, for runtimes outside Python
=====================  ==========================================================================

Without CLIP vision (the paper's Table 4a ablation) there is no ``clip_image_memory`` and the
``memory`` inputs are absent. The Python runtime (:mod:`regionspot.model.onnx_runtime`) runs
the first five through the same predictor as PyTorch; ``region_path`` is their composition.
"""

from __future__ import annotations

import torch
from torch import nn

from regionspot.backbones.sam_prompt_head import SamPromptHead
from regionspot.model.fusion import RegionFusion


class SamImageEncoderGraph(nn.Module):
    """``pixels`` [1, 3, S, S] -> SAM image embeddings [1, C, h, w]."""

    def __init__(self, image_encoder: nn.Module) -> None:
        super().__init__()
        self.image_encoder = image_encoder

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.image_encoder(pixels)


class ClipMemoryGraph(nn.Module):
    """``pixels`` [B, 3, s, s] -> CLIP memory [B, T, width] (the adapter's ``encode_image``)."""

    def __init__(self, image_encoder: nn.Module) -> None:
        super().__init__()
        self.image_encoder = image_encoder

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.image_encoder.encode_image(pixels)  # type: ignore[operator]  # an ImageMemoryEncoder module


class BoxDecoderGraph(nn.Module):
    """``embeddings`` [1, C, h, w], ``boxes`` [R, 4] -> tokens [R, d], mask_scores [R] and,
    ``with_masks``, mask_logits [R, 4h, 4w]."""

    def __init__(self, head: SamPromptHead, with_masks: bool) -> None:
        super().__init__()
        self.head = head
        self.with_masks = with_masks

    def forward(self, embeddings: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, ...]:
        tokens, masks, scores = self.head.decode_boxes(embeddings, boxes, self.with_masks)
        return (tokens, scores) if masks is None else (tokens, scores, masks)


class RegionHeadGraph(nn.Module):
    """``tokens`` [B, R, d] (and ``memory`` [B, T, width] with CLIP vision) -> unit region
    embeddings [B, R, D] and the last block's cross-attention [B, R, T] (without CLIP vision:
    the embeddings only)."""

    def __init__(self, fusion: RegionFusion) -> None:
        super().__init__()
        self.fusion = fusion

    def forward(self, tokens: torch.Tensor, memory: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        embeddings, attention = self.fusion(tokens, memory, need_attention=memory is not None)
        return (embeddings,) if attention is None else (embeddings, attention)


class RegionPathGraph(nn.Module):
    """One image's boxes to scores and masks in one graph: ``embeddings`` [1, C, h, w],
    ``boxes`` [R, 4] (SAM input frame), ``text`` [N, D] unit, ``memory`` [1, T, width] (with
    CLIP vision) -> scores [R, N] in [0, 1], mask_logits [R, 4h, 4w], mask_scores [R]. All the
    boxes attend to each other, as ``predict`` sends them."""

    def __init__(self, head: SamPromptHead, fusion: RegionFusion) -> None:
        super().__init__()
        self.head = head
        self.fusion = fusion

    def forward(self, embeddings: torch.Tensor, boxes: torch.Tensor, text: torch.Tensor,
                memory: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        tokens, masks, mask_scores = self.head.decode_boxes(embeddings, boxes, with_masks=True)
        assert masks is not None  # with_masks=True
        regions, _ = self.fusion(tokens.unsqueeze(0), memory)
        return self.fusion.scores(regions[0], text), masks, mask_scores
