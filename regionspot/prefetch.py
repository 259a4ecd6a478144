"""Work done ahead in background processes: ``load(item)`` for each item, in order, by a
``torch`` DataLoader with workers (image decoding for ``eval``/``predict-batch``, batch
preparation for ``train``), while the caller works on the current item."""

from __future__ import annotations

import sys
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import Any, TypeVar

import torch
from torch.utils.data import DataLoader, Dataset

Item = TypeVar("Item")
#: How workers start: forked on Linux (as torch does by default there, even inside a process that
#: was itself spawned, so ``load`` need not be picklable), the platform's default elsewhere.
WORKER_START = "fork" if sys.platform.startswith("linux") else None


class _Loading(Dataset):
    """``load(items[i])`` as a map-style dataset; an exception is returned, not raised, so that
    it reaches the caller as itself rather than wrapped in a worker's traceback."""

    def __init__(self, items: Sequence[Any], load: Callable[[Any], Any]) -> None:
        self.items, self.load = items, load

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, Any]:
        try:
            return index, self.load(self.items[index])
        except Exception as exc:  # noqa: BLE001 - re-raised in the main process, as it was
            return index, exc


def _as_loaded(item: Any) -> Any:
    """The DataLoader's collate function: items pass as they are (not turned into tensors)."""
    return item


def prefetched(items: Sequence[Item], load: Callable[[Item], Any], workers: int = 0,
               pin_memory: bool = False) -> Generator[tuple[int, Any], None, None]:
    """``(i, load(items[i]))`` in order. With ``workers`` > 0 a ``torch`` DataLoader runs ``load``
    in that many processes, two items ahead each, while the caller works on the current one; an
    error raised by ``load`` is raised here, unchanged, when its item's turn comes. ``pin_memory``:
    the DataLoader pins the tensors it hands over (for a GPU; objects with a ``pin_memory()``
    method are pinned by it). The global torch RNG is not drawn from (a DataLoader would draw its
    workers' seeds from it), so a training run resumes exactly whatever step it restarts at."""
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    dataset = _Loading(items, load)
    if workers == 0:
        loaded: Iterable[tuple[int, Any]] = (dataset[index] for index in range(len(dataset)))
    else:
        loaded = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers, collate_fn=_as_loaded,
                            prefetch_factor=2, persistent_workers=False, pin_memory=pin_memory,
                            generator=torch.Generator().manual_seed(0),  # never draws from the global RNG
                            multiprocessing_context=WORKER_START)
    for index, value in loaded:
        if isinstance(value, Exception):
            raise value
        yield index, value
