"""Turning a step's share of images into the tensors the fusion head trains on.

Every random choice (augmentation, region subsampling, negative names) comes from a generator
seeded by (seed, step, dataset, image), so a step's batch is the same after a resume and
whichever process of a data-parallel run builds it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from regionspot.backbones.protocols import ImageMemoryEncoder, RegionTokenizer
from regionspot.datasets.augment import AugmentParams, augment_boxes, augment_image, draw_augment, identity_augment
from regionspot.datasets.coco_format import CocoDataset, ImageRecord
from regionspot.datasets.mixture import STREAM_AUGMENT, STREAM_VOCABULARY, derive_rng, plan_batch
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


@dataclass
class PreparedImage:
    """One image's CPU work, done ahead (in a DataLoader worker when the trainer has them):
    ``tokens`` [K, D] from the token cache, or None to run SAM on ``image`` (the augmented image)
    in the main process; ``boxes`` float32 [K, 4] in the augmented image; ``labels`` [K];
    ``pixels`` [3, S, S], the augmented image preprocessed for an online CLIP tower, or None."""

    tokens: torch.Tensor | None
    image: np.ndarray | None
    boxes: np.ndarray
    labels: np.ndarray
    pixels: torch.Tensor | None

    def pin_memory(self) -> PreparedImage:
        """The same, its tensors in pinned memory (a DataLoader calls this for a GPU)."""
        return dataclasses.replace(self, tokens=None if self.tokens is None else self.tokens.pin_memory(),
                                   pixels=None if self.pixels is None else self.pixels.pin_memory())


@dataclass
class PreparedBatch:
    """A step's share, everything done that needs no model: its images, the names scored
    (``vocabulary``) and the cached CLIP memories [B, T, W] (or None)."""

    images: list[PreparedImage]
    vocabulary: np.ndarray
    memory: torch.Tensor | None

    def pin_memory(self) -> PreparedBatch:
        """The same, its tensors in pinned memory (a DataLoader calls this for a GPU)."""
        return PreparedBatch(images=[image.pin_memory() for image in self.images], vocabulary=self.vocabulary,
                             memory=None if self.memory is None else self.memory.pin_memory())


def prepare_image(source: DataSource, record: ImageRecord, planned: PlannedRegions, needs_image: bool,
                  preprocess: Callable[[np.ndarray], torch.Tensor] | None) -> PreparedImage:
    """The planned boxes' cached SAM tokens (of the planned flip state), or the augmented image
    to run SAM on; the augmented image's CLIP pixels when ``preprocess`` (an online CLIP tower)."""
    token_cache = source.token_cache
    image = None
    if needs_image or token_cache is None:
        image = augment_image(source.dataset.load_image(record), planned.params)
    tokens = None
    if token_cache is not None:
        all_tokens, annotation_ids = token_cache.tokens(record.image_id, planned.params.flip)
        if not np.array_equal(annotation_ids, record.annotation_ids):
            raise ValueError(f"token cache does not match the annotations of image {record.image_id} "
                             f"({source.dataset.name}); re-run regionspot extract-tokens")
        tokens = all_tokens[torch.as_tensor(planned.chosen)].float()
    pixels = preprocess(image) if preprocess is not None and image is not None else None
    return PreparedImage(tokens=tokens, image=image if tokens is None else None, boxes=planned.boxes,
                         labels=record.labels[planned.chosen], pixels=pixels)


def prepare_batch(source: DataSource, batch_indices: Sequence[int], positions: Sequence[int], *, seed: int,
                  step: int, augment: AugmentConfig | None, max_regions: int,
                  preprocess: Callable[[np.ndarray], torch.Tensor] | None, uses_memory: bool) -> PreparedBatch:
    """This process's share (``positions`` in the global batch ``batch_indices`` of ``source``)
    at ``step``, before any model runs. Randomness is keyed by position in the global batch, and
    the names scored are drawn from the positives of the whole global batch, so the batch does
    not depend on how many processes share it nor on which worker prepares it. ``preprocess``:
    the online CLIP tower's (None with a memory cache or without CLIP vision); ``uses_memory``:
    the head has CLIP vision (memories come from the cache when there is one)."""
    planned = [plan_regions(source.dataset[index], derive_rng(seed, step, STREAM_AUGMENT, position), augment,
                            max_regions) for position, index in enumerate(batch_indices)]
    mine = [(batch_indices[p], planned[p]) for p in positions]
    cached_memory = uses_memory and source.memory_cache is not None
    needs_image = uses_memory and not cached_memory
    images = [prepare_image(source, source.dataset[i], plan, needs_image, None if cached_memory else preprocess)
              for i, plan in mine]
    chosen_labels = [source.dataset[i].labels[plan.chosen] for i, plan in zip(batch_indices, planned, strict=True)]
    vocabulary, _ = sample_vocabulary(np.concatenate(chosen_labels), len(source.dataset.names), source.max_vocabulary,
                                      derive_rng(seed, step, STREAM_VOCABULARY))
    memory = None
    if cached_memory:
        assert source.memory_cache is not None
        memory = torch.stack([source.memory_cache.memory(source.dataset[i].image_id) for i, _ in mine])
    return PreparedBatch(images=images, vocabulary=vocabulary, memory=memory)


def finish_batch(prepared: PreparedBatch, tokenizer: RegionTokenizer | None,
                 image_encoder: ImageMemoryEncoder | None, device: torch.device) -> RegionBatch:
    """The model's part of a batch, in the main process: SAM on the images without cached tokens,
    the online CLIP tower on the prepared pixels, padding, and the move to ``device``."""
    token_lists = []
    for item in prepared.images:
        if item.tokens is not None:
            token_lists.append(item.tokens)
            continue
        assert tokenizer is not None and item.image is not None
        embedding = tokenizer.encode_image(item.image)
        token_lists.append(tokenizer.encode_regions(embedding, torch.as_tensor(item.boxes, dtype=torch.float32),
                                                    with_masks=False).tokens.float().cpu())
    tokens, padding = pad_regions(token_lists)
    labels = np.concatenate([item.labels for item in prepared.images])
    targets = torch.full(padding.shape, -1, dtype=torch.long)
    targets[~padding] = torch.as_tensor(np.searchsorted(prepared.vocabulary, labels), dtype=torch.long)
    memory = prepared.memory
    if image_encoder is not None and memory is None:
        pixels = torch.stack([item.pixels for item in prepared.images if item.pixels is not None])
        memory = image_encoder.encode_image(pixels.to(device))
    return RegionBatch(tokens=tokens.to(device), padding=padding.to(device),
                       memory=None if memory is None else memory.to(device),
                       targets=targets.to(device), vocabulary=prepared.vocabulary, num_regions=len(labels))


def build_batch(source: DataSource, batch_indices: Sequence[int], positions: Sequence[int], *, seed: int,
                step: int, augment: AugmentConfig | None, tokenizer: RegionTokenizer | None,
                image_encoder: ImageMemoryEncoder | None, max_regions: int, device: torch.device) -> RegionBatch:
    """:func:`prepare_batch` then :func:`finish_batch`, in this process."""
    prepared = prepare_batch(source, batch_indices, positions, seed=seed, step=step, augment=augment,
                             max_regions=max_regions, uses_memory=image_encoder is not None,
                             preprocess=None if image_encoder is None else image_encoder.preprocess)
    return finish_batch(prepared, tokenizer, image_encoder, device)


@dataclass
class StepPreparer:
    """``preparer(step)`` -> (dataset index, :class:`PreparedBatch`) of the training step: the
    step's global batch drawn from the dataset mixture, this process's ``positions`` of it
    prepared. A plain object of data (no model), so DataLoader workers can run it."""

    sources: list[DataSource]
    seed: int
    batch_size: int
    ratios: list[float]
    augment: AugmentConfig | None
    max_regions: int
    positions: Sequence[int]
    preprocess: Callable[[np.ndarray], torch.Tensor] | None
    uses_memory: bool

    def __call__(self, step: int) -> tuple[int, PreparedBatch]:
        plan = plan_batch(self.seed, step, [len(s.dataset) for s in self.sources], self.ratios, self.batch_size)
        prepared = prepare_batch(self.sources[plan.dataset_index], plan.image_indices, self.positions, seed=self.seed,
                                 step=step, augment=self.augment, max_regions=self.max_regions,
                                 preprocess=self.preprocess, uses_memory=self.uses_memory)
        return plan.dataset_index, prepared
