"""The optional CLIP memory cache: the whole-image CLIP memory of every image, computed once.

ONLY VALID FOR AUGMENTATION-FREE RUNS (``augment.flip=false``, ``augment.crop=false``; the
short-edge resize does not matter since CLIP always resizes the whole image to its input size):
the memory is that of the un-augmented image, so a flipped or cropped training image would be
paired with the memory of another picture. Training refuses the combination.

Per image, with ``T`` tokens of width ``C`` (``[197, 768]`` for ViT-B/16 at 224, so about
300 KB in float16: budget the disk space, e.g. ~30 GB for LVIS train)::

    "{image_id}/memory"   [T, C] float16

The manifest's ``meta`` records the CLIP fingerprint (weights, input size, class token,
mean/std) and the dataset, so :meth:`MemoryCache.open` refuses a cache of another tower or data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from regionspot.backbones.protocols import ImageMemoryEncoder
from regionspot.cache.filling import FillStats, fill_cache
from regionspot.cache.parts import Part
from regionspot.cache.shards import (
    CacheError,
    ShardReader,
)
from regionspot.cache.token_cache import (
    INFORMATIONAL,
    check_dataset,
    dataset_meta,
    tensors_fingerprint,
)
from regionspot.cache.view import CacheView
from regionspot.datasets.coco_format import CocoDataset, ImageRecord

MEMORY_FORMAT = "regionspot-clip-memory"
MEMORY_VERSION = 1
ENCODE_BATCH = 8
MEMORY_INFORMATIONAL = (*(k for k in INFORMATIONAL if not k.startswith("backbone.")), "backbone.name")


class MemoryCacheError(CacheError):
    """A CLIP memory cache does not fit the model or the dataset it is used with."""


def _clip_settings(encoder: ImageMemoryEncoder) -> dict[str, Any]:
    """What changes the memory for given weights: input size, class token, mean/std, width."""
    info = encoder.describe()
    return {"width": int(encoder.width), "image_size": int(encoder.image_size),
            **{k: info.get(k) for k in ("use_class_token", "mean", "std", "num_tokens")}}


def clip_fingerprint(encoder: ImageMemoryEncoder) -> str:
    """sha256 identifying ``encoder``'s weights and pre-processing settings (another path to the
    same weights gives the same fingerprint); non-``nn.Module`` encoders by ``describe()``."""
    settings = _clip_settings(encoder)
    if isinstance(encoder, torch.nn.Module):
        return tensors_fingerprint(encoder, settings)
    described = {k: v for k, v in encoder.describe().items() if k != "name"}
    return hashlib.sha256(json.dumps({**described, **settings}, sort_keys=True, default=str).encode()).hexdigest()


def clip_meta(encoder: ImageMemoryEncoder) -> dict[str, Any]:
    """The ``meta["backbone"]`` of a memory cache made with ``encoder``."""
    return {"fingerprint": clip_fingerprint(encoder), **_clip_settings(encoder),
            "name": str(encoder.describe().get("name", type(encoder).__name__))}


def _memory_shard(dataset: CocoDataset, encoder: ImageMemoryEncoder, records: Sequence[ImageRecord],
                  tick: Callable[[], None]) -> dict[str, torch.Tensor]:
    """``{"{image_id}/memory": [T, C] float16}`` for the records of one shard, encoded in
    batches of ``ENCODE_BATCH`` un-augmented images."""
    tensors: dict[str, torch.Tensor] = {}
    for start in range(0, len(records), ENCODE_BATCH):
        batch = records[start:start + ENCODE_BATCH]
        pixels = torch.stack([encoder.preprocess(dataset.load_image(record)) for record in batch])
        memory = encoder.encode_image(pixels).detach().to("cpu", torch.float16)  # [B, T, C]
        if not torch.isfinite(memory).all():
            raise CacheError(f"{dataset.name}: CLIP memory out of float16 range in images "
                             f"{[r.image_id for r in batch]}")
        for record, item in zip(batch, memory, strict=True):
            tensors[f"{record.image_id}/memory"] = item.clone()
            tick()
    return tensors


def extract_memories(dataset: CocoDataset, encoder: ImageMemoryEncoder, out: str | Path, *, shard_size: int = 32,
                     progress: bool = True, stop_after_shards: int | None = None,
                     part: Part | None = None) -> MemoryCache:
    """Fill (or resume filling) the CLIP memory cache ``out``: the memory of every record's
    un-augmented image (valid for augmentation-free training only). Same shard, resume and
    refusal rules as :func:`regionspot.cache.token_cache.extract_tokens`."""
    folder = Path(out)
    meta = {"format": MEMORY_FORMAT, "version": MEMORY_VERSION, "backbone": clip_meta(encoder),
            "dataset": dataset_meta(dataset), "options": {"augmentation": "none", "dtype": "float16"}}
    reader, stats = fill_cache(folder, meta, dataset.records, lambda record: record.image_id,
                               partial(_memory_shard, dataset, encoder), shard_size=shard_size,
                               ignore=MEMORY_INFORMATIONAL, part=part, progress=progress,
                               desc=f"CLIP memory {dataset.name}", stop_after_shards=stop_after_shards)
    cache = MemoryCache(reader)
    cache.extract_stats = stats
    return cache


class MemoryCache(CacheView):
    """Read access to a CLIP memory cache (augmentation-free runs only). Open with :meth:`open`."""

    error = MemoryCacheError

    def __init__(self, reader: ShardReader) -> None:
        meta = reader.meta
        if meta.get("format") != MEMORY_FORMAT or meta.get("version") != MEMORY_VERSION:
            raise MemoryCacheError(f"{reader.folder} is a {meta.get('format')!r} cache (version "
                                   f"{meta.get('version')!r}), not a CLIP memory cache ({MEMORY_FORMAT} "
                                   f"version {MEMORY_VERSION})")
        super().__init__(reader)
        self.width = int(meta["backbone"]["width"])
        self.extract_stats: FillStats | None = None

    @classmethod
    def open(cls, folder: str | Path, encoder: ImageMemoryEncoder | None = None, *,
             expected: Mapping[str, Any] | None = None, dataset: CocoDataset | None = None) -> MemoryCache:
        """Open a finished memory cache, refusing (:class:`MemoryCacheError`) one made with
        another CLIP tower or pre-processing than ``encoder``, one whose ``meta["backbone"]``
        disagrees with ``expected``, one of another annotation file, and an unfinished one."""
        cache = cls(ShardReader(folder))
        if encoder is not None:
            current = clip_meta(encoder)
            cache.check_expected({k: current[k] for k in ("width", "image_size", "use_class_token", "mean", "std")})
            if cache.meta["backbone"]["fingerprint"] != current["fingerprint"]:
                stored = cache.meta["backbone"]
                raise MemoryCacheError(
                    f"memory cache {cache.folder} was made with other CLIP weights: cache has {stored['name']!r} "
                    f"(fingerprint {stored['fingerprint'][:12]}), the model uses {current['name']!r} (fingerprint "
                    f"{current['fingerprint'][:12]}); extract memories with this CLIP into another folder")
        if expected:
            cache.check_expected(expected)
        cache.reader.require_complete("memory cache")
        if dataset is not None:
            check_dataset(cache.meta, dataset, cache.folder, "memory cache")
        return cache

    def check_expected(self, expected: Mapping[str, Any]) -> None:
        """MemoryCacheError unless ``meta["backbone"][key] == value`` (JSON-equal) for each item."""
        stored = self.meta["backbone"]
        for key, value in expected.items():
            if key not in stored:
                raise ValueError(f"unknown expected key {key!r}; known: {sorted(stored)}")
            if json.dumps(stored[key]) != json.dumps(value):
                raise MemoryCacheError(f"memory cache {self.folder} was made with CLIP {key} {stored[key]!r}, but "
                                       f"the model uses {value!r}; extract memories with these settings")

    def memory(self, image_id: int) -> torch.Tensor:
        """``[T, C]`` float32 memory of the un-augmented image ``image_id``; KeyError if absent."""
        memory = self._entry(image_id, "memory").float()
        if memory.dim() != 2 or memory.shape[1] != self.width:
            raise MemoryCacheError(f"memory cache {self.folder}: image {image_id} has memory of shape "
                                   f"{tuple(memory.shape)}, expected [T, {self.width}]")
        return memory
