"""MobileSAM (TinyViT-5M image encoder + SAM's prompt encoder and mask decoder) as a frozen
region tokenizer, from its original-layout ``mobile_sam.pt``.

Every tensor of the checkpoint is used, except TinyViT's ImageNet classifier (``head.*``,
``norm_head.*`` under ``image_encoder``), which SAM never runs and which is dropped on purpose.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from regionspot.backbones.loading import BackboneLoadError
from regionspot.backbones.sam_convert import (
    original_to_hf,
    read_checkpoint,
    sam_config_from_original,
    split_original,
)
from regionspot.backbones.sam_prompt_head import SamPromptHead
from regionspot.backbones.sam_tokenizer import SamRegionTokenizer
from regionspot.backbones.tiny_vit import TinyViT, tiny_vit_5m, tiny_vit_state_dict
from regionspot.weights import CheckpointError, load_strict

# A key only TinyViT's MBConv stage has: tells MobileSAM checkpoints from ViT SAM ones.
TINY_VIT_MARKER = "image_encoder.layers.0.blocks.0.conv1.c.weight"


def is_mobile_sam_state_dict(state_dict: Mapping[str, torch.Tensor]) -> bool:
    return TINY_VIT_MARKER in state_dict


def mobile_sam_modules(state_dict: Mapping[str, torch.Tensor], what: str = "MobileSAM checkpoint",
                       token_place: str = "transformer", multimask: bool = False
                       ) -> tuple[TinyViT, SamPromptHead, list[str]]:
    """(TinyViT encoder, prompt head, names of the dropped classifier keys), both modules
    strictly loaded from an original-layout MobileSAM state dict."""
    encoder_weights, head_weights = split_original(state_dict)
    encoder_weights, dropped = tiny_vit_state_dict(encoder_weights)
    encoder = tiny_vit_5m()
    load_strict(encoder, encoder_weights, f"{what} (TinyViT image encoder)")
    head = SamPromptHead.from_config(sam_config_from_original(head_weights), token_place, multimask)
    load_strict(head, original_to_hf(head_weights), f"{what} (prompt encoder and mask decoder)")
    return encoder, head, [f"image_encoder.{name}" for name in dropped]


def mobile_sam_tokenizer(state_dict: Mapping[str, torch.Tensor], token_place: str = "transformer",
                         multimask: bool = False, name_or_path: str = "mobile_sam") -> SamRegionTokenizer:
    """A frozen :class:`SamRegionTokenizer` from an in-memory MobileSAM state dict."""
    encoder, head, dropped = mobile_sam_modules(state_dict, f"MobileSAM checkpoint {name_or_path}",
                                                token_place, multimask)
    details: dict[str, object] = {"variant": "tiny_vit_5m", "dropped_keys": dropped}
    return SamRegionTokenizer(encoder, head, family="mobile_sam", name_or_path=name_or_path, details=details)


def load_mobile_sam(path: str | Path, token_place: str = "transformer", multimask: bool = False) -> SamRegionTokenizer:
    """MobileSAM from an original-layout ``mobile_sam.pt``; any key problem is a
    :class:`BackboneLoadError` naming the keys."""
    try:
        return mobile_sam_tokenizer(read_checkpoint(str(path)), token_place, multimask, name_or_path=str(path))
    except CheckpointError as exc:
        raise BackboneLoadError(str(exc)) from exc
