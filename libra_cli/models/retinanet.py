"""Libra RetinaNet on torchvision's RetinaNet: balanced L1 box loss and the reference's two other choices.

- :func:`use_balanced_l1` — balanced L1 in the regression head (Libra R-CNN §3.3);
- :func:`use_batch_normalised_losses` — losses divided by the batch's Σᵢ max(1, positivesᵢ), as the reference;
- :class:`P6FromC5P7NoReLU` — P6 from C5 and no ReLU before P7, as the reference's FPN builds them;
- :class:`GroupNorm` — the head's GroupNorm, defined also where a group holds a single value.

Libra RetinaNet's box loss is balanced L1 with α = 0.5, γ = 1.5, β = 0.11 and loss weight 1.0, in place
of torchvision's L1. ``use_balanced_l1`` swaps the head's regression head for a subclass that shares the
original's layers, so the weights, the normalisation layers and the state_dict keys stay exactly as
torchvision's.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.models.detection.retinanet import (
    RetinaNetClassificationHead,
    RetinaNetHead,
    RetinaNetRegressionHead,
)
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock

from libra_cli.losses import balanced_l1_loss

RETINANET_BALANCED_L1_BETA = 0.11


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` that also runs where each group holds a single value.

    That happens in RetinaNet's head when the channels equal the groups (32) and the map is one pixel for a
    batch of one image (P7 of a small image): ``torch.nn.functional.group_norm`` then refuses the input.
    The normalised value of a single element, (x − mean) / √(var + ε), is 0, so the output is the bias (0
    without an affine part) and its gradient with respect to the input is 0. Everywhere else this is
    ``nn.GroupNorm`` itself, and the parameters and state_dict keys are the same.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        per_group = input.shape[0] * (self.num_channels // self.num_groups) * math.prod(input.shape[2:])
        if per_group != 1 or torch.jit.is_tracing() or torch.compiler.is_compiling():
            return super().forward(input)
        centred = input - input  # keeps the graph: the gradient reaching the input is 0
        if self.bias is None:
            return centred
        return centred + self.bias.view(1, -1, *([1] * (input.dim() - 2)))


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


class P6FromC5P7NoReLU(ExtraFPNBlock):
    """RetinaNet's extra levels as the Libra RetinaNet reference builds them: P6 from C5, P7 from P6, no ReLU.

    The reference's FPN (``add_extra_convs`` on its inputs, ``relu_before_extra_convs`` off) computes
    P6 = conv3×3/2(C5) and P7 = conv3×3/2(P6). torchvision's ``LastLevelP6P7`` instead takes P6 from P5
    (when the channels match) and applies a ReLU before P7. Weights start as torchvision's extra convs do
    (Kaiming-uniform with a = 1, zero bias), so only the wiring differs.

    Args:
        in_channels: channels of C5 (the last backbone stage, e.g. 2048 for ResNet-50, 512 for ResNet-18).
        out_channels: the FPN's channels.

    Forward: ``results`` (P3..P5, each [B, out_channels, H, W]), ``x`` (C3..C5, the FPN's inputs) and
    their names → P3..P7 and the names with "p6", "p7" appended; P6 is C5's size halved (rounded up),
    P7 P6's.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.p6 = nn.Conv2d(in_channels, out_channels, 3, 2, 1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, 2, 1)
        for conv in (self.p6, self.p7):
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.constant_(conv.bias, 0)

    def forward(
        self, results: list[torch.Tensor], x: list[torch.Tensor], names: list[str]
    ) -> tuple[list[torch.Tensor], list[str]]:
        p6 = self.p6(x[-1])
        p7 = self.p7(p6)
        return [*results, p6, p7], [*names, "p6", "p7"]


class BatchNormalisedLoss:
    """Mixin: a RetinaNet sub-head's loss divided by the positive anchors of the whole batch (the reference).

    torchvision divides each image's summed loss by that image's own number of foreground anchors and
    averages over the images; the reference (mmdetection v1's ``anchor_target``) divides the batch's summed
    loss by Σᵢ max(1, nᵢ), every image counting at least one positive. Example: two images with 2 and 30
    positives and summed losses s₁, s₂ give (s₁/2 + s₂/30)/2 under torchvision and (s₁ + s₂)/32 here; with
    0 and 30 positives the divisor is 1 + 30 = 31 (not max(1, 0 + 30) = 30). The per-image sums are
    recovered from the parent's own per-image loss (loss_i × max(1, n_i)), so the loss itself stays the
    parent's.
    """

    def compute_loss(self, targets, head_outputs, *per_image_inputs):
        """As the parent's ``compute_loss``; ``per_image_inputs`` ends with ``matched_idxs`` (per image,
        Int64Tensor[A]: matched GT index, or < 0 for background / ignored)."""
        matched_idxs = per_image_inputs[-1]
        total = 0.0
        normaliser = 0
        for i in range(len(targets)):
            outputs_i = {key: value[i : i + 1] for key, value in head_outputs.items()}
            inputs_i = [inputs[i : i + 1] for inputs in per_image_inputs]
            n_i = max(1, int((matched_idxs[i] >= 0).sum()))
            loss_i = super().compute_loss(targets[i : i + 1], outputs_i, *inputs_i)  # = s_i / max(1, n_i)
            total = total + loss_i * n_i
            normaliser += n_i
        return total / max(1, normaliser)


class BatchNormalisedClassificationHead(BatchNormalisedLoss, RetinaNetClassificationHead):
    """torchvision's focal-loss classification head, normalised by the batch's positives."""


class BatchNormalisedRegressionHead(BatchNormalisedLoss, RetinaNetRegressionHead):
    """torchvision's L1 regression head, normalised by the batch's positives."""


class BatchNormalisedBalancedL1RegressionHead(BatchNormalisedLoss, BalancedL1RegressionHead):
    """The balanced L1 regression head (Libra RetinaNet), normalised by the batch's positives."""


_BATCH_NORMALISED = {
    RetinaNetClassificationHead: BatchNormalisedClassificationHead,
    RetinaNetRegressionHead: BatchNormalisedRegressionHead,
    BalancedL1RegressionHead: BatchNormalisedBalancedL1RegressionHead,
}


def use_batch_normalised_losses(head: RetinaNetHead) -> None:
    """Normalise ``head``'s classification and box losses by the batch's positive anchors (in place).

    The sub-heads keep their modules, weights and state_dict keys; only the class that computes the loss
    changes (to the batch-normalised subclass of what it was). Call it after :func:`use_balanced_l1`.
    """
    for name in ("classification_head", "regression_head"):
        sub_head = getattr(head, name)
        sub_head.__class__ = _BATCH_NORMALISED[type(sub_head)]
