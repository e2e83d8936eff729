"""The reference's two RPN training choices on torchvision's ``RegionProposalNetwork``.

- :class:`FlooredLowQualityMatcher` — a ground truth's best anchor is positive only if its IoU reaches a
  floor (mmdetection v1's ``min_pos_iou = 0.3``); torchvision's low-quality matches have no floor;
- :func:`use_reference_rpn_loss` — the RPN's losses divided by Σᵢ max(1, posᵢ) + Σᵢ max(1, negᵢ)
  (mmdetection v1's ``anchor_target``) instead of torchvision's Σᵢ (posᵢ + negᵢ).

Both are off by default (``model.rpn_min_pos_iou: null``, ``model.rpn_loss_norm: sampled``) and on in the
reference presets. mmdetection v1 measures boxes with the +1-pixel convention (w = x2 − x1 + 1), which
changes its IoUs slightly; libra keeps torchvision's continuous boxes and does not reproduce it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.models.detection._utils import Matcher
from torchvision.models.detection.rpn import RegionProposalNetwork

# torchvision's RPN box loss: smooth L1 with β = 1/9 (the reference's RPN uses the same).
RPN_SMOOTH_L1_BETA = 1 / 9


class FlooredLowQualityMatcher(Matcher):
    """torchvision's ``Matcher`` with low-quality matches, kept only for ground truths whose best IoU ≥ a floor.

    An anchor is positive with IoU ≥ ``high_threshold`` and negative below ``low_threshold``; in addition
    each ground truth's best anchors (ties included) are positive — but, as in the reference
    (``MaxIoUAssigner(min_pos_iou=0.3)``), only when that best IoU is at least ``min_pos_iou``. A ground
    truth whose best anchor overlaps it by IoU 0.25 leaves that anchor a negative (0.25 < 0.3), where
    torchvision would make it a positive.

    Args:
        high_threshold, low_threshold: as torchvision's (the RPN: 0.7 and 0.3).
        min_pos_iou: the floor in [0, 1]; 0 is torchvision's behaviour.
    """

    def __init__(self, high_threshold: float, low_threshold: float, min_pos_iou: float) -> None:
        super().__init__(high_threshold, low_threshold, allow_low_quality_matches=True)
        self.min_pos_iou = float(min_pos_iou)

    def set_low_quality_matches_(
        self, matches: torch.Tensor, all_matches: torch.Tensor, match_quality_matrix: torch.Tensor
    ) -> None:
        """torchvision's low-quality matching over the ground truths (rows of ``match_quality_matrix``
        [G, N]) whose best IoU reaches the floor; ``all_matches`` [N] holds each anchor's best GT index."""
        best_iou_per_gt = match_quality_matrix.max(dim=1).values
        super().set_low_quality_matches_(
            matches, all_matches, match_quality_matrix[best_iou_per_gt >= self.min_pos_iou]
        )


def reference_rpn_normaliser(positive_masks: list[torch.Tensor], negative_masks: list[torch.Tensor]) -> int:
    """Σᵢ max(1, posᵢ) + Σᵢ max(1, negᵢ) over the images' sampled anchors (each mask BoolTensor[A_i])."""
    return sum(max(1, int(mask.sum())) for mask in positive_masks) + sum(
        max(1, int(mask.sum())) for mask in negative_masks
    )


class ReferenceNormalisedRPN(RegionProposalNetwork):
    """torchvision's RPN whose two losses are divided by :func:`reference_rpn_normaliser`.

    With S the sampled anchors of the batch (positives P ⊂ S), N = Σᵢ max(1, posᵢ) + Σᵢ max(1, negᵢ):

        objectness = Σ_{a ∈ S} BCE(o_a, y_a) / N,   box = Σ_{a ∈ P} smooth-L1_{β=1/9}(d_a − t_a) / N

    torchvision divides both sums by |S| = Σᵢ (posᵢ + negᵢ) instead; the two agree unless an image has no
    positive or no negative sampled (e.g. an image without boxes: 0 + 256 sampled, N counts 1 + 256).
    """

    def compute_loss(
        self,
        objectness: torch.Tensor,
        pred_bbox_deltas: torch.Tensor,
        labels: list[torch.Tensor],
        regression_targets: list[torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Args as torchvision's: ``objectness`` [ΣA_i, 1], ``pred_bbox_deltas`` [ΣA_i, 4], per image
        ``labels`` [A_i] (1 / 0 / −1) and ``regression_targets`` [A_i, 4]. Returns (objectness, box) losses."""
        positive_masks, negative_masks = self.fg_bg_sampler(labels)
        normaliser = reference_rpn_normaliser(positive_masks, negative_masks)
        positives = torch.where(torch.cat(positive_masks))[0]
        sampled = torch.cat([positives, torch.where(torch.cat(negative_masks))[0]])
        all_labels = torch.cat(labels)
        box_loss = F.smooth_l1_loss(
            pred_bbox_deltas[positives],
            torch.cat(regression_targets)[positives],
            beta=RPN_SMOOTH_L1_BETA,
            reduction="sum",
        )
        objectness_loss = F.binary_cross_entropy_with_logits(
            objectness.flatten()[sampled], all_labels[sampled], reduction="sum"
        )
        return objectness_loss / normaliser, box_loss / normaliser


def use_reference_rpn_loss(rpn: RegionProposalNetwork) -> None:
    """Divide ``rpn``'s losses by the reference's normaliser (in place; modules and weights unchanged)."""
    rpn.__class__ = ReferenceNormalisedRPN
