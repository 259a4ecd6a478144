"""OpenImages V6/V7 box annotations -> COCO format.

Inputs: ``*-annotations-bbox.csv`` (header ImageID, Source, LabelName, Confidence, XMin, XMax,
YMin, YMax, IsOccluded, IsTruncated, IsGroupOf, IsDepiction, IsInside; coordinates normalised
to [0, 1]), ``class-descriptions-boxable.csv`` (``MID,Display name`` rows, no header; a
``LabelName,DisplayName`` header is skipped) and the image folder (``<ImageID>.jpg``).

Output: a COCO JSON. Categories: every class of the descriptions file, sorted by MID, ids 1..C,
``name`` cleaned for prompts, plus ``freebase_id`` (the MID) and ``display_name``. Images: ids
1..N in order of first appearance in the CSV, ``file_name`` ``<ImageID>.jpg`` and size from
the file header, EXIF orientation applied (as :func:`regionspot.ops.image.load_image` loads it;
normalised coordinates are taken relative to that upright image). Annotations: absolute xywh
clipped to the image, ``iscrowd`` = IsGroupOf, the other flags kept as ``is_occluded`` etc.
Rows whose image file is missing or unreadable are skipped and reported, as are rows of an
unknown class, with zero confidence, or a box of zero width or height.

The CSV is streamed (train has ~15M rows): images and annotations go to temporary files next
to the output as they are read; only a map ImageID -> image id stays in memory.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from regionspot.datasets.coco_format import DatasetError
from regionspot.datasets.convert import read_image_header
from regionspot.vocab import clean_category_name

__all__ = ["BOX_COLUMNS", "ConversionReport", "coco_categories", "convert_openimages", "read_class_descriptions"]

BOX_COLUMNS = ("ImageID", "LabelName", "Confidence", "XMin", "XMax", "YMin", "YMax", "IsOccluded",
               "IsTruncated", "IsGroupOf", "IsDepiction", "IsInside")
_FLAGS = {"IsOccluded": "is_occluded", "IsTruncated": "is_truncated", "IsDepiction": "is_depiction",
          "IsInside": "is_inside"}
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")
_EXAMPLES = 5


@dataclass
class ConversionReport:
    """Counts of a conversion. ``rows``: CSV data rows read; the ``skipped_*`` rows are not in
    the output; ``missing_images``: distinct ImageIDs without a readable file."""

    rows: int = 0
    images: int = 0
    annotations: int = 0
    categories: int = 0
    crowd: int = 0
    exif_rotated: int = 0
    missing_images: int = 0
    missing_examples: list[str] = field(default_factory=list)
    skipped_missing_image: int = 0
    skipped_unknown_class: int = 0
    unknown_class_examples: list[str] = field(default_factory=list)
    skipped_zero_confidence: int = 0
    skipped_degenerate: int = 0

    def lines(self) -> list[str]:
        out = [f"rows {self.rows:,} -> images {self.images:,}, annotations {self.annotations:,} "
               f"(crowd {self.crowd:,}), categories {self.categories:,}"]
        if self.missing_images:
            out.append(f"missing or unreadable image files: {self.missing_images:,} "
                       f"({self.skipped_missing_image:,} rows skipped), e.g. {self.missing_examples}")
        if self.skipped_unknown_class:
            out.append(f"rows of a class not in the descriptions skipped: {self.skipped_unknown_class:,}, "
                       f"e.g. {self.unknown_class_examples}")
        if self.skipped_zero_confidence:
            out.append(f"rows with confidence 0 skipped: {self.skipped_zero_confidence:,}")
        if self.skipped_degenerate:
            out.append(f"boxes of zero width or height skipped: {self.skipped_degenerate:,}")
        if self.exif_rotated:
            out.append(f"images whose EXIF orientation swaps width and height: {self.exif_rotated:,}")
        return out


def read_class_descriptions(path: str | Path) -> list[tuple[str, str]]:
    """``(MID, display name)`` pairs sorted by MID. Raises :class:`DatasetError` for a missing
    file, a row that is not two fields, a repeated MID, or no classes."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"class descriptions file not found: {path}")
    classes: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8-sig") as handle:
        for line, row in enumerate(csv.reader(handle), 1):
            if not row or (line == 1 and [c.strip() for c in row] == ["LabelName", "DisplayName"]):
                continue
            if len(row) != 2:
                raise DatasetError(f"{path}:{line}: expected 'MID,name', got {row!r}")
            mid, name = row[0].strip(), row[1].strip()
            if mid in classes:
                raise DatasetError(f"{path}:{line}: class {mid} is listed twice")
            classes[mid] = name
    if not classes:
        raise DatasetError(f"{path}: no classes")
    return sorted(classes.items())


def coco_categories(classes: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """COCO categories (ids 1..C) with cleaned names; raises :class:`DatasetError` when two
    names are equal after cleaning (case-folded), which a vocabulary cannot hold."""
    categories: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for index, (mid, display) in enumerate(classes, 1):
        try:
            name = clean_category_name(display)
        except ValueError:
            raise DatasetError(f"class {mid} has an empty name {display!r}") from None
        if name.casefold() in seen:
            raise DatasetError(f"classes {seen[name.casefold()]} and {mid} have the same name {name!r}")
        seen[name.casefold()] = mid
        categories.append({"id": index, "name": name, "freebase_id": mid, "display_name": display})
    return categories


def convert_openimages(boxes_csv: str | Path, classes_csv: str | Path, images_dir: str | Path,
                       out_path: str | Path, *, progress: Callable[[ConversionReport], None] | None = None,
                       progress_every: int = 1_000_000) -> ConversionReport:
    """Convert OpenImages box annotations to a COCO JSON at ``out_path`` (see module docstring).

    ``progress(report)`` is called every ``progress_every`` rows. The output is written
    through ``<out>.partial`` and renamed at the end. Raises :class:`DatasetError` for a
    missing input, a CSV without the needed columns, or a malformed row (with its line).
    """
    boxes_csv, images_dir, out_path = Path(boxes_csv), Path(images_dir), Path(out_path)
    if progress_every < 1:
        raise ValueError(f"progress_every must be at least 1, got {progress_every}")
    if not boxes_csv.is_file():
        raise DatasetError(f"boxes CSV not found: {boxes_csv}")
    if not images_dir.is_dir():
        raise DatasetError(f"image folder not found: {images_dir}")
    categories = coco_categories(read_class_descriptions(classes_csv))
    report = ConversionReport(categories=len(categories))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    parts = [out_path.with_name(out_path.name + suffix) for suffix in (".images.partial", ".annotations.partial")]
    try:
        with open(parts[0], "w") as images_out, open(parts[1], "w") as annotations_out:
            writer = _Writer(images_dir, images_out, annotations_out, report,
                             {c["freebase_id"]: c["id"] for c in categories})
            _stream_rows(boxes_csv, writer, progress, progress_every)
        _assemble(out_path, categories, parts, boxes_csv)
    finally:
        for part in parts:
            part.unlink(missing_ok=True)
    return report


def _stream_rows(path: Path, writer: _Writer, progress: Callable[[ConversionReport], None] | None,
                 progress_every: int) -> None:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise DatasetError(f"{path} is empty")
        header = [h.strip() for h in header]
        missing = [c for c in BOX_COLUMNS if c not in header]
        if missing:
            raise DatasetError(f"{path} is not an OpenImages box CSV: columns {missing} are missing")
        columns = {name: header.index(name) for name in BOX_COLUMNS}
        for line, row in enumerate(reader, 2):
            if not row:
                continue
            if len(row) != len(header):
                raise DatasetError(f"{path}:{line}: {len(row)} fields, the header has {len(header)}")
            try:
                writer.add({name: row[i] for name, i in columns.items()})
            except ValueError as exc:
                raise DatasetError(f"{path}:{line}: {exc}") from None
            if progress is not None and writer.report.rows % progress_every == 0:
                progress(writer.report)


class _Writer:
    """Turns CSV rows into image and annotation JSON objects written as they come."""

    def __init__(self, images_dir: Path, images_out: IO[str], annotations_out: IO[str],
                 report: ConversionReport, category_of: dict[str, int]) -> None:
        self.images_dir, self.images_out, self.annotations_out = images_dir, images_out, annotations_out
        self.report, self.category_of = report, category_of
        # ImageID -> (image id, H, W), or None for a missing or unreadable file
        self.images: dict[str, tuple[int, int, int] | None] = {}

    def add(self, row: dict[str, str]) -> None:
        report = self.report
        report.rows += 1
        image = self._image(row["ImageID"])
        if image is None:
            report.skipped_missing_image += 1
            return
        image_id, height, width = image
        category = self.category_of.get(row["LabelName"])
        if category is None:
            report.skipped_unknown_class += 1
            if len(report.unknown_class_examples) < _EXAMPLES and row["LabelName"] not in report.unknown_class_examples:
                report.unknown_class_examples.append(row["LabelName"])
            return
        if float(row["Confidence"]) <= 0:
            report.skipped_zero_confidence += 1
            return
        box = self._box(row, height, width)
        if box is None:
            report.skipped_degenerate += 1
            return
        crowd = int(_flag(row["IsGroupOf"]) == 1)
        report.annotations += 1
        report.crowd += crowd
        annotation = {"id": report.annotations, "image_id": image_id, "category_id": category,
                      "bbox": box, "area": round(box[2] * box[3], 2), "iscrowd": crowd,
                      **{key: _flag(row[column]) for column, key in _FLAGS.items()}}
        _append(self.annotations_out, annotation, first=report.annotations == 1)

    def _image(self, name: str) -> tuple[int, int, int] | None:
        """(image id, H, W) of an ImageID, looking the file up the first time it is seen."""
        if name in self.images:
            return self.images[name]
        path = self._find(name)
        header = None
        if path is not None:
            try:
                header = read_image_header(path)
            except DatasetError:
                header = None
        report = self.report
        if path is None or header is None:
            self.images[name] = None
            report.missing_images += 1
            if len(report.missing_examples) < _EXAMPLES:
                report.missing_examples.append(name)
            return None
        report.images += 1
        image_id = report.images
        height, width, swapped = header
        self.images[name] = (image_id, height, width)
        report.exif_rotated += int(swapped)
        _append(self.images_out, {"id": image_id, "file_name": path.name, "height": height, "width": width,
                                  "openimages_id": name}, first=image_id == 1)
        return self.images[name]

    def _find(self, name: str) -> Path | None:
        if not name or Path(name).name != name or name in (".", ".."):
            raise ValueError(f"ImageID {name!r} is not a plain file name")
        for suffix in _IMAGE_SUFFIXES:
            path = self.images_dir / (name + suffix)
            if path.is_file():
                return path
        return None

    @staticmethod
    def _box(row: dict[str, str], height: int, width: int) -> list[float] | None:
        """Absolute xywh clipped to the image, or None when it has no width or height."""
        x_min, x_max = (min(max(float(row[k]), 0.0), 1.0) * width for k in ("XMin", "XMax"))
        y_min, y_max = (min(max(float(row[k]), 0.0), 1.0) * height for k in ("YMin", "YMax"))
        if not (x_max > x_min and y_max > y_min):
            return None
        return [round(x_min, 2), round(y_min, 2), round(x_max - x_min, 2), round(y_max - y_min, 2)]


def _flag(text: str) -> int:
    """An OpenImages 0/1 flag (-1, or empty: unknown) as an int."""
    text = text.strip()
    return int(float(text)) if text else -1


def _append(handle: IO[str], item: dict[str, Any], *, first: bool) -> None:
    if not first:
        handle.write(",\n")
    handle.write(json.dumps(item, separators=(",", ":")))


def _assemble(out_path: Path, categories: list[dict[str, Any]], parts: list[Path], source: Path) -> None:
    """Write the final JSON from the two partial files, atomically."""
    temporary = out_path.with_name(out_path.name + ".partial")
    try:
        with open(temporary, "w") as out:
            info = {"description": f"OpenImages boxes converted by regionspot from {source.name}"}
            out.write('{"info":' + json.dumps(info) + ',\n"categories":' + json.dumps(categories) + ',\n"images":[\n')
            _copy(parts[0], out)
            out.write('\n],\n"annotations":[\n')
            _copy(parts[1], out)
            out.write("\n]}\n")
        os.replace(temporary, out_path)
    finally:
        temporary.unlink(missing_ok=True)


def _copy(path: Path, out: IO[str]) -> None:
    with open(path) as handle:
        shutil.copyfileobj(handle, out, length=1 << 20)
