"""Checks and small fixes for COCO-format datasets (LVIS, Objects365, V3Det are already COCO).

:func:`check_coco` reports what :class:`~regionspot.datasets.coco_format.CocoDataset` will make
of an annotation file (how many boxes and images it keeps) and what would break it (missing
image files, unknown or repeated ids, category names that cannot be prompts or are equal after
cleaning, malformed boxes). Image paths are found as :class:`CocoDataset` finds them
(``file_name``, or for LVIS the end of ``coco_url``). A file that is not UTF-8 JSON in COCO's
shape (see :func:`~regionspot.datasets.coco_format.read_annotations`) is a DatasetError.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from regionspot.datasets.coco_format import (
    DatasetError,
    category_name_problem,
    image_file_name,
    is_xywh,
    read_annotations,
    repeated,
)
from regionspot.vocab import clean_category_name

__all__ = ["CocoCheckReport", "check_coco", "read_image_header", "read_image_size"]

ProgressFn = Callable[[str, int, int], None]
_EXAMPLES = 5
# EXIF orientations that swap width and height (transposed or rotated by 90 degrees)
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})


def read_image_size(path: str | Path) -> tuple[int, int]:
    """``(H, W)`` of an image file as :func:`regionspot.ops.image.load_image` returns it
    (EXIF orientation applied), from the file header without decoding the pixels.

    Raises :class:`DatasetError` for a file PIL cannot identify.
    """
    height, width, _ = read_image_header(path)
    return height, width


def read_image_header(path: str | Path) -> tuple[int, int, bool]:
    """``(H, W, swapped)``: the upright size (see :func:`read_image_size`) and whether the EXIF
    orientation swapped the stored width and height."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"{path}: not a readable image ({exc})") from None
    swapped = orientation in _SWAPPING_ORIENTATIONS
    return (width, height, True) if swapped else (height, width, False)


@dataclass
class CocoCheckReport:
    """What a COCO-format file holds and what :class:`CocoDataset` will keep of it.

    ``usable_boxes`` / ``usable_images``: boxes that are not crowd, of a known category and
    image, at least 1 px wide and high after clipping; images with at least one such box.
    ``missing_files`` and ``size_mismatch`` are None when not checked.
    """

    path: str
    images: int = 0
    annotations: int = 0
    categories: int = 0
    crowd: int = 0
    degenerate: int = 0
    malformed_boxes: int = 0
    unknown_category: int = 0
    unknown_image: int = 0
    usable_boxes: int = 0
    usable_images: int = 0
    duplicate_image_ids: int = 0
    duplicate_annotation_ids: int = 0
    duplicate_category_ids: int = 0
    missing_file_name: int = 0
    unusable_names: int = 0
    unusable_name_examples: list[str] = field(default_factory=list)
    renamed_categories: int = 0
    duplicate_names: list[str] = field(default_factory=list)
    rename_examples: list[str] = field(default_factory=list)
    missing_files: int | None = None
    missing_examples: list[str] = field(default_factory=list)
    size_mismatch: int | None = None
    size_examples: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        """Findings that make training on this file fail or silently lose data."""
        found = []
        if self.missing_file_name:
            found.append(f"{self.missing_file_name} images have neither file_name nor coco_url")
        if self.missing_files:
            found.append(f"{self.missing_files} image files are missing, e.g. {self.missing_examples}")
        if self.size_mismatch:
            found.append(f"{self.size_mismatch} image files differ in size from the JSON, e.g. {self.size_examples}")
        if self.malformed_boxes:
            found.append(f"{self.malformed_boxes} annotations have a bbox that is not 4 finite numbers")
        if self.unknown_category:
            found.append(f"{self.unknown_category} annotations name a category id that is not listed")
        if self.unknown_image:
            found.append(f"{self.unknown_image} annotations name an image id that is not listed")
        if self.duplicate_image_ids or self.duplicate_annotation_ids or self.duplicate_category_ids:
            found.append(f"duplicate ids: {self.duplicate_image_ids} image, "
                         f"{self.duplicate_annotation_ids} annotation, {self.duplicate_category_ids} category")
        if self.unusable_names:
            found.append(f"{self.unusable_names} category names cannot be text prompts, e.g. "
                         f"{self.unusable_name_examples}")
        if self.duplicate_names:
            found.append(f"category names equal after cleaning: {self.duplicate_names}")
        if self.categories == 0:
            found.append("no categories")
        if self.usable_images == 0:
            found.append("no image has a usable box")
        return found

    def lines(self) -> list[str]:
        """A human-readable summary, one finding per line."""
        out = [f"{self.path}",
               f"  images {self.images:,} ({self.usable_images:,} with usable boxes), categories {self.categories:,}",
               (f"  annotations {self.annotations:,}: usable {self.usable_boxes:,}, crowd {self.crowd:,}, "
                f"degenerate {self.degenerate:,}")]
        if self.renamed_categories:
            out.append(f"  {self.renamed_categories} category names cleaned for prompts, e.g. {self.rename_examples}")
        if self.missing_files is not None:
            out.append(f"  missing image files: {self.missing_files:,}")
        if self.size_mismatch is not None:
            out.append(f"  image sizes differing from the JSON: {self.size_mismatch:,}")
        out.extend(f"  problem: {p}" for p in self.problems())
        return out

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "problems": self.problems()}


def check_coco(path: str | Path, images_dir: str | Path | None = None, *, check_sizes: bool = False,
               progress: ProgressFn | None = None) -> CocoCheckReport:
    """Check a COCO-format annotation file (and, given ``images_dir``, its image files).

    ``check_sizes`` also reads every image header (EXIF-aware) and compares ``(H, W)`` with
    the JSON. ``progress(stage, done, total)`` is called now and then during the file checks.
    Raises :class:`DatasetError` if the file is missing or not COCO format. The whole JSON is
    loaded (as :class:`CocoDataset` does).
    """
    document = read_annotations(Path(path))
    report = CocoCheckReport(path=str(path))
    try:
        sizes = _check_images(document["images"], report)
        category_ids = _check_categories(document["categories"], report)
        usable_per_image = _check_annotations(document["annotations"], sizes, category_ids, report)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DatasetError(f"{path}: malformed image, category or annotation entry "
                           f"({type(exc).__name__}: {exc})") from None
    report.usable_images = sum(1 for count in usable_per_image.values() if count)
    if images_dir is not None:
        _check_files(document["images"], Path(images_dir), check_sizes, report, progress)
    return report


def _check_images(images: list[dict[str, Any]], report: CocoCheckReport) -> dict[int, tuple[float, float]]:
    report.images = len(images)
    report.duplicate_image_ids, _ = repeated([image["id"] for image in images])
    report.missing_file_name = sum(1 for image in images if _file_name(image) is None)
    return {image["id"]: (float(image["height"]), float(image["width"])) for image in images}


def _check_categories(categories: list[dict[str, Any]], report: CocoCheckReport) -> set[int]:
    report.categories = len(categories)
    report.duplicate_category_ids, _ = repeated([category["id"] for category in categories])
    seen: dict[str, str] = {}
    for category in sorted(categories, key=lambda c: c["id"]):
        problem = category_name_problem(category)
        if problem is not None:
            report.unusable_names += 1
            if len(report.unusable_name_examples) < _EXAMPLES:
                report.unusable_name_examples.append(f"category id {category['id']}: {problem}")
            continue
        raw = category["name"]
        name = clean_category_name(raw)
        if name != raw:
            report.renamed_categories += 1
            if len(report.rename_examples) < _EXAMPLES:
                report.rename_examples.append(f"{raw!r} -> {name!r}")
        key = name.casefold()
        if key in seen:
            report.duplicate_names.append(f"{seen[key]!r} = {raw!r}")
        else:
            seen[key] = raw
    return {c["id"] for c in categories}


def _check_annotations(annotations: list[dict[str, Any]], sizes: dict[int, tuple[float, float]],
                       category_ids: set[int], report: CocoCheckReport) -> Counter[int]:
    report.annotations = len(annotations)
    report.duplicate_annotation_ids, _ = repeated([a["id"] for a in annotations if "id" in a])
    usable: Counter[int] = Counter()
    for annotation in annotations:
        image_id = annotation["image_id"]
        if image_id not in sizes:
            report.unknown_image += 1
        elif annotation["category_id"] not in category_ids:
            report.unknown_category += 1
        elif not is_xywh(annotation.get("bbox")):
            report.malformed_boxes += 1
        elif annotation.get("iscrowd", 0):
            report.crowd += 1
        elif _clipped_min_side(annotation["bbox"], sizes[image_id]) < 1.0:
            report.degenerate += 1
        else:
            report.usable_boxes += 1
            usable[image_id] += 1
    return usable


def _clipped_min_side(box: list[float], size: tuple[float, float]) -> float:
    """The smaller side of an xywh box after clipping to an (H, W) image."""
    height, width = size
    x1, y1 = min(max(box[0], 0.0), width), min(max(box[1], 0.0), height)
    x2, y2 = min(max(box[0] + box[2], 0.0), width), min(max(box[1] + box[3], 0.0), height)
    return min(x2 - x1, y2 - y1)


def _check_files(images: list[dict[str, Any]], folder: Path, check_sizes: bool, report: CocoCheckReport,
                 progress: ProgressFn | None) -> None:
    if not folder.is_dir():
        raise DatasetError(f"image folder not found: {folder}")
    report.missing_files = 0
    report.size_mismatch = 0 if check_sizes else None
    for done, image in enumerate(images, 1):
        name = _file_name(image)
        path = folder / name if name else None
        if path is None or not path.is_file():
            report.missing_files += 1
            if len(report.missing_examples) < _EXAMPLES:
                report.missing_examples.append(name or f"(image {image.get('id')}: no name)")
        elif check_sizes:
            _compare_size(path, image, report)
        if progress is not None and (done % 10_000 == 0 or done == len(images)):
            progress("image files", done, len(images))


def _compare_size(path: Path, image: dict[str, Any], report: CocoCheckReport) -> None:
    expected = (int(image.get("height", -1)), int(image.get("width", -1)))
    try:
        actual: tuple[int, int] | None = read_image_size(path)
    except DatasetError:
        actual = None
    if actual != expected:
        assert report.size_mismatch is not None
        report.size_mismatch += 1
        if len(report.size_examples) < _EXAMPLES:
            found = f"{actual[1]}x{actual[0]}" if actual else "unreadable"
            report.size_examples.append(f"{path.name}: {found}, JSON {expected[1]}x{expected[0]}")


def _file_name(image: dict[str, Any]) -> str | None:
    """The image's path under the image folder as CocoDataset finds it, or None."""
    try:
        return image_file_name(image)
    except DatasetError:
        return None
