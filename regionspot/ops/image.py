"""Loading images into one canonical form: an ``HxWx3`` ``uint8`` RGB numpy array.

Everything downstream (SAM and CLIP preprocessing, drawing) assumes this form, so every odd
input is either converted by a documented rule or rejected with an :class:`ImageLoadError`
that says what is wrong and, for files, names the file.
"""

from __future__ import annotations

import os
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["ImageLoadError", "ImageSource", "load_image"]

ImageSource = str | os.PathLike | Image.Image | np.ndarray

# PIL modes holding 16-bit (or wider integer) grey levels
_WIDE_INT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
# PIL modes with an alpha band
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
# decoding failures PIL may raise on a corrupt or truncated file
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error)


class ImageLoadError(ValueError):
    """An image cannot be loaded: missing, unreadable, corrupt, too large or of an unsupported kind."""


def load_image(source: ImageSource, *, max_side: int | None = None) -> np.ndarray:
    """Load an image as an ``HxWx3`` ``uint8`` RGB array (C-contiguous, always a new array).

    ``source`` is a file path (``str`` or ``os.PathLike``), a PIL image, or a numpy array.

    Rules:

    * Files: the EXIF orientation tag is applied (``ImageOps.exif_transpose``), so the array is
      upright as a viewer shows it; of a multi-frame file (GIF, TIFF) the first frame is used.
      PIL images and arrays are taken as given (no EXIF handling).
    * Grey levels (``HxW`` or ``HxWx1`` arrays; PIL modes ``1``, ``L``, ``I``, ``I;16``, ``F``)
      are replicated to three channels.
    * Transparency (``HxWx4`` arrays; PIL ``RGBA``, ``LA``, ``PA``, and ``P``/``L``/``RGB``
      images with a transparency key) is composited on a **white** background.
    * Other colour spaces (``CMYK``, ``YCbCr``, ``LAB``, ``HSV``, palette ``P``) are converted
      to RGB by PIL.
    * Pixel values by dtype: ``uint8`` as is; ``uint16`` (and PIL 16-bit modes, and PIL ``I``
      within 0..65535) scaled by 255/65535; other integer dtypes only when every value is in
      0..255; floating point only when every value is in [0, 1] (scaled by 255, rounded),
      other float ranges are rejected, as are NaN and infinity; ``bool`` is rejected (a mask
      is not an image).
    * Rejected shapes: empty (any side 0), not 2 or 3 dimensions, channel counts other than
      1, 3 or 4 (a channel-first ``3xHxW`` array gets a hint to transpose it).

    Args:
        source: path, PIL image or numpy array.
        max_side: when given, images whose longer side exceeds it are rejected (checked on
            the file header before decoding). Independently, PIL's decompression-bomb limit
            (``PIL.Image.MAX_IMAGE_PIXELS``) is enforced as an error, not a warning.

    Raises:
        ImageLoadError: missing file, a directory, an unreadable, corrupt, truncated or
            non-image file, an unsupported type, shape, dtype or value range, or an image
            over the size limits.
    """
    if max_side is not None and (not isinstance(max_side, int) or max_side < 1):
        raise ImageLoadError(f"max_side must be a positive integer, got {max_side!r}")
    if isinstance(source, (str, os.PathLike)):
        return _load_file(Path(source), max_side)
    if isinstance(source, Image.Image):
        _check_size(source.size, max_side, "PIL image")
        return _pil_to_rgb(source, "PIL image")
    if isinstance(source, np.ndarray):
        if source.ndim >= 2:
            _check_size((source.shape[1], source.shape[0]), max_side, "array")
        return _array_to_rgb(source, "array")
    raise ImageLoadError(
        f"unsupported image source type {type(source).__name__}: "
        "give a file path, a PIL image or a numpy array"
    )


def _check_size(size: tuple[int, int], max_side: int | None, what: str) -> None:
    """Reject an image whose longer side exceeds ``max_side`` (``size`` is ``(W, H)``)."""
    if max_side is not None and max(size) > max_side:
        raise ImageLoadError(
            f"{what}: image is {size[0]}x{size[1]} pixels, larger than max_side={max_side}"
        )


def _load_file(path: Path, max_side: int | None) -> np.ndarray:
    """Open, size-check, orient and decode an image file."""
    try:
        exists = path.exists()
    except (OSError, ValueError):  # a name no file system accepts (NUL byte, too long)
        exists = False
    if not exists:
        raise ImageLoadError(f"image file not found: {path}")
    if path.is_dir():
        raise ImageLoadError(f"{path} is a directory, not an image file")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as img:
                _check_size(img.size, max_side, str(path))
                img.load()
                oriented = ImageOps.exif_transpose(img)
                return _pil_to_rgb(oriented, str(path))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageLoadError(
                f"{path}: image too large, refused as a possible decompression bomb ({exc})"
            ) from exc
        except UnidentifiedImageError as exc:
            raise ImageLoadError(f"{path}: not an image file, or an image format PIL cannot read") from exc
        except PermissionError as exc:
            raise ImageLoadError(f"{path}: cannot be read (permission denied)") from exc
        except ImageLoadError:
            raise
        except _DECODE_ERRORS as exc:
            raise ImageLoadError(f"{path}: corrupt or truncated image file ({exc})") from exc


def _pil_to_rgb(img: Image.Image, what: str) -> np.ndarray:
    """Convert a PIL image of any mode by the rules of :func:`load_image`."""
    if img.width == 0 or img.height == 0:
        raise ImageLoadError(f"{what}: empty image ({img.width}x{img.height})")
    mode = img.mode
    if mode in _WIDE_INT_MODES:
        grey = np.asarray(img)
        if grey.dtype != np.uint16:
            grey = grey.astype(np.int64)
            if grey.min() < 0 or grey.max() > 65535:
                raise ImageLoadError(f"{what}: mode {mode} values outside 0..65535 are not supported")
            grey = grey.astype(np.uint16)
        return _array_to_rgb(grey, what)
    if mode == "F":
        return _array_to_rgb(np.asarray(img, dtype=np.float32), what)
    try:
        if mode == "La":  # premultiplied grey+alpha: PIL converts it only to LA
            img = img.convert("LA")
        if mode in _ALPHA_MODES or "transparency" in img.info:
            rgba = np.asarray(img.convert("RGBA"))
            return _composite_on_white(rgba)
        return np.ascontiguousarray(np.asarray(img.convert("RGB")), dtype=np.uint8).copy()
    except ValueError as exc:
        raise ImageLoadError(f"{what}: cannot convert PIL mode {mode!r} to RGB ({exc})") from exc


def _array_to_rgb(arr: np.ndarray, what: str) -> np.ndarray:
    """Convert a numpy array by the shape and dtype rules of :func:`load_image`."""
    if arr.ndim not in (2, 3):
        raise ImageLoadError(f"{what}: expected HxW or HxWxC, got {arr.ndim} dimensions {arr.shape}")
    if arr.size == 0:
        raise ImageLoadError(f"{what}: empty image of shape {arr.shape}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    channels = arr.shape[2]
    if channels not in (1, 3, 4):
        hint = ""
        if arr.shape[0] in (1, 3, 4):
            hint = " (it looks channel-first: transpose it to HxWxC)"
        raise ImageLoadError(f"{what}: expected 1, 3 or 4 channels, got shape {arr.shape}{hint}")
    pixels = _to_uint8(arr, what)
    if channels == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    elif channels == 4:
        return _composite_on_white(pixels)
    if pixels is arr:  # never hand back (a view of) the caller's array
        return np.array(pixels, order="C", copy=True)
    return np.ascontiguousarray(pixels)


def _to_uint8(arr: np.ndarray, what: str) -> np.ndarray:
    """Map pixel values to ``uint8`` by dtype (see :func:`load_image`)."""
    dtype = arr.dtype
    if dtype == np.uint8:
        return arr
    if dtype == np.bool_:
        raise ImageLoadError(f"{what}: boolean array (a mask?) is not an image; give uint8 pixels")
    if dtype == np.uint16:
        return np.round(arr.astype(np.float32) * (255.0 / 65535.0)).astype(np.uint8)
    if np.issubdtype(dtype, np.integer):
        int_low, int_high = int(arr.min()), int(arr.max())
        if int_low < 0 or int_high > 255:
            raise ImageLoadError(
                f"{what}: {dtype} values span {int_low}..{int_high}; integer images other than "
                "uint16 must lie in 0..255"
            )
        return arr.astype(np.uint8)
    if np.issubdtype(dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageLoadError(f"{what}: float image contains NaN or infinite values")
        low, high = float(arr.min()), float(arr.max())
        if low < 0.0 or high > 1.0:
            raise ImageLoadError(
                f"{what}: float values span {low:g}..{high:g}; float images must lie in [0, 1]"
            )
        return np.round(arr.astype(np.float64) * 255.0).astype(np.uint8)
    raise ImageLoadError(f"{what}: unsupported pixel dtype {dtype}")


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """Composite a ``uint8`` ``HxWx4`` array over a white background; returns ``HxWx3``."""
    alpha = rgba[:, :, 3:4].astype(np.float32) / 255.0
    rgb = rgba[:, :, :3].astype(np.float32)
    out = rgb * alpha + 255.0 * (1.0 - alpha)
    return np.ascontiguousarray(np.round(out).astype(np.uint8))
