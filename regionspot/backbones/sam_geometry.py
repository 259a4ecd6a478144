"""SAM's image geometry: the longest-side resize to the encoder input, boxes and points into
that frame, mask logits back to the image, and input checks. Pure functions; shapes in each
docstring, boxes xyxy in pixels."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def resized_shape(height: int, width: int, target: int) -> tuple[int, int]:
    """(h, w) of an image whose longest side is scaled to ``target``, rounded to nearest."""
    scale = target / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def scale_boxes(boxes: torch.Tensor, original_size: tuple[int, int], input_size: tuple[int, int]) -> torch.Tensor:
    """``[R, 4]`` xyxy boxes from original-image pixels to resized-image (encoder input) pixels."""
    (height, width), (new_h, new_w) = original_size, input_size
    factors = boxes.new_tensor([new_w / width, new_h / height, new_w / width, new_h / height])
    return boxes * factors


def scale_points(points: torch.Tensor, original_size: tuple[int, int], input_size: tuple[int, int]) -> torch.Tensor:
    """``[P, 2]`` xy points from original-image pixels to resized-image (encoder input) pixels."""
    (height, width), (new_h, new_w) = original_size, input_size
    return points * points.new_tensor([new_w / width, new_h / height])


def masks_to_original(mask_logits: torch.Tensor, input_size: tuple[int, int], original_size: tuple[int, int],
                      image_input_size: int) -> torch.Tensor:
    """Low-res logits ``[R, m, m]`` (padded input frame) -> ``[R, H, W]`` at the original size:
    bilinear up to ``image_input_size`` square, crop the unpadded ``input_size`` part, bilinear
    to ``original_size``."""
    x = F.interpolate(mask_logits[:, None], (image_input_size, image_input_size), mode="bilinear",
                      align_corners=False)
    x = x[..., : input_size[0], : input_size[1]]
    return F.interpolate(x, original_size, mode="bilinear", align_corners=False)[:, 0]


SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


def check_image(image: np.ndarray) -> None:
    """ValueError unless ``image`` is an ``HxWx3`` uint8 array with H, W >= 1."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 \
            or min(image.shape[:2]) < 1:
        what = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"image must be an HxWx3 uint8 RGB array, got {what}")


def preprocess_image(image: np.ndarray, target: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """``HxWx3`` uint8 RGB -> (``[1, 3, target, target]`` float32, resized (h, w)).

    The longest side is resized to ``target`` (PIL bilinear, antialiased when shrinking, on the
    uint8 image), the result normalised with SAM's pixel mean/std and zero-padded bottom/right.
    """
    check_image(image)
    size = resized_shape(image.shape[0], image.shape[1], target)
    resized = np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.BILINEAR))
    pixels = torch.from_numpy(resized.copy()).permute(2, 0, 1).float()
    pixels = (pixels - torch.tensor(SAM_PIXEL_MEAN)[:, None, None]) / torch.tensor(SAM_PIXEL_STD)[:, None, None]
    pixels = F.pad(pixels, (0, target - size[1], 0, target - size[0]))
    return pixels.unsqueeze(0), size


def check_boxes(boxes: torch.Tensor) -> None:
    """ValueError unless ``boxes`` is a floating ``[R, 4]`` tensor with R >= 1."""
    if not isinstance(boxes, torch.Tensor) or not boxes.is_floating_point() or boxes.dim() != 2 \
            or boxes.shape[1] != 4 or boxes.shape[0] < 1:
        what = f"{boxes.dtype} tensor of shape {tuple(boxes.shape)}" if isinstance(boxes, torch.Tensor) \
            else type(boxes).__name__
        raise ValueError(f"boxes must be a float [R, 4] xyxy tensor with R >= 1, got {what}")


def check_points(points: torch.Tensor) -> None:
    """ValueError unless ``points`` is a floating ``[P, 2]`` tensor with P >= 1."""
    if not isinstance(points, torch.Tensor) or not points.is_floating_point() or points.dim() != 2 \
            or points.shape[1] != 2 or points.shape[0] < 1:
        what = f"{points.dtype} tensor of shape {tuple(points.shape)}" if isinstance(points, torch.Tensor) \
            else type(points).__name__
        raise ValueError(f"points must be a float [P, 2] xy tensor with P >= 1, got {what}")
