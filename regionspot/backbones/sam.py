"""Entry points for the SAM side: build a frozen :class:`RegionTokenizer` from configuration.

``name_or_path`` decides the loader:

* an existing ``.pt``/``.pth`` file: an original segment-anything layout checkpoint; TinyViT keys
  (``image_encoder.layers.0.blocks.0.conv1.c.weight``) mean MobileSAM, otherwise ViT SAM
  (B/L/H, read from the shapes);
* anything else (a ``save_pretrained`` folder or a Hub id such as ``facebook/sam-vit-base``):
  ``transformers.SamModel.from_pretrained``.
"""

from __future__ import annotations

from pathlib import Path

from transformers import SamModel

from regionspot.backbones.loading import BackboneLoadError
from regionspot.backbones.mobile_sam import is_mobile_sam_state_dict, mobile_sam_tokenizer
from regionspot.backbones.protocols import RegionTokenizer
from regionspot.backbones.sam_convert import read_checkpoint
from regionspot.backbones.sam_hf import hf_sam_tokenizer, load_hf_sam_model, sam_model_from_original
from regionspot.backbones.sam_prompt_head import check_token_place
from regionspot.backbones.sam_tokenizer import SamRegionTokenizer
from regionspot.config import SamBackboneConfig, check_limits
from regionspot.weights import CheckpointError

CHECKPOINT_SUFFIXES = (".pt", ".pth")


def build_region_tokenizer(config: SamBackboneConfig) -> RegionTokenizer:
    """The frozen SAM-family tokenizer named by ``config`` (see the module docstring).

    ``config.decoder_layer_norm_eps``, when set, replaces the checkpoint's own decoder eps.
    Raises :class:`BackboneLoadError` for a missing checkpoint file, an unreachable Hub id or
    weights whose keys do not match the model, and ValueError for an unknown token place.
    """
    check_token_place(config.token_place)
    check_limits(config, "sam")
    name = config.name_or_path
    path = Path(name)
    if path.suffix in CHECKPOINT_SUFFIXES:
        if not path.is_file():
            raise BackboneLoadError(f"SAM checkpoint file not found: {name}")
        tokenizer = _from_original_checkpoint(name, config.token_place, config.multimask)
    else:
        tokenizer = hf_sam_tokenizer(load_hf_sam_model(name), config.token_place, config.multimask, name_or_path=name)
    if config.decoder_layer_norm_eps is not None:
        tokenizer.head.set_decoder_layer_norm_eps(config.decoder_layer_norm_eps)
    return tokenizer


def region_tokenizer_from_sam_model(model: SamModel, token_place: str = "transformer",
                                    multimask: bool = False, name_or_path: str | None = None) -> RegionTokenizer:
    """A tokenizer over a ready ``SamModel`` (tests and benchmarks inject models this way).
    The model's modules are shared and frozen in place."""
    check_token_place(token_place)
    return hf_sam_tokenizer(model, token_place, multimask, name_or_path=name_or_path)


def _from_original_checkpoint(path: str, token_place: str, multimask: bool) -> SamRegionTokenizer:
    try:
        state_dict = read_checkpoint(path)
        if is_mobile_sam_state_dict(state_dict):
            return mobile_sam_tokenizer(state_dict, token_place, multimask, name_or_path=path)
        model = sam_model_from_original(state_dict, what=f"SAM checkpoint {path}")
    except CheckpointError as exc:
        raise BackboneLoadError(str(exc)) from exc
    return hf_sam_tokenizer(model, token_place, multimask, name_or_path=path)
