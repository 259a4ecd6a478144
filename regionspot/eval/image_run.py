"""One image through a region classifier (RegionSpot or a CLIP baseline): its boxes from
ground truth, a proposals file or auto proposals, its (box, category) pairs turned into COCO
detections by the protocol of :mod:`regionspot.eval.protocol`.
:mod:`regionspot.eval.runner` runs this over a dataset or folder, split across processes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from regionspot.eval.config import EvalConfig, ProtocolConfig
from regionspot.eval.jobs import BoxSource, ImageJob
from regionspot.eval.protocol import classes_per_box, pairs_to_coco, select_pairs, usable_boxes
from regionspot.ops.masks import encode_rle
from regionspot.processes import DistributedContext
from regionspot.results import RegionResult

if TYPE_CHECKING:
    from regionspot.eval.methods import RegionClassifier
    from regionspot.model.loader import Model

EXAMPLE_REGIONS = 20


@dataclass
class ImageOutput:
    """What one image gives (written to its process's shard, see :mod:`regionspot.eval.output_shards`).

    ``detections``: COCO results of its kept pairs. ``boxes`` / ``skipped_boxes``: boxes
    classified / dropped as under one pixel or non-finite. ``example``: (image HxWx3 uint8, its
    best regions) for the first few images. ``document``: per-image JSON for predict-batch.
    """

    image_id: int
    detections: list[dict[str, Any]] = field(default_factory=list)
    boxes: int = 0
    skipped_boxes: int = 0
    seconds: float = 0.0
    example: tuple[np.ndarray, RegionResult] | None = None
    document: dict[str, Any] | None = None


@dataclass
class RunSetup:
    """Everything :func:`process_image` needs besides the image. ``category_ids[i]`` is the
    dataset id of ``vocabulary[i]``; ``example_ids``: images whose result is kept for drawing;
    ``documents``: also build predict-batch's per-image JSON. ``stored_pairs``: keep only an
    image's first (best) pairs of the protocol's ``pairs_per_image`` (see
    :func:`regionspot.eval.protocol.stored_pairs`); None: all."""

    classifier: RegionClassifier
    box_source: BoxSource
    vocabulary: list[str]
    category_ids: list[int]
    protocol: ProtocolConfig
    masks: bool
    example_ids: frozenset[int] = frozenset()
    documents: bool = False
    stored_pairs: int | None = None

    @property
    def classes_per_box(self) -> int:
        return classes_per_box(len(self.vocabulary), self.protocol.pairs_per_image, self.protocol.pairs_per_box)


def image_workers(config: EvalConfig, device: torch.device) -> int:
    """``config.image_workers``, or by default 2 on a GPU and 0 on the CPU (see EvalConfig)."""
    if config.image_workers is not None:
        return config.image_workers
    return 2 if device.type == "cuda" else 0


def image_batch(config: EvalConfig, device: torch.device) -> int:
    """``config.image_batch``, or by default 8 on a GPU and 1 on the CPU (see EvalConfig)."""
    if config.image_batch is not None:
        return config.image_batch
    return 8 if device.type == "cuda" else 1


def load_job_image(job: ImageJob) -> np.ndarray:
    """The job's photo, HxWx3 uint8 (run ahead in background workers by the runs)."""
    return job.load()


def process_images(jobs: list[ImageJob], images: list[np.ndarray], setup: RunSetup) -> list[ImageOutput]:
    """:func:`process_image` of each job and its decoded image; with several, both image towers
    first run once on all of them (the classifier's ``encode_many``)."""
    start = time.perf_counter()
    encoded: list[Any] = setup.classifier.encode_many(images) if len(images) > 1 else [None] * len(images)
    share = (time.perf_counter() - start) / len(images)  # each image's part of the batch's encoding
    outputs = [process_image(job, image, setup, encoded=one) for job, image, one in zip(jobs, images, encoded,
                                                                                           strict=True)]
    for output in outputs:
        output.seconds += share
    return outputs


def process_image(job: ImageJob, image: np.ndarray, setup: RunSetup, encoded: Any = None) -> ImageOutput:
    """The decoded ``image`` of ``job``: its boxes -> classifier -> the image's best pairs as
    COCO detections. ``encoded``: the image already through both towers (``encode_many``)."""
    start = time.perf_counter()
    output = ImageOutput(job.image_id)
    result, scores = classify_image(job, image, setup, output, encoded)
    if result is not None:
        weights = scores if setup.protocol.proposal_scores else None
        pairs = select_pairs(result.topk_ids, result.topk_scores, weights,
                             setup.stored_pairs or setup.protocol.pairs_per_image, setup.protocol.pairs_per_box)
        rles = encode_rle(result.masks) if result.masks is not None else None
        output.detections = pairs_to_coco(job.image_id, result.boxes, pairs, setup.category_ids, rles)
        if job.image_id in setup.example_ids:
            output.example = (image, best_regions(result, weights, EXAMPLE_REGIONS))
        if setup.documents:
            output.document = image_document(job, result, scores, setup.masks, setup.classifier.name)
    output.seconds = time.perf_counter() - start
    return output


def classify_image(job: ImageJob, image: np.ndarray, setup: RunSetup, output: ImageOutput, encoded: Any = None
                   ) -> tuple[RegionResult | None, np.ndarray | None]:
    """(the classifier's result on the image's usable boxes, their proposal scores [R] or None
    for ground truth); (None, None) when no box is usable. Counts boxes into ``output``."""
    photo_embedding = None  # SAM's encoding of the photo itself, when the towers' frame is the photo
    if encoded is not None and tuple(encoded.sam.original_size) == tuple(image.shape[:2]):
        photo_embedding = encoded.sam
    boxes, proposal_scores, sam_embedding = setup.box_source.boxes(job, image, photo_embedding)  # SAM encodes once
    usable = usable_boxes(boxes, (job.height, job.width))
    output.boxes, output.skipped_boxes = len(usable), len(boxes) - len(usable)
    if not len(usable):
        return None, None
    scores = None if proposal_scores is None else np.asarray(proposal_scores, dtype=np.float64)[usable]
    boxes = np.asarray(boxes, dtype=np.float64)[usable]
    result = setup.classifier.classify(image, boxes, setup.vocabulary, setup.classes_per_box, setup.masks,
                                       sam_embedding=sam_embedding, encoded=encoded)
    return result, scores


def best_regions(result: RegionResult, weights: np.ndarray | None, count: int) -> RegionResult:
    """The ``count`` regions with the best top-1 final score (class x proposal score)."""
    final = result.scores * (1.0 if weights is None else weights)
    return result[np.argsort(-final, kind="stable")[:count]]


def image_document(job: ImageJob, result: RegionResult, proposal_scores: np.ndarray | None,
                   masks: bool, method: str) -> dict[str, Any]:
    """predict-batch's JSON for one image: ``regionspot predict``'s document (with the ``method``
    that named the regions) plus the image id and file, and each region's proposal score
    (``box_score``) when the boxes have one."""
    document = {"model": {"method": method}, **result.to_dict(include_masks=masks)}
    document["image"].update(id=job.image_id, file=job.file_name)
    if proposal_scores is not None:
        for region, score in zip(document["regions"], proposal_scores.tolist(), strict=True):
            region["box_score"] = float(score)
    return document


def build_setup(config: EvalConfig, model: Model, box_source: BoxSource, jobs: list[ImageJob],
                vocabulary: list[str], category_ids: list[int], *, documents: bool = False) -> RunSetup:
    """The classifier of ``config.method`` (None: the model's own) on ``model``, ``box_source``
    (given the model's SAM tokenizer for auto proposals), and the first ``config.examples``
    images as examples."""
    from regionspot.eval.methods import build_classifier

    classifier = build_classifier(config.method or model.method, model, prompt=config.prompt)
    box_source.tokenizer = model.region_tokenizer
    return RunSetup(classifier=classifier, box_source=box_source, vocabulary=vocabulary, category_ids=category_ids,
                    protocol=config.protocol, masks=config.masks, documents=documents,
                    example_ids=frozenset(job.image_id for job in jobs[:config.examples]))


def load_for_run(config: EvalConfig, ctx: DistributedContext) -> Model:
    """``config.model`` on this process's device (only rank 0 says what it loaded)."""
    from regionspot.model.loader import load, stderr_log

    return load(config.model, device=ctx.device, log=stderr_log if ctx.is_main else None)


def single_process(device: str | torch.device = "cpu") -> DistributedContext:
    """The context of a run without ``torchrun``."""
    return DistributedContext(rank=0, world_size=1, local_rank=0, device=torch.device(device), backend=None)


@dataclass
class RunTally:
    """Totals over a run's images, added one output at a time (the outputs need not be kept):
    boxes classified and skipped, images without boxes, detections, and the seconds spent on them."""

    images: int = 0
    boxes_classified: int = 0
    boxes_skipped: int = 0
    images_without_boxes: int = 0
    detections: int = 0
    seconds: float = 0.0

    def add(self, output: ImageOutput) -> None:
        self.images += 1
        self.boxes_classified += output.boxes
        self.boxes_skipped += output.skipped_boxes
        self.images_without_boxes += output.boxes == 0
        self.detections += len(output.detections)
        self.seconds += output.seconds

    def counts(self) -> dict[str, int]:
        return {"images": self.images, "boxes_classified": self.boxes_classified, "boxes_skipped": self.boxes_skipped,
                "images_without_boxes": self.images_without_boxes, "detections": self.detections}

    def timing(self, **phases: float) -> dict[str, float]:
        """Wall seconds of each phase, their total, and the mean seconds per image (summed over
        processes, so the per-process cost of one image)."""
        return {**{f"{k}_s": round(v, 3) for k, v in phases.items()}, "total_s": round(sum(phases.values()), 3),
                "per_image_s": round(self.seconds / max(self.images, 1), 4)}
