"""Instance-balanced positive sampling ("Pos Balance" in Libra R-CNN, Pang et al., CVPR 2019, Table 4).

When an image has more positive RoIs than wanted, large objects (which overlap many proposals) would
take most of the random draw. Capping the positives per GT box gives every object a fair share.
"""

import torch

from libra_cli.sampling.random import random_permutation, sample_uniformly


def rank_within_groups(sorted_groups: torch.Tensor) -> torch.Tensor:
    """The 0-based position of each element within its run of equal values.

    Args:
        sorted_groups: LongTensor[P] in which equal values are contiguous, e.g. ``[4, 4, 7, 9, 9, 9]``.

    Returns:
        LongTensor[P], e.g. ``[0, 1, 0, 0, 1, 2]``.
    """
    position = torch.arange(sorted_groups.numel(), device=sorted_groups.device)
    starts_group = torch.ones_like(sorted_groups, dtype=torch.bool)
    starts_group[1:] = sorted_groups[1:] != sorted_groups[:-1]
    # The start of each element's group is the latest group start at or before it: a running maximum.
    group_start = torch.cummax(torch.where(starts_group, position, 0), dim=0).values
    return position - group_start


def sample_positives_per_instance(
    positives: torch.Tensor,
    assigned_gt: torch.Tensor,
    num_expected: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Choose ``num_expected`` positives spread evenly over the GT boxes they match (Libra R-CNN §3.1).

    If there are more positives P than expected, at most ``cap = round(expected / num_gt) + 1``
    positives are kept per GT box, chosen at random (num_gt = number of distinct GT boxes among the
    positives; ``round`` is Python's, halves to even, as in the reference code). A shortfall is filled
    at random from the other positives and an excess is trimmed at random, so exactly ``num_expected``
    come back. Otherwise every positive is taken.

    A deliberate difference from the reference code: its fill step removes the already-chosen indices
    with a difference of Python sets of 0-d tensors, which compare by identity, so nothing is removed,
    already-chosen positives can be drawn again and are then dropped as duplicates, and it returns fewer
    positives than wanted. Example: one GT with 200 candidates and nine with 5, 128 wanted: cap
    round(128 / 10) + 1 = 14, so 14 + 9 × 5 = 59 are chosen; the 69 still missing are drawn from all 245
    positives, of which 59 are already chosen, so about 69 × 59 / 245 ≈ 17 duplicates are dropped and
    ≈ 111 positives remain. Filling to the quota is what the method describes; libra does that, so
    exactly ``num_expected`` come back.

    The per-GT cap is vectorised: shuffle the positives, stable-sort them by GT (so the order within a
    GT stays random), and keep those whose rank within their GT is below the cap.

    Args:
        positives: LongTensor[P], distinct indices of the positive proposals.
        assigned_gt: LongTensor[N], for every proposal the index of the GT box it is matched to (only
            the entries at ``positives`` are read).
        num_expected: the number of positives wanted.
        generator: source of randomness; None uses the global RNG.

    Returns:
        LongTensor[min(num_expected, P)]: distinct elements of ``positives``.
    """
    num_expected = max(int(num_expected), 0)
    if positives.numel() <= num_expected:
        return positives

    gt_of_positive = assigned_gt[positives]
    num_gt = int(torch.unique(gt_of_positive).numel())
    cap = round(num_expected / num_gt) + 1

    shuffled = random_permutation(positives.numel(), positives.device, generator)
    by_gt = shuffled[torch.argsort(gt_of_positive[shuffled], stable=True)]
    within_cap = rank_within_groups(gt_of_positive[by_gt]) < cap
    chosen, rest = by_gt[within_cap], by_gt[~within_cap]

    if chosen.numel() < num_expected:
        chosen = torch.cat([chosen, sample_uniformly(rest, num_expected - chosen.numel(), generator)])
    elif chosen.numel() > num_expected:
        chosen = sample_uniformly(chosen, num_expected, generator)
    return positives[chosen]
