"""One validated result type for region recognition (in the spirit of supervision's Detections)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from regionspot.ops.boxes import xyxy_to_xywh
from regionspot.ops.masks import encode_rle


def _per_region_rows(array: np.ndarray, count: int) -> np.ndarray:
    """``array`` as [count, k] (an empty [0, k] array stays as it is: reshape cannot infer k from it)."""
    if array.ndim == 2 and array.shape[0] == count:
        return array
    return array.reshape(count, -1)


def is_per_region(value: Any) -> bool:
    """Whether an ``extras`` value is per region: a list, or a numpy array of at least one dimension."""
    return isinstance(value, list) or (isinstance(value, np.ndarray) and value.ndim >= 1)


def _take(value: list | np.ndarray, index: Any, positions: np.ndarray) -> list | np.ndarray:
    """The regions ``index`` (at ``positions``) of one per-region extras value."""
    if isinstance(value, np.ndarray):
        return value[index]
    return [value[int(i)] for i in positions]


@dataclass
class RegionResult:
    """Recognition results for R regions of one image.

    ``boxes``: float [R, 4] xyxy absolute pixels (clipped to the image).
    ``topk_ids``: int [R, k] indices into ``vocabulary``, best first.
    ``topk_scores``: float [R, k] in [0, 1], non-increasing along k. Scores are independent
    per (region, name) sigmoid probabilities, the same function the head is trained with
    (focal loss); they do not sum to 1 over the vocabulary.
    ``masks``: bool [R, H, W] at image resolution, or None. ``mask_scores``: float [R]
    SAM's predicted IoU of each mask, or None: a regression output SAM does not clamp, so
    it can exceed 1 a little (kept as SAM gives it, as the reference ``SamPredictor`` does).
    ``image_size``: (H, W). ``vocabulary``: the names the regions were scored against.

    ``extras``: optional further outputs, e.g. ``"attention"`` (float [R, g, g], see
    ``RegionPredictor.predict(with_attention=True)``). The rule is by type: a numpy array
    (at least 1-d) or a list is **per region** and must have length R along its first
    dimension (checked); it is sliced with the regions by ``result[index]``. Anything else
    (scalars, 0-d arrays, strings, tuples, dicts, ...) is **image-level** and kept as is by
    slicing; wrap an image-level array in a dict or tuple.
    """

    boxes: np.ndarray
    topk_ids: np.ndarray
    topk_scores: np.ndarray
    vocabulary: list[str]
    image_size: tuple[int, int]
    masks: np.ndarray | None = None
    mask_scores: np.ndarray | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        count = self.boxes.shape[0]
        self.topk_ids = _per_region_rows(np.asarray(self.topk_ids, dtype=np.int64), count)
        self.topk_scores = _per_region_rows(np.asarray(self.topk_scores, dtype=np.float64), count)
        self.vocabulary = list(self.vocabulary)
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        if self.topk_ids.shape != self.topk_scores.shape:
            raise ValueError(f"topk_ids {self.topk_ids.shape} and topk_scores {self.topk_scores.shape} differ")
        if count and (self.topk_ids.min() < 0 or self.topk_ids.max() >= len(self.vocabulary)):
            raise ValueError("topk_ids index outside the vocabulary")
        if np.any((self.topk_scores < 0) | (self.topk_scores > 1)):
            raise ValueError("scores must lie in [0, 1]")
        if self.masks is not None:
            self.masks = np.asarray(self.masks, dtype=bool)
            if self.masks.shape != (count, *self.image_size):
                raise ValueError(f"masks must be {(count, *self.image_size)}, got {self.masks.shape}")
        if self.mask_scores is not None:
            self.mask_scores = np.asarray(self.mask_scores, dtype=np.float64).reshape(count)
        self.extras = dict(self.extras)
        for key, value in self.extras.items():
            if is_per_region(value) and len(value) != count:
                raise ValueError(f"extras[{key!r}] is per region (a list or array) but has length {len(value)} "
                                 f"for {count} regions; wrap image-level values in a dict or tuple")

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def __getitem__(self, index: int | slice | Sequence[int] | np.ndarray) -> RegionResult:
        """A subset of the regions (an index, a slice, indices or a boolean mask)."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        positions = np.arange(len(self))[index]
        extras = {key: _take(value, index, positions) if is_per_region(value) else value
                  for key, value in self.extras.items()}
        return RegionResult(
            boxes=self.boxes[index], topk_ids=self.topk_ids[index], topk_scores=self.topk_scores[index],
            vocabulary=self.vocabulary, image_size=self.image_size,
            masks=None if self.masks is None else self.masks[index],
            mask_scores=None if self.mask_scores is None else self.mask_scores[index], extras=extras,
        )

    @property
    def label_ids(self) -> np.ndarray:
        """Top-1 vocabulary index per region, int [R]."""
        return self.topk_ids[:, 0]

    @property
    def labels(self) -> list[str]:
        """Top-1 name per region."""
        return [self.vocabulary[i] for i in self.label_ids]

    @property
    def scores(self) -> np.ndarray:
        """Top-1 score per region, float [R]."""
        return self.topk_scores[:, 0]

    @property
    def topk(self) -> list[list[tuple[str, float]]]:
        """Per region, the (name, score) pairs best first."""
        return [[(self.vocabulary[i], float(s)) for i, s in zip(ids, scores, strict=True)]
                for ids, scores in zip(self.topk_ids, self.topk_scores, strict=True)]

    def to_dict(self, include_masks: bool = True) -> dict[str, Any]:
        """The JSON document of ``regionspot predict``: image size, vocabulary, and per region
        box (xyxy), label, score, top-k list, mask as COCO RLE and SAM's mask score."""
        rles = encode_rle(self.masks) if include_masks and self.masks is not None else None
        regions = []
        for i in range(len(self)):
            region: dict[str, Any] = {
                "box": [round(float(v), 2) for v in self.boxes[i]],
                "label": self.vocabulary[int(self.topk_ids[i, 0])],
                "score": float(self.topk_scores[i, 0]),
                "topk": [{"label": name, "score": score} for name, score in self.topk[i]],
            }
            if rles is not None:
                region["mask"] = rles[i]
            if self.mask_scores is not None:
                region["mask_score"] = float(self.mask_scores[i])
            regions.append(region)
        return {
            "image": {"height": self.image_size[0], "width": self.image_size[1]},
            "vocabulary": self.vocabulary,
            "regions": regions,
        }

    def to_coco(
        self, image_id: int, category_ids: Sequence[int] | None = None, topk: int | None = None
    ) -> list[dict[str, Any]]:
        """COCO results: one entry per (region, name) pair among each region's first ``topk``
        (default: all kept) pairs, with ``bbox`` xywh, ``score``, ``category_id``
        (``category_ids[vocab index]``, or index + 1 when not given) and ``segmentation``
        RLE when masks are present."""
        if category_ids is not None and len(category_ids) != len(self.vocabulary):
            raise ValueError(
                f"category_ids has {len(category_ids)} ids for a vocabulary of {len(self.vocabulary)} names"
            )
        keep = self.topk_ids.shape[1] if topk is None else min(topk, self.topk_ids.shape[1])
        rles = encode_rle(self.masks) if self.masks is not None else None
        boxes_xywh = xyxy_to_xywh(self.boxes)
        results = []
        for i in range(len(self)):
            for j in range(keep):
                vocab_index = int(self.topk_ids[i, j])
                entry: dict[str, Any] = {
                    "image_id": image_id,
                    "category_id": int(category_ids[vocab_index]) if category_ids is not None else vocab_index + 1,
                    "bbox": [round(float(v), 2) for v in boxes_xywh[i]],
                    "score": float(self.topk_scores[i, j]),
                }
                if rles is not None:
                    entry["segmentation"] = rles[i]
                results.append(entry)
        return results

    def to_supervision(self) -> Any:
        """A ``supervision.Detections`` (the ``supervision`` extra: ``pip install
        regionspot[supervision]``): ``xyxy`` the boxes, ``mask`` the masks (or None),
        ``confidence`` and ``class_id`` the top-1 score and vocabulary index, and in ``data``
        ``class_name`` (the top-1 names) and ``mask_score`` when there are mask scores. Class ids
        index this result's ``vocabulary``."""
        try:
            import supervision as sv
        except ImportError as exc:
            raise ImportError("to_supervision needs the supervision package: pip install 'regionspot[supervision]'"
                              ) from exc
        data: dict[str, np.ndarray | list[Any]] = {"class_name": np.array(self.labels, dtype=str)}
        if self.mask_scores is not None:
            data["mask_score"] = np.asarray(self.mask_scores, dtype=np.float64)
        return sv.Detections(xyxy=np.asarray(self.boxes, dtype=np.float32), mask=self.masks,
                             confidence=np.asarray(self.scores, dtype=np.float32),
                             class_id=np.asarray(self.label_ids, dtype=int), data=data)

