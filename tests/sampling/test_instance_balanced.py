"""Instance-balanced positive sampling: a per-GT cap of round(expected / num_gt) + 1 (Libra R-CNN §3.1)."""

import torch

from libra_cli.sampling import sample_positives_per_instance
from libra_cli.sampling.instance_balanced import rank_within_groups


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def per_gt_counts(chosen: torch.Tensor, assigned_gt: torch.Tensor) -> dict[int, int]:
    counts: dict[int, int] = {}
    for gt in assigned_gt[chosen].tolist():
        counts[gt] = counts.get(gt, 0) + 1
    return counts


def test_rank_within_groups():
    assert rank_within_groups(torch.tensor([4, 4, 7, 9, 9, 9])).tolist() == [0, 1, 0, 0, 1, 2]
    assert rank_within_groups(torch.tensor([2])).tolist() == [0]


def test_caps_every_gt_when_all_have_many_positives():
    # 3 GT boxes with 100 positives each, 30 expected: cap = round(30 / 3) + 1 = 11 per GT (33 in all),
    # trimmed at random to 30.
    assigned_gt = torch.arange(300) // 100
    for seed in range(5):
        chosen = sample_positives_per_instance(torch.arange(300), assigned_gt, 30, generator=seeded(seed))
        counts = per_gt_counts(chosen, assigned_gt)
        assert chosen.numel() == 30 and len(set(chosen.tolist())) == 30
        assert max(counts.values()) <= 11 and sum(counts.values()) == 30
        # 33 − 30 = 3 removed from 33 capped picks, so each GT keeps at least 11 − 3 = 8.
        assert min(counts.values()) >= 8


def test_cap_uses_round_half_to_even():
    # 4 GT boxes × 50 positives, 10 expected: 10 / 4 = 2.5 rounds to 2, cap 3 → 12 picked, trimmed to 10.
    assigned_gt = torch.arange(200) // 50
    chosen = sample_positives_per_instance(torch.arange(200), assigned_gt, 10, generator=seeded(1))
    counts = per_gt_counts(chosen, assigned_gt)
    assert chosen.numel() == 10 and max(counts.values()) <= 3


def test_a_gt_with_few_positives_keeps_them_all_and_the_shortfall_is_filled():
    # GT 0 has 200 positives, GT 1 only 2; 20 expected: cap = round(20 / 2) + 1 = 11 → 11 + 2 = 13, so
    # 7 more come from GT 0's remaining positives → 18 from GT 0 and both of GT 1.
    assigned_gt = torch.cat([torch.zeros(200, dtype=torch.long), torch.ones(2, dtype=torch.long)])
    for seed in range(5):
        chosen = sample_positives_per_instance(torch.arange(202), assigned_gt, 20, generator=seeded(seed))
        assert {200, 201} <= set(chosen.tolist())
        assert per_gt_counts(chosen, assigned_gt) == {0: 18, 1: 2}


def test_reads_the_gt_of_each_positive_by_its_proposal_index():
    # Proposals 0..399; the positives are the odd ones. Proposal i is matched to GT i % 4, so the odd
    # proposals belong to GT 1 and GT 3 only (100 each): num_gt = 2, cap = round(10 / 2) + 1 = 6.
    assigned_gt = torch.arange(400) % 4
    positives = torch.arange(1, 400, 2)
    chosen = sample_positives_per_instance(positives, assigned_gt, 10, generator=seeded(2))
    counts = per_gt_counts(chosen, assigned_gt)
    assert set(counts) <= {1, 3} and max(counts.values()) <= 6 and sum(counts.values()) == 10
    assert set(chosen.tolist()) <= set(positives.tolist())


def test_takes_all_positives_when_not_more_than_expected():
    positives = torch.tensor([5, 9, 2])
    chosen = sample_positives_per_instance(positives, torch.zeros(10, dtype=torch.long), 3)
    assert chosen.tolist() == [5, 9, 2]
    assert sample_positives_per_instance(positives[:0], torch.zeros(10, dtype=torch.long), 3).numel() == 0


def test_the_capped_choice_within_a_gt_is_random():
    # One GT with 100 positives and another with 100, 10 expected (cap 6): over 300 draws every positive
    # should be picked sometimes — the probability is 5 / 100 per draw, about 15 times each.
    assigned_gt = torch.arange(200) // 100
    generator = seeded(3)
    picked = torch.zeros(200)
    for _ in range(300):
        picked[sample_positives_per_instance(torch.arange(200), assigned_gt, 10, generator=generator)] += 1
    assert int(picked.sum()) == 3000
    assert bool((picked > 0).all())


def test_same_seed_same_choice():
    assigned_gt = torch.arange(300) // 30
    a = sample_positives_per_instance(torch.arange(300), assigned_gt, 32, generator=seeded(9))
    b = sample_positives_per_instance(torch.arange(300), assigned_gt, 32, generator=seeded(9))
    assert a.tolist() == b.tolist()


def test_fills_to_the_quota_where_the_reference_loses_positives():
    # One GT with 200 candidates and nine with 5, 128 wanted: cap = round(128 / 10) + 1 = 14, so 14 + 9 × 5
    # = 59 are chosen within the cap and the other 69 come from the big GT's 186 others. The reference's
    # fill step draws them from all 245 positives (its set difference compares 0-d tensors by identity)
    # and keeps ≈ 111; libra fills to exactly 128: 83 from the big GT and all 5 of each small one.
    assigned_gt = torch.cat([torch.zeros(200, dtype=torch.long), torch.arange(1, 10).repeat_interleave(5)])
    positives = torch.arange(245)
    for seed in range(5):
        chosen = sample_positives_per_instance(positives, assigned_gt, 128, generator=seeded(seed))
        assert chosen.numel() == 128 and chosen.unique().numel() == 128
        assert per_gt_counts(chosen, assigned_gt) == {0: 83, **{gt: 5 for gt in range(1, 10)}}
