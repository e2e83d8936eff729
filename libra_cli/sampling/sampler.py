"""RoI-head samplers with torchvision's interface, plus OHEM-style hard-negative selection.

torchvision's ``RoIHeads`` calls ``fg_bg_sampler(labels)`` and reads back one positive and one negative
mask per image. :class:`IoUBalancedSampler` (Libra R-CNN) and :class:`RandomSampler` (torchvision's
behaviour) share one call signature, ``sampler(labels, max_ious, matched_gt)``, so an analysis can swap
them — and :func:`hard_negatives` — without other changes.
"""

from dataclasses import dataclass

import torch

from libra_cli.sampling.instance_balanced import sample_positives_per_instance
from libra_cli.sampling.iou_balanced import (
    iou_sampling_reading,
    sample_negatives_by_iou,
    validate_iou_balanced_arguments,
)
from libra_cli.sampling.random import random_permutation, sample_uniformly


def _validate_batch(batch_size_per_image: int, positive_fraction: float) -> None:
    if isinstance(batch_size_per_image, bool) or not isinstance(batch_size_per_image, int):
        raise ValueError(f"batch_size_per_image must be an integer, got {batch_size_per_image!r}")
    if batch_size_per_image < 1:
        raise ValueError(f"batch_size_per_image must be >= 1, got {batch_size_per_image}")
    if not 0.0 <= positive_fraction <= 1.0:
        raise ValueError(f"positive_fraction must lie in [0, 1], got {positive_fraction!r}")


def _indices_to_mask(indices: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    mask = torch.zeros(like.shape, dtype=torch.bool, device=like.device)
    mask[indices] = True
    return mask


@dataclass(eq=False)  # compared and hashed as objects, like the samplers of torchvision
class IoUBalancedSampler:
    """Libra R-CNN's RoI sampler: instance-balanced positives and IoU-balanced negatives (Libra R-CNN §3.1).

    Per image: labels > 0 are positives, labels == 0 negatives, labels == −1 ignored (never sampled).
    ``int(batch_size_per_image × positive_fraction)`` positives are expected; if there are more, they
    are chosen by :func:`sample_positives_per_instance` (``pos_balance``) or uniformly. The negatives
    fill the rest of the batch, ``batch_size_per_image − positives taken``, chosen by
    :func:`sample_negatives_by_iou`. The sampler holds only its constructor arguments; a call changes
    nothing, so the first image of a run is sampled like every other.

    Args:
        batch_size_per_image: RoIs sampled per image (reference: 512).
        positive_fraction: the share of positives wanted (reference: 0.25).
        num_bins, floor_thr, floor_fraction, bins_upper, neg_iou_thr: passed to
            :func:`sample_negatives_by_iou`; ``bins_upper="max-iou"`` follows the reference code,
            ``"neg-thr"`` the paper text.
        last_bin_closed: the last IoU bin [hi − w, hi] (True) or [hi − w, hi) as the reference code (False).
        pos_balance: sample surplus positives per GT instance (True) or uniformly (False).
    """

    batch_size_per_image: int = 512
    positive_fraction: float = 0.25
    num_bins: int = 3
    floor_thr: float = -1.0
    floor_fraction: float = 0.0
    bins_upper: str = "max-iou"
    neg_iou_thr: float = 0.5
    pos_balance: bool = True
    last_bin_closed: bool = True

    def __post_init__(self) -> None:
        _validate_batch(self.batch_size_per_image, self.positive_fraction)
        validate_iou_balanced_arguments(
            self.num_bins, self.floor_thr, self.floor_fraction, self.bins_upper, self.neg_iou_thr
        )

    @property
    def reading(self) -> str:
        """ "reference", "paper" or the two settings: see :func:`iou_sampling_reading`."""
        return iou_sampling_reading(self.floor_thr, self.bins_upper)

    def __call__(
        self,
        labels: list[torch.Tensor],
        max_ious: list[torch.Tensor],
        matched_gt: list[torch.Tensor],
        *,
        generator: torch.Generator | None = None,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Sample every image of a batch.

        Args:
            labels: per image, LongTensor[N_i]: class label (> 0), background (0) or ignored (−1).
            max_ious: per image, Tensor[N_i]: each proposal's largest IoU with the image's GT boxes
                (with the GT boxes added as proposals, as torchvision does, the largest is 1.0).
            matched_gt: per image, LongTensor[N_i]: the GT box each proposal is matched to (read for
                positives only).
            generator: source of randomness; None uses the global RNG.

        Returns:
            (positive masks, negative masks): two lists of BoolTensor[N_i], disjoint per image.
        """
        if not len(labels) == len(max_ious) == len(matched_gt):
            raise ValueError(
                f"labels, max_ious and matched_gt must have one entry per image, "
                f"got {len(labels)}, {len(max_ious)} and {len(matched_gt)}"
            )
        positive_masks, negative_masks = [], []
        for labels_i, max_iou_i, matched_gt_i in zip(labels, max_ious, matched_gt, strict=True):
            positives = torch.where(labels_i > 0)[0]
            negatives = torch.where(labels_i == 0)[0]

            num_pos_expected = int(self.batch_size_per_image * self.positive_fraction)
            if self.pos_balance:
                chosen_pos = sample_positives_per_instance(positives, matched_gt_i, num_pos_expected, generator)
            else:
                chosen_pos = sample_uniformly(positives, num_pos_expected, generator)

            chosen_neg = sample_negatives_by_iou(
                max_iou_i,
                negatives,
                self.batch_size_per_image - chosen_pos.numel(),
                num_bins=self.num_bins,
                floor_thr=self.floor_thr,
                floor_fraction=self.floor_fraction,
                bins_upper=self.bins_upper,
                neg_iou_thr=self.neg_iou_thr,
                generator=generator,
                last_bin_closed=self.last_bin_closed,
            )
            positive_masks.append(_indices_to_mask(chosen_pos, labels_i))
            negative_masks.append(_indices_to_mask(chosen_neg, labels_i))
        return positive_masks, negative_masks


@dataclass(eq=False)
class RandomSampler:
    """torchvision's random RoI sampler behind the same interface as :class:`IoUBalancedSampler`.

    Per image it takes min(P, int(batch × fraction)) positives and min(N⁻, batch − positives taken)
    negatives, each as the head of a random permutation drawn positives first, then negatives —
    the same draws, in the same order, as
    ``torchvision.models.detection._utils.BalancedPositiveNegativeSampler``, so with the same seed it
    selects the same RoIs. A permutation is drawn even when every candidate is taken, to keep the
    random stream aligned with torchvision's.

    Args:
        batch_size_per_image: RoIs sampled per image.
        positive_fraction: the share of positives wanted.
    """

    batch_size_per_image: int = 512
    positive_fraction: float = 0.25

    def __post_init__(self) -> None:
        _validate_batch(self.batch_size_per_image, self.positive_fraction)

    def __call__(
        self,
        labels: list[torch.Tensor],
        max_ious: list[torch.Tensor] | None = None,
        matched_gt: list[torch.Tensor] | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Sample every image of a batch; ``max_ious`` and ``matched_gt`` are accepted and unused.

        Args:
            labels: per image, LongTensor[N_i]: class label (> 0), background (0) or ignored (−1).
            generator: source of randomness; None uses the global RNG (as torchvision does).

        Returns:
            (positive masks, negative masks): two lists of BoolTensor[N_i].
        """
        positive_masks, negative_masks = [], []
        for labels_i in labels:
            positives = torch.where(labels_i > 0)[0]
            negatives = torch.where(labels_i == 0)[0]
            num_pos = min(positives.numel(), int(self.batch_size_per_image * self.positive_fraction))
            num_neg = min(negatives.numel(), self.batch_size_per_image - num_pos)
            pos_order = random_permutation(positives.numel(), positives.device, generator)
            neg_order = random_permutation(negatives.numel(), negatives.device, generator)
            positive_masks.append(_indices_to_mask(positives[pos_order[:num_pos]], labels_i))
            negative_masks.append(_indices_to_mask(negatives[neg_order[:num_neg]], labels_i))
        return positive_masks, negative_masks


def hard_negatives(loss: torch.Tensor, candidates: torch.Tensor, num: int) -> torch.Tensor:
    """The ``num`` candidates with the largest classification loss (OHEM-style hard-negative mining).

    Deterministic: no randomness; among equal losses ``torch.topk`` decides.

    Args:
        loss: Tensor[N], the classification loss of every proposal.
        candidates: LongTensor[M], indices into ``loss`` of the negative proposals.
        num: how many to take.

    Returns:
        LongTensor[min(num, M)]: elements of ``candidates``, hardest first.
    """
    k = min(max(int(num), 0), candidates.numel())
    return candidates[torch.topk(loss[candidates], k).indices]
