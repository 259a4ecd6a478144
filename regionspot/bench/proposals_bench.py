"""``regionspot bench proposals``: how many annotated objects SAM's automatic boxes find, and at
what cost, measured here on COCO-format photos with a real SAM checkpoint.

For each setting (an :class:`AutoProposalConfig`, written as ``key=value`` overrides): recall at
box IoU 0.5 (the share of annotated, non-crowd boxes that some proposal overlaps by IoU >= 0.5),
AR (that recall averaged over IoU 0.5, 0.55, ..., 0.95, COCO's average recall with every
proposal counted), recall at 0.5 by COCO size (small < 32², medium, large > 96² pixels of
annotated area), proposals per photo, and seconds per photo. Each photo is encoded once; the
encoder time is reported apart, and a setting's time is its proposal step alone (the point
decoding, filters, NMS and, with crop layers, the crops' own encodings).

Each photo's measurements are written as they are made (JSON lines), so a long run can be
stopped and resumed, or extended to more photos, without measuring anything twice.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from regionspot.bench.predict_bench import machine_info
from regionspot.config import apply_overrides
from regionspot.fileio import file_sha256
from regionspot.ops.boxes import box_iou_xyxy, xywh_to_xyxy
from regionspot.ops.image import load_image
from regionspot.proposals.auto import AutoProposalConfig, RegionProposer, check_auto_config

#: IoU thresholds of AR (COCO's 0.5:0.95).
AR_IOUS = np.round(np.arange(0.5, 0.951, 0.05), 2)
#: COCO's size ranges by annotated area in pixels: small < 32², medium < 96², large.
SIZE_LIMITS = {"small": (0.0, 32.0**2), "medium": (32.0**2, 96.0**2), "large": (96.0**2, float("inf"))}
#: The settings measured by default: the CPU default, SAM's own grid, and the high-recall preset.
DEFAULT_SETTINGS = ("", "points_per_side=32", "preset=recall")


@dataclass
class AnnotatedPhoto:
    """One photo's path and its non-crowd annotated boxes: float64 [N, 4] xyxy pixels, areas [N]."""

    path: Path
    boxes: np.ndarray
    areas: np.ndarray


@dataclass
class SettingResult:
    """One setting's measurements over all photos."""

    setting: str
    config: dict[str, object]
    recall_50: float
    average_recall: float
    recall_50_by_size: dict[str, float]
    boxes_per_photo: float
    max_boxes: int
    seconds_per_photo: float


@dataclass
class ProposalBenchResult:
    machine: dict[str, object]
    photos: int
    annotated_boxes: int
    encode_seconds_per_photo: float
    settings: list[SettingResult] = field(default_factory=list)


def read_annotated_photos(annotations: str | Path, images: str | Path,
                          limit: int | None = None) -> list[AnnotatedPhoto]:
    """The first ``limit`` photos by id that have at least one non-crowd annotation."""
    data = json.loads(Path(annotations).read_text())
    boxes: dict[int, list[list[float]]] = {}
    areas: dict[int, list[float]] = {}
    for annotation in data["annotations"]:
        if not annotation.get("iscrowd", 0):
            boxes.setdefault(annotation["image_id"], []).append(annotation["bbox"])
            areas.setdefault(annotation["image_id"], []).append(float(annotation["area"]))
    photos = [AnnotatedPhoto(Path(images) / image["file_name"], xywh_to_xyxy(np.asarray(boxes[image["id"]], float)),
                             np.asarray(areas[image["id"]]))
              for image in sorted(data["images"], key=lambda image: image["id"]) if image["id"] in boxes]
    return photos[:limit]


def setting_config(setting: str) -> AutoProposalConfig:
    """``"key=value,key=value"`` overrides of :class:`AutoProposalConfig` (empty: the defaults;
    ``preset=recall``: :meth:`AutoProposalConfig.high_recall`, then any further overrides)."""
    overrides = [part.strip() for part in setting.split(",") if part.strip()]
    config = AutoProposalConfig()
    if overrides and overrides[0].replace(" ", "") == "preset=recall":
        config, overrides = AutoProposalConfig.high_recall(), overrides[1:]
    return check_auto_config(apply_overrides(config, overrides))


def best_overlaps(truth: np.ndarray, proposals: np.ndarray) -> np.ndarray:
    """For each annotated box [N, 4], its best IoU with any proposal [M, 4] (0 with none)."""
    if not len(proposals):
        return np.zeros(len(truth))
    return box_iou_xyxy(truth, proposals).max(axis=1)


def summarise(setting: str, config: AutoProposalConfig, photos: Sequence[AnnotatedPhoto],
              overlaps: Sequence[np.ndarray], counts: Sequence[int], seconds: float) -> SettingResult:
    """Recall@0.5, AR and recall@0.5 by size from each photo's best overlaps per annotated box."""
    best, areas = np.concatenate(overlaps), np.concatenate([photo.areas for photo in photos])
    by_size = {name: float((best[(areas >= low) & (areas < high)] >= 0.5).mean())
               for name, (low, high) in SIZE_LIMITS.items() if ((areas >= low) & (areas < high)).any()}
    return SettingResult(
        setting=setting or "default", config=asdict(config), recall_50=float((best >= 0.5).mean()),
        average_recall=float(np.mean([(best >= iou).mean() for iou in AR_IOUS])), recall_50_by_size=by_size,
        boxes_per_photo=float(np.mean(counts)), max_boxes=int(max(counts)), seconds_per_photo=seconds / len(photos))


def record_key(photo: AnnotatedPhoto, config: AutoProposalConfig, sam: str) -> str:
    """What one record measured, so that no record is reused for anything else: the photo (its
    resolved path and a hash of its annotated boxes), the full setting, the SAM checkpoint (its
    sha256), the regionspot version and the torch threads the time was taken with."""
    from regionspot import __version__

    boxes = hashlib.sha256(np.ascontiguousarray(photo.boxes, dtype=np.float64).tobytes()).hexdigest()[:16]
    return json.dumps({"photo": str(Path(photo.path).resolve()), "boxes": boxes, "config": asdict(config),
                       "sam": sam, "regionspot": __version__, "threads": torch.get_num_threads()}, sort_keys=True)


def read_records(path: Path) -> dict[str, dict[str, Any]]:
    """Records of earlier runs by :func:`record_key`; a line cut short by a kill is ignored."""
    records: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
                records[record["key"]] = record
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # the last line of a killed run: measured again
    return records


def run_proposal_bench(sam_checkpoint: str | Path, photos: Sequence[AnnotatedPhoto], settings: Sequence[str],
                       records_path: str | Path, progress: bool = True,
                       log: Callable[[str], None] = print) -> ProposalBenchResult:
    """Per photo: encode it once with the SAM checkpoint, then time and score each setting on it.

    Each (photo, setting) measurement is appended to ``records_path`` (JSON lines) as it is made,
    and measurements found there are not made again: a killed run resumes where it stopped, and a
    larger ``photos`` list extends an earlier run. Only one photo is held in memory at a time."""
    if not photos:
        raise ValueError("no annotated photos to measure on")
    configs = [setting_config(setting) for setting in settings]  # bad settings fail before any work
    path = Path(records_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    records, sam = read_records(path), file_sha256(Path(sam_checkpoint))
    todo = [photo for photo in photos if any(record_key(photo, c, sam) not in records for c in configs)]
    if len(todo) < len(photos):
        log(f"{len(photos) - len(todo)} of {len(photos)} photos already measured in {path}")
    if todo:
        _measure(sam_checkpoint, todo, configs, sam, records, path, progress)
    rows = [[records[record_key(photo, config, sam)] for photo in photos] for config in configs]
    result = ProposalBenchResult(
        machine=machine_info(), photos=len(photos), annotated_boxes=int(sum(len(photo.boxes) for photo in photos)),
        encode_seconds_per_photo=float(np.mean([record["encode_seconds"] for record in rows[0]])))
    for setting, config, measured in zip(settings, configs, rows, strict=True):
        result.settings.append(summarise(setting, config, photos,
                                         [np.asarray(record["overlaps"], float) for record in measured],
                                         [int(record["boxes"]) for record in measured],
                                         float(sum(record["seconds"] for record in measured))))
        log(format_row(result.settings[-1]))
    return result


def _measure(sam_checkpoint: str | Path, photos: Sequence[AnnotatedPhoto], configs: Sequence[AutoProposalConfig],
             sam: str, records: dict[str, dict[str, Any]], path: Path, progress: bool) -> None:
    """Measure the settings missing from ``records`` on each photo, appending each record to ``path``."""
    from regionspot.backbones.sam import build_region_tokenizer
    from regionspot.config import SamBackboneConfig

    tokenizer = build_region_tokenizer(SamBackboneConfig(name_or_path=str(sam_checkpoint)))
    proposer = RegionProposer(tokenizer)
    with path.open("a+") as out, torch.inference_mode():
        if out.tell() and (out.seek(out.tell() - 1), out.read(1))[1] != "\n":
            out.write("\n")  # end the line a killed run left half written
        for photo in tqdm(photos, desc="photos", unit="photo", disable=not progress):
            image = load_image(photo.path)
            start = time.perf_counter()
            embedding = tokenizer.encode_image(image)
            encode_seconds = time.perf_counter() - start
            for config in configs:
                key = record_key(photo, config, sam)
                if key in records:
                    continue
                start = time.perf_counter()
                proposals = proposer(embedding, config, image=image)
                records[key] = {"key": key, "encode_seconds": encode_seconds, "boxes": len(proposals),
                                "seconds": time.perf_counter() - start,
                                "overlaps": best_overlaps(photo.boxes, proposals.boxes).tolist()}
                out.write(json.dumps(records[key]) + "\n")
                out.flush()


def format_row(row: SettingResult, width: int = 44) -> str:
    """One setting's line of the table; ``width``: characters of the setting's column."""
    sizes = " ".join(f"{row.recall_50_by_size.get(name, float('nan')):.3f}" for name in SIZE_LIMITS)
    return (f"{row.setting:<{width}} {row.recall_50:>9.3f} {row.average_recall:>6.3f} {sizes:>20} "
            f"{row.boxes_per_photo:>7.1f} {row.max_boxes:>5d} {row.seconds_per_photo:>8.2f}")


def format_table(result: ProposalBenchResult) -> str:
    width = max([44, *(len(row.setting) for row in result.settings)])
    header = (f"{'setting':<{width}} {'recall@.5':>9} {'AR':>6} {'small medium large':>20} {'boxes':>7} {'max':>5} "
              f"{'s/photo':>8}")
    lines = [f"{result.photos} photos, {result.annotated_boxes} annotated boxes; SAM image encoder "
             f"{result.encode_seconds_per_photo:.2f} s/photo (not included below)", header]
    return "\n".join([*lines, *(format_row(row, width) for row in result.settings)])


def write_json(result: ProposalBenchResult, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(asdict(result), indent=2) + "\n")
