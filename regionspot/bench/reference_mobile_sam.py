"""The reference MobileSAM image encoder timed beside ours, on the same input, in the same run.

``regionspot bench predict --mobile-sam-reference DIR`` takes a checkout of the MobileSAM
authors' code (https://github.com/ChaoningZhang/MobileSAM, Apache-2.0; nothing of it ships with
regionspot), builds its encoder with its own ``build_sam_vit_t`` on the same checkpoint, runs
both on the same pre-processed photo and reports both times and the largest difference between
the two embeddings.

Two things are worked around, for running only:

* the package's ``__init__`` imports its predictor and mask generator, which need torchvision;
  only ``mobile_sam.build_sam`` and ``mobile_sam.modeling`` are loaded, under a bare package;
* ``tiny_vit_sam.py`` imports three helpers from ``timm`` (which needs torchvision too). When
  timm is not importable, stand-ins are installed for the duration of the import:
  ``DropPath`` as the identity (what it is at inference), ``to_2tuple``, ``trunc_normal_``
  (torch's) and ``register_model`` (a no-op decorator). They do not touch the encoder's
  arithmetic at inference.
* their ``SamPredictor`` resizes photos with torchvision's ``to_pil_image`` and ``resize``; when
  torchvision is not importable, stand-ins do what those do for a uint8 ``HxWx3`` array: PIL's
  ``Image.fromarray`` and PIL's bilinear resize.

A folder of that layout can be had offline with :func:`regionspot.assets.fetch_mobile_sam_code`.
"""

from __future__ import annotations

import importlib
import statistics
import sys
import types
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from regionspot.backbones.sam_geometry import preprocess_image
from regionspot.config import ConfigError


class _IdentityDropPath(nn.Module):
    """timm's DropPath at inference: the identity."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _to_2tuple(value: Any) -> tuple[Any, Any]:
    return tuple(value) if isinstance(value, tuple | list) else (value, value)


def _timm_stand_ins() -> dict[str, types.ModuleType]:
    """Modules ``timm``, ``timm.models``, ``timm.models.layers``, ``timm.models.registry`` with
    the four names ``tiny_vit_sam.py`` imports."""
    layers = types.ModuleType("timm.models.layers")
    layers.DropPath = _IdentityDropPath  # type: ignore[attr-defined]
    layers.to_2tuple = _to_2tuple  # type: ignore[attr-defined]
    layers.trunc_normal_ = nn.init.trunc_normal_  # type: ignore[attr-defined]
    registry = types.ModuleType("timm.models.registry")
    registry.register_model = lambda function: function  # type: ignore[attr-defined]
    return {"timm": types.ModuleType("timm"), "timm.models": types.ModuleType("timm.models"),
            "timm.models.layers": layers, "timm.models.registry": registry}


def check_reference_checkout(checkout: str | Path) -> None:
    """Raise ``ConfigError`` unless ``checkout`` holds the MobileSAM authors' encoder code
    (``mobile_sam/build_sam.py`` and ``mobile_sam/modeling/tiny_vit_sam.py``); cheap, so a
    bench checks it before minutes of other timing."""
    package_dir = Path(checkout) / "mobile_sam"
    if not (package_dir / "build_sam.py").is_file() or not (package_dir / "modeling" / "tiny_vit_sam.py").is_file():
        raise ConfigError(f"{checkout} is not a checkout of github.com/ChaoningZhang/MobileSAM "
                          "(no mobile_sam/build_sam.py and mobile_sam/modeling/tiny_vit_sam.py)")


def _pil_resize(image: Image.Image, size: Sequence[int]) -> Image.Image:
    """torchvision's ``resize(pil_image, (h, w))`` with its default (bilinear) interpolation."""
    height, width = size
    return image.resize((int(width), int(height)), Image.Resampling.BILINEAR)


def _torchvision_stand_ins() -> dict[str, types.ModuleType]:
    """Modules ``torchvision``, ``torchvision.transforms``, ``torchvision.transforms.functional``
    with the two names ``utils/transforms.py`` imports, for uint8 numpy images."""
    functional = types.ModuleType("torchvision.transforms.functional")
    functional.to_pil_image = lambda array: Image.fromarray(np.asarray(array))  # type: ignore[attr-defined]
    functional.resize = _pil_resize  # type: ignore[attr-defined]
    return {"torchvision": types.ModuleType("torchvision"),
            "torchvision.transforms": types.ModuleType("torchvision.transforms"),
            "torchvision.transforms.functional": functional}


@contextmanager
def _reference_modules(checkout: Path) -> Iterator[None]:
    """``mobile_sam`` as a bare package of ``checkout`` (its ``__init__`` not run), plus timm
    stand-ins when timm is missing; every module added here is removed afterwards."""
    check_reference_checkout(checkout)
    package_dir = checkout / "mobile_sam"
    added: dict[str, types.ModuleType] = {}
    try:
        importlib.import_module("timm.models.layers")
    except ImportError:
        added.update(_timm_stand_ins())
    try:
        importlib.import_module("torchvision.transforms.functional")
    except ImportError:
        added.update(_torchvision_stand_ins())
    package = types.ModuleType("mobile_sam")
    package.__path__ = [str(package_dir)]
    added["mobile_sam"] = package
    sys.modules.update(added)
    try:
        yield
    finally:  # only what this loader put there: the stand-ins and the checkout's own modules
        for name in list(sys.modules):
            if name in added or name.startswith("mobile_sam."):
                del sys.modules[name]


def load_reference_encoder(checkout: str | Path, sam_checkpoint: str | Path) -> nn.Module:
    """The reference ``TinyViT`` image encoder, built by the checkout's ``build_sam_vit_t`` from
    ``sam_checkpoint`` (the same MobileSAM ``.pt`` file), in eval mode on the CPU."""
    with _reference_modules(Path(checkout)):
        build_sam = importlib.import_module("mobile_sam.build_sam")
        sam = build_sam.build_sam_vit_t(checkpoint=str(sam_checkpoint))
    return sam.image_encoder.eval()


def load_reference_predictor(checkout: str | Path, sam_checkpoint: str | Path) -> Any:
    """The checkout's own ``SamPredictor`` on its ``build_sam_vit_t(sam_checkpoint)``, eval mode,
    CPU: ``set_image(rgb_uint8)``, then ``predict(point_coords=..., point_labels=...,
    box=..., multimask_output=...)`` as the authors wrote them."""
    with _reference_modules(Path(checkout)):
        build_sam = importlib.import_module("mobile_sam.build_sam")
        predictor_module = importlib.import_module("mobile_sam.predictor")
        sam = build_sam.build_sam_vit_t(checkpoint=str(sam_checkpoint)).eval()
        return predictor_module.SamPredictor(sam)


def time_reference_encoder(ours: nn.Module, checkout: str | Path, sam_checkpoint: str | Path, image: np.ndarray,
                           timer: Callable[[Callable[[], object], int], float], repeats: int) -> dict[str, float]:
    """Both encoders on the same pre-processed ``image`` (HxWx3 uint8), timed in turn (theirs,
    ours, theirs, ...) ``repeats`` times each with ``timer(run, 1)``, so that a change in the
    machine's load hits both alike. Returns the median ms of each, the median, smallest and
    largest of the paired ratios (reference / ours: above 1 means ours is faster), and the
    largest absolute difference of their embeddings ``[1, 256, 64, 64]`` beside the largest
    absolute value."""
    device = next(ours.parameters()).device
    reference = load_reference_encoder(checkout, sam_checkpoint).to(device)
    pixels = preprocess_image(image, 1024)[0].to(device)
    theirs_ms: list[float] = []
    ours_ms: list[float] = []
    with torch.no_grad():
        theirs_out, ours_out = reference(pixels), ours(pixels)
        for _ in range(repeats):
            theirs_ms.append(timer(lambda: reference(pixels), 1))
            ours_ms.append(timer(lambda: ours(pixels), 1))
    ratios = [theirs / mine for theirs, mine in zip(theirs_ms, ours_ms, strict=True)]
    return {"repeats": float(repeats),
            "reference_ms": statistics.median(theirs_ms), "ours_ms": statistics.median(ours_ms),
            "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "max_abs_difference": float((theirs_out - ours_out).abs().max()),
            "max_abs_value": float(theirs_out.abs().max())}
