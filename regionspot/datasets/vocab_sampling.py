"""Score a batch against part of a very large vocabulary (V3Det: about 13k names).

Each batch is scored against its dataset's vocabulary. With ``max_vocabulary`` set, the batch
is scored against every category present in it (positives) plus negatives drawn uniformly
without replacement from the rest, up to ``max_vocabulary`` names in all; labels are remapped
into that subset. The focal loss then sees a random subset of the negatives per batch.
"""

from __future__ import annotations

import numpy as np

__all__ = ["sample_vocabulary"]


def sample_vocabulary(positive_labels: np.ndarray, vocabulary_size: int, max_vocabulary: int | None,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The vocabulary entries a batch is scored against, and its labels remapped into them.

    Args:
        positive_labels: int [N] labels of the batch's boxes (indices into the vocabulary,
            repeats allowed, any order).
        vocabulary_size: V, the dataset's number of names.
        max_vocabulary: at most this many names are scored; None scores all V.
        rng: the only source of randomness (untouched when the whole vocabulary is used).

    Returns:
        ``(subset, labels)``: ``subset`` int64 [M] sorted distinct vocabulary indices: every
        distinct positive plus ``max_vocabulary - #positives`` negatives sampled uniformly
        without replacement (M = min(V, max(max_vocabulary, #positives))); ``labels`` int64
        [N] with ``subset[labels] == positive_labels``. If ``max_vocabulary`` is None or at
        least V: ``subset = arange(V)`` and ``labels`` equal the input. If the batch holds
        more distinct positives than ``max_vocabulary``, all positives are kept (M exceeds
        ``max_vocabulary``; no negatives): a positive is never dropped.

    Raises:
        ValueError: ``vocabulary_size < 1``, ``max_vocabulary < 1``, labels that are not
            integers in ``[0, V)``.
    """
    if isinstance(vocabulary_size, bool) or not isinstance(vocabulary_size, (int, np.integer)) \
            or vocabulary_size < 1:
        raise ValueError(f"vocabulary_size must be a positive integer, got {vocabulary_size!r}")
    if max_vocabulary is not None and (isinstance(max_vocabulary, bool) or max_vocabulary < 1):
        raise ValueError(f"max_vocabulary must be a positive integer or None, got {max_vocabulary!r}")
    labels = np.asarray(positive_labels)
    if labels.size == 0:
        labels = labels.reshape(0).astype(np.int64)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"positive_labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= vocabulary_size):
        raise ValueError(f"labels must lie in [0, {vocabulary_size}), got {labels.min()}..{labels.max()}")
    if max_vocabulary is None or max_vocabulary >= vocabulary_size:
        return np.arange(vocabulary_size, dtype=np.int64), labels.copy()
    positives = np.unique(labels)
    wanted = max(0, int(max_vocabulary) - positives.size)
    if wanted:
        is_negative = np.ones(vocabulary_size, dtype=bool)
        is_negative[positives] = False
        negatives = rng.choice(np.flatnonzero(is_negative), size=wanted, replace=False)
        subset = np.sort(np.concatenate([positives, negatives.astype(np.int64)]))
    else:
        subset = positives
    return subset, np.searchsorted(subset, labels).astype(np.int64)
