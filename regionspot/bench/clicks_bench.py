"""``regionspot bench clicks``: how well one click finds a whole annotated object, measured here
on COCO-format photos with a real SAM checkpoint.

Each object (non-crowd, at least ``min_side`` x ``min_side`` pixels of area, the first
``per_photo`` of each photo) gets one click at its deepest point (:func:`deepest_point`, where
SAM's own evaluation clicks first, SAM paper §7.1). SAM answers a single click with three nested
candidates (mask tokens 1-3: roughly subpart, part, whole); ``predict(points=...)`` keeps the
one SAM rates best. For each way of choosing (that rating, each candidate alone, and the best of
the three by IoU with the annotation: an oracle no user has) the report gives the share of
objects whose mask reaches IoU ``iou`` with the annotated mask, and the mean IoU. The candidates
come from the same SAM path ``predict`` uses, so the first row is what ``predict`` returns.

With ``reference`` (a checkout of the MobileSAM authors' code, see
:mod:`regionspot.bench.reference_mobile_sam`) the authors' own ``SamPredictor`` answers the same
clicks beside it (three candidates, the best-scored kept, as their README does): its figures,
and how often it keeps the same candidate, tell the model's behaviour from this library's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from tqdm.auto import tqdm

from regionspot.backbones.protocols import PREDICT_CLICKS
from regionspot.backbones.sam import build_region_tokenizer
from regionspot.bench.predict_bench import machine_info
from regionspot.config import SamBackboneConfig
from regionspot.ops.image import load_image
from regionspot.ops.masks import deepest_point, mask_iou

#: The ways of choosing among SAM's three candidates that the report compares.
CHOICES = ("best rated (what predict returns)", "candidate 1 (subpart)", "candidate 2 (part)",
           "candidate 3 (whole)", "best of the three (oracle)")


@dataclass
class ClickObject:
    """One annotated object: its photo, category id and bool mask [H, W]."""

    photo: Path
    category_id: int
    mask: np.ndarray


@dataclass
class ChoiceResult:
    choice: str
    share_at_iou: float
    mean_iou: float


@dataclass
class ClickBenchResult:
    machine: dict[str, object]
    photos: int
    objects: int
    iou: float
    choices: list[ChoiceResult] = field(default_factory=list)
    reference: dict[str, float] | None = None
    per_object: list[dict[str, Any]] = field(default_factory=list)


def read_click_objects(annotations: str | Path, images: str | Path, limit: int | None = None,
                       min_side: int = 48, per_photo: int = 4) -> list[list[ClickObject]]:
    """Per photo (by id; the first ``limit`` photos that have any), its first ``per_photo``
    non-crowd objects of area at least ``min_side``², with their masks decoded."""
    data = json.loads(Path(annotations).read_text())
    by_image: dict[int, list[dict[str, Any]]] = {}
    for annotation in data["annotations"]:
        if not annotation.get("iscrowd", 0) and annotation["area"] >= min_side**2:
            by_image.setdefault(annotation["image_id"], []).append(annotation)
    photos = []
    for image in sorted(data["images"], key=lambda image: image["id"]):
        chosen = by_image.get(image["id"], [])[:per_photo]
        if chosen:
            height, width = image["height"], image["width"]
            photos.append([ClickObject(Path(images) / image["file_name"], int(a["category_id"]),
                                       _decode(a["segmentation"], height, width)) for a in chosen])
    return photos[:limit]


def _decode(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A COCO segmentation (polygons, RLE or uncompressed RLE) as bool [H, W]."""
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation["counts"], list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_utils.decode(rle).astype(bool)


def _candidate_ious(tokenizer: Any, image: np.ndarray, objects: Sequence[ClickObject],
                    clicks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SAM's three candidates for each click [R, 1, 2]: their IoU with each object's mask and
    SAM's rating, both [R, 3]."""
    clicker = PREDICT_CLICKS.require(tokenizer)
    embedding = tokenizer.encode_image(image)
    points = torch.as_tensor(clicks, dtype=torch.float32)
    logits, rating = clicker.encode_point_prompts(embedding, points, torch.ones(points.shape[:2], dtype=torch.long))
    ious = np.zeros((len(objects), logits.shape[1]))
    for k in range(logits.shape[1]):
        masks = tokenizer.paste_masks(embedding, logits[:, k]).cpu().numpy()
        ious[:, k] = [mask_iou(got[None], item.mask[None])[0] for got, item in zip(masks, objects, strict=True)]
    return ious, rating.float().cpu().numpy()


def _reference_answers(reference: Any, image: np.ndarray, objects: Sequence[ClickObject],
                       clicks: np.ndarray) -> list[tuple[int, float]]:
    """The authors' predictor on the same clicks: (index kept, its IoU with the object) each."""
    reference.set_image(image)
    answers = []
    for item, click in zip(objects, clicks, strict=True):
        masks, scores, _ = reference.predict(point_coords=click, point_labels=np.array([1]), multimask_output=True)
        best = int(np.argmax(scores))
        answers.append((best, float(mask_iou(masks[best][None], item.mask[None])[0])))
    return answers


def run_click_bench(sam: str | Path, photos: Sequence[Sequence[ClickObject]], iou: float = 0.6,
                    reference: str | Path | None = None, progress: bool = True) -> ClickBenchResult:
    """Measure every photo's objects (see the module docstring); ``sam``: a SAM checkpoint or
    Hub id, loaded as ``predict`` loads it."""
    reference_predictor = None
    if reference is not None:
        from regionspot.bench.reference_mobile_sam import check_reference_checkout, load_reference_predictor

        check_reference_checkout(reference)
        reference_predictor = load_reference_predictor(reference, sam)
    tokenizer = build_region_tokenizer(SamBackboneConfig(name_or_path=str(sam)))
    rows: list[dict[str, Any]] = []
    with torch.inference_mode():
        for objects in tqdm(photos, desc="photos", unit="photo", disable=not progress):
            image = load_image(objects[0].photo)
            clicks = np.array([[deepest_point(item.mask)] for item in objects])  # [R, 1, 2]
            ious, rating = _candidate_ious(tokenizer, image, objects, clicks)
            answers = (_reference_answers(reference_predictor, image, objects, clicks)
                       if reference_predictor is not None else [None] * len(objects))
            for item, click, row_ious, row_rating, answer in zip(objects, clicks, ious, rating, answers, strict=True):
                row = {"photo": item.photo.name, "category_id": item.category_id, "click": click[0].tolist(),
                       "candidate_ious": row_ious.tolist(), "rating": row_rating.tolist()}
                if answer is not None:
                    row["reference_choice"], row["reference_iou"] = answer
                rows.append(row)
    return summarise(rows, len(photos), iou)


def summarise(rows: Sequence[dict[str, Any]], photos: int, iou: float) -> ClickBenchResult:
    """The report from per-object rows (``candidate_ious`` and ``rating`` [3] each, and with a
    reference ``reference_choice`` and ``reference_iou``)."""
    candidates = np.array([row["candidate_ious"] for row in rows]).reshape(len(rows), -1)
    rating = np.array([row["rating"] for row in rows]).reshape(len(rows), -1)
    kept = np.arange(len(rows)), rating.argmax(axis=1)
    columns = [candidates[kept], *candidates.T, candidates.max(axis=1, initial=0.0)]
    result = ClickBenchResult(machine=machine_info(torch.device("cpu")), photos=photos, objects=len(rows), iou=iou,
                              per_object=list(rows))
    for choice, values in zip(CHOICES, columns, strict=False):
        result.choices.append(ChoiceResult(choice, float(np.mean(values >= iou)), float(np.mean(values))))
    if rows and "reference_iou" in rows[0]:
        theirs = np.array([row["reference_iou"] for row in rows])
        same = np.array([row["reference_choice"] for row in rows]) == kept[1]
        result.reference = {"share_at_iou": float(np.mean(theirs >= iou)), "mean_iou": float(theirs.mean()),
                            "same_candidate": float(same.mean()),
                            "largest_iou_difference": float(np.abs(theirs - columns[0]).max())}
    return result


def format_table(result: ClickBenchResult) -> str:
    at_iou = f"IoU >= {result.iou:g}"
    lines = [f"{result.objects} objects on {result.photos} photos, one click each at its deepest point",
             f"{'mask kept':<36} {at_iou:>16} {'mean IoU':>9}"]
    rows = [(row.choice, row.share_at_iou, row.mean_iou) for row in result.choices]
    if result.reference is not None:
        rows.append(("reference SamPredictor, best scored", result.reference["share_at_iou"],
                     result.reference["mean_iou"]))
    for choice, share, mean in rows:
        counted = f"{round(share * result.objects)}/{result.objects} ({share:.1%})"
        lines.append(f"{choice:<36} {counted:>16} {mean:>9.3f}")
    if result.reference is not None:
        lines.append(f"the reference kept the same candidate for {result.reference['same_candidate']:.1%} of the "
                     f"clicks; largest difference in IoU with the annotation "
                     f"{result.reference['largest_iou_difference']:.4f}")
    return "\n".join(lines)


def write_json(result: ClickBenchResult, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(asdict(result), indent=2) + "\n")
