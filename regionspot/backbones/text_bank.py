"""Precomputed text embeddings standing in for a CLIP text tower.

A bank is an ``.npy`` matrix ``[N, D]`` (any float dtype, need not be normalised) and a JSON list
of the N names in row order. The names file defaults to ``<stem>_names.json`` beside the matrix,
or, failing that, ``<prefix>_names.json`` for the longest ``_``-separated prefix of the stem that
has one (``coco_clip-vit-b32_a-name.npy`` -> ``coco_names.json``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from regionspot.vocab import VocabularyError, clean_category_name


class UnknownCategoryError(VocabularyError, KeyError):
    """Names asked of a text bank that it has no row for (a vocabulary error for users: the CLI's
    one-line ``error:``, HTTP 422; still a KeyError for code that looks names up)."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


def find_names_file(bank_path: Path) -> Path:
    """The names JSON of ``bank_path`` (see the module docstring); raises FileNotFoundError."""
    parts = bank_path.stem.split("_")
    candidates = [bank_path.with_name(f"{'_'.join(parts[:end])}_names.json") for end in range(len(parts), 0, -1)]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    tried = ", ".join(c.name for c in candidates)
    raise FileNotFoundError(f"no names file for text bank {bank_path} (tried {tried} in {bank_path.parent})")


def _lookup_key(name: str) -> str:
    """Case-insensitive cleaned form used for the fallback match (CLIP's tokenizer lowercases)."""
    return clean_category_name(name).casefold()


class TextBankEmbedder:
    """``TextEmbedder`` over a precomputed bank: ``encode_text(names)`` -> ``[N, D]`` float32,
    rows L2-normalised. A name matches exactly first, then by cleaned, case-folded form
    (``"traffic_light"`` finds ``"traffic light"``)."""

    def __init__(self, bank_path: str | os.PathLike[str], names_path: str | os.PathLike[str] | None = None) -> None:
        self.bank_path = Path(bank_path)
        if not self.bank_path.is_file():
            raise FileNotFoundError(f"text bank not found: {self.bank_path}")
        self.names_path = Path(names_path) if names_path is not None else find_names_file(self.bank_path)
        matrix = np.load(self.bank_path)
        names = json.loads(self.names_path.read_text())
        if matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.floating):
            raise ValueError(f"{self.bank_path}: expected a 2-D float matrix, got {matrix.dtype} {matrix.shape}")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{self.names_path}: expected a JSON list of strings")
        if len(names) != matrix.shape[0]:
            raise ValueError(f"{self.bank_path} has {matrix.shape[0]} rows but {self.names_path} "
                             f"lists {len(names)} names")
        rows = torch.from_numpy(matrix.astype(np.float32))
        self.rows: torch.Tensor = torch.nn.functional.normalize(rows, dim=-1)
        self.names: list[str] = names
        self.embed_dim: int = int(matrix.shape[1])
        self._exact = {name: i for i, name in enumerate(names)}
        self._cleaned: dict[str, int] = {}
        for i, name in enumerate(names):
            self._cleaned.setdefault(_lookup_key(name), i)
        self._sha256 = hashlib.sha256(self.bank_path.read_bytes()).hexdigest()

    def index_of(self, name: str) -> int | None:
        """Row of ``name`` (exact, then cleaned match), None when the bank has none."""
        if name in self._exact:
            return self._exact[name]
        try:
            return self._cleaned.get(_lookup_key(name))
        except ValueError:  # empty after cleaning
            return None

    def encode_text(self, names: Sequence[str]) -> torch.Tensor:
        """``names`` (N) -> ``[N, embed_dim]`` float32 unit rows (a copy).

        Raises :class:`UnknownCategoryError` listing up to 10 names the bank lacks.
        """
        indices = [self.index_of(name) for name in names]
        unknown = [name for name, index in zip(names, indices, strict=True) if index is None]
        if unknown:
            shown = ", ".join(repr(n) for n in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
            raise UnknownCategoryError(
                f"{len(unknown)} name(s) not in text bank {self.bank_path.name} ({len(self.names)} names): {shown}")
        if not indices:
            return torch.zeros(0, self.embed_dim)
        return self.rows[torch.tensor(indices, dtype=torch.long)].clone()

    def describe(self) -> dict[str, object]:
        """What this bank is (files, size, content hash)."""
        return {
            "kind": "text_bank",
            "path": str(self.bank_path),
            "names_path": str(self.names_path),
            "rows": len(self.names),
            "embed_dim": self.embed_dim,
            "sha256": self._sha256,
        }
