"""The images of a run and the boxes each one is asked about.

An :class:`ImageJob` is one image: from a COCO/LVIS annotation (id, file, size, ground-truth
boxes) or from a folder (no ground truth). A :class:`BoxSource` gives an image's boxes: the
annotation's non-crowd boxes (``gt``), SAM point-grid proposals (``auto``) or a proposals file.
Boxes are float64 [N, 4] xyxy absolute pixels; proposal scores float64 [N] (None: all 1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from regionspot.backbones.protocols import SamImageEmbedding
from regionspot.datasets.coco_format import DatasetError, image_file_name
from regionspot.eval.protocol import ground_truth_boxes
from regionspot.ops.image import load_image
from regionspot.proposals.auto import AutoProposalConfig, propose_regions

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class ImageJob:
    """One image to run: ``gt_boxes`` float64 [G, 4] xyxy (non-crowd) or None for a folder."""

    image_id: int
    file_name: str
    path: Path
    height: int
    width: int
    gt_boxes: np.ndarray | None = None

    def load(self) -> np.ndarray:
        """The photo as HxWx3 uint8; DatasetError when its size is not the annotation's."""
        image = load_image(self.path)
        if image.shape[:2] != (self.height, self.width):
            raise DatasetError(f"{self.path} is {image.shape[1]}x{image.shape[0]} but the annotation says "
                               f"{self.width}x{self.height}")
        return image


def default_image_folder(annotations: Path, images: str | None) -> Path:
    """``images`` when given, else the ``images`` folder beside the annotation file (the
    coco-sample layout); DatasetError asking for ``--images`` when there is none."""
    if images is not None:
        folder = Path(images)
        if not folder.is_dir():
            raise DatasetError(f"image folder not found: {folder}")
        return folder
    beside = annotations.parent / "images"
    if not beside.is_dir():
        raise DatasetError(f"no image folder given and {beside} does not exist: pass --images DIR")
    return beside


def dataset_jobs(document: Mapping[str, Any], folder: Path, max_images: int | None = None, *,
                 listed_categories_only: bool = False) -> list[ImageJob]:
    """The annotation's images in increasing id order (the first ``max_images`` when given),
    each with its non-crowd boxes; with ``listed_categories_only`` only the boxes of categories
    the file lists (an evaluation leaves the others out, so it does not ask about their boxes
    either). Raises DatasetError naming the first missing image files."""
    listed = {int(category["id"]) for category in document["categories"]}
    per_image: dict[int, list[Mapping[str, Any]]] = {}
    for annotation in document["annotations"]:
        if not listed_categories_only or int(annotation["category_id"]) in listed:
            per_image.setdefault(int(annotation["image_id"]), []).append(annotation)
    images = sorted(document["images"], key=lambda image: int(image["id"]))[:max_images]
    jobs = [ImageJob(image_id=int(image["id"]), file_name=image_file_name(image),
                     path=folder / image_file_name(image), height=int(image["height"]), width=int(image["width"]),
                     gt_boxes=ground_truth_boxes(per_image.get(int(image["id"]), [])))
            for image in images]
    check_files_exist(jobs, folder)
    return jobs


def check_files_exist(jobs: Sequence[ImageJob], folder: Path) -> None:
    """DatasetError naming up to five missing image files (and how many are missing)."""
    missing = [job.file_name for job in jobs if not job.path.is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise DatasetError(f"{len(missing)} of {len(jobs)} images are missing from {folder}: {shown}")


def folder_jobs(folder: Path, max_images: int | None = None) -> list[ImageJob]:
    """The image files directly in ``folder`` (by name), without ground truth. Image ids are the
    digits of the file names when every name has digits and they differ, else 1, 2, ... in name
    order. Sizes are read from the file headers."""
    if not folder.is_dir():
        raise DatasetError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DatasetError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    files = files[:max_images]
    digits = ["".join(ch for ch in p.stem if ch.isdigit()) for p in files]
    use_digits = all(digits) and len({int(d) for d in digits}) == len(files)
    jobs = []
    for number, (path, text) in enumerate(zip(files, digits, strict=True), start=1):
        width, height = _header_size(path)
        jobs.append(ImageJob(image_id=int(text) if use_digits else number, file_name=path.name, path=path,
                             height=height, width=width))
    return jobs


def _header_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image header, EXIF rotation applied as load_image does."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)
    except OSError as exc:
        raise DatasetError(f"cannot read image {path}: {exc}") from None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def images_table(jobs: Sequence[ImageJob]) -> list[dict[str, Any]]:
    """The jobs as an annotation ``images`` list (id, file_name, height, width)."""
    return [{"id": job.image_id, "file_name": job.file_name, "height": job.height, "width": job.width}
            for job in jobs]


class BoxSource:
    """The boxes of an image: ``gt``, ``auto`` or a proposals file (see the module docstring).

    ``jobs``: the images (a file's keys must name them; the file is read here, so a bad file
    fails before any model loads). ``auto`` needs ``auto_config`` and, by the first ``boxes``
    call, ``tokenizer`` (the model's SAM region tokenizer).
    """

    def __init__(self, spec: str, jobs: Sequence[ImageJob], *, auto_config: AutoProposalConfig | None = None,
                 tokenizer: Any = None) -> None:
        from regionspot.eval.proposal_files import read_proposal_file

        self.spec = spec
        self.kind = spec if spec in ("gt", "auto") else "file"
        self.tokenizer = tokenizer
        self.auto_config = auto_config
        if self.kind == "gt" and any(job.gt_boxes is None for job in jobs):
            raise DatasetError("--boxes gt needs an annotation file (--data); a folder of images has no "
                               "ground-truth boxes: use --boxes auto or a proposals file")
        self.proposals = read_proposal_file(spec, images_table(jobs)) if self.kind == "file" else None

    def describe(self) -> str:
        """The source in words, for a report."""
        return {"gt": "ground-truth boxes (non-crowd annotations), proposal score 1",
                "auto": "auto proposals (SAM point grid, score = SAM's predicted IoU)"}.get(
            self.kind, f"proposals file {self.spec} (score = the file's box score, 1 where absent)")

    def boxes(self, job: ImageJob, image: np.ndarray, sam_embedding: SamImageEmbedding | None = None
              ) -> tuple[np.ndarray, np.ndarray | None, SamImageEmbedding | None]:
        """(boxes float64 [N, 4] xyxy, proposal scores [N] or None for ground truth, and the
        image's SAM encoding when making the boxes needed one: auto proposals; else None).
        ``sam_embedding``: the image's SAM encoding, when the caller has it (not made again)."""
        if self.kind == "gt":
            assert job.gt_boxes is not None
            return job.gt_boxes, None, None
        if self.kind == "auto":
            if self.tokenizer is None:
                raise RuntimeError("auto proposals need the SAM tokenizer: set BoxSource.tokenizer")
            with torch.inference_mode():
                embedding = sam_embedding if sam_embedding is not None else self.tokenizer.encode_image(image)
                proposals = propose_regions(self.tokenizer, embedding, self.auto_config)
            return proposals.boxes, proposals.scores, embedding
        assert self.proposals is not None
        found = self.proposals.get(job.image_id)
        return (found.boxes, found.scores, None) if found is not None else (np.zeros((0, 4)), np.zeros(0), None)
