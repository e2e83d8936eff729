"""Balanced L1 box loss for torchvision's RetinaNet (Libra RetinaNet, Libra R-CNN §3.3).

Libra RetinaNet keeps RetinaNet's architecture and changes only the box regression loss: balanced L1
with α = 0.5, γ = 1.5, β = 0.11 and loss weight 1.0, in place of torchvision's L1. ``use_balanced_l1``
swaps the head's regression head for a subclass that shares the original's layers, so the weights, the
normalisation layers and the state_dict keys stay exactly as torchvision's.
"""

from __future__ import annotations

import torch
from torchvision.models.detection.retinanet import RetinaNetHead, RetinaNetRegressionHead

from libra_cli.losses import balanced_l1_loss

RETINANET_BALANCED_L1_BETA = 0.11


class BalancedL1RegressionHead(RetinaNetRegressionHead):
    """torchvision's ``RetinaNetRegressionHead`` trained with the balanced L1 loss (Libra R-CNN §3.3).

    Build it with :meth:`from_plain`; the forward pass and the box coder (weights 1, 1, 1, 1) are
    torchvision's.

    Args:
        in_channels: channels of the FPN maps.
        num_anchors: anchors per location.
        alpha, gamma, beta: the balanced L1 parameters α, γ, β (all > 0).
        norm_layer: as torchvision's (None: no normalisation in the tower).
    """

    def __init__(
        self,
        in_channels: int,
        num_anchors: int,
        *,
        alpha: float = 0.5,
        gamma: float = 1.5,
        beta: float = RETINANET_BALANCED_L1_BETA,
        norm_layer=None,
    ) -> None:
        super().__init__(in_channels, num_anchors, norm_layer=norm_layer)
        empty = torch.zeros(0)
        balanced_l1_loss(empty, empty, alpha, gamma, beta)  # raises LossArgumentError on α, γ, β <= 0 now
        self.alpha, self.gamma, self.beta = float(alpha), float(gamma), float(beta)

    @classmethod
    def from_plain(
        cls,
        plain: RetinaNetRegressionHead,
        *,
        alpha: float = 0.5,
        gamma: float = 1.5,
        beta: float = RETINANET_BALANCED_L1_BETA,
    ) -> BalancedL1RegressionHead:
        """A balanced L1 head that takes over ``plain``'s conv tower, output conv and box coder.

        The modules are shared, not copied, so the weights and whichever normalisation layer torchvision
        built them with (none, BatchNorm, GroupNorm) carry over unchanged.
        """
        num_anchors = plain.bbox_reg.out_channels // 4
        # The new instance is built small (a 1-channel tower) and then given plain's layers.
        head = cls(1, num_anchors, alpha=alpha, gamma=gamma, beta=beta)
        head.conv = plain.conv
        head.bbox_reg = plain.bbox_reg
        head.box_coder = plain.box_coder
        return head

    def compute_loss(
        self,
        targets: list[dict[str, torch.Tensor]],
        head_outputs: dict[str, torch.Tensor],
        anchors: list[torch.Tensor],
        matched_idxs: list[torch.Tensor],
    ) -> torch.Tensor:
        """Balanced L1 on the foreground anchors' encoded deltas, normalised as torchvision's L1 loss.

        Per image: the loss is summed over the 4 deltas of every foreground anchor (matched index
        >= 0) against its matched GT box encoded relative to the anchor, then divided by
        max(1, number of foreground anchors); the result is the mean over the images.

        Args:
            targets: per image, {"boxes": Tensor[G_i, 4] (x1, y1, x2, y2), ...}.
            head_outputs: {"bbox_regression": Tensor[B, A, 4] encoded deltas, ...}.
            anchors: per image, Tensor[A, 4] (x1, y1, x2, y2).
            matched_idxs: per image, Int64Tensor[A]: the matched GT index, or < 0 for background/ignored.

        Returns:
            A scalar tensor.
        """
        losses = []
        for targets_in_image, regression_in_image, anchors_in_image, matched_in_image in zip(
            targets, head_outputs["bbox_regression"], anchors, matched_idxs, strict=True
        ):
            foreground = torch.where(matched_in_image >= 0)[0]
            matched_gt_boxes = targets_in_image["boxes"][matched_in_image[foreground]]
            target_deltas = self.box_coder.encode_single(matched_gt_boxes, anchors_in_image[foreground])
            loss = balanced_l1_loss(
                regression_in_image[foreground],
                target_deltas,
                self.alpha,
                self.gamma,
                self.beta,
                reduction="sum",
            )
            losses.append(loss / max(1, foreground.numel()))
        return torch.stack(losses).sum() / max(1, len(targets))


def use_balanced_l1(
    head: RetinaNetHead,
    *,
    alpha: float = 0.5,
    gamma: float = 1.5,
    beta: float = RETINANET_BALANCED_L1_BETA,
) -> None:
    """Make ``head`` train its box regression with balanced L1 (in place; Libra RetinaNet, Libra R-CNN §3.3).

    ``head.regression_head`` becomes a :class:`BalancedL1RegressionHead` holding the same layers, so
    the model's state_dict keys and weights are unchanged and torchvision RetinaNet checkpoints load.
    """
    head.regression_head = BalancedL1RegressionHead.from_plain(
        head.regression_head, alpha=alpha, gamma=gamma, beta=beta
    )
