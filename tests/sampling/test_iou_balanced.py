"""IoU-balanced negative sampling on constructed IoUs whose per-bin answer is known (Libra R-CNN §3.1)."""

import numpy as np
import pytest
import torch

from libra_cli.sampling import iou_bin_index, sample_negatives_by_iou


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def constant_groups(*groups: tuple[int, float]) -> torch.Tensor:
    """IoUs made of groups of (count, value), in float32 like real IoUs."""
    return torch.tensor(np.concatenate([np.full(count, value) for count, value in groups]), dtype=torch.float32)


def spread(count: int, low: float, high: float) -> np.ndarray:
    """``count`` IoUs spread strictly inside (low, high)."""
    return np.linspace(low, high, count + 2)[1:-1]


def count_in(values: torch.Tensor, low: float, high: float) -> int:
    return int(((values >= low) & (values < high)).sum())


def test_each_full_bin_gives_exactly_its_quota_with_bins_over_the_negative_range():
    # "neg-thr": bins [0, 1/6), [1/6, 1/3), [1/3, 0.5); 300 candidates in each, 90 expected → 30 per bin.
    ious = torch.tensor(
        np.concatenate([spread(300, 0.0, 1 / 6), spread(300, 1 / 6, 1 / 3), spread(300, 1 / 3, 0.5)]),
        dtype=torch.float32,
    )
    candidates = torch.arange(900)
    chosen = sample_negatives_by_iou(
        ious, candidates, 90, num_bins=3, bins_upper="neg-thr", neg_iou_thr=0.5, generator=seeded()
    )
    chosen_ious = ious[chosen]
    assert chosen.numel() == 90
    assert [
        count_in(chosen_ious, 0, 1 / 6),
        count_in(chosen_ious, 1 / 6, 1 / 3),
        count_in(chosen_ious, 1 / 3, 0.5),
    ] == [
        30,
        30,
        30,
    ]


def test_a_short_bin_gives_all_it_has_and_the_shortfall_comes_from_the_other_bins():
    # Bins as above with 300, 5 and 300 members: the middle bin gives its 5, the other two give at least
    # their quota of 30 each and together the 90 − 5 = 85 that remain.
    ious = torch.tensor(
        np.concatenate([spread(300, 0.0, 1 / 6), spread(5, 1 / 6, 1 / 3), spread(300, 1 / 3, 0.5)]),
        dtype=torch.float32,
    )
    candidates = torch.arange(605)
    chosen = sample_negatives_by_iou(ious, candidates, 90, bins_upper="neg-thr", generator=seeded(1))
    chosen_set = set(chosen.tolist())
    assert set(range(300, 305)) <= chosen_set
    low, high = count_in(ious[chosen], 0, 1 / 6), count_in(ious[chosen], 1 / 3, 0.5)
    assert low >= 30 and high >= 30 and low + high == 85
    assert chosen.numel() == 90


def test_reference_upper_end_leaves_the_top_bin_empty_and_its_quota_goes_to_the_random_fill():
    # "max-iou" with a GT box added as a proposal (IoU 1.0, index 600, not a candidate): bins are
    # [0, 1/3), [1/3, 2/3), [2/3, 1]. Negatives are below 0.5, so the top bin is empty: its 30 come at
    # random from the other two, each of which gives at least its quota of 30.
    ious = torch.tensor(np.concatenate([spread(300, 0.0, 1 / 3), spread(300, 1 / 3, 0.5), [1.0]]), dtype=torch.float32)
    candidates = torch.arange(600)
    chosen = sample_negatives_by_iou(ious, candidates, 90, bins_upper="max-iou", generator=seeded(2))
    low, middle = count_in(ious[chosen], 0, 1 / 3), count_in(ious[chosen], 1 / 3, 2 / 3)
    assert chosen.numel() == 90
    assert low >= 30 and middle >= 30 and low + middle == 90
    # The same answer when hi is given explicitly instead of read from max_iou.
    chosen_again = sample_negatives_by_iou(ious[:600], candidates, 90, max_iou_overall=1.0, generator=seeded(2))
    assert chosen_again.tolist() == chosen.tolist()


def test_an_iou_on_an_inner_edge_belongs_to_the_upper_bin():
    # K = 2 over [0, 0.5): bins [0, 0.25) and [0.25, 0.5). 100 candidates at 0.1 and 100 exactly at
    # 0.25; 40 expected → quota 20 per bin, so exactly 20 of each (if 0.25 fell into the lower bin, one
    # bin would hold all 200 and the split would be random).
    ious = constant_groups((100, 0.1), (100, 0.25))
    for seed in range(5):
        chosen = sample_negatives_by_iou(
            ious, torch.arange(200), 40, num_bins=2, bins_upper="neg-thr", generator=seeded(seed)
        )
        assert int((chosen >= 100).sum()) == 20


def test_the_last_bin_includes_its_upper_end():
    # No GT box among the proposals: hi = 0.4, the largest candidate IoU. K = 2: [0, 0.2), [0.2, 0.4].
    # 100 at 0.1 and 3 at 0.4; 20 expected → quota 10: the top bin gives its 3, the low bin 17.
    ious = constant_groups((100, 0.1), (3, 0.4))
    for seed in range(5):
        chosen = sample_negatives_by_iou(ious, torch.arange(103), 20, num_bins=2, generator=seeded(seed))
        assert {100, 101, 102} <= set(chosen.tolist())
        assert chosen.numel() == 20


def test_bin_index_edges():
    # K = 2 over [0, 0.5]: 0.25 is the inner edge (upper bin); 0.5 = hi is in the closed last bin;
    # values outside [lo, hi] are in no bin.
    ious = torch.tensor([0.0, 0.2499, 0.25, 0.4999, 0.5, 0.6, -0.1])
    assert iou_bin_index(ious, 0.0, 0.5, 2).tolist() == [0, 0, 1, 1, 1, -1, -1]
    # K = 3 over [0, 1]: the float32 values of 1/3 and 2/3 start bins 1 and 2.
    third, two_thirds = torch.tensor(1 / 3), torch.tensor(2 / 3)
    ious = torch.stack([third, third - 1e-6, two_thirds, two_thirds - 1e-6, torch.tensor(1.0)])
    assert iou_bin_index(ious, 0.0, 1.0, 3).tolist() == [1, 0, 2, 1, 2]
    # hi below lo: no bin at all.
    assert iou_bin_index(torch.tensor([0.1, 0.3]), 0.2, 0.1, 3).tolist() == [-1, -1]


def test_floor_thr_zero_keeps_zero_iou_negatives_out_of_the_binned_sample():
    # 500 negatives at IoU 0 (floor set) and 300 above 0 (binned set), GT at index 800 with IoU 1.0.
    ious = torch.tensor(np.concatenate([np.zeros(500), spread(300, 0.0, 0.5), [1.0]]), dtype=torch.float32)
    candidates = torch.arange(800)
    # floor_fraction 0: n_bin = 90, all from the binned set, none from the floor.
    chosen = sample_negatives_by_iou(ious, candidates, 90, floor_thr=0.0, generator=seeded(3))
    assert chosen.numel() == 90 and int((ious[chosen] == 0).sum()) == 0
    # floor_fraction 0.5: n_bin = int(90 × 0.5) = 45 from the binned set, 45 from the floor set.
    chosen = sample_negatives_by_iou(ious, candidates, 90, floor_thr=0.0, floor_fraction=0.5, generator=seeded(3))
    assert int((ious[chosen] == 0).sum()) == 45 and int((ious[chosen] > 0).sum()) == 45


def test_a_small_binned_set_is_taken_whole_and_the_floor_set_fills_the_rest():
    # floor_thr 0: 20 negatives above 0 ≤ n_bin = 90 → all 20, then 70 of the 500 at IoU 0.
    ious = torch.tensor(np.concatenate([np.zeros(500), spread(20, 0.0, 0.5)]), dtype=torch.float32)
    chosen = sample_negatives_by_iou(ious, torch.arange(520), 90, floor_thr=0.0, generator=seeded(4))
    assert set(range(500, 520)) <= set(chosen.tolist())
    assert int((ious[chosen] == 0).sum()) == 70


def test_floor_thr_positive_splits_by_the_threshold_and_bins_start_at_it():
    # floor_thr 0.1: floor = {IoU < 0.1}, binned = {IoU ≥ 0.1} (index 200 sits exactly at 0.1).
    # floor_fraction 0.5 with 90 expected: n_bin = 45 from the binned set, 45 from the floor set.
    # "neg-thr" bins start at lo = 0.1: [0.1, 7/30), [7/30, 11/30), [11/30, 0.5), quota int(45/3) = 15.
    floor_part = np.concatenate([np.zeros(100), spread(100, 0.0, 0.1)])
    binned_part = np.concatenate(
        [[0.1], spread(99, 0.1, 7 / 30), spread(100, 7 / 30, 11 / 30), spread(100, 11 / 30, 0.5)]
    )
    ious = torch.tensor(np.concatenate([floor_part, binned_part]), dtype=torch.float32)
    candidates = torch.arange(ious.numel())
    for seed in range(3):
        chosen = sample_negatives_by_iou(
            ious,
            candidates,
            90,
            floor_thr=0.1,
            floor_fraction=0.5,
            bins_upper="neg-thr",
            generator=seeded(seed),
        )
        chosen_ious = ious[chosen]
        assert int((chosen < 200).sum()) == 45
        assert [
            count_in(chosen_ious, 0.1, 7 / 30),
            count_in(chosen_ious, 7 / 30, 11 / 30),
            count_in(chosen_ious, 11 / 30, 0.5),
        ] == [15, 15, 15]


def test_floor_gap_is_filled_from_unused_negatives():
    # floor_thr 0.1, floor_fraction 0.5, 90 expected: n_bin = 45 from 200 binned negatives, but the floor
    # set holds only 10 → the remaining 35 come from the binned negatives not chosen yet.
    ious = torch.tensor(np.concatenate([np.full(10, 0.05), spread(200, 0.1, 0.5)]), dtype=torch.float32)
    chosen = sample_negatives_by_iou(
        ious, torch.arange(210), 90, floor_thr=0.1, floor_fraction=0.5, generator=seeded(5)
    )
    assert set(range(10)) <= set(chosen.tolist())
    assert chosen.numel() == 90 and len(set(chosen.tolist())) == 90


def test_takes_all_candidates_when_there_are_not_more_than_expected():
    ious = torch.rand(300, generator=seeded(6)) * 0.5
    candidates = torch.tensor([3, 17, 42, 99, 250])
    chosen = sample_negatives_by_iou(ious, candidates, 5, generator=seeded(6))
    assert sorted(chosen.tolist()) == [3, 17, 42, 99, 250]
    assert sample_negatives_by_iou(ious, candidates[:0], 90).numel() == 0


def test_fewer_than_two_bins_samples_uniformly():
    # 900 negatives at 0.05 and 9 at 0.45. With K = 3 ("neg-thr") the top bin gives all 9; with K = 1
    # the draw is uniform and takes 90 × 9 / 909 ≈ 0.89 of them on average.
    ious = constant_groups((900, 0.05), (9, 0.45))
    candidates = torch.arange(909)
    balanced = sample_negatives_by_iou(ious, candidates, 90, num_bins=3, bins_upper="neg-thr", generator=seeded())
    assert int((balanced >= 900).sum()) == 9
    high_counts = [
        int((sample_negatives_by_iou(ious, candidates, 90, num_bins=1, generator=seeded(s)) >= 900).sum())
        for s in range(200)
    ]
    assert 0.6 < sum(high_counts) / 200 < 1.2


def test_same_seed_gives_the_same_result_on_first_and_later_calls():
    # With floor_thr = -1 every candidate is binned on every call: 500 at IoU 0, 100 at 0.3, 40 expected,
    # floor_fraction 0.5, K = 2 over [0, 0.5). Had floor_thr turned into 0 after the first call, the
    # second call would take exactly 20 of the 0.3 group; here both calls give the same 40.
    ious = constant_groups((500, 0.0), (100, 0.3))
    candidates = torch.arange(600)
    kwargs = dict(num_bins=2, floor_fraction=0.5, bins_upper="neg-thr")
    first = sample_negatives_by_iou(ious, candidates, 40, generator=seeded(7), **kwargs)
    second = sample_negatives_by_iou(ious, candidates, 40, generator=seeded(7), **kwargs)
    assert first.tolist() == second.tolist()
    # 10 per bin first, then 20 at random from the 580 left (90 of them at 0.3) — at least 10 at 0.3.
    assert int((first >= 500).sum()) >= 10
    # floor_thr = 0 asked for explicitly, on two calls: binned = the 100 at 0.3 > n_bin = 20 → bin
    # [0.25, 0.5) gives its quota 10, the empty bin's 10 come from the rest of the binned set → exactly
    # 20 at 0.3, and the floor set gives the other 20.
    for _ in range(2):
        chosen = sample_negatives_by_iou(ious, candidates, 40, floor_thr=0.0, generator=seeded(7), **kwargs)
        assert int((chosen >= 500).sum()) == 20 and chosen.numel() == 40


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(bins_upper="paper"),
        dict(num_bins=0),
        dict(floor_fraction=1.5),
        dict(floor_fraction=-0.1),
        dict(neg_iou_thr=2.0),
    ],
)
def test_invalid_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        sample_negatives_by_iou(torch.zeros(10), torch.arange(10), 5, **kwargs)


# --- the reference's steady state: floor_thr = 0 ---------------------------------------------------------
# Libra R-CNN §3.1 step 6: the reference sampler is built with floor_thr = −1 but sets it to 0 during its
# first call, so it trains with IoU-0 negatives outside the bins. Scenario: 384 negatives wanted; 1,000
# candidates at IoU 0, 700 in (0, 1/3), 300 in [1/3, 0.5); the GT boxes are among the proposals, so the
# largest IoU is 1.0 and the K = 3 bins are [0, 1/3), [1/3, 2/3), [2/3, 1].
#
# floor 0: binned = the 1,000 with IoU > 0; n_bin = 384, quota int(384 / 3) = 128 per bin.
#   bin 0 (700) gives 128, bin 1 (300) gives 128, bin 2 is empty → 256 taken, 128 filled at random from the
#   744 binned left (572 in (0, 1/3), 172 in [1/3, 0.5)):
#   (0, 1/3): 128 + 128·572/744 = 226.41;  [1/3, 0.5): 128 + 128·172/744 = 157.59;  IoU 0: 0 (the floor
#   set only fills what the bins leave, and they leave nothing).
# floor −1 (paper text's Eq. 2, bins still up to 1.0): all 2,000 binned; bin 0 holds 1,700 (1,000 at 0).
#   bin 0 gives 128 (1,000/1,700 of them at IoU 0: 75.29; 700/1,700 in (0, 1/3): 52.71), bin 1 gives 128,
#   and 128 are filled from the 1,744 left (924.71 at 0, 647.29 in (0, 1/3), 172 in [1/3, 0.5)):
#   IoU 0: 75.29 + 128·924.71/1744 = 143.16;  (0, 1/3): 52.71 + 128·647.29/1744 = 100.21;
#   [1/3, 0.5): 128 + 128·172/1744 = 140.62.
STEADY_IOUS = torch.cat(
    [
        torch.zeros(1000),
        torch.tensor(spread(700, 0.0, 1 / 3), dtype=torch.float32),
        torch.tensor(spread(300, 1 / 3, 0.5), dtype=torch.float32),
    ]
)


def group_counts(chosen_ious: torch.Tensor) -> tuple[int, int, int]:
    zero = int((chosen_ious == 0).sum())
    return zero, count_in(chosen_ious, 1e-9, 1 / 3), count_in(chosen_ious, 1 / 3, 0.5)


@pytest.mark.parametrize(
    ("floor_thr", "expected"),
    [(0.0, (0.0, 226.41, 157.59)), (-1.0, (143.16, 100.21, 140.62))],
    ids=["reference-floor-0", "paper-floor-minus-1"],
)
def test_steady_state_group_means_over_many_draws(floor_thr, expected):
    generator = seeded(11)
    draws = 300
    totals = np.zeros(3)
    for _ in range(draws):
        chosen = sample_negatives_by_iou(
            STEADY_IOUS,
            torch.arange(2000),
            384,
            floor_thr=floor_thr,
            bins_upper="max-iou",
            max_iou_overall=1.0,
            generator=generator,
        )
        assert chosen.numel() == 384 and chosen.unique().numel() == 384
        counts = group_counts(STEADY_IOUS[chosen])
        if floor_thr == 0:
            # The exact quota rule, draw by draw: each non-empty bin gives its 128, no IoU-0 negative.
            assert counts[0] == 0 and counts[1] >= 128 and counts[2] >= 128
        totals += counts
    # The draw-to-draw standard deviation of each count is at most ~6, so the mean of 300 draws lies within
    # about 0.35 of its expectation; 1.5 leaves a wide margin.
    np.testing.assert_allclose(totals / draws, expected, atol=1.5)


def test_last_bin_half_open_leaves_out_a_value_at_the_upper_end():
    # lo = 0, hi = 0.6, K = 3: bins [0, 0.2), [0.2, 0.4), [0.4, 0.6]. 0.1 is in bin 0 and 0.5 in bin 2 either
    # way; 0.6 = hi is in the closed last bin, and outside the half-open [0.4, 0.6) of the reference code.
    ious = torch.tensor([0.1, 0.5, 0.6])
    assert iou_bin_index(ious, 0.0, 0.6, 3).tolist() == [0, 2, 2]
    assert iou_bin_index(ious, 0.0, 0.6, 3, last_bin_closed=False).tolist() == [0, 2, -1]


def test_half_open_last_bin_changes_the_sample_only_without_gt_proposals():
    # Negatives with IoU 0.1, 0.3 and 0.45 (×1 each) plus 0.6 (×1), hi = the image's largest IoU = 0.6 (no GT
    # box among the proposals), K = 3, 3 wanted, quota 1 per bin: bins [0, 0.2) {0.1}, [0.2, 0.4) {0.3},
    # [0.4, 0.6] {0.45, 0.6} closed or [0.4, 0.6) {0.45} half-open. Half-open: the three bins give 0.1, 0.3,
    # 0.45 for certain; 0.6 is never taken (the quota is filled, no shortfall).
    max_iou = torch.tensor([0.1, 0.3, 0.45, 0.6])
    for seed in range(5):
        chosen = sample_negatives_by_iou(
            max_iou,
            torch.arange(4),
            3,
            num_bins=3,
            floor_thr=-1,
            last_bin_closed=False,
            generator=torch.Generator().manual_seed(seed),
        )
        assert sorted(chosen.tolist()) == [0, 1, 2]
    # Closed: the last bin holds 0.45 and 0.6 and takes one of them, so 0.6 is chosen for some seed.
    picks = {
        3
        in sample_negatives_by_iou(
            max_iou, torch.arange(4), 3, num_bins=3, floor_thr=-1, generator=torch.Generator().manual_seed(seed)
        ).tolist()
        for seed in range(20)
    }
    assert picks == {True, False}
