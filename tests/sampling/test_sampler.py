"""The RoI-head samplers behind torchvision's interface."""

import copy

import pytest
import torch
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler

from libra_cli.sampling import IoUBalancedSampler, RandomSampler, hard_negatives


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_image(num_pos: int, num_neg: int, num_ignored: int, num_gt: int, seed: int):
    """One image's (labels, max_iou, matched_gt): positives first, then negatives, then ignored RoIs."""
    g = seeded(seed)
    n = num_pos + num_neg + num_ignored
    labels = torch.cat(
        [
            torch.randint(1, 5, (num_pos,), generator=g),
            torch.zeros(num_neg, dtype=torch.long),
            torch.full((num_ignored,), -1, dtype=torch.long),
        ]
    )
    max_iou = torch.cat(
        [
            0.5 + 0.5 * torch.rand(num_pos, generator=g),
            0.5 * torch.rand(num_neg, generator=g),
            0.4 + 0.1 * torch.rand(num_ignored, generator=g),
        ]
    )
    if num_pos:
        max_iou[0] = 1.0  # a GT box added to the proposals
    matched_gt = torch.randint(0, num_gt, (n,), generator=g)
    return labels, max_iou, matched_gt


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(bins_upper="paper"),
        dict(num_bins=0),
        dict(num_bins=2.5),
        dict(positive_fraction=1.5),
        dict(positive_fraction=-0.25),
        dict(floor_fraction=1.1),
        dict(batch_size_per_image=0),
    ],
)
def test_invalid_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        IoUBalancedSampler(**kwargs)


def test_random_sampler_rejects_invalid_arguments():
    with pytest.raises(ValueError):
        RandomSampler(positive_fraction=2.0)
    with pytest.raises(ValueError):
        RandomSampler(batch_size_per_image=-1)


def test_masks_have_the_expected_sizes_and_skip_ignored_rois():
    # Image 1: 300 positives → 128 (= int(512 × 0.25)) taken, 384 of 1500 negatives.
    # Image 2: 40 positives → all 40, then 512 − 40 = 472 negatives, but only 100 exist → 100.
    images = [make_image(300, 1500, 200, 6, seed=0), make_image(40, 100, 50, 3, seed=1)]
    labels, max_ious, matched_gt = map(list, zip(*images, strict=True))
    pos_masks, neg_masks = IoUBalancedSampler()(labels, max_ious, matched_gt, generator=seeded())
    assert [int(m.sum()) for m in pos_masks] == [128, 40]
    assert [int(m.sum()) for m in neg_masks] == [384, 100]
    for labels_i, pos, neg in zip(labels, pos_masks, neg_masks, strict=True):
        assert pos.dtype == torch.bool and pos.shape == labels_i.shape
        assert bool((labels_i[pos] > 0).all()) and bool((labels_i[neg] == 0).all())
        assert not bool((pos & neg).any())


def test_positive_balance_caps_positives_per_gt():
    # 4 GT boxes, 300 positives mostly on GT 0: cap = round(128 / 4) + 1 = 33 per GT.
    labels = torch.cat([torch.ones(300, dtype=torch.long), torch.zeros(1000, dtype=torch.long)])
    matched_gt = torch.cat([torch.zeros(240, dtype=torch.long), torch.arange(60) % 3 + 1, torch.zeros(1000).long()])
    max_iou = torch.cat([torch.full((300,), 0.7), torch.linspace(0.0, 0.49, 1000)])
    pos, _ = IoUBalancedSampler()([labels], [max_iou], [matched_gt], generator=seeded(1))
    per_gt = torch.bincount(matched_gt[pos[0]], minlength=4).tolist()
    # GTs 1-3 have 20 positives each (all under the cap, all taken); GT 0 gives its cap of 33 plus the
    # shortfall 128 − (33 + 60) = 35 → 68.
    assert per_gt == [68, 20, 20, 20]


def test_without_positive_balance_positives_are_uniform():
    # Same image: uniform sampling takes GT 0's positives in proportion 240 / 300, about 102 of 128 —
    # far above the 68 the balanced sampler gives.
    labels = torch.cat([torch.ones(300, dtype=torch.long), torch.zeros(1000, dtype=torch.long)])
    matched_gt = torch.cat([torch.zeros(240, dtype=torch.long), torch.arange(60) % 3 + 1, torch.zeros(1000).long()])
    max_iou = torch.cat([torch.full((300,), 0.7), torch.linspace(0.0, 0.49, 1000)])
    pos, _ = IoUBalancedSampler(pos_balance=False)([labels], [max_iou], [matched_gt], generator=seeded(1))
    assert int(pos[0].sum()) == 128
    assert 85 < int((matched_gt[pos[0]] == 0).sum()) < 120


def test_negatives_are_iou_balanced_with_the_paper_text_bins():
    # 900 negatives, 300 in each of [0, 1/6), [1/6, 1/3), [1/3, 0.5); 10 positives → 502 negatives
    # expected, quota int(502 / 3) = 167 per bin, the 1 left over drawn at random.
    neg_iou = torch.cat(
        [torch.linspace(0.01, 0.16, 300), torch.linspace(0.18, 0.32, 300), torch.linspace(0.35, 0.49, 300)]
    )
    max_iou = torch.cat([torch.full((10,), 0.8), neg_iou])
    labels = torch.cat([torch.ones(10, dtype=torch.long), torch.zeros(900, dtype=torch.long)])
    matched_gt = torch.zeros(910, dtype=torch.long)
    sampler = IoUBalancedSampler(bins_upper="neg-thr")
    _, neg = sampler([labels], [max_iou], [matched_gt], generator=seeded(2))
    counts = sorted(int(neg[0][10 + 300 * k : 10 + 300 * (k + 1)].sum()) for k in range(3))
    assert counts == [167, 167, 168]


def test_calls_change_nothing_and_repeat_with_the_same_seed():
    images = [make_image(200, 800, 30, 5, seed=3), make_image(5, 600, 0, 1, seed=4)]
    labels, max_ious, matched_gt = map(list, zip(*images, strict=True))
    sampler = IoUBalancedSampler(floor_thr=-1.0, floor_fraction=0.3)
    before = copy.deepcopy(vars(sampler))
    first = sampler(labels, max_ious, matched_gt, generator=seeded(5))
    second = sampler(labels, max_ious, matched_gt, generator=seeded(5))
    assert vars(sampler) == before
    for a, b in zip(first[0] + first[1], second[0] + second[1], strict=True):
        assert torch.equal(a, b)
    torch.manual_seed(11)
    third = sampler(labels, max_ious, matched_gt)
    torch.manual_seed(11)
    fourth = sampler(labels, max_ious, matched_gt)
    for a, b in zip(third[0] + third[1], fourth[0] + fourth[1], strict=True):
        assert torch.equal(a, b)


def test_random_sampler_matches_torchvision_with_the_same_seed():
    # Images covering: more positives and negatives than wanted, fewer positives than wanted, fewer
    # negatives than the rest of the batch, and no positives at all.
    images = [
        make_image(300, 1500, 100, 4, seed=0),
        make_image(20, 2000, 0, 2, seed=1),
        make_image(200, 50, 10, 3, seed=2),
        make_image(0, 700, 5, 1, seed=3),
    ]
    labels = [image[0] for image in images]
    ours = RandomSampler(512, 0.25)
    theirs = BalancedPositiveNegativeSampler(512, 0.25)
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        our_pos, our_neg = ours(labels, [image[1] for image in images], [image[2] for image in images])
        torch.manual_seed(seed)
        their_pos, their_neg = theirs(labels)
        for a, b in zip(our_pos + our_neg, their_pos + their_neg, strict=True):
            assert torch.equal(a, b.bool())
    # Hand-checked sizes for the first image: 128 positives and 384 negatives.
    assert int(our_pos[0].sum()) == 128 and int(our_neg[0].sum()) == 384
    # The third image: 128 positives, then all 50 negatives.
    assert int(our_pos[2].sum()) == 128 and int(our_neg[2].sum()) == 50


def test_hard_negatives_takes_the_largest_losses():
    loss = torch.tensor([0.1, 5.0, 0.3, 2.0, 9.0, 0.2])
    candidates = torch.tensor([0, 1, 2, 3, 5])  # proposal 4 (loss 9.0) is not a negative
    assert hard_negatives(loss, candidates, 2).tolist() == [1, 3]
    assert sorted(hard_negatives(loss, candidates, 10).tolist()) == [0, 1, 2, 3, 5]
    assert hard_negatives(loss, candidates, 0).numel() == 0
