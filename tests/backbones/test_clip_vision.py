"""CLIP vision memory: contract, equality with Hugging Face's pre-norm last layer, freezing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import CLIPModel, CLIPVisionModel

from regionspot.backbones.clip_text import save_tiny_clip
from regionspot.backbones.clip_vision import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    ClipVisionMemory,
    build_image_memory_encoder,
    clip_vit_b16_config,
    clip_vit_l14_config,
    square_side,
    tiny_clip_config,
)
from regionspot.backbones.loading import BackboneLoadError
from regionspot.backbones.protocols import ImageMemoryEncoder
from regionspot.config import ClipBackboneConfig


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_clip(tmp_path_factory.mktemp("tiny_clip"), seed=0)


@pytest.fixture(scope="module")
def reference(tiny_folder: Path) -> CLIPModel:
    """The same weights loaded independently, to compare against."""
    return CLIPModel.from_pretrained(tiny_folder).eval()


def _random_pixels(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=generator)


def test_satisfies_protocol_and_sizes(tiny_folder: Path) -> None:
    encoder = ClipVisionMemory.from_pretrained(str(tiny_folder))
    assert isinstance(encoder, ImageMemoryEncoder)
    assert (encoder.width, encoder.image_size, encoder.patch_size, encoder.num_tokens) == (32, 32, 8, 17)
    info = encoder.describe()
    assert info["width"] == 32 and info["num_tokens"] == 17 and info["projection_dim"] == 16


def test_memory_is_prenorm_last_layer_with_class_token_first(tiny_folder: Path, reference: CLIPModel) -> None:
    encoder = ClipVisionMemory.from_pretrained(str(tiny_folder))
    pixels = _random_pixels(2, 32)
    memory = encoder.encode_image(pixels)
    assert memory.shape == (2, 17, 32) and memory.dtype == torch.float32
    with torch.no_grad():
        out = reference.vision_model(pixel_values=pixels, output_hidden_states=True)
    torch.testing.assert_close(memory, out.hidden_states[-1])
    # The same, computed by hand: embeddings, pre-norm, every layer, and no post-norm.
    tower = reference.vision_model
    with torch.no_grad():
        hidden = tower.pre_layrnorm(tower.embeddings(pixels))
        for layer in tower.encoder.layers:
            hidden = layer(hidden, None)
    torch.testing.assert_close(memory, hidden)
    # Not the post-layernorm class token that feeds the projection.
    assert not torch.allclose(memory[:, 0], out.pooler_output, atol=1e-3)
    torch.testing.assert_close(tower.post_layernorm(memory[:, 0]), out.pooler_output)
    without = ClipVisionMemory.from_pretrained(str(tiny_folder), use_class_token=False)
    assert without.num_tokens == 16
    torch.testing.assert_close(without.encode_image(pixels), out.hidden_states[-1][:, 1:])


def test_other_input_size_interpolates_position_embeddings(tiny_folder: Path, reference: CLIPModel) -> None:
    encoder = ClipVisionMemory.from_pretrained(str(tiny_folder), image_size=64)
    assert encoder.image_size == 64 and encoder.num_tokens == 65
    pixels = _random_pixels(1, 64)
    memory = encoder.encode_image(pixels)
    assert memory.shape == (1, 65, 32)
    with torch.no_grad():
        out = reference.vision_model(pixel_values=pixels, interpolate_pos_encoding=True, output_hidden_states=True)
    torch.testing.assert_close(memory, out.hidden_states[-1])
    assert encoder.preprocess(np.zeros((10, 20, 3), np.uint8)).shape == (3, 64, 64)


def test_pooled_embedding_is_normalised_clip_image_feature(tiny_folder: Path, reference: CLIPModel) -> None:
    encoder = ClipVisionMemory.from_pretrained(str(tiny_folder))
    pixels = _random_pixels(3, 32, seed=1)
    pooled = encoder.encode_pooled(pixels)
    assert pooled.shape == (3, 16)
    torch.testing.assert_close(pooled.norm(dim=-1), torch.ones(3))
    with torch.no_grad():
        expected = reference.get_image_features(pixel_values=pixels).pooler_output
    torch.testing.assert_close(pooled, torch.nn.functional.normalize(expected, dim=-1))


def test_preprocess_resizes_whole_image_and_normalises(tiny_folder: Path) -> None:
    encoder = ClipVisionMemory.from_pretrained(str(tiny_folder))
    image = np.zeros((20, 100, 3), np.uint8)
    image[:, :10] = (0, 255, 0)  # a stripe at the far left that a centre crop would cut away
    pixels = encoder.preprocess(image)
    assert pixels.shape == (3, 32, 32) and pixels.dtype == torch.float32
    mean, std = torch.tensor(OPENAI_CLIP_MEAN), torch.tensor(OPENAI_CLIP_STD)
    torch.testing.assert_close(pixels[:, 5, 0], (torch.tensor([0.0, 1.0, 0.0]) - mean) / std)
    torch.testing.assert_close(pixels[:, 5, -1], (torch.zeros(3) - mean) / std)
    flat = encoder.preprocess(np.full((7, 9, 3), 51, np.uint8))
    torch.testing.assert_close(flat, ((0.2 - mean) / std).view(3, 1, 1).expand(3, 32, 32))


def test_preprocess_uses_folder_mean_std(tmp_path: Path) -> None:
    folder = save_tiny_clip(tmp_path / "clip", seed=3)
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.25] * 3}))
    encoder = ClipVisionMemory.from_pretrained(str(folder))
    assert encoder.mean == (0.5, 0.5, 0.5) and encoder.std == (0.25, 0.25, 0.25)
    torch.testing.assert_close(encoder.preprocess(np.full((5, 5, 3), 255, np.uint8)), torch.full((3, 32, 32), 2.0))


@pytest.mark.parametrize(("bad", "message"), [
    (np.zeros((8, 8), np.uint8), "expected an HxWx3 uint8 RGB array"),
    (np.zeros((8, 8, 4), np.uint8), "expected an HxWx3 uint8 RGB array"),
    (np.zeros((8, 8, 3), np.float32), "expected an HxWx3 uint8 RGB array"),
    (np.zeros((0, 8, 3), np.uint8), r"empty image of shape \(0, 8, 3\)"),
])
def test_preprocess_rejects_bad_images(tiny_folder: Path, bad: np.ndarray, message: str) -> None:
    encoder = ClipVisionMemory.from_pretrained(str(tiny_folder))
    with pytest.raises(ValueError, match=message):
        encoder.preprocess(bad)


def test_frozen_no_gradients_and_stays_in_eval(tiny_folder: Path) -> None:
    encoder = ClipVisionMemory.from_pretrained(str(tiny_folder))
    head = torch.nn.Linear(32, 4)
    owner = torch.nn.ModuleDict({"clip": encoder, "head": head})
    owner.train()
    assert not encoder.training and all(not m.training for m in encoder.modules())
    assert all(not p.requires_grad for p in encoder.parameters())
    loss = head(encoder.encode_image(_random_pixels(1, 32))).sum()
    loss.backward()
    assert head.weight.grad is not None
    assert all(p.grad is None for p in encoder.parameters())


def test_from_clip_model_in_memory_shares_weights() -> None:
    torch.manual_seed(0)
    model = CLIPModel(tiny_clip_config())
    encoder = ClipVisionMemory.from_clip_model(model, image_size=48, use_class_token=False)
    assert encoder.vision_model is model.vision_model
    assert encoder.encode_image(_random_pixels(2, 48)).shape == (2, 36, 32)


def test_bare_vision_model_folder_has_memory_but_no_pooled(tmp_path: Path) -> None:
    torch.manual_seed(0)
    CLIPVisionModel(tiny_clip_config().vision_config).save_pretrained(tmp_path)
    encoder = ClipVisionMemory.from_pretrained(str(tmp_path))
    assert encoder.encode_image(_random_pixels(1, 32)).shape == (1, 17, 32)
    with pytest.raises(RuntimeError, match="no visual projection"):
        encoder.encode_pooled(_random_pixels(1, 32))


def test_factory_and_missing_model(tiny_folder: Path, tmp_path: Path) -> None:
    assert build_image_memory_encoder(ClipBackboneConfig(name_or_path=str(tiny_folder), enabled=False)) is None
    built = build_image_memory_encoder(
        ClipBackboneConfig(name_or_path=str(tiny_folder), image_size=64, use_class_token=False))
    assert built is not None and built.num_tokens == 64
    with pytest.raises(BackboneLoadError):
        ClipVisionMemory.from_pretrained(str(tmp_path / "no_such_model"))


@pytest.mark.parametrize(
    ("make", "vision", "text", "projection", "total"),
    [
        (clip_vit_b16_config, (768, 12, 12, 16, 224, 3072), (512, 12, 8, 2048, 49408, 77), 512, 149_620_737),
        (clip_vit_l14_config, (1024, 24, 16, 14, 224, 4096), (768, 12, 12, 3072, 49408, 77), 768, 427_616_513),
    ],
)
def test_real_architecture_configs(make, vision, text, projection, total) -> None:
    config = make()
    v, t = config.vision_config, config.text_config
    assert (v.hidden_size, v.num_hidden_layers, v.num_attention_heads, v.patch_size, v.image_size,
            v.intermediate_size) == vision
    assert (t.hidden_size, t.num_hidden_layers, t.num_attention_heads, t.intermediate_size, t.vocab_size,
            t.max_position_embeddings) == text
    assert config.projection_dim == projection
    with torch.device("meta"):
        model = CLIPModel(config)
    # The parameter counts of OpenAI's released checkpoints as converted for transformers.
    assert sum(p.numel() for p in model.parameters()) == total


@pytest.mark.parametrize(("value", "side"), [(224, 224), ((336, 336), 336), ([16, 16], 16)])
def test_square_side_takes_one_side_or_an_equal_pair(value: object, side: int) -> None:
    assert square_side(value, "image_size") == side


@pytest.mark.parametrize("value", [(224, 320), 0, -16, 2.5, True, None, "224"])
def test_square_side_refuses_what_a_square_input_cannot_take(value: object) -> None:
    with pytest.raises(BackboneLoadError, match=r"image_size = .*expected one positive integer \(square\)"):
        square_side(value, "image_size")
