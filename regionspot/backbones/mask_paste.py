"""SAM's low-resolution mask logits pasted back as masks at the image size, fast.

SAM's own way (:func:`regionspot.backbones.sam_geometry.masks_to_original`) upsamples every
``[m, m]`` logit map bilinearly to the square encoder input (1024 x 1024), crops the unpadded
part and resizes that bilinearly to the image: two full-size interpolations per region, about
20 ms each at 640 x 480 on a 2-core CPU. Both steps are linear maps along rows and along
columns, so together they are one matrix per axis: ``logits_at_image = Ay @ L @ Ax.T`` with
``Ay`` [H, m] and ``Ax`` [W, m], banded (an image row mixes at most 3 or 4 low-res rows).

Each output value is a convex combination of the low-res logits under it, so an image pixel is
in the mask only where some low-res logit under it is positive. Only the rows and columns of
the image whose band reaches the positive low-res cells are computed; the rest of the mask is
False. The result equals SAM's ``> 0`` test except where SAM's float32 value is within float
rounding of 0 (the two compute the same sums in a different order; the tests bound the gap).
"""

from __future__ import annotations

import functools

import numpy as np
import torch


def linear_resize_matrix(in_size: int, out_size: int) -> np.ndarray:
    """float64 [out_size, in_size]: PyTorch's 1-D linear interpolation with
    ``align_corners=False`` (source index ``(i + 0.5) * in / out - 0.5``, clamped at 0)."""
    source = np.maximum((np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5, 0.0)
    first = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
    second = np.minimum(first + 1, in_size - 1)
    weight = source - first
    matrix = np.zeros((out_size, in_size))
    rows = np.arange(out_size)
    np.add.at(matrix, (rows, first), 1.0 - weight)
    np.add.at(matrix, (rows, second), weight)
    return matrix


@functools.lru_cache(maxsize=16)
def _axis_map(low_res: int, square: int, unpadded: int, original: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One axis of SAM's paste: the [original, low_res] float32 matrix (low res -> square
    input, keep the first ``unpadded``, -> original), and per output index the first and last
    low-res index its row of the matrix uses."""
    upsample = linear_resize_matrix(low_res, square)[:unpadded]
    combined = linear_resize_matrix(unpadded, original) @ upsample
    used = combined != 0
    first = used.argmax(axis=1)
    last = low_res - 1 - used[:, ::-1].argmax(axis=1)
    return combined.astype(np.float32), first, last


def paste_masks(mask_logits: torch.Tensor, input_size: tuple[int, int], original_size: tuple[int, int],
                image_input_size: int) -> torch.Tensor:
    """Low-res logits ``[R, m, m]`` (of the padded ``image_input_size`` square, whose unpadded
    part is ``input_size`` (h, w)) -> bool masks ``[R, H, W]`` at ``original_size`` (H, W):
    where SAM's upsampled logits are above 0 (see the module docstring)."""
    count, low_h, low_w = mask_logits.shape
    height, width = original_size
    rows_map, row_first, row_last = _axis_map(low_h, image_input_size, input_size[0], height)
    cols_map, col_first, col_last = _axis_map(low_w, image_input_size, input_size[1], width)
    logits = mask_logits.detach().float().cpu().numpy()  # small matrix products: numpy's, one thread
    masks = np.zeros((count, height, width), dtype=bool)
    positive = logits > 0
    for index in range(count):
        rows_on, cols_on = positive[index].any(axis=1), positive[index].any(axis=0)
        if not rows_on.any():
            continue
        low_rows = np.flatnonzero(rows_on)[[0, -1]]
        low_cols = np.flatnonzero(cols_on)[[0, -1]]
        # image rows (columns) whose band reaches a positive low-res row (column)
        top, bottom = _reaching(row_first, row_last, *low_rows)
        left, right = _reaching(col_first, col_last, *low_cols)
        if top == bottom or left == right:  # positive only in the padding, outside the image
            continue
        r0, r1 = int(row_first[top]), int(row_last[bottom - 1]) + 1
        c0, c1 = int(col_first[left]), int(col_last[right - 1]) + 1
        window = rows_map[top:bottom, r0:r1] @ logits[index, r0:r1, c0:c1] @ cols_map[left:right, c0:c1].T
        masks[index, top:bottom, left:right] = window > 0
    return torch.from_numpy(masks).to(mask_logits.device)


def _reaching(first: np.ndarray, last: np.ndarray, low: int, high: int) -> tuple[int, int]:
    """The output indices [start, stop) whose band [first, last] meets low-res [low, high]
    (``first`` and ``last`` are non-decreasing)."""
    start = int(np.searchsorted(last, low, side="left"))
    stop = int(np.searchsorted(first, high, side="right"))
    return start, max(stop, start)
