"""The re-associated two-way transformer equals Hugging Face's, box by box."""

from __future__ import annotations

import pytest
import torch
from transformers import SamMaskDecoderConfig
from transformers.models.sam.modeling_sam import SamTwoWayTransformer

from regionspot.backbones.sam_two_way import two_way_transformer


@pytest.fixture(scope="module")
def transformer() -> SamTwoWayTransformer:
    torch.manual_seed(0)
    config = SamMaskDecoderConfig(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, mlp_dim=128)
    config._attn_implementation = "eager"
    module = SamTwoWayTransformer(config).eval()
    with torch.no_grad():
        for parameter in module.parameters():  # biases start at zero: make them count
            parameter.add_(torch.randn_like(parameter) * 0.1)
    return module


@pytest.mark.parametrize("final_tokens", [None, 2])
def test_matches_reference_for_each_box(transformer: SamTwoWayTransformer, final_tokens: int | None) -> None:
    torch.manual_seed(1)
    n, tokens, length = 5, 7, 36
    points = torch.randn(n, tokens, 64)
    image, pe = torch.randn(1, length, 64), torch.randn(1, length, 64)
    with torch.no_grad():
        fast_tokens, fast_image = two_way_transformer(transformer, points, image, pe, final_tokens=final_tokens)
        for box in range(n):  # the reference, one box at a time
            ref_tokens, ref_image = transformer(point_embeddings=points[box][None, None],
                                                image_embeddings=image.transpose(1, 2).reshape(1, 64, 6, 6),
                                                image_positional_embeddings=pe.transpose(1, 2).reshape(1, 64, 6, 6),
                                                attention_similarity=None)
            kept = ref_tokens[0, 0, :final_tokens]
            torch.testing.assert_close(fast_tokens[box], kept, atol=2e-5, rtol=1e-4)
            torch.testing.assert_close(fast_image[box], ref_image[0, 0], atol=2e-5, rtol=1e-4)
    assert fast_tokens.shape == (n, final_tokens or tokens, 64)
