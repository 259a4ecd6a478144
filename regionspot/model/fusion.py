"""The trainable part of RegionSpot: fuse SAM region tokens with the CLIP image memory.

The paper's cross-modal feature interaction (Fig. 2b): a linear projector maps each
position-aware token to the CLIP width, then ``depth`` post-norm decoder blocks (self-attention
among the regions of one image, cross-attention from regions to the CLIP memory, feed-forward),
a final norm and a linear projection to the text dimension. No positional embeddings. Depth is
ablated in the paper's Table 4c; the block layout, norms, head count and
widths follow the authors' release. Padding of a batch with a different number of regions per
image is handled with a key-padding mask, never by repeating boxes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from regionspot.config import FusionConfig


class FusionBlock(nn.Module):
    """One post-norm decoder block: [self-attention], cross-attention, feed-forward."""

    def __init__(self, width: int, heads: int, ffn_dim: int, dropout: float, self_attention: bool,
                 cross_attention: bool = True) -> None:
        super().__init__()
        self.self_attention = self_attention
        self.cross_attention = cross_attention
        if self_attention:
            self.self_attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
            self.norm_self = nn.LayerNorm(width)
        if cross_attention:
            self.cross_attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
            self.norm_cross = nn.LayerNorm(width)
        self.ffn = nn.Sequential(
            nn.Linear(width, ffn_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, width)
        )
        self.norm_ffn = nn.LayerNorm(width)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        regions: torch.Tensor,
        region_padding: torch.Tensor | None,
        memory: torch.Tensor | None,
        need_attention: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``regions`` [B, R, width]; ``region_padding`` [B, R] bool, True = padding;
        ``memory`` [B, T, width] or None (no CLIP vision). Returns the new regions and, when
        asked, the cross-attention weights [B, R, T] averaged over heads."""
        if self.self_attention:
            attended, _ = self.self_attn(
                regions, regions, regions, key_padding_mask=region_padding, need_weights=False
            )
            regions = self.norm_self(regions + self.dropout(attended))
        weights = None
        if memory is not None:
            if not self.cross_attention:
                raise ValueError("this head was built without CLIP vision (no cross-attention); pass memory=None")
            attended, weights = self.cross_attn(
                regions, memory, memory, need_weights=need_attention, average_attn_weights=True
            )
            regions = self.norm_cross(regions + self.dropout(attended))
        regions = self.norm_ffn(regions + self.dropout(self.ffn(regions)))
        return regions, weights


class RegionFusion(nn.Module):
    """Projector + decoder blocks + output projection, and the cosine scoring.

    Trainable parameter counts for the paper's two heads: BB (token 256, CLIP ViT-B/16 width 768,
    text 512) about 24M; BL (CLIP ViT-L/14 width 1024, text 768) about 39M.
    ``cross_attention`` False builds the paper's "no CLIP vision" ablation (Table 4a), which has
    no memory to attend to (and so no cross-attention weights, which would never receive a
    gradient).
    """

    def __init__(self, config: FusionConfig, cross_attention: bool = True) -> None:
        super().__init__()
        if config.width % config.heads != 0:
            raise ValueError(f"fusion.width {config.width} is not divisible by fusion.heads {config.heads}")
        self.config = config
        self.token_projector = nn.Linear(config.token_dim, config.width)
        self.blocks = nn.ModuleList(
            FusionBlock(config.width, config.heads, config.ffn_dim, config.dropout, config.region_self_attention,
                        cross_attention)
            for _ in range(config.depth)
        )
        self.final_norm = nn.LayerNorm(config.width)
        self.text_projector = nn.Linear(config.width, config.text_dim)

    def forward(
        self,
        tokens: torch.Tensor,
        memory: torch.Tensor | None,
        region_padding: torch.Tensor | None = None,
        need_attention: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Region embeddings in text space.

        ``tokens`` [B, R, token_dim] SAM tokens; ``memory`` [B, T, width] CLIP memory or None;
        ``region_padding`` [B, R] bool (True marks a padded slot). Returns L2-normalised
        embeddings [B, R, text_dim] and, when ``need_attention``, the last block's
        cross-attention [B, R, T] (None without memory).
        """
        self._check_shapes(tokens, memory, region_padding)
        regions = self.token_projector(tokens)
        attention = None
        for block in self.blocks:
            regions, attention = block(regions, region_padding, memory, need_attention)
        embeddings = self.text_projector(self.final_norm(regions))
        return F.normalize(embeddings, dim=-1), attention

    def logits(self, region_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        """``scale x cosine``: region [..., D] (unit) against text [N, D] (unit) -> [..., N]."""
        return region_text_logits(self.config, region_embeddings, text_embeddings)

    def scores(self, region_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        """Scores in [0, 1] [..., N]: see :func:`region_text_scores`."""
        return region_text_scores(self.config, region_embeddings, text_embeddings)

    def _check_shapes(
        self, tokens: torch.Tensor, memory: torch.Tensor | None, region_padding: torch.Tensor | None
    ) -> None:
        config = self.config
        if tokens.dim() != 3 or tokens.shape[-1] != config.token_dim:
            raise ValueError(f"tokens must be [B, R, {config.token_dim}], got {tuple(tokens.shape)}")
        if memory is not None and (memory.dim() != 3 or memory.shape[-1] != config.width
                                   or memory.shape[0] != tokens.shape[0]):
            raise ValueError(
                f"memory must be [{tokens.shape[0]}, T, {config.width}], got {tuple(memory.shape)}"
            )
        if region_padding is not None and region_padding.shape != tokens.shape[:2]:
            raise ValueError(
                f"region_padding must be {tuple(tokens.shape[:2])}, got {tuple(region_padding.shape)}"
            )


def region_text_logits(config: FusionConfig, region_embeddings: torch.Tensor,
                       text_embeddings: torch.Tensor) -> torch.Tensor:
    """``config.logit_scale x cosine``: region [..., D] (unit) against text [N, D] (unit) -> [..., N]."""
    return config.logit_scale * region_embeddings @ text_embeddings.t()


def region_text_scores(config: FusionConfig, region_embeddings: torch.Tensor,
                       text_embeddings: torch.Tensor) -> torch.Tensor:
    """Scores in [0, 1] [..., N] from :func:`region_text_logits` by ``config.score_function``: an
    independent sigmoid per (region, name), or a softmax over the N names."""
    logits = region_text_logits(config, region_embeddings, text_embeddings)
    if config.score_function == "softmax":
        return torch.softmax(logits, dim=-1)
    return torch.sigmoid(logits)


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) scalar parameters in ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def pad_regions(token_lists: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack per-image tokens [R_i, D] into [B, R_max, D] with a padding mask [B, R_max]
    (True = padded). Padded slots are zeros and are ignored by self-attention."""
    if not token_lists:
        raise ValueError("pad_regions needs at least one image")
    longest = max(t.shape[0] for t in token_lists)
    dim = token_lists[0].shape[-1]
    tokens = token_lists[0].new_zeros(len(token_lists), longest, dim)
    padding = torch.ones(len(token_lists), longest, dtype=torch.bool, device=tokens.device)
    for i, t in enumerate(token_lists):
        tokens[i, : t.shape[0]] = t
        padding[i, : t.shape[0]] = False
    return tokens, padding
