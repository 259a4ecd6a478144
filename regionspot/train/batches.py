"""Turning a step's share of images into the tensors the fusion head trains on.

Every random choice (augmentation, region subsampling, negative names) comes from a generator
seeded by (seed, step, dataset, image), so a step's batch is the same after a resume and
whichever process of a data-parallel run builds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from regionspot.backbones.protocols import ImageMemoryEncoder, RegionTokenizer
from regionspot.datasets.augment import AugmentParams, augment_boxes, augment_image, draw_augment, identity_augment
from regionspot.datasets.coco_format import CocoDataset, ImageRecord
from regionspot.datasets.mixture import STREAM_AUGMENT, STREAM_VOCABULARY, derive_rng
from regionspot.datasets.vocab_sampling import sample_vocabulary
from regionspot.model.fusion import pad_regions
from regionspot.train.config import AugmentConfig

if TYPE_CHECKING:
    from regionspot.cache.memory_cache import MemoryCache
    from regionspot.cache.token_cache import TokenCache


@dataclass
class DataSource:
    """A dataset with what the trainer needs to read it: optional token and memory caches."""

    dataset: CocoDataset
    max_vocabulary: int | None = None
    token_cache: TokenCache | None = None
    memory_cache: MemoryCache | None = None


@dataclass
class RegionBatch:
    """Padded regions of B images, scored against ``vocabulary`` (dataset indices, [N]).

    ``tokens`` [B, R, D]; ``padding`` [B, R] bool (True = no region); ``memory`` [B, T, W] or
    None; ``targets`` [B, R] int64 index into ``vocabulary`` (-1 on padding)."""

    tokens: torch.Tensor
    padding: torch.Tensor
    memory: torch.Tensor | None
    targets: torch.Tensor
    vocabulary: np.ndarray
    num_regions: int


@dataclass
class ImageRegions:
    tokens: torch.Tensor      # [R, D]
    labels: np.ndarray        # [R] dataset vocabulary indices
    image: np.ndarray | None  # the augmented image, when the CLIP tower needs it


@dataclass(frozen=True)
class PlannedRegions:
    """What augmentation does to one image: its parameters, the kept boxes in the augmented
    image (float32 [K, 4] xyxy) and their indices into the record's boxes (int [K])."""

    params: AugmentParams
    boxes: np.ndarray
    chosen: np.ndarray


def plan_regions(record: ImageRecord, rng: np.random.Generator, augment: AugmentConfig | None,
                 max_regions: int) -> PlannedRegions:
    """Draw the augmentation of one image and the boxes that survive it (at most
    ``max_regions``, a random subset). Needs only the record, not the image, so every process
    can plan the whole global batch cheaply. ``augment`` None: the image as it is."""
    size = (record.height, record.width)
    params = identity_augment(size) if augment is None else draw_augment(rng, size, augment)
    boxes, keep = augment_boxes(record.boxes, size, params)
    if not keep.any():  # the crop lost every box: use the whole image instead
        params = identity_augment(size)
        boxes, keep = augment_boxes(record.boxes, size, params)
    chosen = np.flatnonzero(keep)
    if len(chosen) > max_regions:
        subset = np.sort(rng.choice(len(chosen), size=max_regions, replace=False))
        chosen, boxes = chosen[subset], boxes[subset]
    return PlannedRegions(params, boxes, chosen)


def regions_of_image(source: DataSource, record: ImageRecord, planned: PlannedRegions,
                     tokenizer: RegionTokenizer | None, needs_image: bool) -> ImageRegions:
    """The planned boxes' SAM tokens (from the cache of the planned flip state, or by running
    SAM on the augmented image), their labels, and the augmented image when CLIP needs it."""
    token_cache = source.token_cache
    image = None
    if needs_image or token_cache is None:
        image = augment_image(source.dataset.load_image(record), planned.params)
    if token_cache is not None:
        all_tokens, annotation_ids = token_cache.tokens(record.image_id, planned.params.flip)
        if not np.array_equal(annotation_ids, record.annotation_ids):
            raise ValueError(f"token cache does not match the annotations of image {record.image_id} "
                             f"({source.dataset.name}); re-run regionspot extract-tokens")
        tokens = all_tokens[torch.as_tensor(planned.chosen)]
    else:
        assert tokenizer is not None and image is not None
        embedding = tokenizer.encode_image(image)
        tokens = tokenizer.encode_regions(embedding, torch.as_tensor(planned.boxes, dtype=torch.float32),
                                          with_masks=False).tokens
    return ImageRegions(tokens=tokens.float().cpu(), labels=record.labels[planned.chosen],
                        image=image if needs_image else None)


def build_batch(source: DataSource, batch_indices: Sequence[int], positions: Sequence[int], *, seed: int,
                step: int, augment: AugmentConfig | None, tokenizer: RegionTokenizer | None,
                image_encoder: ImageMemoryEncoder | None, max_regions: int, device: torch.device) -> RegionBatch:
    """This process's share (``positions`` in the global batch ``batch_indices`` of ``source``)
    at ``step``. Randomness is keyed by position in the global batch, and the names scored
    are drawn from the positives of the whole global batch, so the batch does not depend on
    how many processes share it."""
    planned = [plan_regions(source.dataset[index], derive_rng(seed, step, STREAM_AUGMENT, position), augment,
                            max_regions) for position, index in enumerate(batch_indices)]
    use_memory_cache = source.memory_cache is not None
    needs_image = image_encoder is not None and not use_memory_cache
    mine = [(batch_indices[p], planned[p]) for p in positions]
    images = [regions_of_image(source, source.dataset[i], plan, tokenizer, needs_image) for i, plan in mine]
    tokens, padding = pad_regions([r.tokens for r in images])
    chosen_labels = [source.dataset[i].labels[plan.chosen] for i, plan in zip(batch_indices, planned, strict=True)]
    all_labels = np.concatenate(chosen_labels)
    vocabulary, _ = sample_vocabulary(all_labels, len(source.dataset.names), source.max_vocabulary,
                                      derive_rng(seed, step, STREAM_VOCABULARY))
    labels = np.concatenate([r.labels for r in images])
    targets = torch.full(padding.shape, -1, dtype=torch.long)
    targets[~padding] = torch.as_tensor(np.searchsorted(vocabulary, labels), dtype=torch.long)
    memory = None
    if image_encoder is not None:
        if source.memory_cache is not None:
            memory = torch.stack([source.memory_cache.memory(source.dataset[i].image_id) for i, _ in mine])
        else:  # needs_image held: every ImageRegions carries its augmented image
            pixels = torch.stack([image_encoder.preprocess(r.image) for r in images if r.image is not None])
            memory = image_encoder.encode_image(pixels.to(device))
        memory = memory.to(device)
    return RegionBatch(tokens=tokens.to(device), padding=padding.to(device), memory=memory,
                       targets=targets.to(device), vocabulary=vocabulary, num_regions=len(labels))
