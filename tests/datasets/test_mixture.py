from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from regionspot.datasets import mixture
from regionspot.datasets.mixture import BatchPlan, derive_rng, plan_batch, rank_range, rank_slice

SIZES = (50, 200, 7)
RATIOS = (1.0, 2.0, 1.0)


def test_plan_is_a_pure_function_of_seed_and_step() -> None:
    first = [plan_batch(3, step, SIZES, RATIOS, 8) for step in range(60)]
    # computed again in another order, after clearing every memo: same plans
    mixture._block_choices.cache_clear()
    mixture._epoch_permutation.cache_clear()
    mixture._prefix_tables.clear()
    again = {step: plan_batch(3, step, SIZES, RATIOS, 8) for step in reversed(range(60))}
    assert first == [again[step] for step in range(60)]
    # a "resumed" process asking only for a late step gets the same answer too
    mixture._prefix_tables.clear()
    mixture._block_choices.cache_clear()
    assert plan_batch(3, 2500, SIZES, RATIOS, 8) == plan_batch(3, 2500, SIZES, RATIOS, 8)
    assert [plan_batch(4, step, SIZES, RATIOS, 8) for step in range(60)] != first


def test_plan_shape_and_distinct_indices() -> None:
    for step in range(200):
        plan = plan_batch(0, step, SIZES, RATIOS, 16)
        assert isinstance(plan, BatchPlan) and len(plan.image_indices) == 16
        size = SIZES[plan.dataset_index]
        assert all(0 <= i < size and isinstance(i, int) for i in plan.image_indices)
        counts = Counter(plan.image_indices)
        if size >= 16:
            assert max(counts.values()) == 1
        else:  # 7 images for 16 slots: every image 2 or 3 times
            assert set(counts) == set(range(size)) and set(counts.values()) <= {2, 3}


def test_ratios_are_respected() -> None:
    steps = 6000
    chosen = Counter(plan_batch(11, s, SIZES, RATIOS, 4).dataset_index for s in range(steps))
    expected = np.array(RATIOS) / sum(RATIOS)
    observed = np.array([chosen[d] for d in range(3)]) / steps
    assert np.abs(observed - expected).max() < 0.03, observed


def test_epochs_cover_every_image_once() -> None:
    # one dataset of 10 images, batches of 2: 5 batches per epoch, each epoch a permutation
    batches = [plan_batch(5, s, [10], [1.0], 2).image_indices for s in range(15)]
    for epoch in range(3):
        seen = [i for batch in batches[epoch * 5:(epoch + 1) * 5] for i in batch]
        assert sorted(seen) == list(range(10))
    assert batches[0:5] != batches[5:10]  # a fresh order each epoch


def test_epochs_per_dataset_in_a_mixture() -> None:
    # the k-th batch of a dataset continues its own epoch whatever the other datasets did
    sizes, ratios, batch = (12, 30), (1.0, 1.0), 4
    per_dataset: dict[int, list[int]] = {0: [], 1: []}
    for step in range(40):
        plan = plan_batch(2, step, sizes, ratios, batch)
        per_dataset[plan.dataset_index].extend(plan.image_indices)
    first_epoch = per_dataset[0][:12]
    assert sorted(first_epoch) == list(range(12))
    # dataset 1 has 30 images: 7 batches of 4 per epoch, 2 images left out of each epoch
    assert len(per_dataset[1]) >= 56  # seed 2 picks dataset 1 in 21 of the 40 steps
    for epoch in range(2):
        assert len(set(per_dataset[1][epoch * 28:(epoch + 1) * 28])) == 28


def test_rank_slices_partition_the_global_batch() -> None:
    plan = plan_batch(1, 17, SIZES, RATIOS, 12)
    for world in (1, 2, 3, 4, 6, 12):
        parts = [rank_slice(plan, rank, world) for rank in range(world)]
        assert all(len(p) == 12 // world for p in parts)
        assert tuple(i for p in parts for i in p) == plan.image_indices
    assert rank_range(12, 2, 4) == range(6, 9)


def test_rank_slice_errors() -> None:
    plan = plan_batch(0, 0, SIZES, RATIOS, 16)
    with pytest.raises(ValueError, match="divisible"):
        rank_slice(plan, 0, 3)
    with pytest.raises(ValueError, match="rank"):
        rank_slice(plan, 4, 4)
    with pytest.raises(ValueError, match="world_size"):
        rank_slice(plan, 0, 0)


@pytest.mark.parametrize(("sizes", "ratios", "batch", "message"), [
    ((), (), 4, "no datasets"),
    ((10, 0), (1, 1), 4, "dataset 1 has no usable images"),
    ((10, 10), (1, 0), 4, "ratio"),
    ((10, 10), (1, -2), 4, "ratio"),
    ((10, 10), (1, float("nan")), 4, "ratio"),
    ((10, 10), (1,), 4, "2 dataset sizes but 1 ratios"),
    ((10,), (1,), 0, "batch_size"),
])
def test_plan_errors(sizes, ratios, batch, message) -> None:
    with pytest.raises(ValueError, match=message):
        plan_batch(0, 0, sizes, ratios, batch)


def test_negative_seed_or_step() -> None:
    with pytest.raises(ValueError, match="step"):
        plan_batch(0, -1, [5], [1], 2)
    with pytest.raises(ValueError, match="seed"):
        plan_batch(-1, 0, [5], [1], 2)


def test_derive_rng_streams() -> None:
    a = derive_rng(0, 5, mixture.STREAM_AUGMENT, 3).random(4)
    assert np.array_equal(a, derive_rng(0, 5, mixture.STREAM_AUGMENT, 3).random(4))
    assert not np.array_equal(a, derive_rng(0, 5, mixture.STREAM_AUGMENT, 4).random(4))
    assert not np.array_equal(a, derive_rng(0, 6, mixture.STREAM_AUGMENT, 3).random(4))
    with pytest.raises(ValueError, match=r"seed, step and keys must be non-negative integers, got \[0, 1, -3\]"):
        derive_rng(0, 1, -3)
