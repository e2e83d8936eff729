"""torchvision's RPN anchor sampler with the negatives capped at a multiple of the positives.

Every Libra Faster R-CNN config of the reference code samples the RPN's anchors with ``neg_pos_ub = 5``:
of the 256 anchors per image, at most 5 negatives per positive taken (and at most 5 in an image with no
positive at all, since the bound uses max(1, positives)). torchvision's RPN sampler has no such cap, so
an image with few objects trains its objectness on up to 256 − P negatives. The cap is off unless asked
for; with it off the RPN keeps torchvision's own sampler.
"""

from __future__ import annotations

import torch
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler

from libra_cli.sampling.random import random_permutation


def capped_negative_count(num_positives: int, num_negatives_wanted: int, neg_pos_ub: int) -> int:
    """How many negatives the reference sampler asks for: min(wanted, int(ub × max(1, positives))).

    Example: 256 anchors, 6 positives taken, ub = 5 → min(250, 30) = 30 negatives; no positive → 5.
    """
    if neg_pos_ub < 0:
        raise ValueError(f"neg_pos_ub must be >= 0, got {neg_pos_ub}")
    return min(num_negatives_wanted, int(neg_pos_ub * max(1, num_positives)))


class NegPosCappedSampler(BalancedPositiveNegativeSampler):
    """torchvision's ``BalancedPositiveNegativeSampler`` with at most ``neg_pos_ub`` negatives per positive.

    Per image: P = min(#positives, int(batch × fraction)) positives; negatives wanted = batch − P, then
    capped by :func:`capped_negative_count`, then limited by the negatives available. The draws are
    torchvision's — one permutation of the positives, then one of the negatives, each from the global
    RNG — so when the cap does not bind, the same seed selects the same anchors as torchvision.

    Args:
        batch_size_per_image: anchors sampled per image (RPN: 256).
        positive_fraction: the share of positives wanted (RPN: 0.5).
        neg_pos_ub: the cap on negatives per positive (reference: 5), >= 0.
    """

    def __init__(self, batch_size_per_image: int, positive_fraction: float, neg_pos_ub: int) -> None:
        super().__init__(batch_size_per_image, positive_fraction)
        capped_negative_count(0, 0, neg_pos_ub)  # rejects a negative bound now
        self.neg_pos_ub = int(neg_pos_ub)

    def __call__(self, matched_idxs: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Args: per image, Int64Tensor[A_i]: >= 1 positive, 0 negative, −1 ignored (torchvision's labels).

        Returns:
            (positive masks, negative masks), per image uint8 Tensor[A_i], as torchvision's sampler.
        """
        pos_idx, neg_idx = [], []
        for labels in matched_idxs:
            positive = torch.where(labels >= 1)[0]
            negative = torch.where(labels == 0)[0]
            num_pos = min(positive.numel(), int(self.batch_size_per_image * self.positive_fraction))
            num_neg = capped_negative_count(num_pos, self.batch_size_per_image - num_pos, self.neg_pos_ub)
            num_neg = min(negative.numel(), num_neg)
            chosen_pos = positive[random_permutation(positive.numel(), positive.device)[:num_pos]]
            chosen_neg = negative[random_permutation(negative.numel(), negative.device)[:num_neg]]
            pos_mask = torch.zeros_like(labels, dtype=torch.uint8)
            neg_mask = torch.zeros_like(labels, dtype=torch.uint8)
            pos_mask[chosen_pos] = 1
            neg_mask[chosen_neg] = 1
            pos_idx.append(pos_mask)
            neg_idx.append(neg_mask)
        return pos_idx, neg_idx
