"""Pure mask operations: COCO run-length encoding and mask IoU. Masks are bool [R, H, W]."""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

#: Most mask pixels converted at once while encoding RLE (the copy pycocotools needs).
RLE_CHUNK_PIXELS = 64 * 1024 * 1024


def encode_rle(masks: np.ndarray) -> list[dict[str, Any]]:
    """Bool masks [R, H, W] -> COCO compressed RLE dicts ``{"size": [H, W], "counts": str}``
    (``counts`` decoded to text so the result is JSON-serialisable). A few masks are encoded at
    a time, so the extra memory stays under :data:`RLE_CHUNK_PIXELS` bytes for any R."""
    if masks.ndim != 3:
        raise ValueError(f"masks must be [R, H, W], got shape {masks.shape}")
    per_chunk = max(1, RLE_CHUNK_PIXELS // max(1, masks.shape[1] * masks.shape[2]))
    rles: list[dict[str, Any]] = []
    for start in range(0, masks.shape[0], per_chunk):
        chunk = masks[start:start + per_chunk]
        fortran = np.asfortranarray(chunk.transpose(1, 2, 0).astype(np.uint8))
        rles += [{"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
                 for rle in mask_utils.encode(fortran)]
    return rles


def decode_rle(rles: list[dict[str, Any]]) -> np.ndarray:
    """COCO RLE dicts (as written by :func:`encode_rle`) -> bool masks [R, H, W]."""
    prepared = [{"size": r["size"], "counts": r["counts"].encode("ascii") if isinstance(r["counts"], str)
                 else r["counts"]} for r in rles]
    return mask_utils.decode(prepared).transpose(2, 0, 1).astype(bool)


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of paired bool masks a[i] and b[i], both [R, H, W] -> [R] (0 where both empty)."""
    a2 = a.reshape(a.shape[0], -1)
    b2 = b.reshape(b.shape[0], -1)
    intersection = (a2 & b2).sum(axis=1)
    union = (a2 | b2).sum(axis=1)
    return np.where(union > 0, intersection / np.maximum(union, 1), 0.0)


def pairwise_mask_iou(masks: np.ndarray) -> np.ndarray:
    """IoU of every pair of bool masks ``masks`` [N, H, W] -> float64 [N, N] (0 where both are
    empty; 1 on the diagonal of a non-empty mask). Counted exactly with integer products."""
    flat = masks.reshape(masks.shape[0], -1).astype(np.float32)
    intersection = np.rint(flat @ flat.T).astype(np.int64)  # exact below 2**24 pixels a mask
    areas = np.diag(intersection)
    union = areas[:, None] + areas[None, :] - intersection
    return np.divide(intersection, union, out=np.zeros(union.shape), where=union > 0)


def compressed_rle_runs(counts: str) -> list[int]:
    """Run lengths of a COCO compressed RLE string (pycocotools' ``rleFrString``); ``[-1]`` where a
    character is outside its alphabet (so the caller's check fails)."""
    runs: list[int] = []
    position = 0
    while position < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(counts) or not 48 <= ord(counts[position]) < 112:
                return [-1]
            code = ord(counts[position]) - 48
            value |= (code & 0x1F) << shift
            more = bool(code & 0x20)
            position += 1
            shift += 5
            if not more and code & 0x10:
                value |= -1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def rle_covers(counts: str | list[Any], height: int, width: int) -> bool:
    """Whether RLE ``counts`` (compressed text or a list of run lengths) are valid runs adding up
    to ``height * width`` pixels; pycocotools decodes runs that do not from memory it never wrote."""
    runs = compressed_rle_runs(counts) if isinstance(counts, str) else counts
    return all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in runs) and sum(runs) == height * width


def deepest_point(mask: np.ndarray) -> tuple[float, float]:
    """Where to click inside bool ``mask`` [H, W]: the centre (x, y) of the pixel deepest inside
    it, peeled one 4-connected pixel ring at a time (the point farthest from the boundary, where
    SAM's evaluation puts its first click, SAM paper §7.1), ties broken towards the centroid of
    the deepest pixels. Raises ``ValueError`` for an empty mask."""
    if mask.ndim != 2 or not mask.any():
        raise ValueError("deepest_point needs a non-empty 2-D mask")
    core = mask.astype(bool)
    while True:
        peeled = core.copy()
        peeled[1:] &= core[:-1]
        peeled[:-1] &= core[1:]
        peeled[:, 1:] &= core[:, :-1]
        peeled[:, :-1] &= core[:, 1:]
        peeled[[0, -1], :] = False  # the image border counts as boundary
        peeled[:, [0, -1]] = False
        if not peeled.any():
            break
        core = peeled
    ys, xs = np.nonzero(core)
    pick = int(np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2))
    return float(xs[pick]) + 0.5, float(ys[pick]) + 0.5
