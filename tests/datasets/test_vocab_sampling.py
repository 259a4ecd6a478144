from __future__ import annotations

import numpy as np
import pytest

from regionspot.datasets.vocab_sampling import sample_vocabulary


def test_whole_vocabulary_is_the_identity() -> None:
    labels = np.array([4, 1, 4, 0])
    for limit in (None, 5, 50):
        rng = np.random.default_rng(0)
        state = rng.bit_generator.state
        subset, remapped = sample_vocabulary(labels, 5, limit, rng)
        assert subset.tolist() == [0, 1, 2, 3, 4] and remapped.tolist() == [4, 1, 4, 0]
        assert rng.bit_generator.state == state  # no randomness spent


def test_positives_plus_sampled_negatives() -> None:
    labels = np.array([9000, 17, 17, 12999, 3])
    subset, remapped = sample_vocabulary(labels, 13_000, 100, np.random.default_rng(1))
    assert subset.shape == (100,) and subset.dtype == np.int64
    assert np.all(np.diff(subset) > 0) and subset.min() >= 0 and subset.max() < 13_000
    assert set(labels.tolist()) <= set(subset.tolist())
    assert np.array_equal(subset[remapped], labels)


def test_deterministic_given_the_rng_and_uniform_negatives() -> None:
    labels = np.array([2, 5])
    a = sample_vocabulary(labels, 50, 10, np.random.default_rng(7))[0]
    assert np.array_equal(a, sample_vocabulary(labels, 50, 10, np.random.default_rng(7))[0])
    counts = np.zeros(50)
    rng = np.random.default_rng(3)
    for _ in range(4000):
        counts[sample_vocabulary(labels, 50, 10, rng)[0]] += 1
    assert counts[2] == counts[5] == 4000
    negatives = np.delete(counts, [2, 5]) / 4000  # each negative: 8 / 48 of the batches
    assert np.abs(negatives - 8 / 48).max() < 0.04


def test_more_positives_than_the_limit_keeps_them_all() -> None:
    labels = np.array([7, 3, 11, 3, 20])
    subset, remapped = sample_vocabulary(labels, 30, 2, np.random.default_rng(0))
    assert subset.tolist() == [3, 7, 11, 20]
    assert remapped.tolist() == [1, 0, 2, 0, 3]


def test_empty_batch_gets_only_negatives() -> None:
    subset, remapped = sample_vocabulary(np.array([], dtype=np.int64), 30, 4, np.random.default_rng(0))
    assert subset.shape == (4,) and remapped.shape == (0,)


@pytest.mark.parametrize(("labels", "size", "limit", "message"), [
    ([0, 5], 5, 3, r"\[0, 5\)"),
    ([-1], 5, 3, r"\[0, 5\)"),
    ([0.5], 5, 3, "integer"),
    ([0], 0, 3, "vocabulary_size"),
    ([0], 5, 0, "max_vocabulary"),
])
def test_errors(labels, size, limit, message) -> None:
    with pytest.raises(ValueError, match=message):
        sample_vocabulary(np.array(labels), size, limit, np.random.default_rng(0))
