"""The read side every cache kind shares: :class:`CacheView` over a
:class:`~regionspot.cache.shards.ShardReader`."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from regionspot.cache.shards import REPAIR_HINT, CacheError, ShardReader


class CacheView:
    """What every cache over a :class:`ShardReader` offers: completeness, membership, and the
    per-image entries (raising ``error``, the cache kind's exception, naming a damaged shard)."""

    error: type[CacheError] = CacheError

    def __init__(self, reader: ShardReader) -> None:
        self.reader = reader
        self.folder = reader.folder
        self.meta: dict[str, Any] = reader.meta

    @property
    def missing_shards(self) -> list[int]:
        return self.reader.missing

    @property
    def complete(self) -> bool:
        return not self.reader.missing

    @property
    def image_ids(self) -> list[int]:
        return sorted(self.reader.shard_of)

    def __len__(self) -> int:
        return len(self.reader.shard_of)

    def __contains__(self, image_id: object) -> bool:
        return isinstance(image_id, (int, np.integer)) and int(image_id) in self.reader.shard_of

    def _entry(self, image_id: int, suffix: str) -> torch.Tensor:
        """Tensor ``"{image_id}/{suffix}"``; KeyError for an image not in the cache."""
        tensors, index = self.reader.tensors_of(image_id)
        key = f"{int(image_id)}/{suffix}"
        if key not in tensors:
            raise self.error(f"cache shard {index} of {self.folder} lacks {key!r}; delete that shard and "
                             f"{REPAIR_HINT}")
        return tensors[key]

