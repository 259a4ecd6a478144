"""``predict --masks PATH``: regions given as masks in a file, read into bool ``[R, H, W]``.

Accepted files (by suffix):

* ``.json``: a COCO RLE dict ``{"size": [H, W], "counts": ...}``, a list of them (as the
  ``region_masks`` field of the HTTP API), or a ``regionspot predict --out`` document (each
  region's ``mask``). ``counts`` is compressed text, or a list of run lengths (uncompressed).
* ``.npy``: a label image ``[H, W]`` (bool, integer or float: each distinct non-zero value one
  region, in increasing order) or a stack of masks ``[R, H, W]`` (non-zero pixels are in).
* any other suffix: an image PIL reads, as a label image ``[H, W]``: a binary mask is one region;
  grey or palette values are labels; an RGB picture's distinct non-black colours are regions, in
  order of their ``0xRRGGBB`` value; fully transparent pixels are background.

Every mistake (missing or unreadable file, another size than the image's, an empty mask, a label
image without regions) is a :class:`~regionspot.ops.prompts.PromptError` naming the file.
"""

from __future__ import annotations

import json
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from regionspot.ops.prompts import PromptError, as_mask_prompts, decode_rle_prompts

#: Most regions a label image may hold (a photo given by mistake has thousands of colours).
MAX_LABEL_REGIONS = 1000

_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_GREY_MODES = frozenset({"1", "L", "P", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


def read_region_masks(spec: str, image_size: tuple[int, int]) -> np.ndarray:
    """Masks of the file ``spec`` at the image's size ``image_size`` ``(H, W)`` -> bool ``[R, H, W]``,
    each mask non-empty. Raises :class:`PromptError` (one line, naming the file) otherwise."""
    path = Path(spec)
    try:
        is_file = path.is_file()
    except (OSError, ValueError):  # a name no file system accepts
        is_file = False
    if not is_file:
        raise PromptError(f"--masks: file not found: {path}" if not path.is_dir()
                          else f"--masks: {path} is a folder, not a mask file")
    suffix = path.suffix.lower()
    if suffix == ".json":
        masks = _rle_masks(path, image_size)
    elif suffix == ".npy":
        masks = _npy_masks(path, image_size)
    else:
        masks = label_masks(_image_labels(path, image_size), str(path))
    _check_size(masks.shape[1:], image_size, path)
    try:
        return as_mask_prompts(masks, image_size)
    except PromptError as exc:
        raise PromptError(f"{path}: {exc}") from None


def label_masks(labels: np.ndarray, source: str) -> np.ndarray:
    """Label image ``[H, W]`` -> bool ``[R, H, W]``: one mask per distinct non-zero value, in
    increasing value order (a bool image: one region, its True pixels)."""
    if labels.dtype.kind == "f" and not np.isfinite(labels).all():
        raise PromptError(f"{source}: the label image holds NaN or infinite values")
    values = np.unique(labels)
    values = values[values != 0]
    if not len(values):
        raise PromptError(f"{source}: no region in this label image: every pixel is 0 (background)")
    if len(values) > MAX_LABEL_REGIONS:
        raise PromptError(f"{source}: {len(values)} distinct non-zero values (regions), more than "
                          f"{MAX_LABEL_REGIONS}: is it a photo rather than a mask or label image?")
    return np.stack([labels == value for value in values])


def _check_size(size: tuple[int, ...], image_size: tuple[int, int], path: Path) -> None:
    """``size`` ``(H, W)`` of the masks must be the image's ``(H, W)``."""
    if tuple(size) != tuple(image_size):
        raise PromptError(f"{path}: masks are {size[1]}x{size[0]} (WxH) but the image is "
                          f"{image_size[1]}x{image_size[0]}: give masks at the image's size")


def _npy_masks(path: Path, image_size: tuple[int, int]) -> np.ndarray:
    """``.npy`` label image ``[H, W]`` or mask stack ``[R, H, W]`` -> bool ``[R, H, W]``."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise PromptError(f"{path}: not a readable .npy array ({str(exc)[:200]})") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        raise PromptError(f"{path}: the array must be bool, integer or float, got {getattr(array, 'dtype', '?')}")
    if array.ndim not in (2, 3) or 0 in array.shape:
        raise PromptError(f"{path}: the array must be a label image [H, W] or masks [R, H, W], got shape "
                          f"{list(array.shape)}")
    _check_size(array.shape[-2:], image_size, path)
    if array.ndim == 2:
        return label_masks(array, str(path))
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise PromptError(f"{path}: the masks hold NaN or infinite values")
    return array.astype(bool)


def _image_labels(path: Path, image_size: tuple[int, int]) -> np.ndarray:
    """An image file as a label image ``[H, W]``: grey, palette index or packed ``0xRRGGBB``
    colour per pixel; 0 where the pixel is fully transparent."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as image:
                image.load()
                oriented = ImageOps.exif_transpose(image)
                _check_size((oriented.height, oriented.width), image_size, path)
                return _pil_labels(oriented)
        except UnidentifiedImageError:
            raise PromptError(f"{path}: not an image file PIL can read, nor .npy or .json masks") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise PromptError(f"{path}: image too large, refused as a possible decompression bomb") from None
        except PromptError:
            raise
        except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
            raise PromptError(f"{path}: corrupt or unreadable image ({str(exc)[:200]})") from None


def _pil_labels(image: Any) -> np.ndarray:
    """A PIL image of any mode -> labels ``[H, W]`` (see :func:`_image_labels`)."""
    mode = image.mode
    if mode in _GREY_MODES and "transparency" not in image.info:
        return np.asarray(image)
    if mode in ("LA", "La"):
        grey_alpha = np.asarray(image.convert("LA"))
        return np.where(grey_alpha[..., 1] > 0, grey_alpha[..., 0], 0)
    rgba = np.asarray(image.convert("RGBA") if mode in _ALPHA_MODES or "transparency" in image.info
                      else image.convert("RGB")).astype(np.int64)
    packed = (rgba[..., 0] << 16) | (rgba[..., 1] << 8) | rgba[..., 2]
    return np.where(rgba[..., 3] > 0, packed, 0) if rgba.shape[-1] == 4 else packed


def _rle_masks(path: Path, image_size: tuple[int, int]) -> np.ndarray:
    """``.json`` COCO RLE (one dict, a list, or a ``predict --out`` document) -> bool ``[R, H, W]``."""
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:
        raise PromptError(f"{path} is not valid JSON: {str(exc)[:200]}") from None
    if isinstance(data, dict) and isinstance(data.get("regions"), list):  # a predict --out document
        data = [region.get("mask") if isinstance(region, dict) else None for region in data["regions"]]
    rles = [data] if isinstance(data, dict) else data
    if not isinstance(rles, list) or not rles:
        raise PromptError(f'{path} must hold a COCO RLE mask {{"size": [H, W], "counts": "..."}} or a non-empty '
                          "list of them")
    return decode_rle_prompts(rles, image_size, lambda index: f"{path}: mask {index}")
