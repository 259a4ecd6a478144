"""Loading the MobileSAM authors' encoder from a checkout: the same import path as the real repo,
exercised on a stand-in checkout written here (the real one cannot be downloaded in tests)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from regionspot.bench.reference_mobile_sam import load_reference_encoder, time_reference_encoder
from regionspot.config import ConfigError

# What the real files do that matters here: the package __init__ imports something unavailable
# (torchvision there), tiny_vit_sam.py imports timm's helpers, build_sam_vit_t loads a checkpoint.
INIT = "import torchvision_is_not_installed_here\n"
TINY_VIT = """
    import torch
    from timm.models.layers import DropPath as TimmDropPath, to_2tuple, trunc_normal_
    from timm.models.registry import register_model

    class TinyViT(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.drop = TimmDropPath(0.1)
            self.proj = torch.nn.Conv2d(3, 4, kernel_size=16, stride=16)
            trunc_normal_(self.proj.weight, std=0.02)
            assert to_2tuple(3) == (3, 3)

        def forward(self, x):
            return self.drop(self.proj(x))
"""
MODELING_INIT = "from .tiny_vit_sam import TinyViT\n"
BUILD_SAM = """
    import torch
    from .modeling import TinyViT

    class Sam(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.image_encoder = TinyViT()

    def build_sam_vit_t(checkpoint=None):
        sam = Sam()
        sam.load_state_dict(torch.load(checkpoint))
        return sam
"""


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    package = tmp_path / "MobileSAM" / "mobile_sam"
    (package / "modeling").mkdir(parents=True)
    (package / "__init__.py").write_text(INIT)
    (package / "build_sam.py").write_text(textwrap.dedent(BUILD_SAM))
    (package / "modeling" / "__init__.py").write_text(MODELING_INIT)
    (package / "modeling" / "tiny_vit_sam.py").write_text(textwrap.dedent(TINY_VIT))
    return package.parent


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    state = {"image_encoder.proj.weight": torch.randn(4, 3, 16, 16), "image_encoder.proj.bias": torch.randn(4)}
    path = tmp_path / "mobile_sam.pt"
    torch.save(state, path)
    return path


def test_loads_the_checkouts_encoder_without_its_package_init_and_leaves_no_modules(checkout: Path,
                                                                                  checkpoint: Path) -> None:
    before = set(sys.modules)
    encoder = load_reference_encoder(checkout, checkpoint)
    assert not encoder.training
    torch.testing.assert_close(encoder.proj.weight, torch.load(checkpoint)["image_encoder.proj.weight"])
    assert not {name for name in set(sys.modules) - before if name.split(".")[0] in {"mobile_sam", "timm"}}


def test_times_both_encoders_and_compares_their_outputs(checkout: Path, checkpoint: Path) -> None:
    reference = load_reference_encoder(checkout, checkpoint)
    calls: list[int] = []

    def timer(run, repeats: int) -> float:
        calls.append(repeats)
        run()
        return 10.0 * len(calls)

    image = np.random.default_rng(0).integers(0, 255, size=(48, 64, 3), dtype=np.uint8)
    same = time_reference_encoder(reference, checkout, checkpoint, image, timer, repeats=2)
    assert same["max_abs_difference"] == 0.0 and same["max_abs_value"] > 0
    # timed in turn: theirs 10, ours 20, theirs 30, ours 40 -> medians 20 and 30, ratios 0.5 and 0.75
    assert calls == [1, 1, 1, 1]
    assert (same["reference_ms"], same["ours_ms"]) == (20.0, 30.0)
    assert (same["ratio_min"], same["ratio_median"], same["ratio_max"]) == (0.5, 0.625, 0.75)
    with torch.no_grad():
        reference.proj.bias.add_(1.0)  # "ours" now differs from the reference by exactly 1
    calls.clear()
    shifted = time_reference_encoder(reference, checkout, checkpoint, image, timer, repeats=1)
    assert shifted["max_abs_difference"] == pytest.approx(1.0, abs=1e-4)


def test_a_folder_that_is_not_the_checkout_is_one_clear_error(tmp_path: Path, checkpoint: Path) -> None:
    with pytest.raises(ConfigError, match=r"not a checkout of github\.com/ChaoningZhang/MobileSAM"):
        load_reference_encoder(tmp_path, checkpoint)


def test_the_predict_bench_checks_the_folder_before_it_times_anything(tmp_path: Path) -> None:
    from regionspot.bench.predict_bench import run_predict_bench

    def no_progress(message: str) -> None:
        raise AssertionError(f"the bench started ({message!r}) before checking --mobile-sam-reference")

    image = np.zeros((32, 32, 3), dtype=np.uint8)
    with pytest.raises(ConfigError, match="not a checkout"):
        run_predict_bench(tmp_path / "no-checkpoint-needed.pt", image, progress=no_progress,
                          mobile_sam_reference=tmp_path)
