"""SAM's mask upscaling as matrix products equals transformers' convolutions, sub-pixel for sub-pixel."""

from __future__ import annotations

import pytest
import torch
from transformers import SamMaskDecoderConfig
from transformers.models.sam.modeling_sam import SamMaskDecoder

from regionspot.backbones.sam_upscale import upscaled_mask_logits


@pytest.fixture(scope="module")
def decoder() -> SamMaskDecoder:
    torch.manual_seed(0)
    module = SamMaskDecoder(SamMaskDecoderConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
                                                 mlp_dim=64)).eval()
    with torch.no_grad():
        for parameter in module.parameters():  # the LayerNorm starts at 1 / 0: make every weight count
            parameter.add_(torch.randn_like(parameter) * 0.1)
    return module


@pytest.mark.parametrize("per_box", [True, False], ids=["box-by-box", "batched"])
@pytest.mark.parametrize("masks_per_region", [1, 3])
def test_matches_the_convolutions(decoder: SamMaskDecoder, masks_per_region: int, per_box: bool) -> None:
    torch.manual_seed(1)
    n, height, width = 3, 5, 7  # not square: rows and columns must not be swapped
    tokens = torch.randn(n, height * width, 64)
    hyper = torch.randn(n, masks_per_region, 8)
    with torch.no_grad():
        fast = upscaled_mask_logits(decoder, tokens, (height, width), hyper, per_box=per_box)
        feature = tokens.transpose(1, 2).reshape(n, 64, height, width)
        feature = decoder.activation(decoder.upscale_layer_norm(decoder.upscale_conv1(feature)))
        upscaled = decoder.activation(decoder.upscale_conv2(feature))             # [n, 8, 4h, 4w]
        reference = torch.einsum("nkc,nchw->nkhw", hyper, upscaled)
    assert fast.shape == (n, masks_per_region, 4 * height, 4 * width)
    torch.testing.assert_close(fast, reference, atol=1e-5, rtol=1e-5)


def test_refuses_other_convolutions(decoder: SamMaskDecoder) -> None:
    other = SamMaskDecoder(SamMaskDecoderConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
                                                mlp_dim=64))
    for conv in (torch.nn.ConvTranspose2d(64, 16, kernel_size=3, stride=2),
                 torch.nn.ConvTranspose2d(64, 16, kernel_size=2, stride=2, padding=1),
                 torch.nn.ConvTranspose2d(64, 16, kernel_size=2, stride=2, groups=4),
                 torch.nn.ConvTranspose2d(64, 16, kernel_size=2, stride=2, bias=False)):
        other.upscale_conv1 = conv
        with pytest.raises(ValueError, match="2x2 stride-2"):
            upscaled_mask_logits(other, torch.zeros(1, 4, 64), (2, 2), torch.zeros(1, 1, 8))
