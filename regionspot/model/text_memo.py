"""Unit text embeddings of the last few vocabularies, kept on the model's device.

Both recognizers (RegionSpot and the zero-shot CLIP recognizer) memoise the embeddings of the
vocabularies they were asked about; ``model.to(device)`` moves the memo with the model. The memo
is safe to use from several threads (the server embeds a request's vocabulary outside its
inference lock); the embedder runs outside the memo's lock.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from regionspot.backbones.protocols import TextEmbedder


class TextEmbeddingMemo:
    """An LRU of ``size`` vocabularies -> unit rows [N, text_dim] float32 on one device."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._rows: OrderedDict[tuple[str, ...], torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def embeddings(self, embedder: TextEmbedder, names: Sequence[str], device: torch.device) -> torch.Tensor:
        """Unit text embeddings [N, text_dim] float32 on ``device`` for ``names``."""
        key = tuple(names)
        with self._lock:
            rows = self._rows.get(key)
            if rows is not None and rows.device == device:
                self._rows.move_to_end(key)
                return rows
        rows = F.normalize(embedder.encode_text(list(names)).float(), dim=-1).to(device)
        with self._lock:
            self._rows[key] = rows
            self._rows.move_to_end(key)
            while len(self._rows) > self.size:
                self._rows.popitem(last=False)
        return rows

    def to(self, device: torch.device) -> None:
        """Move every memoised vocabulary to ``device``."""
        with self._lock:
            for key, rows in self._rows.items():
                self._rows[key] = rows.to(device)

    def devices(self) -> set[torch.device]:
        """The devices the memoised rows are on (for checks and tests)."""
        return {rows.device for rows in self._rows.values()}

    def __len__(self) -> int:
        return len(self._rows)
