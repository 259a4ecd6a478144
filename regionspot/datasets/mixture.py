"""Which images each training step uses: a pure function of (seed, step).

A step's GLOBAL batch comes from one dataset, chosen with probability proportional to its
sampling ratio, and is scored against that dataset's vocabulary. Data-parallel processes all
compute the same :class:`BatchPlan` and each takes its contiguous part (:func:`rank_slice`), so
1 or N processes see the same images, and a run resumed at step ``s`` continues exactly where
a killed run stopped. No global random state is used anywhere: every generator comes from
:func:`derive_rng`.

Sampling scheme (epoch-style, without replacement):

* Dataset choice: step ``s`` draws from a generator of (seed, block ``s // 1024``): one uniform
  number per step of the block, mapped through the cumulative ratios.
* Image choice: if dataset ``d`` was chosen by ``k`` earlier steps, this is its ``k``-th batch.
  Each epoch of ``d`` is a fresh permutation of its ``N`` images (a generator of (seed, d,
  epoch)) cut into ``N // batch_size`` batches; the ``N % batch_size`` images at the end of a
  permutation are left out of that epoch only (drop-last, each epoch a different remainder).
  So within a batch indices are distinct, and every image is used once per epoch.
* A dataset smaller than the batch (``N < batch_size``): batch ``k`` concatenates fresh
  permutations of all ``N`` images (generators of (seed, d, k)) to fill ``batch_size``; every
  image appears ``batch_size // N`` or one more times.

Counting ``k`` replays the dataset choices of earlier steps; they are memoised per block, so a
plan costs microseconds once the blocks before it have been computed (a first call at step
450k computes ~440 small blocks, plus one epoch permutation: tens of milliseconds for a
dataset of 1.7M images). The memo only saves time (and is guarded by a lock for threads):
results never depend on it. Changing the seed, the ratios or a dataset size changes the plans.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "STREAM_AUGMENT",
    "STREAM_DATASET",
    "STREAM_EPOCH",
    "STREAM_VOCABULARY",
    "BatchPlan",
    "derive_rng",
    "plan_batch",
    "rank_range",
    "rank_slice",
]

# Independent random streams derived from the same (seed, step): the first key after the step.
STREAM_DATASET = 0
STREAM_EPOCH = 1
STREAM_AUGMENT = 2
STREAM_VOCABULARY = 3

_BLOCK = 1024
_MAX_PREFIX_TABLES = 16


@dataclass(frozen=True)
class BatchPlan:
    """One step's global batch: ``image_indices`` index records of dataset ``dataset_index``."""

    dataset_index: int
    image_indices: tuple[int, ...]


def derive_rng(seed: int, step: int, *keys: int) -> np.random.Generator:
    """A fresh generator that is a pure function of ``(seed, step, *keys)``.

    Use a ``STREAM_*`` constant as the first key so streams do not overlap, e.g. the
    augmentation of the image at position ``i`` of step ``s``'s global batch:
    ``derive_rng(seed, s, STREAM_AUGMENT, i)`` (position in the GLOBAL batch, not the rank's
    slice, so the result does not depend on the number of processes).
    """
    entropy = [seed, step, *keys]
    for value in entropy:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"seed, step and keys must be non-negative integers, got {entropy}")
    return np.random.default_rng(np.random.SeedSequence([int(v) for v in entropy]))


def plan_batch(seed: int, step: int, dataset_sizes: Sequence[int], ratios: Sequence[float],
               batch_size: int) -> BatchPlan:
    """The global batch of ``step``: a dataset index and ``batch_size`` image indices of it.

    ``dataset_sizes[d]``: number of usable images (records) of dataset ``d``; ``ratios[d]``:
    its sampling weight (> 0; normalised here). See the module docstring for the scheme.
    Raises ``ValueError`` for no datasets, mismatched lengths, an empty dataset, a ratio that
    is not a positive finite number, ``batch_size < 1`` or a negative seed or step.
    """
    sizes, cumulative = _validate(seed, step, dataset_sizes, ratios, batch_size)
    dataset = _dataset_of_step(seed, cumulative, step)
    earlier = _count_before(seed, cumulative, step)[dataset]
    indices = _images_of_batch(seed, dataset, sizes[dataset], int(earlier), batch_size)
    return BatchPlan(dataset_index=dataset, image_indices=tuple(int(i) for i in indices))


def rank_range(batch_size: int, rank: int, world_size: int) -> range:
    """Positions in the global batch that process ``rank`` of ``world_size`` handles."""
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    if batch_size % world_size:
        raise ValueError(f"the global batch size {batch_size} must be divisible by the number of "
                         f"processes {world_size}")
    per_rank = batch_size // world_size
    return range(rank * per_rank, (rank + 1) * per_rank)


def rank_slice(plan: BatchPlan, rank: int, world_size: int) -> tuple[int, ...]:
    """The contiguous part of ``plan.image_indices`` that process ``rank`` handles.

    Raises ``ValueError`` when the batch size is not divisible by ``world_size`` or the rank
    is out of range. The slices of ranks 0..world_size-1, concatenated, are the global batch.
    """
    positions = rank_range(len(plan.image_indices), rank, world_size)
    return plan.image_indices[positions.start:positions.stop]


def _validate(seed: int, step: int, dataset_sizes: Sequence[int], ratios: Sequence[float],
              batch_size: int) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Checked sizes and the cumulative normalised ratios (last entry exactly 1)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"step must be a non-negative integer, got {step!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    sizes, weights = tuple(dataset_sizes), tuple(ratios)
    if not sizes:
        raise ValueError("no datasets to sample from")
    if len(sizes) != len(weights):
        raise ValueError(f"{len(sizes)} dataset sizes but {len(weights)} ratios")
    for d, size in enumerate(sizes):
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"dataset {d} has no usable images (size {size!r})")
    for d, ratio in enumerate(weights):
        if not isinstance(ratio, (int, float, np.number)) or not math.isfinite(ratio) or ratio <= 0:
            raise ValueError(f"dataset {d}: sampling ratio must be a positive number, got {ratio!r}")
    total = math.fsum(float(r) for r in weights)
    cumulative = np.cumsum([float(r) / total for r in weights])
    cumulative[-1] = 1.0
    return tuple(int(s) for s in sizes), tuple(float(c) for c in cumulative)


@functools.lru_cache(maxsize=4096)
def _block_choices(seed: int, cumulative: tuple[float, ...], block: int) -> np.ndarray:
    """Dataset index of each step of a block: int16 [_BLOCK] (read-only)."""
    uniform = derive_rng(seed, block, STREAM_DATASET).random(_BLOCK)
    choices = np.searchsorted(np.asarray(cumulative), uniform, side="right")
    choices = np.minimum(choices, len(cumulative) - 1).astype(np.int16)
    choices.setflags(write=False)
    return choices


_prefix_tables: dict[tuple[int, tuple[float, ...]], list[np.ndarray]] = {}
_prefix_lock = threading.Lock()


def _block_prefix(seed: int, cumulative: tuple[float, ...], block: int) -> np.ndarray:
    """How often each dataset was chosen by the steps before ``block``: int64 [D]."""
    key = (seed, cumulative)
    with _prefix_lock:
        table = _prefix_tables.get(key)
        if table is None:
            if len(_prefix_tables) >= _MAX_PREFIX_TABLES:
                _prefix_tables.clear()
            table = _prefix_tables[key] = [np.zeros(len(cumulative), dtype=np.int64)]
        while len(table) <= block:
            done = len(table) - 1
            counts = np.bincount(_block_choices(seed, cumulative, done), minlength=len(cumulative))
            table.append(table[-1] + counts)
        return table[block]


def _dataset_of_step(seed: int, cumulative: tuple[float, ...], step: int) -> int:
    return int(_block_choices(seed, cumulative, step // _BLOCK)[step % _BLOCK])


def _count_before(seed: int, cumulative: tuple[float, ...], step: int) -> np.ndarray:
    """How often each dataset was chosen by steps ``0 .. step-1``: int64 [D]."""
    block, offset = divmod(step, _BLOCK)
    within = np.bincount(_block_choices(seed, cumulative, block)[:offset], minlength=len(cumulative))
    return _block_prefix(seed, cumulative, block) + within


@functools.lru_cache(maxsize=8)
def _epoch_permutation(seed: int, dataset: int, size: int, epoch: int) -> np.ndarray:
    """The order of dataset ``dataset``'s images in ``epoch``: int64 [size] (read-only)."""
    order = derive_rng(seed, epoch, STREAM_EPOCH, dataset, size).permutation(size)
    order.setflags(write=False)
    return order


def _images_of_batch(seed: int, dataset: int, size: int, batch: int, batch_size: int) -> np.ndarray:
    """Image indices of the ``batch``-th batch drawn from a dataset of ``size`` images."""
    per_epoch = size // batch_size
    if per_epoch >= 1:
        epoch, slot = divmod(batch, per_epoch)
        order = _epoch_permutation(seed, dataset, size, epoch)
        return order[slot * batch_size:(slot + 1) * batch_size]
    rng = derive_rng(seed, batch, STREAM_EPOCH, dataset, size, 1)
    repeats = -(-batch_size // size)
    return np.concatenate([rng.permutation(size) for _ in range(repeats)])[:batch_size]
