"""SAM's mask upscaling, written as two matrix products on channels-last image tokens.

SAM's mask decoder turns its image tokens ``[n, C, h, w]`` into mask logits with two 2x2,
stride-2 transposed convolutions (C -> C/4 -> C/8 channels, a channels-first LayerNorm and GELU
between them, GELU after), then a dot product with each mask token's hypernetwork output. A
2x2 stride-2 transposed convolution never mixes neighbouring pixels: each input pixel becomes a
2x2 block, ``out[o, 2i+a, 2j+b] = bias[o] + sum_c x[c, i, j] W[c, o, a, b]``. So both steps are
plain matrix products over pixels, ``[pixels, C_in] @ [C_in, (a, b, C_out)]``, on the tokens as
the two-way transformer leaves them (``[n, h*w, C]``, channels last, no transposes), the
LayerNorm becomes one fused call over the last axis, and the 16 sub-pixels of each token are put
in place once at the end. The same arithmetic as ``transformers``' module up to float rounding
(tests/backbones/test_sam_upscale.py). On the 2-core development CPU it took 8.3 ms per box
against 14.8 ms for the module (docs/benchmarks.md).
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.sam.modeling_sam import SamMaskDecoder


def _as_matrix(conv: nn.ConvTranspose2d) -> tuple[torch.Tensor, torch.Tensor]:
    """A 2x2 stride-2 transposed convolution's weight ``[C_in, C_out, 2, 2]`` as a matrix
    ``[C_in, 4 * C_out]`` (columns ordered sub-row, sub-column, channel) and its bias repeated
    to match ``[4 * C_out]``."""
    plain = (tuple(conv.padding) == (0, 0) and tuple(conv.output_padding) == (0, 0)
             and tuple(conv.dilation) == (1, 1) and conv.groups == 1 and conv.bias is not None)
    if tuple(conv.kernel_size) != (2, 2) or tuple(conv.stride) != (2, 2) or not plain:
        raise ValueError(f"expected a 2x2 stride-2 transposed convolution with a bias and no padding, dilation "
                         f"or groups, got {conv}")
    weight = conv.weight.permute(0, 2, 3, 1).reshape(conv.in_channels, 4 * conv.out_channels)
    bias = cast(torch.Tensor, conv.bias).repeat(4)
    return weight, bias


def _sub_pixel_features(decoder: SamMaskDecoder, tokens: torch.Tensor) -> torch.Tensor:
    """Both upscaling steps for tokens ``[P, C]``: ``[P * 16, C/8]``, rows ordered token, first
    sub-pixel (a, b), second sub-pixel (c, d). Biases and GELUs are applied in place (no second
    copy of the largest tensors; tracing turns them into ordinary ops)."""
    norm = cast(nn.LayerNorm, decoder.upscale_layer_norm)
    weight1, bias1 = _as_matrix(decoder.upscale_conv1)
    weight2, bias2 = _as_matrix(decoder.upscale_conv2)
    middle, out = weight1.shape[1] // 4, weight2.shape[1] // 4
    first = torch.mm(tokens, weight1).add_(bias1).view(-1, middle)          # [P*4, C/4]
    first = torch.ops.aten.gelu_(F.layer_norm(first, (middle,), norm.weight, norm.bias, norm.eps))
    second = torch.mm(first, weight2).add_(bias2).view(-1, out)             # [P*16, C/8]
    return cast(torch.Tensor, torch.ops.aten.gelu_(second))


def upscaled_mask_logits(decoder: SamMaskDecoder, image: torch.Tensor, grid: tuple[int, int],
                         hyper: torch.Tensor, per_box: bool = False) -> torch.Tensor:
    """Mask logits from the decoder's image tokens ``image`` ``[n, h*w, C]`` (``grid`` = (h, w))
    and hypernetwork outputs ``hyper`` ``[n, K, C/8]``: ``[n, K, 4h, 4w]``, what
    ``einsum("nkc,nchw->nkhw", hyper, upscaling(tokens as [n, C, h, w]))`` gives in SAM.
    ``per_box``: one box at a time (eager CPU: its temporaries stay small enough for the
    allocator to recycle, about 1.8x faster), else all at once (no Python loop: traceable)."""
    if not isinstance(decoder.activation, nn.GELU) or decoder.activation.approximate != "none":
        raise ValueError(f"expected SAM's exact GELU in the mask upscaling, got {decoder.activation}")
    n, pixels, channels = image.shape
    height, width = grid
    if per_box:
        logits = torch.stack([_sub_pixel_features(decoder, image[box]) @ hyper[box].t() for box in range(n)])
    else:
        features = _sub_pixel_features(decoder, image.reshape(n * pixels, channels)).view(n, pixels * 16, -1)
        logits = torch.bmm(features, hyper.transpose(1, 2))                  # [n, L*16, K]
    # token (i, j), first sub-pixel (a, b), second (c, d) -> row 4i + 2a + c, column 4j + 2b + d
    logits = logits.view(n, height, width, 2, 2, 2, 2, -1).permute(0, 7, 1, 3, 5, 2, 4, 6)
    return logits.reshape(n, -1, 4 * height, 4 * width)
