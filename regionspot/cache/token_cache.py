"""The SAM token cache: every annotated box's position-aware token, computed once.

``extract_tokens`` runs SAM's image encoder once per image and flip state, then the prompt
encoder and mask decoder for all kept boxes of the record (xyxy absolute pixels, in the record's
order), and stores per image (float16 tokens, ``D`` = the tokenizer's ``token_dim``)::

    "{image_id}/tokens/0"        [R, D] float16   tokens of the original image
    "{image_id}/tokens/1"        [R, D] float16   tokens of the left-right flipped image
    "{image_id}/annotation_ids"  [R]    int64     the JSON's annotation ids, same order
    "{image_id}/boxes"           [R, 4] float32   the boxes prompted (original orientation)

For the flipped image the boxes are mirrored: ``x1' = W - x2``, ``x2' = W - x1``.

Geometry against training augmentation: the flip is exact (tokens of both orientations). A
resize changes SAM's input only by resampling (SAM always resizes the longest side to its own
input size, 1024). A crop is NOT reproduced: cached tokens come from the uncropped image and
the whole box, while the CLIP side sees the crop and the box clipped to it.

The manifest's ``meta`` records what made the cache (SAM fingerprint, token place, multi-mask
mode, token width, the annotation file's sha256 and a digest of the kept records), so
:meth:`TokenCache.open` can refuse a cache that does not fit the model or the data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from regionspot.backbones.protocols import RegionTokenizer
from regionspot.cache.filling import FillStats, fill_cache
from regionspot.cache.integrity import update_tensors_digest
from regionspot.cache.parts import Part
from regionspot.cache.shards import (
    CacheError,
    ShardReader,
)
from regionspot.cache.view import CacheView
from regionspot.datasets.coco_format import CocoDataset, ImageRecord
from regionspot.fileio import file_sha256

TOKEN_FORMAT = "regionspot-sam-tokens"
TOKEN_VERSION = 1
# meta keys that only inform: another path to the same weights or the same annotation file is fine
INFORMATIONAL = ("backbone.name_or_path", "backbone.family", "dataset.annotations", "dataset.name")
PREFETCH_THREADS = 2
BACKBONE_KEYS = ("fingerprint", "token_place", "multimask", "token_dim", "image_input_size",
                 "family", "name_or_path")


class TokenCacheError(CacheError):
    """A SAM token cache does not fit the model or the dataset it is used with."""


def tensors_fingerprint(module: torch.nn.Module, settings: Mapping[str, Any]) -> str:
    """sha256 over ``settings`` (JSON, sorted keys) and every parameter and buffer of ``module``
    in name order (name, dtype, shape, raw bytes). The same weights loaded from another file or
    folder give the same fingerprint; so do copies on another device."""
    digest = hashlib.sha256(json.dumps(dict(settings), sort_keys=True, default=str).encode())
    tensors: dict[str, torch.Tensor] = dict(module.named_parameters())
    tensors.update(module.named_buffers())
    update_tensors_digest(digest, tensors)
    return digest.hexdigest()


def _token_settings(tokenizer: RegionTokenizer) -> dict[str, Any]:
    """The settings that change a token for given weights: place, multi-mask, widths."""
    info = tokenizer.describe()
    return {"token_place": info.get("token_place"), "multimask": bool(info.get("multimask", False)),
            "token_dim": int(tokenizer.token_dim), "image_input_size": int(tokenizer.image_input_size)}


def sam_fingerprint(tokenizer: RegionTokenizer) -> str:
    """sha256 identifying ``tokenizer``'s weights and token settings (token place, multi-mask,
    token width, input size). Tokenizers that are not ``nn.Module``s are identified by their
    ``describe()`` alone."""
    settings = _token_settings(tokenizer)
    if isinstance(tokenizer, torch.nn.Module):
        return tensors_fingerprint(tokenizer, settings)
    described = {k: v for k, v in tokenizer.describe().items() if k != "name_or_path"}
    return hashlib.sha256(json.dumps({**described, **settings}, sort_keys=True, default=str).encode()).hexdigest()


def backbone_meta(tokenizer: RegionTokenizer) -> dict[str, Any]:
    """The ``meta["backbone"]`` of a token cache made with ``tokenizer``."""
    info = tokenizer.describe()
    return {"fingerprint": sam_fingerprint(tokenizer), **_token_settings(tokenizer),
            "family": str(info.get("family", type(tokenizer).__name__)),
            "name_or_path": str(info.get("name_or_path", ""))}


def records_digest(records: Sequence[ImageRecord]) -> str:
    """sha256 over the kept records (ids, sizes, annotation ids, boxes), in dataset order: it
    changes when the same JSON is read with other filters (e.g. ``min_box_size``)."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(np.array([record.image_id, record.height, record.width], dtype=np.int64).tobytes())
        digest.update(np.ascontiguousarray(record.annotation_ids, dtype=np.int64).tobytes())
        digest.update(np.ascontiguousarray(record.boxes, dtype=np.float32).tobytes())
    return digest.hexdigest()


def dataset_meta(dataset: CocoDataset) -> dict[str, Any]:
    """The ``meta["dataset"]`` of a cache of ``dataset``: annotation file (path, sha256),
    records digest, image and box counts."""
    return {"name": dataset.name, "annotations": str(dataset.annotations_path.resolve()),
            "annotations_sha256": file_sha256(dataset.annotations_path),
            "records_sha256": records_digest(dataset.records), "images": len(dataset.records),
            "boxes": int(sum(len(r.boxes) for r in dataset.records))}


def check_dataset(meta: Mapping[str, Any], dataset: CocoDataset, folder: Path, what: str) -> None:
    """CacheError unless the cache's ``meta["dataset"]`` was made from ``dataset``'s records."""
    stored, current = meta["dataset"], dataset_meta(dataset)
    if stored["annotations_sha256"] != current["annotations_sha256"]:
        raise CacheError(f"{what} {folder} was made from another annotation file: cache has {stored['annotations']} "
                         f"(sha256 {stored['annotations_sha256'][:12]}...), dataset {dataset.name!r} reads "
                         f"{current['annotations']} (sha256 {current['annotations_sha256'][:12]}...); extract a "
                         "cache for this annotation file (`regionspot extract-tokens`)")
    if stored["records_sha256"] != current["records_sha256"]:
        raise CacheError(f"{what} {folder} was made from the same annotation file but other kept boxes "
                         f"(cache: {stored['images']} images, {stored['boxes']} boxes; dataset {dataset.name!r}: "
                         f"{current['images']} images, {current['boxes']} boxes); re-extract it with the "
                         "dataset settings used for training")


def flip_boxes(boxes: torch.Tensor, width: int) -> torch.Tensor:
    """``[R, 4]`` xyxy absolute pixels of an image ``width`` wide -> the same boxes in the
    left-right mirrored image: ``(W - x2, y1, W - x1, y2)``."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([width - x2, y1, width - x1, y2], dim=-1)


def region_tokens(tokenizer: RegionTokenizer, image: np.ndarray, boxes: torch.Tensor, *,
                  flipped: bool) -> torch.Tensor:
    """Tokens ``[R, D]`` of ``boxes`` (``[R, 4]`` float xyxy pixels of the un-flipped ``image``,
    ``HxWx3`` uint8) in the original image, or in its mirror image when ``flipped``."""
    if flipped:
        image = np.ascontiguousarray(image[:, ::-1])
        boxes = flip_boxes(boxes, image.shape[1])
    embedding = tokenizer.encode_image(image)
    return tokenizer.encode_regions(embedding, boxes, with_masks=False).tokens


def _token_shard(dataset: CocoDataset, tokenizer: RegionTokenizer, flips: tuple[bool, ...],
                 records: Sequence[ImageRecord], tick: Callable[[], None]) -> dict[str, torch.Tensor]:
    """The tensors of one shard (see the module docstring for the keys)."""
    tensors: dict[str, torch.Tensor] = {}
    with ThreadPoolExecutor(max_workers=PREFETCH_THREADS) as pool:  # decode the next images meanwhile
        images = pool.map(dataset.load_image, records)
        for record, image in zip(records, images, strict=True):
            _record_tokens(tensors, dataset.name, record, image, tokenizer, flips)
            tick()
    return tensors


def _record_tokens(tensors: dict[str, torch.Tensor], name: str, record: ImageRecord, image: np.ndarray,
                   tokenizer: RegionTokenizer, flips: tuple[bool, ...]) -> None:
    """Add the tensors of one record to ``tensors``."""
    boxes = torch.from_numpy(np.ascontiguousarray(record.boxes, dtype=np.float32))
    for flipped in flips:
        tokens = region_tokens(tokenizer, image, boxes, flipped=flipped).detach().to("cpu", torch.float16)
        if not torch.isfinite(tokens).all():
            raise CacheError(f"{name}: image {record.image_id} ({record.file_name}) gives non-finite "
                             "tokens in float16; the SAM backbone's outputs are out of float16 range")
        tokens_key = f"{record.image_id}/tokens/{int(flipped)}"
        tensors[tokens_key] = tokens
    tensors[f"{record.image_id}/annotation_ids"] = torch.from_numpy(record.annotation_ids.astype(np.int64))
    tensors[f"{record.image_id}/boxes"] = boxes.clone()


def _check_flips(flips: Sequence[bool]) -> tuple[bool, ...]:
    normal = tuple(sorted({bool(f) for f in flips}))
    if False not in normal or len(normal) != len(tuple(flips)):
        raise ValueError(f"flips must hold False (the original image) and optionally True, once each; got {flips}")
    return normal


def extract_tokens(dataset: CocoDataset, tokenizer: RegionTokenizer, out: str | Path, *,
                   flips: Sequence[bool] = (False, True), shard_size: int = 32, progress: bool = True,
                   stop_after_shards: int | None = None, part: Part | None = None) -> TokenCache:
    """Fill (or resume filling) the token cache ``out`` for every record of ``dataset``.

    Shard k holds records ``k*shard_size .. (k+1)*shard_size - 1``; finished shards of an
    earlier run with the same settings are kept (their sha256 rechecked), the rest computed.
    ``out`` holding a cache of other settings is refused (CacheError). ``stop_after_shards``:
    return after computing that many shards (simulates an interruption). The returned cache may
    be unfinished then (see :attr:`TokenCache.missing_shards`); ``extract_stats`` tells what
    this call did. ``part``: fill only that part's share of the shards (see
    :mod:`regionspot.cache.parts`); the cache is then whole once every part has ended.
    """
    flips = _check_flips(flips)
    folder = Path(out)
    meta = {"format": TOKEN_FORMAT, "version": TOKEN_VERSION, "backbone": backbone_meta(tokenizer),
            "dataset": dataset_meta(dataset), "options": {"flips": list(flips), "dtype": "float16"}}
    reader, stats = fill_cache(folder, meta, dataset.records, lambda record: record.image_id,
                               partial(_token_shard, dataset, tokenizer, flips), shard_size=shard_size,
                               ignore=INFORMATIONAL, part=part, progress=progress, desc=f"SAM tokens {dataset.name}",
                               stop_after_shards=stop_after_shards)
    cache = TokenCache(reader)
    cache.extract_stats = stats
    return cache


class TokenCache(CacheView):
    """Read access to a token cache folder. Open it with :meth:`open` (checks it fits)."""

    error = TokenCacheError

    def __init__(self, reader: ShardReader) -> None:
        meta = reader.meta
        if meta.get("format") != TOKEN_FORMAT:
            raise TokenCacheError(f"{reader.folder} is a {meta.get('format')!r} cache, not a SAM token cache "
                                  f"({TOKEN_FORMAT})")
        if meta.get("version") != TOKEN_VERSION:
            raise TokenCacheError(f"{reader.folder}: token cache version {meta.get('version')!r}, this regionspot "
                                  f"reads version {TOKEN_VERSION}; re-extract it")
        super().__init__(reader)
        self.flips: tuple[bool, ...] = tuple(bool(f) for f in meta["options"]["flips"])
        self.token_dim = int(meta["backbone"]["token_dim"])
        self.extract_stats: FillStats | None = None

    @classmethod
    def open(cls, folder: str | Path, tokenizer: RegionTokenizer | None = None, *,
             expected: Mapping[str, Any] | None = None, dataset: CocoDataset | None = None) -> TokenCache:
        """Open a finished token cache, refusing (:class:`TokenCacheError`) one made with another
        SAM than ``tokenizer`` (weights, token place, multi-mask mode, token width), one whose
        ``meta["backbone"]`` disagrees with ``expected`` (keys among ``BACKBONE_KEYS``, for
        callers without the SAM loaded), one made from another annotation file than
        ``dataset``'s, and an unfinished one."""
        cache = cls(ShardReader(folder))
        if tokenizer is not None:
            cache.check_tokenizer(tokenizer)
        if expected:
            cache.check_expected(expected)
        cache.reader.require_complete("token cache")
        if dataset is not None:
            check_dataset(cache.meta, dataset, cache.folder, "token cache")
        return cache

    def check_tokenizer(self, tokenizer: RegionTokenizer) -> None:
        """TokenCacheError naming both sides unless the cache was made with ``tokenizer``."""
        current = backbone_meta(tokenizer)
        self.check_expected({k: current[k] for k in ("token_place", "multimask", "token_dim", "image_input_size")})
        stored = self.meta["backbone"]
        if stored["fingerprint"] != current["fingerprint"]:
            raise TokenCacheError(
                f"token cache {self.folder} was made with other SAM weights: cache has {stored['family']} "
                f"{stored['name_or_path']!r} (fingerprint {stored['fingerprint'][:12]}), the model uses "
                f"{current['family']} {current['name_or_path']!r} (fingerprint {current['fingerprint'][:12]}); "
                "extract a cache with this SAM into another folder (`regionspot extract-tokens --sam ...`)")

    def check_expected(self, expected: Mapping[str, Any]) -> None:
        """TokenCacheError unless ``meta["backbone"][key] == value`` for every item of ``expected``."""
        unknown = sorted(set(expected) - set(BACKBONE_KEYS))
        if unknown:
            raise ValueError(f"unknown expected key(s) {unknown}; known: {list(BACKBONE_KEYS)}")
        stored = self.meta["backbone"]
        for key, value in expected.items():
            if stored.get(key) != value:
                flag = {"token_place": f" --token-place {value}", "multimask": " --multimask" if value else ""}
                raise TokenCacheError(
                    f"token cache {self.folder} was made with SAM {key} {stored.get(key)!r}, but the model uses "
                    f"{value!r} (cache made with {stored['family']} {stored['name_or_path']!r}); extract a cache "
                    f"with these settings into another folder (`regionspot extract-tokens{flag.get(key, '')}`)")

    def tokens(self, image_id: int, flipped: bool = False) -> tuple[torch.Tensor, np.ndarray]:
        """(tokens ``[R, D]`` float32, annotation ids ``[R]`` int64) of all kept boxes of
        ``image_id`` in record order; ``flipped`` gives the tokens of the mirrored image (box i
        mirrored). KeyError for an image not in the cache."""
        if flipped and True not in self.flips:
            raise TokenCacheError(f"token cache {self.folder} has no flipped tokens (extracted with --no-flip)")
        tokens = self._entry(image_id, f"tokens/{int(bool(flipped))}").float()
        annotation_ids = self._entry(image_id, "annotation_ids").numpy().copy()
        if tokens.dim() != 2 or tokens.shape != (len(annotation_ids), self.token_dim):
            raise TokenCacheError(f"token cache {self.folder}: image {image_id} has tokens of shape "
                                  f"{tuple(tokens.shape)} for {len(annotation_ids)} boxes of width {self.token_dim}")
        return tokens, annotation_ids

    def boxes(self, image_id: int) -> np.ndarray:
        """``[R, 4]`` float32 xyxy absolute pixels (original orientation) the tokens were made for."""
        return self._entry(image_id, "boxes").numpy().copy()


def sam_expectation(token_place: str, multimask: bool, token_dim: int | None = None) -> dict[str, Any]:
    """``expected`` for :meth:`TokenCache.open` from configuration, when SAM is not loaded."""
    expected: dict[str, Any] = {"token_place": token_place, "multimask": bool(multimask)}
    if token_dim is not None:
        expected["token_dim"] = int(token_dim)
    return expected
