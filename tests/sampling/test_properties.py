"""Invariants of the samplers over random inputs (hypothesis)."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from libra_cli.sampling import IoUBalancedSampler, sample_negatives_by_iou

# IoUs drawn partly from a grid that contains the bin edges of the configurations below, so that
# values sitting exactly on an edge are common.
EDGE_VALUES = np.array([0.0, 0.1, 0.2, 0.25, 1 / 6, 1 / 3, 0.4, 0.5, 2 / 3, 1.0], dtype=np.float32)


def random_image(rng: np.random.Generator, n: int, num_gt: int):
    labels = rng.choice([-1, 0, 0, 0, 1, 2], size=n)
    ious = np.where(rng.random(n) < 0.3, rng.choice(EDGE_VALUES, size=n), rng.random(n)).astype(np.float32)
    # Keep the IoUs consistent with the labels: negatives below 0.5, positives at or above it.
    ious = np.where(labels == 0, ious * 0.4999, ious)
    ious = np.where(labels > 0, 0.5 + 0.5 * ious, ious)
    matched_gt = rng.integers(0, num_gt, size=n)
    return torch.from_numpy(labels).long(), torch.from_numpy(ious), torch.from_numpy(matched_gt).long()


sampler_settings = st.fixed_dictionaries(
    {
        "batch_size_per_image": st.integers(1, 300),
        "positive_fraction": st.sampled_from([0.0, 0.25, 0.5, 1.0]),
        "num_bins": st.integers(1, 5),
        "floor_thr": st.sampled_from([-1.0, 0.0, 0.1, 0.25]),
        "floor_fraction": st.sampled_from([0.0, 0.3, 0.5, 1.0]),
        "bins_upper": st.sampled_from(["max-iou", "neg-thr"]),
        "pos_balance": st.booleans(),
    }
)


@settings(max_examples=60, deadline=None, database=None)
@given(
    settings_=sampler_settings,
    sizes=st.lists(st.integers(0, 600), min_size=1, max_size=3),
    num_gt=st.integers(1, 8),
    seed=st.integers(0, 2**31 - 1),
)
def test_sampler_invariants(settings_, sizes, num_gt, seed):
    rng = np.random.default_rng(seed)
    images = [random_image(rng, n, num_gt) for n in sizes]
    labels, max_ious, matched_gt = (list(column) for column in zip(*images, strict=True))
    sampler = IoUBalancedSampler(**settings_)
    pos_masks, neg_masks = sampler(labels, max_ious, matched_gt, generator=torch.Generator().manual_seed(seed))
    again = sampler(labels, max_ious, matched_gt, generator=torch.Generator().manual_seed(seed))

    batch = settings_["batch_size_per_image"]
    pos_expected = int(batch * settings_["positive_fraction"])
    for i, (labels_i, pos, neg) in enumerate(zip(labels, pos_masks, neg_masks, strict=True)):
        num_pos_available = int((labels_i > 0).sum())
        num_neg_available = int((labels_i == 0).sum())
        num_pos = min(pos_expected, num_pos_available)
        # Inside their candidate sets, disjoint, ignored RoIs never sampled.
        assert bool((labels_i[pos] > 0).all()) and bool((labels_i[neg] == 0).all())
        assert not bool((pos & neg).any())
        # Sizes: min(expected, available).
        assert int(pos.sum()) == num_pos
        assert int(neg.sum()) == min(batch - num_pos, num_neg_available)
        # Per-GT cap when positives are balanced and there were more than expected.
        if settings_["pos_balance"] and num_pos_available > pos_expected:
            gts = matched_gt[i][labels_i > 0]
            cap = round(pos_expected / int(torch.unique(gts).numel())) + 1
            available = torch.bincount(gts, minlength=num_gt)
            counts = torch.bincount(matched_gt[i][pos], minlength=num_gt)
            present = available > 0
            if bool((available[present] >= cap).all()):
                # cap × num_gt >= expected, so no shortfall fill: every GT stays within the cap.
                assert int(counts.max()) <= cap
            if int(counts.max()) > cap:
                # Only the shortfall fill exceeds the cap, and it comes after every GT with at most cap
                # positives gave all of them.
                small = present & (available <= cap)
                assert torch.equal(counts[small], available[small])
        # Same seed, same masks.
        assert torch.equal(pos, again[0][i]) and torch.equal(neg, again[1][i])


@settings(max_examples=60, deadline=None, database=None)
@given(
    n=st.integers(0, 800),
    num_expected=st.integers(0, 400),
    num_bins=st.integers(1, 5),
    floor_thr=st.sampled_from([-1.0, 0.0, 0.05, 0.2]),
    floor_fraction=st.floats(0.0, 1.0),
    bins_upper=st.sampled_from(["max-iou", "neg-thr"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_negative_sample_invariants(n, num_expected, num_bins, floor_thr, floor_fraction, bins_upper, seed):
    rng = np.random.default_rng(seed)
    max_iou = torch.from_numpy(
        np.where(rng.random(n) < 0.3, rng.choice(EDGE_VALUES, size=n), rng.random(n)).astype(np.float32)
    )
    candidates = torch.where(max_iou < 0.5)[0]
    kwargs = dict(num_bins=num_bins, floor_thr=floor_thr, floor_fraction=floor_fraction, bins_upper=bins_upper)
    chosen = sample_negatives_by_iou(
        max_iou, candidates, num_expected, generator=torch.Generator().manual_seed(seed), **kwargs
    )
    chosen_list = chosen.tolist()
    assert len(chosen_list) == len(set(chosen_list)) == min(num_expected, candidates.numel())
    assert set(chosen_list) <= set(candidates.tolist())
    again = sample_negatives_by_iou(
        max_iou, candidates, num_expected, generator=torch.Generator().manual_seed(seed), **kwargs
    )
    assert again.tolist() == chosen_list
