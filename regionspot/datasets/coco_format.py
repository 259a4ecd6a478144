"""COCO-format detection data (LVIS, Objects365, V3Det and converted OpenImages all come this way).

A dataset is an annotation JSON plus an image folder. Each keeps its own vocabulary: the
category names, cleaned for text prompts, in category-id order. Crowd annotations and boxes
that are degenerate after clipping to the image are dropped; images left without boxes are
skipped. Boxes are converted to xyxy absolute pixels.

Every reader of an annotation file goes through :func:`read_annotations`, which refuses (with a
:class:`DatasetError` naming the file, the entry and how many entries share the fault) a file that
is not UTF-8 JSON, not an object, has ``images`` / ``annotations`` / ``categories`` that are not
lists of objects, or entries without integer ids (and images without positive integer sizes);
:func:`coco_document` holds a document already in memory to the same. :class:`Rule` /
:func:`enforce` state such checks; :class:`CocoDataset` also refuses a ``bbox`` that is not 4
finite numbers, and evaluation holds the ground truth and a results file to stricter ones
(:mod:`regionspot.eval.protocol`).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from regionspot.ops.boxes import clip_boxes, xywh_to_xyxy
from regionspot.ops.image import load_image
from regionspot.vocab import (
    VocabularyError,
    clean_category_name,
    name_problem,
    parse_vocabulary,
    validate_vocabulary,
)


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
        enforce(self.annotations_path, document["annotations"], "annotations", (TRAINING_BOX_RULE,))
        if not self.images_dir.is_dir():
            raise DatasetError(f"{name}: image folder not found: {self.images_dir}")
        categories = sorted(document["categories"], key=lambda c: c["id"])
        self.category_ids = [int(c["id"]) for c in categories]
        self.names = dataset_vocabulary(categories, vocabulary, f"{name} ({self.annotations_path})")
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


def read_json(path: Path, what: str) -> Any:
    """The JSON document in ``path`` (UTF-8, a byte-order mark allowed); DatasetError naming the
    file when it is missing, unreadable, not UTF-8 or not JSON. ``what`` names the file's role."""
    if not path.is_file():
        raise DatasetError(f"{what} file not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}): "
                           "JSON must be UTF-8; re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
    except OSError as exc:
        raise DatasetError(f"{path} cannot be read: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # bad JSON, a 5000-digit number, nesting too deep
        raise DatasetError(f"{path} is not valid JSON: {exc}") from None


def read_annotations(path: Path) -> dict[str, Any]:
    """A COCO-format JSON file held to :func:`coco_document`, with whole-number float image sizes
    (``480.0``) made integers so that they index arrays. DatasetError naming the file otherwise."""
    document = coco_document(read_json(path, "annotation"), path)
    for image in document["images"]:
        for key in ("height", "width"):
            if key in image:
                image[key] = int(image[key])
    return document


def coco_document(document: Any, path: str | Path) -> Any:
    """``document`` (returned as given) when it is a COCO-format object: ``images``,
    ``annotations`` and ``categories`` are lists of objects whose ids (``id``; an annotation's
    ``image_id`` and ``category_id``) are integers, images have positive integer ``height`` and
    ``width``. DatasetError naming ``path`` (a file, or words naming an input) otherwise."""
    if not isinstance(document, Mapping):
        raise DatasetError(f"{path} holds a JSON {json_type(document)}, not a COCO annotation object "
                           '{"images": [...], "annotations": [...], "categories": [...]}')
    missing = [key for key in ("images", "annotations", "categories") if key not in document]
    if missing:
        raise DatasetError(f"{path} is not COCO format: missing {missing}")
    for kind, rules in _REQUIRED.items():
        entries = document[kind]
        if not isinstance(entries, list):
            raise DatasetError(f'{path}: "{kind}" must be a list of objects, got {json_type(entries)}')
        enforce(path, entries, kind, rules, prefix=f"malformed {kind}: ")
    return document


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type (object, list, string, number, true/false, null)."""
    names = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def is_int(value: Any) -> bool:
    """A JSON integer (not a boolean, not 1.0)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_whole(value: Any) -> bool:
    """A JSON integer, or a float with no fractional part (``480.0``, as some converters write sizes)."""
    return is_int(value) or (isinstance(value, float) and value.is_integer())


def is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_xywh(box: Any) -> bool:
    """A COCO ``bbox``: a list of 4 finite numbers (sizes not checked)."""
    return isinstance(box, list) and len(box) == 4 and all(is_finite_number(v) for v in box)


@dataclass(frozen=True)
class Rule:
    """What an entry of a COCO list must hold: ``test(entry[field])`` (``test(entry)`` when
    ``field`` is None); an absent field passes when ``optional``. ``problem`` says what the
    entries that break it have (wrong), with ``[one|many]`` choices made for their count by
    :func:`inflect`, e.g. ``'[has|have] no integer "id"'``."""

    field: str | None
    test: Callable[[Any], bool]
    problem: str
    optional: bool = False

    def broken_by(self, entry: Any) -> bool:
        if self.field is None:
            return not self.test(entry)
        if self.field not in entry:
            return not self.optional
        return not self.test(entry[self.field])


OBJECT_RULE = Rule(None, lambda entry: isinstance(entry, dict), "[is not a JSON object|are not JSON objects]")
_REQUIRED: dict[str, tuple[Rule, ...]] = {
    "images": (OBJECT_RULE, Rule("id", is_int, '[has|have] no integer "id"'),
               *(Rule(key, lambda v: is_whole(v) and v > 0, f'[has|have] no positive integer "{key}"')
                 for key in ("height", "width"))),
    "annotations": (OBJECT_RULE, *(Rule(key, is_int, f'[has|have] no integer "{key}"')
                                   for key in ("image_id", "category_id"))),
    "categories": (OBJECT_RULE, Rule("id", is_int, '[has|have] no integer "id"')),
}
#: What training needs of every annotation (a box that is negative or empty once clipped is
#: only dropped, as degenerate).
TRAINING_BOX_RULE = Rule("bbox", is_xywh, '[has|have] a "bbox" that is not [x, y, w, h] (4 finite numbers)')


def enforce(path: str | Path, entries: list[Any], kind: str, rules: Sequence[Rule], prefix: str = "") -> None:
    """DatasetError for the first rule some entries break: how many, and the first of them.
    ``path``: the file, or words naming the input."""
    for rule in rules:
        broken = [index for index, entry in enumerate(entries) if rule.broken_by(entry)]
        if broken:
            raise DatasetError(f"{path}: {prefix}{count_text(entries, broken, kind, rule.problem, rule.field)}")


def count_text(entries: list[Any], chosen: list[int], kind: str, problem: str, key: str | None) -> str:
    """``'2 of 10 annotations have a "bbox" ...; the first is annotations[3] (id 7): bbox = [1, 2]'``,
    or for one ``'1 of 10 annotations has a "bbox" ...; it is annotations[3] ...'``: ``problem``
    is inflected (see :func:`inflect`) for ``len(chosen)``."""
    index = chosen[0]
    entry = entries[index]
    named = isinstance(entry, dict) and "id" in entry and key != "id"
    where = f"{kind}[{index}]" + (f" (id {entry['id']!r})" if named else "")
    if key is None:
        shown = f" = {entry!r:.100}"
    elif key in entry:
        shown = f": {key} = {entry[key]!r:.100}"
    else:
        shown = f": no {key}"
    count = len(chosen)
    return f"{count} of {counted(len(entries), kind)} {inflect(count, f'{problem}; [it|the first] is')} {where}{shown}"


_CHOICE = re.compile(r"\[([^\[\]|]*)\|([^\[\]|]*)\]")


def inflect(count: int, text: str) -> str:
    """``text`` with each ``[one|many]`` choice made for ``count``: ``inflect(1, "[has|have] no
    id")`` is ``'has no id'``, ``inflect(2, ...)`` ``'have no id'``. Brackets without a ``|``
    (``[x, y, w, h]``) are kept; apply it to message templates, not to the data they show."""
    return _CHOICE.sub(lambda match: match.group(1 if count == 1 else 2), text)


def counted(count: int, plural: str) -> str:
    """``count`` and the noun agreeing with it: ``counted(1, "categories")`` is ``'1 category'``,
    ``counted(3, "images")`` ``'3 images'`` (``plural`` a regular English plural)."""
    if count != 1:
        return f"{count} {plural}"
    return f"{count} {plural[:-3] + 'y' if plural.endswith('ies') else plural.removesuffix('s')}"


def repeated(values: list[Any]) -> tuple[int, Any]:
    """(how many values repeat one listed before, the first value that does; None when none)."""
    counts = Counter(values)
    extra = sum(count - 1 for count in counts.values())
    return extra, next((value for value in values if counts[value] > 1), None)


def category_name_problem(category: Mapping[str, Any]) -> str | None:
    """Why a category's ``name`` cannot be a text prompt, or None when it can: missing, or one of
    :func:`~regionspot.vocab.name_problem`'s reasons (not a string, empty, empty once cleaned like
    ``_`` or ``-other``, longer than :data:`~regionspot.vocab.MAX_NAME_CHARS`, control characters),
    e.g. ``"name '_' is empty once cleaned for a prompt ..."``."""
    if "name" not in category:
        return 'has no "name"'
    problem = name_problem(category["name"])
    return None if problem is None else f"name {problem}"


def dataset_vocabulary(categories: list[dict[str, Any]], vocabulary: str | None, name: str) -> list[str]:
    """Prompt-ready names in category-id order: the JSON's names cleaned, or a given vocabulary
    that must have one name per category. DatasetError naming ``name`` (the file) when a JSON
    name cannot be a prompt (see :func:`category_name_problem`) or two are equal once cleaned."""
    if vocabulary is None:
        bad = [(category["id"], problem) for category in categories
               if (problem := category_name_problem(category)) is not None]
        if bad:
            found = inflect(len(bad), "[cannot be a text prompt|cannot be text prompts]; [it|the first] is")
            raise DatasetError(f"{name}: {len(bad)} of {counted(len(categories), 'category names')} {found} "
                               f"category id {bad[0][0]}: {bad[0][1]} (fix the names or give a vocabulary)")
        try:
            return validate_vocabulary([clean_category_name(c["name"]) for c in categories])
        except VocabularyError as exc:
            raise DatasetError(f"{name}: category names in id order, cleaned for prompts: {exc}") from None
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
    kept = [a for a, ok in zip(kept, valid, strict=True) if ok]
    return ImageRecord(
        image_id=int(image["id"]), file_name=image_file_name(image), height=height, width=width,
        boxes=boxes[valid].astype(np.float32),
        labels=np.array([label_of[int(a["category_id"])] for a in kept], dtype=np.int64),
        annotation_ids=np.array([int(a.get("id", i)) for i, a in enumerate(kept)], dtype=np.int64),
    )
