"""TinyViT image encoder of MobileSAM (TinyViT-5M with a SAM neck), inference only.

Architecture: a two-convolution stem (stride 4), a stage of MBConv blocks, then three stages of
blocks that each do windowed self-attention (with a learned bias per head for every relative
offset inside a window), a depthwise 3x3 "local" convolution and an MLP. Stages are joined by
convolutional patch merging; MobileSAM keeps the last merge at stride 1 so the output grid is
1/16 of the input (64x64 at 1024). A neck maps the last width to 256 channels like SAM's ViT.

Parameter names follow MobileSAM's checkpoint (``patch_embed.seq.0.c.weight``,
``layers.1.blocks.0.attn.attention_biases`` ...), so its ``image_encoder.*`` tensors load
directly. Layout inside the model: convolution stages work on ``[B, C, H, W]``; attention
blocks on ``[B, H, W, C]``. Dropout and drop-path are left out: this encoder is only ever
run frozen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

# MobileSAM's checkpoint still carries TinyViT's ImageNet classifier; SAM never uses it.
CLASSIFIER_HEAD_KEYS = ("head.weight", "head.bias", "norm_head.weight", "norm_head.bias")


class ConvBN(nn.Module):
    """Bias-free convolution followed by batch norm (keys ``c.*``, ``bn.*``)."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.c = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return cast(torch.Tensor, self.bn(self.c(x)))
        # inference: the batch norm folded into the convolution's weight and bias (one pass over
        # the activations instead of two; the same affine map up to float rounding)
        bn = self.bn
        assert bn.running_mean is not None and bn.running_var is not None
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        weight = self.c.weight * scale.view(-1, 1, 1, 1)
        bias = bn.bias - bn.running_mean * scale
        return F.conv2d(x, weight, bias, self.c.stride, self.c.padding, self.c.dilation, self.c.groups)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a ``[B, C, H, W]`` map (eps 1e-6, as SAM's neck)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.weight.shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class PatchEmbed(nn.Module):
    """Stem: two stride-2 3x3 ConvBN with a GELU between. ``[B,3,S,S] -> [B,dim,S/4,S/4]``."""

    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(ConvBN(in_chans, dim // 2, 3, 2), nn.GELU(), ConvBN(dim // 2, dim, 3, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, 3x3 depthwise, 1x1 project, residual, GELU."""

    def __init__(self, dim: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = ConvBN(dim, hidden, 1)
        self.conv2 = ConvBN(hidden, hidden, 3, groups=hidden)
        self.conv3 = ConvBN(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.conv2(F.gelu(self.conv1(x))))
        return F.gelu(x + self.conv3(y))


class PatchMerging(nn.Module):
    """1x1 ConvBN, GELU, depthwise 3x3 ConvBN with ``stride``, GELU, 1x1 ConvBN."""

    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(dim, out_dim, 1)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(F.gelu(self.conv2(F.gelu(self.conv1(x)))))


def relative_offset_index(window: int) -> torch.Tensor:
    """``[N, N]`` (N = window^2) index of the offset ``(|dy|, |dx|)`` between two positions of a
    window, flattened row-major: ``|dy| * window + |dx|``. This is the order in which offsets are
    first met when pairing (0,0) with every position, the numbering the checkpoint's
    ``attention_biases`` columns use."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    delta = (coords[:, :, None] - coords[:, None, :]).abs()
    return delta[0] * window + delta[1]


class WindowAttention(nn.Module):
    """Pre-norm multi-head attention over the tokens of one window, plus a learned bias per head
    and relative offset. ``[B, N, C] -> [B, N, C]``, N = window^2.

    ``qkv`` output is laid out per head as ``[q | k | v]`` (each head_dim wide).
    """

    bias_index: torch.Tensor  # [N, N] buffer: which learned bias each (query, key) pair uses

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window * window))
        self.register_buffer("bias_index", relative_offset_index(window), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(self.norm(x)).view(batch, tokens, self.num_heads, 3 * self.head_dim)
        q, k, v = qkv.permute(0, 2, 1, 3).split(self.head_dim, dim=-1)
        bias = self.attention_biases[:, self.bias_index].to(q.dtype)  # [heads, N, N]
        if x.device.type == "cpu":  # torch's CPU SDPA with a float mask is 1.2-1.9x slower on these windows
            out = torch.softmax((q * self.head_dim ** -0.5) @ k.transpose(-2, -1) + bias, dim=-1) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class FeedForward(nn.Module):
    """Pre-norm MLP: LayerNorm, Linear, GELU, Linear (keys ``norm``, ``fc1``, ``fc2``)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """``[B, H, W, C]`` -> ``[B * nH * nW, window^2, C]``, zero-padding bottom/right to a
    multiple of ``window``; also returns the padded (H, W)."""
    batch, height, width, channels = x.shape
    pad_h, pad_w = (-height) % window, (-width) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    ph, pw = height + pad_h, width + pad_w
    x = x.view(batch, ph // window, window, pw // window, window, channels).transpose(2, 3)
    return x.reshape(-1, window * window, channels), (ph, pw)


def window_unpartition(windows: torch.Tensor, window: int, padded: tuple[int, int],
                       size: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`window_partition`: back to ``[B, H, W, C]`` without the padding."""
    (ph, pw), (height, width) = padded, size
    channels = windows.shape[-1]
    x = windows.view(-1, ph // window, pw // window, window, window, channels).transpose(2, 3)
    return x.reshape(-1, ph, pw, channels)[:, :height, :width]


class TinyViTBlock(nn.Module):
    """Windowed attention (residual), depthwise 3x3 local conv, MLP (residual).
    ``[B, H, W, C] -> [B, H, W, C]``."""

    def __init__(self, dim: int, num_heads: int, window: int, mlp_ratio: float) -> None:
        super().__init__()
        self.window = window
        self.attn = WindowAttention(dim, num_heads, window)
        self.mlp = FeedForward(dim, int(dim * mlp_ratio))
        self.local_conv = ConvBN(dim, dim, 3, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[1:3]
        windows, padded = window_partition(x, self.window)
        x = x + window_unpartition(self.attn(windows), self.window, padded, (height, width))
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.mlp(x)


class ConvStage(nn.Module):
    """MBConv blocks, then an optional patch merge. ``[B, C, H, W]`` in and out."""

    def __init__(self, dim: int, depth: int, expand_ratio: float, downsample: PatchMerging | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x) if self.downsample is not None else x


class AttentionStage(nn.Module):
    """TinyViT blocks, then an optional patch merge. ``[B, C, H, W]`` in and out."""

    def __init__(self, dim: int, depth: int, num_heads: int, window: int, mlp_ratio: float,
                 downsample: PatchMerging | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(TinyViTBlock(dim, num_heads, window, mlp_ratio) for _ in range(depth))
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        for block in self.blocks:
            x = block(x)
        x = x.permute(0, 3, 1, 2)
        return self.downsample(x) if self.downsample is not None else x


class TinyViT(nn.Module):
    """TinyViT backbone + SAM neck: ``[B, 3, S, S]`` normalised pixels -> ``[B, out_chans, S/16, S/16]``.

    ``merge_strides`` are the strides of the patch merges after stages 0..n-2; MobileSAM uses
    (2, 2, 1), so the stem (/4) and two merges give /16 and the last stage keeps that grid.
    """

    def __init__(self, embed_dims: Sequence[int] = (64, 128, 160, 320), depths: Sequence[int] = (2, 2, 6, 2),
                 num_heads: Sequence[int] = (2, 4, 5, 10), window_sizes: Sequence[int] = (7, 7, 14, 7),
                 merge_strides: Sequence[int] = (2, 2, 1), mlp_ratio: float = 4.0, mbconv_expand_ratio: float = 4.0,
                 in_chans: int = 3, out_chans: int = 256) -> None:
        super().__init__()
        stages = len(embed_dims)
        if not (len(depths) == len(num_heads) == len(window_sizes) == stages and len(merge_strides) == stages - 1):
            raise ValueError("TinyViT: embed_dims, depths, num_heads, window_sizes need one entry per stage "
                             "and merge_strides one fewer")
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0])
        layers: list[nn.Module] = []
        for i in range(stages):
            merge = PatchMerging(embed_dims[i], embed_dims[i + 1], merge_strides[i]) if i < stages - 1 else None
            if i == 0:
                layers.append(ConvStage(embed_dims[0], depths[0], mbconv_expand_ratio, merge))
            else:
                layers.append(AttentionStage(embed_dims[i], depths[i], num_heads[i], window_sizes[i], mlp_ratio, merge))
        self.layers = nn.ModuleList(layers)
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, 1, bias=False), LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False), LayerNorm2d(out_chans),
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(pixels)
        for layer in self.layers:
            x = layer(x)
        return self.neck(x)


def tiny_vit_5m() -> TinyViT:
    """MobileSAM's image encoder: TinyViT-5M (dims 64/128/160/320, depths 2/2/6/2, heads
    2/4/5/10, windows 7/7/14/7), 1024x1024 input, 256x64x64 output."""
    return TinyViT()


def tiny_vit_state_dict(image_encoder: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """MobileSAM ``image_encoder.*`` tensors (prefix already removed) ready for a strict load
    into :class:`TinyViT`: the ImageNet classifier head (``head.*``, ``norm_head.*``) is dropped
    on purpose and the dropped names are returned. Nothing else is touched."""
    kept = {k: v for k, v in image_encoder.items() if k not in CLASSIFIER_HEAD_KEYS}
    dropped = sorted(k for k in image_encoder if k in CLASSIFIER_HEAD_KEYS)
    return kept, dropped
