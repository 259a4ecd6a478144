"""COCO-format detection data (LVIS, Objects365, V3Det and converted OpenImages all come this way).

A dataset is an annotation JSON plus an image folder. Each keeps its own vocabulary: the
category names, cleaned for text prompts, in category-id order. Crowd annotations and boxes
that are degenerate after clipping to the image are dropped; images left without boxes are
skipped. Boxes are converted to xyxy absolute pixels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from regionspot.vocab import clean_category_name
from regionspot.ops.boxes import clip_boxes, xywh_to_xyxy
from regionspot.ops.image import load_image
from regionspot.vocab import parse_vocabulary, validate_vocabulary


class DatasetError(ValueError):
    """An annotation file or image folder is missing or malformed."""


@dataclass(frozen=True)
class ImageRecord:
    """One image and its kept annotations.

    ``boxes``: float32 [R, 4] xyxy absolute pixels (clipped); ``labels``: int64 [R] indices into
    the dataset's vocabulary; ``annotation_ids``: int64 [R] the JSON's annotation ids.
    """

    image_id: int
    file_name: str
    height: int
    width: int
    boxes: np.ndarray
    labels: np.ndarray
    annotation_ids: np.ndarray


@dataclass
class DatasetStats:
    images: int = 0
    images_without_boxes: int = 0
    annotations: int = 0
    crowd: int = 0
    degenerate: int = 0
    unknown_category: int = 0
    kept: int = 0
    notes: list[str] = field(default_factory=list)


class CocoDataset:
    """Records of a COCO-format dataset; ``names[i]`` is the vocabulary entry of label i."""

    def __init__(self, annotations: str | Path, images: str | Path, *, name: str = "dataset",
                 vocabulary: str | None = None, min_box_size: float = 1.0) -> None:
        self.name = name
        self.annotations_path = Path(annotations)
        self.images_dir = Path(images)
        document = read_annotations(self.annotations_path)
        if not self.images_dir.is_dir():
            raise DatasetError(f"{name}: image folder not found: {self.images_dir}")
        categories = sorted(document["categories"], key=lambda c: c["id"])
        self.category_ids = [int(c["id"]) for c in categories]
        self.names = dataset_vocabulary(categories, vocabulary, name)
        self.stats = DatasetStats()
        self.records = build_records(document, {cid: i for i, cid in enumerate(self.category_ids)},
                                     min_box_size, self.stats)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> ImageRecord:
        return self.records[index]

    def image_path(self, record: ImageRecord) -> Path:
        return self.images_dir / record.file_name

    def load_image(self, record: ImageRecord) -> np.ndarray:
        """The record's photo as HxWx3 uint8; its size must match the annotation's."""
        image = load_image(self.image_path(record))
        if image.shape[:2] != (record.height, record.width):
            raise DatasetError(f"{self.name}: {record.file_name} is {image.shape[1]}x{image.shape[0]} but the "
                               f"annotations say {record.width}x{record.height}")
        return image


def read_annotations(path: Path) -> dict[str, Any]:
    """A COCO-format JSON with ``images``, ``annotations`` and ``categories``."""
    if not path.is_file():
        raise DatasetError(f"annotation file not found: {path}")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as exc:  # bad JSON, text that is not UTF-8, a 5000-digit number
        raise DatasetError(f"{path} is not valid JSON: {exc}") from None
    missing = [key for key in ("images", "annotations", "categories") if key not in document]
    if missing:
        raise DatasetError(f"{path} is not COCO format: missing {missing}")
    return document


def dataset_vocabulary(categories: list[dict[str, Any]], vocabulary: str | None, name: str) -> list[str]:
    """Prompt-ready names in category-id order: the JSON's names cleaned, or a given vocabulary
    that must have one name per category."""
    if vocabulary is None:
        names = [clean_category_name(str(c["name"])) for c in categories]
        return validate_vocabulary(names)
    names = validate_vocabulary(parse_vocabulary(vocabulary))
    if len(names) != len(categories):
        raise DatasetError(f"{name}: vocabulary {vocabulary!r} has {len(names)} names for "
                           f"{len(categories)} categories")
    return names


def build_records(document: dict[str, Any], label_of: dict[int, int], min_box_size: float,
                  stats: DatasetStats) -> list[ImageRecord]:
    """Group annotations per image, dropping crowd, unknown-category and degenerate boxes."""
    per_image: dict[int, list[dict[str, Any]]] = {}
    for annotation in document["annotations"]:
        per_image.setdefault(int(annotation["image_id"]), []).append(annotation)
    records = []
    for image in sorted(document["images"], key=lambda i: i["id"]):
        stats.images += 1
        record = _image_record(image, per_image.get(int(image["id"]), []), label_of, min_box_size, stats)
        if record is None:
            stats.images_without_boxes += 1
        else:
            records.append(record)
    return records


def image_file_name(image: dict[str, Any]) -> str:
    """The image's path under the image folder: ``file_name``, or for LVIS (which has only
    ``coco_url``) the last two parts of the URL, e.g. ``val2017/000000397133.jpg``."""
    if image.get("file_name"):
        return str(image["file_name"])
    if image.get("coco_url"):
        return "/".join(str(image["coco_url"]).rstrip("/").split("/")[-2:])
    raise DatasetError(f"image {image.get('id')} has neither file_name nor coco_url")


def _image_record(image: dict[str, Any], annotations: list[dict[str, Any]], label_of: dict[int, int],
                  min_box_size: float, stats: DatasetStats) -> ImageRecord | None:
    height, width = int(image["height"]), int(image["width"])
    stats.annotations += len(annotations)
    kept = []
    for annotation in annotations:
        if annotation.get("iscrowd", 0):
            stats.crowd += 1
        elif int(annotation["category_id"]) not in label_of:
            stats.unknown_category += 1
        else:
            kept.append(annotation)
    if not kept:
        return None
    boxes = clip_boxes(xywh_to_xyxy(np.array([a["bbox"] for a in kept], dtype=np.float64)), (height, width))
    valid = ((boxes[:, 2] - boxes[:, 0]) >= min_box_size) & ((boxes[:, 3] - boxes[:, 1]) >= min_box_size)
    stats.degenerate += int((~valid).sum())
    if not valid.any():
        return None
    stats.kept += int(valid.sum())
    kept = [a for a, ok in zip(kept, valid) if ok]
    return ImageRecord(
        image_id=int(image["id"]), file_name=image_file_name(image), height=height, width=width,
        boxes=boxes[valid].astype(np.float32),
        labels=np.array([label_of[int(a["category_id"])] for a in kept], dtype=np.int64),
        annotation_ids=np.array([int(a.get("id", i)) for i, a in enumerate(kept)], dtype=np.int64),
    )
