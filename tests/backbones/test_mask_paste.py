"""Fast mask pasting: the same masks as SAM's two full-size interpolations, on random smooth
logits at several image shapes and on real MobileSAM masks of COCO photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from regionspot.backbones.mask_paste import linear_resize_matrix, paste_masks
from regionspot.backbones.sam_geometry import masks_to_original
from regionspot.ops.image import load_image

#: Where the fast masks may differ from SAM's ``> 0``: only where SAM's float32 value is this
#: close to 0 (the same sums in another order).
ROUNDING = 1e-4


def blobs(count: int, seed: int) -> torch.Tensor:
    """Smooth low-res logits [count, 256, 256]: discs of random size and place, some noise, and
    one map negative everywhere and one positive only in the padding corner."""
    generator = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(256.0), torch.arange(256.0), indexing="ij")
    maps = []
    for _ in range(count):
        cy, cx = (torch.randint(0, 256, (2,), generator=generator)).tolist()
        radius = float(torch.randint(1, 90, (1,), generator=generator))
        noise = torch.randn(256, 256, generator=generator) * 0.3
        maps.append(8 * (1 - ((yy - cy) ** 2 + (xx - cx) ** 2).sqrt() / radius) + noise)
    maps.append(torch.full((256, 256), -3.0))
    corner = torch.full((256, 256), -3.0)
    corner[250:, 250:] = 5.0
    maps.append(corner)
    return torch.stack(maps)


def assert_same_masks(fast: torch.Tensor, logits: torch.Tensor) -> None:
    reference = logits > 0
    differ = fast != reference
    assert fast.dtype == torch.bool and fast.shape == reference.shape
    assert (logits[differ].abs() < ROUNDING).all(), "masks differ only at float rounding of 0"
    assert differ.sum() <= max(2, reference.numel() // 1_000_000)  # a handful in millions of pixels


@pytest.mark.parametrize(("input_size", "original_size"), [((768, 1024), (480, 640)), ((1024, 683), (640, 427)),
                                                           ((1024, 1024), (300, 300)), ((13, 1024), (7, 555)),
                                                           ((1024, 1024), (2000, 2000))])
def test_fast_masks_equal_sams_interpolation(input_size: tuple[int, int], original_size: tuple[int, int]) -> None:
    logits = blobs(12, seed=sum(original_size))
    fast = paste_masks(logits, input_size, original_size, 1024)
    assert_same_masks(fast, masks_to_original(logits, input_size, original_size, 1024))
    assert not fast[-2].any()  # negative everywhere
    if input_size[1] < 1000:
        assert not fast[-1].any()  # positive only in the padding: nothing in the image


def test_resize_matrix_is_torchs_linear_interpolation() -> None:
    signal = torch.randn(1, 1, 37, dtype=torch.float64)
    for out_size in (5, 37, 100, 1024):
        expected = torch.nn.functional.interpolate(signal, size=out_size, mode="linear", align_corners=False)
        got = linear_resize_matrix(37, out_size) @ signal[0, 0].numpy()
        np.testing.assert_allclose(got, expected[0, 0].numpy(), atol=1e-12)


@pytest.mark.slow  # real MobileSAM end to end: runs in CI, kept out of the fast suite
def test_real_mobile_sam_masks_are_unchanged(mobile_sam_model, coco_sample: Path) -> None:
    tokenizer = mobile_sam_model.region_tokenizer
    boxes = torch.tensor([[10.0, 20.0, 200.0, 240.0], [300.0, 40.0, 420.0, 300.0], [0.0, 0.0, 640.0, 480.0],
                          [100.0, 100.0, 104.0, 106.0]])
    for name in ("000000000009.jpg", "000000000025.jpg"):
        embedding = tokenizer.encode_image(load_image(coco_sample / "images" / name))
        logits = tokenizer.encode_regions(embedding, boxes.clamp(max=torch.tensor(embedding.original_size[::-1] * 2)
                                                                  .float())).mask_logits
        assert logits is not None
        assert_same_masks(tokenizer.paste_masks(embedding, logits), tokenizer.masks_to_image(embedding, logits))
