"""Original segment-anything layout <-> Hugging Face SamModel key mapping."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import SamConfig, SamMaskDecoderConfig, SamModel, SamVisionConfig

from regionspot.backbones.sam_convert import (
    PE_ORIGINAL,
    CheckpointError,
    hf_to_original,
    original_to_hf,
    read_checkpoint,
    sam_config_from_original,
    split_original,
    vision_config_from_original,
    vit_variant_name,
)
from regionspot.backbones.sam_hf import sam_model_from_original

TINY_VISION = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, global_attn_indexes=[1], mlp_dim=64)


def _distinct_tiny_sam() -> SamModel:
    """A tiny SamModel whose every parameter holds values no other parameter has, so any key
    swap in a mapping shows up as a value mismatch."""
    torch.manual_seed(0)
    model = SamModel(SamConfig(vision_config=SamVisionConfig(**TINY_VISION)))
    with torch.no_grad():
        for index, parameter in enumerate(model.parameters()):
            parameter.copy_(torch.randn_like(parameter) * 0.01 + index)
    return model


def test_round_trip_hf_original_hf_is_exact() -> None:
    state = _distinct_tiny_sam().state_dict()
    original = hf_to_original(state)
    assert len(original) == len(state) - 1  # the two tied PE keys become one
    back = original_to_hf(original)
    assert set(back) == set(state)
    for key, value in state.items():
        assert torch.equal(back[key], value), key


def test_known_names_map_to_the_right_tensors() -> None:
    state = _distinct_tiny_sam().state_dict()
    original = hf_to_original(state)
    pairs = {
        PE_ORIGINAL: "shared_image_embedding.positional_embedding",
        "prompt_encoder.point_embeddings.2.weight": "prompt_encoder.point_embed.2.weight",
        "prompt_encoder.mask_downscaling.4.weight": "prompt_encoder.mask_embed.layer_norm2.weight",
        "mask_decoder.transformer.layers.1.norm3.bias": "mask_decoder.transformer.layers.1.layer_norm3.bias",
        "mask_decoder.transformer.norm_final_attn.weight": "mask_decoder.transformer.layer_norm_final_attn.weight",
        "mask_decoder.output_upscaling.1.weight": "mask_decoder.upscale_layer_norm.weight",
        "mask_decoder.output_upscaling.3.weight": "mask_decoder.upscale_conv2.weight",
        "mask_decoder.output_hypernetworks_mlps.3.layers.0.weight":
            "mask_decoder.output_hypernetworks_mlps.3.proj_in.weight",
        "mask_decoder.iou_prediction_head.layers.1.bias": "mask_decoder.iou_prediction_head.layers.0.bias",
        "mask_decoder.iou_prediction_head.layers.2.weight": "mask_decoder.iou_prediction_head.proj_out.weight",
        "image_encoder.patch_embed.proj.weight": "vision_encoder.patch_embed.projection.weight",
        "image_encoder.blocks.2.norm2.weight": "vision_encoder.layers.2.layer_norm2.weight",
        "image_encoder.blocks.1.attn.rel_pos_w": "vision_encoder.layers.1.attn.rel_pos_w",
        "image_encoder.neck.1.bias": "vision_encoder.neck.layer_norm1.bias",
        "image_encoder.neck.2.weight": "vision_encoder.neck.conv2.weight",
    }
    for original_key, hf_key in pairs.items():
        assert torch.equal(original[original_key], state[hf_key]), original_key


def test_original_names_are_those_of_a_real_checkpoint(mobile_sam_checkpoint: Path) -> None:
    """Our original-layout prompt encoder / mask decoder names and shapes are exactly the real
    MobileSAM (= SAM) checkpoint's."""
    _, real_head = split_original(read_checkpoint(str(mobile_sam_checkpoint)))
    ours = {k: v for k, v in hf_to_original(_distinct_tiny_sam().state_dict()).items()
            if not k.startswith("image_encoder.")}
    assert set(ours) == set(real_head)
    assert all(ours[k].shape == real_head[k].shape for k in ours)


@pytest.mark.parametrize(("hidden", "depth", "heads", "global_blocks", "name"), [
    (768, 12, 12, [2, 5, 8, 11], "vit_b"),
    (1024, 24, 16, [5, 11, 17, 23], "vit_l"),
    (1280, 32, 16, [7, 15, 23, 31], "vit_h"),
])
def test_vit_variant_read_from_shapes(hidden: int, depth: int, heads: int, global_blocks: list[int], name: str) -> None:
    vision = SamVisionConfig(hidden_size=hidden, num_hidden_layers=depth, num_attention_heads=heads,
                             global_attn_indexes=global_blocks)
    with torch.device("meta"):  # shapes only, no memory
        original = hf_to_original(SamModel(SamConfig(vision_config=vision)).state_dict())
    found = vision_config_from_original(original)
    assert (found.hidden_size, found.num_hidden_layers, found.num_attention_heads) == (hidden, depth, heads)
    assert list(found.global_attn_indexes) == global_blocks
    assert (found.window_size, found.mlp_dim, found.image_size, found.patch_size) == (14, 4 * hidden, 1024, 16)
    assert vit_variant_name(found) == name


def test_original_checkpoint_loads_strictly_into_sam_model() -> None:
    model = _distinct_tiny_sam()
    loaded = sam_model_from_original(hf_to_original(model.state_dict()))
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    config = loaded.config
    assert list(config.vision_config.global_attn_indexes) == [1]
    assert config.vision_config.num_hidden_layers == 3
    assert config.mask_decoder_config.layer_norm_eps == 1e-5  # the original two-way transformer's


def test_decoder_config_read_from_shapes() -> None:
    decoder = SamMaskDecoderConfig(hidden_size=64, num_hidden_layers=3, mlp_dim=96, num_attention_heads=4,
                                   iou_head_depth=4, iou_head_hidden_dim=48, num_multimask_outputs=2)
    config = SamConfig(vision_config=SamVisionConfig(**TINY_VISION), mask_decoder_config=decoder,
                       prompt_encoder_config={"hidden_size": 64, "mask_input_channels": 8})
    with torch.device("meta"):
        original = hf_to_original(SamModel(config).state_dict())
    found = sam_config_from_original(original).mask_decoder_config
    assert (found.hidden_size, found.num_hidden_layers, found.mlp_dim) == (64, 3, 96)
    assert (found.iou_head_depth, found.iou_head_hidden_dim, found.num_multimask_outputs) == (4, 48, 2)
    assert "mask_decoder.iou_prediction_head.layers.3.weight" in original


def test_unknown_original_key_is_named() -> None:
    original = hf_to_original(_distinct_tiny_sam().state_dict())
    original["mask_decoder.bogus.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"mask_decoder\.bogus\.weight"):
        original_to_hf(original)
    with pytest.raises(CheckpointError, match=r"optimizer\.step"):
        split_original({"optimizer.step": torch.zeros(1)})


def test_tied_positional_encodings_must_agree() -> None:
    state = dict(_distinct_tiny_sam().state_dict())
    state["prompt_encoder.shared_embedding.positional_embedding"] = torch.zeros(2, 128)
    with pytest.raises(CheckpointError, match="tied"):
        hf_to_original(state)


def test_read_checkpoint_unwraps_and_rejects(tmp_path: Path) -> None:
    tensors = {"a": torch.ones(2)}
    torch.save({"model": tensors}, tmp_path / "wrapped.pt")
    assert torch.equal(read_checkpoint(str(tmp_path / "wrapped.pt"))["a"], tensors["a"])
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        read_checkpoint(str(tmp_path / "garbage.pt"))
