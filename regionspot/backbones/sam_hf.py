"""Hugging Face SAM (``transformers.SamModel``) as a frozen region tokenizer.

Weights come from a Hub id or a local ``save_pretrained`` folder (loaded through
:func:`regionspot.backbones.loading.load_hf_pretrained`, every key accounted for), or from an
original segment-anything ViT-B/L/H ``.pt``/``.pth`` checkpoint converted by
:mod:`regionspot.backbones.sam_convert`. The adapter shares the model's modules; it does not
copy them.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from transformers import SamModel, SamVisionConfig

from regionspot.backbones.loading import BackboneLoadError, load_hf_pretrained_with_info
from regionspot.backbones.sam_convert import (
    original_to_hf,
    sam_config_from_original,
    sam_sub_config,
    vit_variant_name,
)
from regionspot.backbones.sam_prompt_head import SamPromptHead
from regionspot.backbones.sam_tokenizer import SamRegionTokenizer
from regionspot.weights import load_strict


class HFSamImageEncoder(nn.Module):
    """``SamModel.vision_encoder`` as a plain function of pixels:
    ``[1, 3, 1024, 1024]`` -> ``[1, 256, 64, 64]``."""

    def __init__(self, vision_encoder: nn.Module) -> None:
        super().__init__()
        self.vision_encoder = vision_encoder

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.vision_encoder(pixels).last_hidden_state


def load_hf_sam_model(name_or_path: str) -> SamModel:
    """``SamModel`` from a Hub id or local folder. Any missing, unexpected or mismatched weight
    is a :class:`BackboneLoadError` (``from_pretrained`` alone would only warn)."""
    model, info = load_hf_pretrained_with_info(SamModel, name_or_path)
    problems = {key: sorted(info.get(key) or []) for key in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    problems = {key: [str(item) for item in items] for key, items in problems.items() if items}
    if problems:
        raise BackboneLoadError(f"SamModel weights at {name_or_path!r} do not match the model: {problems}")
    return model


def sam_model_from_original(state_dict: Mapping[str, torch.Tensor], what: str = "SAM checkpoint") -> SamModel:
    """A ``SamModel`` built and strictly loaded from an original-layout ViT SAM state dict
    (variant read from the tensor shapes)."""
    model = SamModel(sam_config_from_original(state_dict))
    load_strict(model, original_to_hf(state_dict), what)
    return model.eval()


def hf_sam_tokenizer(model: SamModel, token_place: str = "transformer", multimask: bool = False,
                     name_or_path: str | None = None) -> SamRegionTokenizer:
    """Wrap ``model`` (frozen in place: its parameters stop requiring gradients) as a
    :class:`SamRegionTokenizer`."""
    vision = sam_sub_config(model.config, "vision_config", SamVisionConfig)
    details = {
        "variant": vit_variant_name(vision),
        "vision_hidden_size": vision.hidden_size,
        "vision_layers": vision.num_hidden_layers,
    }
    name = name_or_path or getattr(model.config, "_name_or_path", "") or "in-memory SamModel"
    head = SamPromptHead.from_sam_model(model, token_place=token_place, multimask=multimask)
    return SamRegionTokenizer(HFSamImageEncoder(model.vision_encoder), head, family="sam",
                              name_or_path=name, details=details)
