"""Bounded caches of per-name text embeddings: one in memory, one on disk.

Both keep at most a fixed number of names and drop the least recently used first, so a
long-running server that is sent new names with every request holds a bounded table in memory
and a bounded file on disk. Both are safe to use from several threads.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

__all__ = ["NameRowTable", "TextEmbeddingDiskCache"]


class NameRowTable:
    """An LRU ``name -> [D]`` float32 row table holding at most ``capacity`` names."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"the text-embedding memory cache must hold at least one name, got {capacity}")
        self.capacity = capacity
        self._rows: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def get_many(self, names: Iterable[str]) -> dict[str, torch.Tensor]:
        """The rows held for ``names`` (marking them recently used); absent names are left out."""
        found: dict[str, torch.Tensor] = {}
        with self._lock:
            for name in names:
                row = self._rows.get(name)
                if row is not None:
                    self._rows.move_to_end(name)
                    found[name] = row
        return found

    def put_many(self, rows: Mapping[str, torch.Tensor]) -> None:
        """Add or refresh ``rows``, then drop the least recently used names above the capacity."""
        with self._lock:
            for name, row in rows.items():
                self._rows[name] = row
                self._rows.move_to_end(name)
            while len(self._rows) > self.capacity:
                self._rows.popitem(last=False)

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, name: object) -> bool:
        return name in self._rows


class TextEmbeddingDiskCache:
    """A name -> ``[D]`` float32 row table in one safetensors file, written atomically, holding
    at most ``capacity`` names.

    ``metadata['names']`` is a JSON list, least recently used first; tensor ``embeddings`` is
    ``[N, D]`` in that order. A save moves the names it is told were used to the end and drops
    names from the front above the capacity. A file that cannot be read is ignored (with a
    warning) and rewritten on the next save. Saves from threads of one process are serialised;
    between processes the last atomic replace wins (rows are recomputed, never corrupted).
    """

    _save_lock = threading.Lock()

    def __init__(self, path: Path, capacity: int = 20_000) -> None:
        if capacity < 1:
            raise ValueError(f"the text-embedding disk cache must hold at least one name, got {capacity}")
        self.path = path
        self.capacity = capacity

    def load(self) -> OrderedDict[str, torch.Tensor]:
        """Every stored name -> row, least recently used first (empty when there is no file)."""
        if not self.path.is_file():
            return OrderedDict()
        try:
            with safe_open(str(self.path), framework="pt") as handle:
                names = json.loads((handle.metadata() or {})["names"])
                rows = handle.get_tensor("embeddings")
        except Exception as exc:  # noqa: BLE001 - a bad cache file must not stop the run
            warnings.warn(f"ignoring unreadable text-embedding cache {self.path}: {exc}", stacklevel=2)
            return OrderedDict()
        if not isinstance(names, list) or len(names) != rows.shape[0]:
            warnings.warn(f"ignoring inconsistent text-embedding cache {self.path}", stacklevel=2)
            return OrderedDict()
        return OrderedDict((str(name), rows[i]) for i, name in enumerate(names))

    def save(self, new_rows: Mapping[str, torch.Tensor], metadata: dict[str, str],
             used: Sequence[str] = ()) -> None:
        """Merge ``new_rows`` into what is on disk now (another process may have added rows),
        mark ``used`` names and the new ones as most recently used, keep the newest
        ``capacity`` names and replace the file atomically."""
        with self._save_lock:
            merged = self.load()
            for name in used:
                if name in merged:
                    merged.move_to_end(name)
            for name, row in new_rows.items():
                merged[name] = row
                merged.move_to_end(name)
            while len(merged) > self.capacity:
                merged.popitem(last=False)
            self._write(merged, metadata)

    def _write(self, table: Mapping[str, torch.Tensor], metadata: dict[str, str]) -> None:
        names = list(table)
        rows = torch.stack([table[name].float().cpu() for name in names]).contiguous()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
        os.close(handle)
        try:
            save_file({"embeddings": rows}, temp, metadata={**metadata, "names": json.dumps(names)})
            os.replace(temp, self.path)
        finally:
            if os.path.exists(temp):
                os.unlink(temp)
