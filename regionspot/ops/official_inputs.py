"""The image inputs of the authors' LVIS evaluation, for heads converted from their release.

Their evaluation (the authors' detectron2 code, ``train_net.py --eval-only``) does not give the
towers the photo as it is: detectron2's test loader first resizes it so that the short side is
800 pixels and the long side at most 1333 (PIL bilinear on the uint8 image). From that image

* SAM gets its 1024 input by the usual longest-side resize (SAM's own preprocessing), and box
  prompts are scaled into that image's frame;
* CLIP gets the same image as a float tensor in [0, 1], resized to its square input with
  ``torchvision.transforms.functional.resize`` (bilinear, no antialiasing: torchvision's tensor
  behaviour before 0.17, the versions of their release) and normalised with OpenAI CLIP's
  mean and std;
* masks come out at that image's size and are resized to the photo with nearest-neighbour.

``native`` mode (heads trained here) resizes the photo once per tower instead (see
:mod:`regionspot.backbones.sam_geometry` and :mod:`regionspot.backbones.clip_vision`).
Shapes: images ``HxWx3`` uint8 RGB; sizes ``(height, width)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

#: OpenAI CLIP's pixel mean and std (RGB, fractions of 255): every CLIP tower here, and the
#: constants the authors' evaluation normalises with.
OPENAI_CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

#: detectron2's test resize in the authors' evaluation config (INPUT.MIN_SIZE_TEST, MAX_SIZE_TEST).
TEST_SHORT_SIDE = 800
TEST_MAX_SIDE = 1333


def detectron2_test_size(height: int, width: int, short_side: int = TEST_SHORT_SIDE,
                         max_side: int = TEST_MAX_SIDE) -> tuple[int, int]:
    """(h, w) after a shortest-edge resize: the short side becomes ``short_side`` unless the long
    side would then exceed ``max_side``, in which case the long side becomes ``max_side``; each
    side rounded to the nearest pixel (detectron2's ``ResizeShortestEdge.get_output_shape``)."""
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {(height, width)}")
    scale = short_side / min(height, width)
    new_h, new_w = (short_side, scale * width) if height < width else (scale * height, short_side)
    if max(new_h, new_w) > max_side:
        shrink = max_side / max(new_h, new_w)
        new_h, new_w = new_h * shrink, new_w * shrink
    return int(new_h + 0.5), int(new_w + 0.5)


def detectron2_test_resize(image: np.ndarray) -> np.ndarray:
    """``image`` resized to :func:`detectron2_test_size` with PIL bilinear (a copy, uint8)."""
    height, width = detectron2_test_size(image.shape[0], image.shape[1])
    if (height, width) == image.shape[:2]:
        return image
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((width, height), Image.Resampling.BILINEAR))


def tensor_resize_clip_pixels(image: np.ndarray, size: int, mean: Sequence[float],
                              std: Sequence[float]) -> torch.Tensor:
    """``HxWx3`` uint8 -> ``[3, size, size]`` float32: scaled to [0, 1], resized bilinearly as a
    tensor without antialiasing (``align_corners=False``), then ``(x - mean) / std``."""
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float() / 255  # a writable copy
    resized = F.interpolate(pixels[None], (size, size), mode="bilinear", align_corners=False, antialias=False)[0]
    return (resized - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def scale_xyxy(boxes: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """``[R, 4]`` xyxy boxes from an image of ``from_size`` to the same image at ``to_size``."""
    corners = np.asarray(boxes, dtype=np.float64).reshape(-1, 2, 2)
    return scale_xy(corners, from_size, to_size).reshape(-1, 4)


def scale_xy(points: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """``[..., 2]`` xy points from an image of ``from_size`` to the same image at ``to_size``."""
    (height, width), (new_h, new_w) = from_size, to_size
    return np.asarray(points, dtype=np.float64) * np.array([new_w / width, new_h / height])


def nearest_resize_masks(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bool masks ``[R, h, w]`` -> ``[R, H, W]`` by nearest neighbour (``F.interpolate`` 'nearest')."""
    if tuple(masks.shape[1:]) == tuple(size):
        return masks
    stretched = F.interpolate(torch.from_numpy(masks)[:, None].to(torch.uint8), size=size, mode="nearest")
    return stretched[:, 0].bool().numpy()
