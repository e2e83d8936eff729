"""The iteration batch sampler's options: repeat-factor sampling and aspect-ratio grouping."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from libra_cli.data.sampler import IterationBatchSampler, aspect_ratio_groups, repeat_factors


def test_repeat_factors_by_hand():
    # 10 images: class A in all of them, class B in image 0 only → f_A = 1, f_B = 0.1. With t = 0.4:
    # r(B) = √(0.4 / 0.1) = 2, r(A) = max(1, √0.4) = 1; an image's factor is the max over its classes.
    labels = [["A", "B"]] + [["A"]] * 9
    assert repeat_factors(labels, 0.4) == [2.0] + [1.0] * 9
    # An image without boxes keeps r = 1; f counts images (repeated boxes of a class in one image count once).
    assert repeat_factors([[1, 1, 1], [], [2], [2]], 0.5) == [math.sqrt(0.5 / 0.25), 1.0, 1.0, 1.0]
    with pytest.raises(ValueError):
        repeat_factors(labels, 0.0)


def flat(batches):
    return [index for batch in batches for index, _ in batch]


FACTORS = [1.0, 2.5, 1.0, 3.2, 1.0, 1.0, 1.7]


@pytest.mark.parametrize(
    "options",
    [
        {"repeat_factors": FACTORS},
        {"group_ids": [0, 1, 1, 0, 0, 1, 0]},
        {"repeat_factors": FACTORS, "group_ids": [0, 1, 1, 0, 0, 1, 0]},
    ],
)
def test_batches_are_a_pure_function_of_seed_and_iteration_and_resume_exactly(options):
    full = list(IterationBatchSampler(7, 4, seed=3, start_iter=0, max_iters=40, **options))
    assert full == list(IterationBatchSampler(7, 4, seed=3, start_iter=0, max_iters=40, **options))
    assert full != list(IterationBatchSampler(7, 4, seed=4, start_iter=0, max_iters=40, **options))
    for start in (1, 5, 17, 33):  # mid-epoch resumption, epochs of varying length
        resumed = list(IterationBatchSampler(7, 4, seed=3, start_iter=start, max_iters=40, **options))
        assert resumed == full[start:]
    # Data parallelism: the ranks' shares make up the global batch.
    rank0 = list(IterationBatchSampler(7, 4, seed=3, start_iter=0, max_iters=40, rank=0, world_size=2, **options))
    rank1 = list(IterationBatchSampler(7, 4, seed=3, start_iter=0, max_iters=40, rank=1, world_size=2, **options))
    for k in range(40):
        assert sorted(rank0[k] + rank1[k]) == sorted(full[k])


def test_without_options_the_stream_is_unchanged():
    # Epoch e is torch.randperm(n) seeded with (seed, e): the order runs before these options had.
    batches = list(IterationBatchSampler(10, 5, seed=2, start_iter=0, max_iters=4))
    expected = [
        index
        for epoch in range(2)
        for index in torch.randperm(10, generator=torch.Generator().manual_seed(2 * 1_000_003 + epoch)).tolist()
    ]
    assert flat(batches) == expected


def test_repeat_factor_sampling_visits_each_image_r_times_per_epoch_on_average():
    factors = [1.0, 2.0, 1.5, 3.7, 1.0]
    epochs = 400
    total = int(sum(factors) * epochs)
    sampler = IterationBatchSampler(5, 1, seed=0, start_iter=0, max_iters=total, repeat_factors=factors)
    counts = Counter(flat(sampler))
    for index, factor in enumerate(factors):
        assert counts[index] / epochs == pytest.approx(factor, rel=0.05)
    # Whole-number factors are exact in every epoch: the first epoch holds image 1 twice and image 0 once.
    first = sampler._permutation(0)
    assert first.count(0) == 1 and first.count(1) == 2 and first.count(3) in (3, 4)


def test_grouped_batches_hold_one_orientation_and_cover_every_image():
    sizes = [(40, 30), (30, 40), (30, 40), (50, 50), (60, 20), (20, 60), (45, 30), (10, 11), (33, 32)]
    groups = aspect_ratio_groups(sizes)
    assert groups == [0, 1, 1, 0, 0, 1, 0, 1, 0]
    sampler = IterationBatchSampler(9, 4, seed=1, start_iter=0, max_iters=30, group_ids=groups)
    batches = list(sampler)
    for batch in batches:
        assert len(batch) == 4 and len({groups[index] for index, _ in batch}) == 1
    # Epoch 0 (5 landscape → 2 batches, 4 portrait → 1 batch) holds every image.
    assert set(flat(batches[:3])) == set(range(9))
    # Augmentation seeds stay distinct per position.
    seeds = [seed for batch in batches for _, seed in batch]
    assert len(set(seeds)) == len(seeds)
