"""MobileSAM's TinyViT encoder: structure, windowing, and key layout of the real checkpoint."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from regionspot.backbones.sam_convert import read_checkpoint, split_original
from regionspot.backbones.tiny_vit import (
    CLASSIFIER_HEAD_KEYS,
    ConvBN,
    TinyViT,
    TinyViTBlock,
    relative_offset_index,
    tiny_vit_5m,
    tiny_vit_state_dict,
    window_partition,
    window_unpartition,
)
from regionspot.weights import load_strict


def _small_tiny_vit() -> TinyViT:
    torch.manual_seed(0)
    model = TinyViT(embed_dims=(8, 16, 16, 32), depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4),
                    window_sizes=(7, 7, 14, 7), out_chans=16)
    with torch.no_grad():  # non-trivial attention biases and batch-norm statistics
        for name, tensor in model.state_dict().items():
            if name.endswith(("attention_biases", "running_mean")):
                tensor.normal_()
    return model.eval()


@pytest.mark.parametrize("window", [1, 2, 3, 7])
def test_offset_index_is_first_seen_numbering(window: int) -> None:
    """Columns of ``attention_biases`` are numbered in the order offsets (|dy|, |dx|) are first
    met when enumerating every pair of window positions row-major."""
    points = list(itertools.product(range(window), range(window)))
    seen: dict[tuple[int, int], int] = {}
    expected = []
    for p, q in itertools.product(points, points):
        offset = (abs(p[0] - q[0]), abs(p[1] - q[1]))
        expected.append(seen.setdefault(offset, len(seen)))
    index = relative_offset_index(window)
    assert index.tolist() == torch.tensor(expected).view(window * window, -1).tolist()
    assert len(seen) == window * window


def test_window_partition_round_trip_with_padding() -> None:
    x = torch.randn(2, 10, 13, 3)
    windows, padded = window_partition(x, 4)
    assert padded == (12, 16) and windows.shape == (2 * 3 * 4, 16, 3)
    assert torch.equal(windows[0].view(4, 4, 3), x[0, :4, :4])
    assert torch.equal(window_unpartition(windows, 4, padded, (10, 13)), x)


def test_block_mixes_tokens_only_inside_a_window_and_its_conv_ring() -> None:
    torch.manual_seed(0)
    block = TinyViTBlock(dim=8, num_heads=2, window=4, mlp_ratio=2.0).eval()
    x = torch.randn(1, 12, 12, 8)
    moved = x.clone()
    moved[0, 1, 2] += torch.randn(8)  # a token of the top-left window (not a constant: LayerNorm removes those)
    with torch.no_grad():
        changed = (block(x) - block(moved)).abs().sum(-1)[0] > 1e-6
    assert changed[:4, :4].all()  # the whole window attended to it
    assert not changed[5:, :].any() and not changed[:, 5:].any()  # beyond window + 1-pixel local conv
    assert changed[4, :4].any()  # the depthwise 3x3 reaches one pixel out


def test_output_shape_and_batch_independence() -> None:
    model = _small_tiny_vit()
    pixels = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        both = model(pixels)
        first = model(pixels[:1])
    assert both.shape == (2, 16, 8, 8)  # stem /4, merges /2 /2 /1 -> /16
    torch.testing.assert_close(both[:1], first, rtol=1e-4, atol=1e-5)


def test_keys_and_shapes_match_the_mobile_sam_checkpoint(mobile_sam_checkpoint: Path) -> None:
    encoder, _ = split_original(read_checkpoint(str(mobile_sam_checkpoint)))
    kept, dropped = tiny_vit_state_dict(encoder)
    assert dropped == sorted(CLASSIFIER_HEAD_KEYS)
    model = tiny_vit_5m()
    expected = model.state_dict()
    assert set(kept) == set(expected)
    assert all(kept[k].shape == expected[k].shape for k in kept)
    load_strict(model, kept, "MobileSAM TinyViT")
    biases = encoder["layers.2.blocks.3.attn.attention_biases"]
    assert torch.equal(model.layers[2].blocks[3].attn.attention_biases, biases)


@pytest.mark.parametrize("groups", [1, 4])
def test_conv_bn_folded_at_inference_equals_conv_then_batch_norm(groups: int) -> None:
    torch.manual_seed(0)
    block = ConvBN(8, 8, kernel=3, stride=2, groups=groups)
    with torch.no_grad():  # running statistics and affine parameters far from 0 / 1
        block.bn.running_mean.uniform_(-2, 2)
        block.bn.running_var.uniform_(0.1, 3)
        block.bn.weight.uniform_(-2, 2)
        block.bn.bias.uniform_(-1, 1)
    x = torch.randn(2, 8, 9, 9)
    block.eval()
    with torch.no_grad():
        folded = block(x)
        reference = block.bn(block.c(x))  # the unfolded eval-mode batch norm
    torch.testing.assert_close(folded, reference, atol=1e-5, rtol=1e-5)
    block.train()
    torch.testing.assert_close(block(x), block.bn(block.c(x)))  # training keeps the batch statistics path
