"""The RPN sampler of the reference Libra configs: at most neg_pos_ub negatives per positive taken."""

import pytest
import torch
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler

from libra_cli.sampling import NegPosCappedSampler, capped_negative_count


def anchor_labels(num_pos: int, num_neg: int, num_ignored: int = 0) -> torch.Tensor:
    return torch.cat([torch.ones(num_pos), torch.zeros(num_neg), torch.full((num_ignored,), -1.0)]).long()


@pytest.mark.parametrize(
    ("num_pos", "num_neg", "expected"),
    [
        (6, 1000, (6, 30)),  # 256 − 6 = 250 wanted, capped at 5 × 6 = 30
        (0, 1000, (0, 5)),  # no positive: the bound uses max(1, 0), so 5 negatives
        (200, 1000, (128, 128)),  # 128 positives (half of 256); 5 × 128 = 640 does not bind
        (40, 20, (40, 20)),  # cap 200 and wanted 216, but only 20 negatives exist
    ],
)
def test_at_most_five_negatives_per_positive(num_pos, num_neg, expected):
    torch.manual_seed(0)
    sampler = NegPosCappedSampler(256, 0.5, neg_pos_ub=5)
    labels = anchor_labels(num_pos, num_neg, num_ignored=7)
    (pos,), (neg,) = sampler([labels])
    assert (int(pos.sum()), int(neg.sum())) == expected
    assert not (pos.bool() & neg.bool()).any()
    assert (labels[pos.bool()] == 1).all() and (labels[neg.bool()] == 0).all()
    assert int(neg.sum()) <= 5 * max(1, int(pos.sum()))


def test_capped_negative_count_rule():
    assert capped_negative_count(6, 250, 5) == 30
    assert capped_negative_count(0, 256, 5) == 5
    assert capped_negative_count(3, 10, 5) == 10  # the cap (15) does not bind
    assert capped_negative_count(4, 100, 0) == 0
    with pytest.raises(ValueError, match="neg_pos_ub must be >= 0, got -1"):
        capped_negative_count(1, 1, -1)


def test_same_draws_as_torchvision_when_the_cap_does_not_bind():
    labels = [anchor_labels(150, 900), anchor_labels(90, 400)]
    torch.manual_seed(3)
    ours = NegPosCappedSampler(256, 0.5, neg_pos_ub=5)(labels)
    torch.manual_seed(3)
    theirs = BalancedPositiveNegativeSampler(256, 0.5)(labels)
    for a, b in zip(ours[0] + ours[1], theirs[0] + theirs[1], strict=True):
        assert torch.equal(a, b)
