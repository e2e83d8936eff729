"""``LibraRoIHeads``: torchvision's Faster R-CNN / Mask R-CNN RoI heads with the Libra R-CNN and EQL components.

Each component changes exactly one step of torchvision's ``RoIHeads`` and is off unless given:

- ``sampler`` (Libra R-CNN §3.1, or OHEM): the RoIs of each image are chosen by an ``IoUBalancedSampler``, which
  needs every proposal's largest IoU with the GT boxes, or by an ``OHEMSampler``, which needs every candidate's
  loss under the current model, instead of by torchvision's random sampler;
- ``box_loss`` (Libra R-CNN §3.3 and the paper's baseline): the box loss of the sampled positives — balanced L1,
  smooth L1 with another β (the authors' mmdetection baseline uses β = 1.0) or L1 — instead of torchvision's
  smooth L1 with β = 1/9;
- ``eql_tail_mask`` (EQL paper §3): the classifier becomes a sigmoid classifier over the C foreground classes
  (``EQLPredictor``) trained with the equalization loss, and detections are scored by its sigmoids;
- ``class_loss``: the classification loss of the sampled RoIs (default cross-entropy, or the equalization
  loss with the tail mask above).

Everything else (pooling, box head, matching thresholds, box coding, NMS) is torchvision's, reached
through ``super()``. A Mask R-CNN mask branch (``mask_roi_pool``, ``mask_head``, ``mask_predictor``) runs as
in torchvision's ``RoIHeads``: in training on the positives of whichever sampler chose the RoIs, at test time
on the detections, each mask taken from the channel of the detection's label (with EQL, the label of its
sigmoid score). OHEM ranks the candidates by their box-branch losses alone. Keypoint heads are not supported.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.roi_heads import RoIHeads, maskrcnn_loss
from torchvision.ops import boxes as box_ops

from libra_cli.losses import balanced_l1_loss, equalization_loss, init_eql_classifier

# torchvision's RoI-head box loss: smooth L1 with this β, summed and divided by the sampled RoIs.
TORCHVISION_SMOOTH_L1_BETA = 1 / 9
BALANCED_L1_KEYS = {"alpha", "gamma", "beta"}


class EQLPredictor(nn.Module):
    """Box predictor with a sigmoid classifier over the C foreground classes (EQL, EQL paper §3).

    Unlike torchvision's ``FastRCNNPredictor`` there is no background logit: a background RoI is one
    whose C sigmoids are all low. The box regressor keeps torchvision's layout, (C + 1) × 4 deltas with
    class k's at columns 4k..4k+3, so torchvision's box decoding applies unchanged.

    The classifier starts as the EQL reference does (``init_eql_classifier``: weights N(0, 0.01²), every
    class at prior probability 0.001), so that the C negative terms of an untrained classifier do not
    swamp the loss.

    Args:
        in_features: width of the box head's output.
        num_classes: C, the number of foreground classes.
        prior: every class's initial sigmoid probability (``libra.eql_prior``); 0.001 is the reference's.
    """

    def __init__(self, in_features: int, num_classes: int, prior: float = 0.001) -> None:
        super().__init__()
        self.cls_score = nn.Linear(in_features, num_classes)
        self.bbox_pred = nn.Linear(in_features, (num_classes + 1) * 4)
        init_eql_classifier(self.cls_score, prior=prior)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: x [R, in_features] (or [R, in_features, 1, 1]) box-head features.

        Returns:
            (class_logits [R, C], box_regression [R, (C + 1) * 4]).
        """
        x = x.flatten(start_dim=1)
        return self.cls_score(x), self.bbox_pred(x)


def match_proposals(
    matcher: Any,
    proposals: list[torch.Tensor],
    gt_boxes: list[torch.Tensor],
    gt_labels: list[torch.Tensor],
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """torchvision's ``assign_targets_to_proposals``, also returning each proposal's largest IoU.

    torchvision computes the GT × proposal IoU matrix inside ``assign_targets_to_proposals`` and
    drops it; the IoU-balanced sampler needs its column maxima. So the assignment is made here from
    one IoU matrix per image, with ``matcher`` (an RoI head's ``proposal_matcher``) and its labelling rules.

    Args:
        proposals: per image, Tensor[N_i, 4] (x1, y1, x2, y2), GT boxes already appended.
        gt_boxes: per image, Tensor[G_i, 4] (x1, y1, x2, y2); G_i may be 0.
        gt_labels: per image, Int64Tensor[G_i] in 1..C.

    Returns:
        (matched_gt, labels, max_ious), per image: Int64Tensor[N_i] index of the matched GT box
        (0 where unmatched, as torchvision clamps it); Int64Tensor[N_i] label (> 0 foreground,
        0 background, −1 between the thresholds, ignored); Tensor[N_i] largest IoU with any GT box
        (0 in an image without GT boxes, whose proposals are all background).
    """
    all_matched, all_labels, all_max_ious = [], [], []
    for proposals_in_image, gt_boxes_in_image, gt_labels_in_image in zip(proposals, gt_boxes, gt_labels, strict=True):
        num_proposals = proposals_in_image.shape[0]
        device = proposals_in_image.device
        if gt_boxes_in_image.numel() == 0:
            matched = torch.zeros(num_proposals, dtype=torch.int64, device=device)
            labels = torch.zeros(num_proposals, dtype=torch.int64, device=device)
            max_ious = torch.zeros(num_proposals, dtype=proposals_in_image.dtype, device=device)
        else:
            ious = box_ops.box_iou(gt_boxes_in_image, proposals_in_image)  # [G, N]
            max_ious = ious.max(dim=0).values
            raw_matches = matcher(ious)
            matched = raw_matches.clamp(min=0)
            labels = gt_labels_in_image[matched].to(torch.int64)
            labels[raw_matches == matcher.BELOW_LOW_THRESHOLD] = 0
            labels[raw_matches == matcher.BETWEEN_THRESHOLDS] = -1
        all_matched.append(matched)
        all_labels.append(labels)
        all_max_ious.append(max_ious)
    return all_matched, all_labels, all_max_ious


class LibraRoIHeads(RoIHeads):
    """torchvision ``RoIHeads`` with IoU-balanced sampling, balanced L1 and/or the equalization loss.

    Build it with :meth:`from_plain` from the ``RoIHeads`` torchvision's ``FasterRCNN`` or ``MaskRCNN`` made. With every
    component off it computes exactly what the plain head computes.

    Args:
        box_roi_pool, box_head, box_predictor, fg_iou_thresh, bg_iou_thresh, batch_size_per_image,
            positive_fraction, bbox_reg_weights, score_thresh, nms_thresh, detections_per_img:
            as torchvision's ``RoIHeads``.
        num_classes: C, the number of foreground classes (labels 1..C).
        sampler: called as ``sampler(labels, max_ious, matched_gt)`` per batch (e.g.
            ``libra_cli.sampling.IoUBalancedSampler``) → (positive masks, negative masks); a sampler with
            ``ranks_by_loss = True`` (``libra_cli.sampling.ohem.OHEMSampler``) is also given
            ``roi_losses=`` (every candidate's loss, see :meth:`candidate_losses`) and ``proposals=``.
            None keeps torchvision's random sampler. ``iou_sampler`` is the older name of the same argument.
        box_loss: ``box_loss(pred [P, 4], target [P, 4])`` -> the loss summed over the P positives' deltas
            (e.g. ``partial(balanced_l1_loss, alpha=0.5, gamma=1.5, beta=1.0, reduction="sum")``); None
            keeps torchvision's smooth L1 with β = 1/9. Either way the sum is divided by the number of
            sampled RoIs, as torchvision (and the reference) normalise. A loss-ranking sampler calls it with
            ``reduction="none"`` for the per-coordinate losses, as torch's losses and ``partial`` allow.
        balanced_l1: shorthand for ``box_loss`` = balanced L1 with these ``{"alpha", "gamma", "beta"}``.
        eql_tail_mask: [C] bool, the tail classes T_λ(f_j) of the equalization loss; None keeps the
            softmax classifier and cross-entropy. When given, ``box_predictor`` is replaced by an
            ``EQLPredictor`` of the same input width. Kept as the buffer ``eql_tail_mask`` (checkpoints
            hold it).
        eql_prior: the sigmoid classifier's initial probability per class; None → 0.001 (the reference).
        class_loss: ``class_loss(logits [R, K], labels [R], reduction="mean")`` -> the classification loss
            (``reduction="none"``: per RoI, [R]); None → cross-entropy, or the equalization loss with
            ``eql_tail_mask`` when that is given.
        mask_roi_pool, mask_head, mask_predictor: Mask R-CNN's mask branch, as torchvision's ``RoIHeads``;
            None (the default): a box-only head.
    """

    def __init__(
        self,
        box_roi_pool: nn.Module,
        box_head: nn.Module,
        box_predictor: nn.Module,
        fg_iou_thresh: float,
        bg_iou_thresh: float,
        batch_size_per_image: int,
        positive_fraction: float,
        bbox_reg_weights: tuple[float, float, float, float] | None,
        score_thresh: float,
        nms_thresh: float,
        detections_per_img: int,
        *,
        num_classes: int,
        sampler=None,
        iou_sampler=None,
        box_loss: Callable[..., torch.Tensor] | None = None,
        balanced_l1: dict[str, float] | None = None,
        eql_tail_mask: torch.Tensor | None = None,
        eql_prior: float | None = None,
        class_loss: Callable[..., torch.Tensor] | None = None,
        mask_roi_pool: nn.Module | None = None,
        mask_head: nn.Module | None = None,
        mask_predictor: nn.Module | None = None,
    ) -> None:
        if sampler is not None and iou_sampler is not None:
            raise ValueError("give either sampler or iou_sampler (its older name), not both")
        if balanced_l1 is not None:
            if box_loss is not None:
                raise ValueError("give either box_loss or balanced_l1, not both")
            box_loss = partial(balanced_l1_loss, **_checked_balanced_l1(balanced_l1), reduction="sum")
        if eql_tail_mask is not None:
            eql_tail_mask = torch.as_tensor(eql_tail_mask, dtype=torch.bool)
            if eql_tail_mask.shape != (num_classes,):
                raise ValueError(
                    f"eql_tail_mask must be [{num_classes}] (one flag per foreground class); "
                    f"got shape {tuple(eql_tail_mask.shape)}"
                )
            prior = 0.001 if eql_prior is None else eql_prior
            box_predictor = EQLPredictor(_predictor_in_features(box_predictor), num_classes, prior=prior)
        super().__init__(
            box_roi_pool,
            box_head,
            box_predictor,
            fg_iou_thresh,
            bg_iou_thresh,
            batch_size_per_image,
            positive_fraction,
            bbox_reg_weights,
            score_thresh,
            nms_thresh,
            detections_per_img,
            mask_roi_pool=mask_roi_pool,
            mask_head=mask_head,
            mask_predictor=mask_predictor,
        )
        self.num_classes = num_classes
        self.sampler = sampler if sampler is not None else iou_sampler
        # Whether the training losses differ from torchvision's ``fastrcnn_loss``.
        self.changes_loss = box_loss is not None or class_loss is not None or eql_tail_mask is not None
        self.box_loss = box_loss
        # A buffer, so that it moves with the model to the GPU and is saved with its weights.
        self.register_buffer("eql_tail_mask", eql_tail_mask)
        if class_loss is None:
            class_loss = self.equalization_loss if eql_tail_mask is not None else F.cross_entropy
        self.class_loss = class_loss

    @classmethod
    def from_plain(
        cls,
        plain: RoIHeads,
        *,
        num_classes: int,
        **libra_parts: Any,
    ) -> LibraRoIHeads:
        """The Libra head that reuses ``plain``'s modules (shared, not copied) and settings, with
        ``libra_parts``: the keyword arguments of :class:`LibraRoIHeads` (``sampler``, ``box_loss``,
        ``balanced_l1``, ``eql_tail_mask``, ``eql_prior``, ``class_loss``; ``iou_sampler`` is the older name of
        ``sampler``).

        Reused: box_roi_pool, box_head, box_predictor (unless EQL replaces it), the mask branch (Mask
        R-CNN's mask_roi_pool, mask_head and mask_predictor, when ``plain`` has one), the matcher's IoU
        thresholds, the sampler's batch size and positive fraction, the box coder's weights, the score
        and NMS thresholds and the detections per image.

        Raises:
            ValueError: ``plain`` has keypoint heads (not supported), or its predictor does not score
                C + 1 classes.
        """
        if plain.has_keypoint():
            raise ValueError("LibraRoIHeads supports the box and mask branches only (no keypoint heads)")
        cls_score = getattr(plain.box_predictor, "cls_score", None)
        if isinstance(cls_score, nn.Linear) and cls_score.out_features != num_classes + 1:
            raise ValueError(
                f"the box predictor scores {cls_score.out_features} classes; expected num_classes + 1 = "
                f"{num_classes + 1} (background included)"
            )
        return cls(
            plain.box_roi_pool,
            plain.box_head,
            plain.box_predictor,
            plain.proposal_matcher.high_threshold,
            plain.proposal_matcher.low_threshold,
            plain.fg_bg_sampler.batch_size_per_image,
            plain.fg_bg_sampler.positive_fraction,
            plain.box_coder.weights,
            plain.score_thresh,
            plain.nms_thresh,
            plain.detections_per_img,
            num_classes=num_classes,
            mask_roi_pool=plain.mask_roi_pool,
            mask_head=plain.mask_head,
            mask_predictor=plain.mask_predictor,
            **libra_parts,
        )

    @property
    def iou_sampler(self):
        """The RoI sampler (the older name of :attr:`sampler`); None: torchvision's random sampler."""
        return self.sampler

    @property
    def ranks_by_loss(self) -> bool:
        """Whether the sampler chooses RoIs by their loss under the current model (OHEM)."""
        return bool(getattr(self.sampler, "ranks_by_loss", False))

    def equalization_loss(self, logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """The equalization loss (EQL paper §3) with this head's ``eql_tail_mask`` buffer: [R, C] logits."""
        return equalization_loss(logits, labels, self.eql_tail_mask, reduction)

    # ---- training: sampling -------------------------------------------------------------------------

    def match_proposals(
        self,
        proposals: list[torch.Tensor],
        gt_boxes: list[torch.Tensor],
        gt_labels: list[torch.Tensor],
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """:func:`match_proposals` with this head's matcher."""
        return match_proposals(self.proposal_matcher, proposals, gt_boxes, gt_labels)

    def select_training_samples(
        self,
        proposals: list[torch.Tensor],
        targets: list[dict[str, torch.Tensor]] | None,
        features: dict[str, torch.Tensor] | None = None,
        image_shapes: list[tuple[int, int]] | None = None,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """torchvision's RoI sampling, with this head's sampler when one is set (Libra R-CNN §3.1, OHEM).

        As torchvision: the GT boxes are appended to the proposals (their IoU is 1) and every proposal
        is matched; then ``sampler(labels, max_ious, matched_gt)`` chooses the RoIs instead of
        ``fg_bg_sampler(labels)`` — a loss-ranking sampler (OHEM) also gets every candidate's loss under
        the current model — and the chosen RoIs' regression targets are encoded as torchvision does.

        Args:
            proposals: per image, Tensor[N_i, 4] (x1, y1, x2, y2) from the RPN.
            targets: per image, {"boxes": Tensor[G_i, 4] (x1, y1, x2, y2), "labels": Int64Tensor[G_i]}.
            features, image_shapes: as in :meth:`forward`; needed by a loss-ranking sampler only.

        Returns:
            (proposals, matched_gt, labels, regression_targets) of the sampled RoIs, per image:
            Tensor[S_i, 4], Int64Tensor[S_i], Int64Tensor[S_i], Tensor[S_i, 4] (encoded deltas).
        """
        if self.sampler is None:
            return super().select_training_samples(proposals, targets)
        self.check_targets(targets)
        gt_boxes = [t["boxes"].to(proposals[0].dtype) for t in targets]
        gt_labels = [t["labels"] for t in targets]
        proposals = self.add_gt_proposals(proposals, gt_boxes)
        matched_gt, labels, max_ious = self.match_proposals(proposals, gt_boxes, gt_labels)
        if self.ranks_by_loss:
            if features is None or image_shapes is None:
                raise ValueError(f"{self.sampler!r} ranks RoIs by loss: give features and image_shapes")
            regression_targets = self.encode_targets(proposals, gt_boxes, matched_gt)
            roi_losses = self.candidate_losses(features, proposals, image_shapes, labels, regression_targets)
            positive_masks, negative_masks = self.sampler(
                labels, max_ious, matched_gt, roi_losses=roi_losses, proposals=proposals
            )
        else:
            positive_masks, negative_masks = self.sampler(labels, max_ious, matched_gt)

        for i, (positive, negative) in enumerate(zip(positive_masks, negative_masks, strict=True)):
            sampled = torch.where(positive | negative)[0]
            proposals[i] = proposals[i][sampled]
            labels[i] = labels[i][sampled]
            matched_gt[i] = matched_gt[i][sampled]
        return proposals, matched_gt, labels, self.encode_targets(proposals, gt_boxes, matched_gt)

    def encode_targets(
        self, proposals: list[torch.Tensor], gt_boxes: list[torch.Tensor], matched_gt: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        """Per image, Tensor[N_i, 4]: the deltas from each proposal (x1, y1, x2, y2) to its matched GT box.

        An image without GT boxes has only background RoIs; their targets are encoded against a dummy box
        and never enter the loss (as in torchvision).
        """
        matched_gt_boxes = []
        for boxes, matched in zip(gt_boxes, matched_gt, strict=True):
            if not boxes.numel():
                boxes = torch.zeros((1, 4), dtype=boxes.dtype, device=boxes.device)
            matched_gt_boxes.append(boxes[matched])
        return list(self.box_coder.encode(matched_gt_boxes, proposals))

    @torch.no_grad()
    def candidate_losses(
        self,
        features: dict[str, torch.Tensor],
        proposals: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
        labels: list[torch.Tensor],
        regression_targets: list[torch.Tensor],
    ) -> list[torch.Tensor]:
        """Every candidate RoI's loss under the current model, without gradient (OHEM's read-only pass).

        The loss of a RoI is the one it would be trained with (OHEM, Shrivastava et al. §4): its
        classification loss, plus for a positive the box loss of its own class's deltas summed over the
        4 coordinates. Ignored RoIs (label −1) are scored as background; a sampler never chooses them.

        Args:
            features, image_shapes: as in :meth:`forward`.
            proposals: per image, Tensor[N_i, 4] (x1, y1, x2, y2), GT boxes included.
            labels: per image, Int64Tensor[N_i] (> 0 foreground, 0 background, −1 ignored).
            regression_targets: per image, Tensor[N_i, 4] encoded target deltas.

        Returns:
            Per image, Tensor[N_i] (float32).
        """
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)
        class_logits, box_regression = class_logits.float(), box_regression.float()
        all_labels = torch.cat(labels).clamp(min=0)
        losses = self.class_loss(class_logits, all_labels, reduction="none").float()
        positives = torch.where(all_labels > 0)[0]
        deltas = box_regression.reshape(box_regression.shape[0], -1, 4)[positives, all_labels[positives]]
        box_loss = self.box_loss or partial(F.smooth_l1_loss, beta=TORCHVISION_SMOOTH_L1_BETA)
        targets = torch.cat(regression_targets)[positives].float()
        losses[positives] += box_loss(deltas, targets, reduction="none").sum(dim=1)
        return list(losses.split([len(p) for p in proposals]))

    # ---- training: losses ---------------------------------------------------------------------------

    def forward(
        self,
        features: dict[str, torch.Tensor],
        proposals: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, torch.Tensor]] | None = None,
    ) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        """torchvision's forward, except in training with another loss (:meth:`box_losses`) or a loss-ranking
        sampler (OHEM), which scores the candidates with ``features`` before sampling.

        Args:
            features: FPN maps by name, each Tensor[B, channels, H, W].
            proposals: per image, Tensor[N_i, 4] (x1, y1, x2, y2).
            image_shapes: per image, (height, width) after resizing.
            targets: per image, {"boxes", "labels"}; required in training.

        Returns:
            (detections, losses): in training ([], {"loss_classifier", "loss_box_reg"}, plus "loss_mask"
            with a mask branch); in evaluation (per image {"boxes" [D, 4], "labels" [D], "scores" [D]},
            plus "masks" [D, 1, 28, 28] probabilities with a mask branch, {}).
        """
        if not (self.training and (self.changes_loss or self.ranks_by_loss)):
            return super().forward(features, proposals, image_shapes, targets)
        proposals, matched_gt, labels, regression_targets = self.select_training_samples(
            proposals, targets, features, image_shapes
        )
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)
        losses = self.box_losses(class_logits, box_regression, labels, regression_targets)
        if self.has_mask():
            losses["loss_mask"] = self.mask_loss(features, proposals, image_shapes, targets, labels, matched_gt)
        return [], losses

    def mask_loss(
        self,
        features: dict[str, torch.Tensor],
        proposals: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, torch.Tensor]],
        labels: list[torch.Tensor],
        matched_gt: list[torch.Tensor],
    ) -> torch.Tensor:
        """Mask R-CNN's mask loss on the sampled positives, computed as torchvision's ``RoIHeads.forward`` does.

        Only the positives (label > 0) of the sampled RoIs are pooled, each predicting the mask of its
        matched GT box: torchvision's ``maskrcnn_loss`` crops that GT mask to the RoI, resizes it to the
        predictor's output size and takes the binary cross-entropy of the logits of the GT class.

        Args:
            features, image_shapes: as in :meth:`forward`.
            proposals, labels, matched_gt: the sampled RoIs per image (:meth:`select_training_samples`).
            targets: per image, also {"masks": UInt8Tensor[G_i, H, W]} at the resized image's size.
        """
        positive_proposals, positive_matched_gt = [], []
        for proposals_in_image, labels_in_image, matched_in_image in zip(proposals, labels, matched_gt, strict=True):
            positive = torch.where(labels_in_image > 0)[0]
            positive_proposals.append(proposals_in_image[positive])
            positive_matched_gt.append(matched_in_image[positive])
        mask_features = self.mask_head(self.mask_roi_pool(features, positive_proposals, image_shapes))
        mask_logits = self.mask_predictor(mask_features)
        gt_masks = [t["masks"] for t in targets]
        gt_labels = [t["labels"] for t in targets]
        return maskrcnn_loss(mask_logits, positive_proposals, gt_masks, gt_labels, positive_matched_gt)

    def box_losses(
        self,
        class_logits: torch.Tensor,
        box_regression: torch.Tensor,
        labels: list[torch.Tensor],
        regression_targets: list[torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """Classification and box losses of the sampled RoIs, under torchvision's keys.

        - ``loss_classifier``: ``class_loss`` — cross-entropy, or the equalization loss (EQL paper §3).
        - ``loss_box_reg``: over the sampled positives, the deltas of their own class against their
          targets, ``box_loss`` if set (balanced L1, Libra R-CNN §3.3, loss weight 1.0; or the baseline's
          smooth L1 / L1), else smooth L1 with β = 1/9; summed and divided by the number of sampled RoIs
          (positives and negatives), as torchvision and the reference normalise.

        Args:
            class_logits: [R, C + 1] softmax logits, or [R, C] sigmoid logits with EQL.
            box_regression: [R, (C + 1) * 4] encoded deltas, class k at columns 4k..4k+3.
            labels: per image, Int64Tensor[S_i] in 0..C (R = Σ S_i).
            regression_targets: per image, Tensor[S_i, 4] encoded target deltas.
        """
        labels = torch.cat(labels, dim=0)
        regression_targets = torch.cat(regression_targets, dim=0)

        loss_classifier = self.class_loss(class_logits, labels)

        positives = torch.where(labels > 0)[0]
        deltas_per_class = box_regression.reshape(box_regression.shape[0], -1, 4)
        predicted, target = deltas_per_class[positives, labels[positives]], regression_targets[positives]
        if self.box_loss is not None:
            box_loss = self.box_loss(predicted, target)
        else:
            box_loss = F.smooth_l1_loss(predicted, target, beta=TORCHVISION_SMOOTH_L1_BETA, reduction="sum")
        return {"loss_classifier": loss_classifier, "loss_box_reg": box_loss / labels.numel()}

    # ---- inference ----------------------------------------------------------------------------------

    def postprocess_detections(
        self,
        class_logits: torch.Tensor,
        box_regression: torch.Tensor,
        proposals: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """torchvision's post-processing; with EQL the scores are the C sigmoids, not a softmax.

        A softmax over sigmoid logits would make the classes compete, which EQL's classifier was not
        trained for (EQL paper §3: at test time the scores are the sigmoids). The sigmoid scores are put in
        torchvision's [R, C + 1] layout with a zero background column and selected as torchvision does.

        Returns:
            Per image: boxes [D, 4] (x1, y1, x2, y2), scores [D], labels [D] in 1..C.
        """
        if self.eql_tail_mask is None:
            return super().postprocess_detections(class_logits, box_regression, proposals, image_shapes)
        scores = F.pad(torch.sigmoid(class_logits), (1, 0))  # background column of zeros, [R, C + 1]
        return self.select_detections(scores, box_regression, proposals, image_shapes)

    def select_detections(
        self,
        scores: torch.Tensor,
        box_regression: torch.Tensor,
        proposals: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """torchvision's detection selection for class scores that are already probabilities.

        Each (RoI, foreground class) pair is a candidate with its class's decoded box, clipped to the
        image; candidates at or below ``score_thresh`` and boxes narrower than 0.01 are dropped, NMS runs
        per class at ``nms_thresh``, and the ``detections_per_img`` best are kept.

        Args:
            scores: [R, C + 1] per-class scores, column 0 the background (never a detection).
            box_regression: [R, (C + 1) * 4] encoded deltas.
            proposals: per image, Tensor[N_i, 4] (x1, y1, x2, y2), R = Σ N_i.
            image_shapes: per image, (height, width).

        Returns:
            Per image: boxes [D, 4], scores [D], labels [D] in 1..C.
        """
        boxes_per_image = [len(p) for p in proposals]
        pred_boxes = self.box_coder.decode(box_regression, proposals)  # [R, C + 1, 4]
        class_ids = torch.arange(scores.shape[1], device=scores.device)
        all_boxes, all_scores, all_labels = [], [], []
        for boxes, image_scores, image_shape in zip(
            pred_boxes.split(boxes_per_image), scores.split(boxes_per_image), image_shapes, strict=True
        ):
            boxes = box_ops.clip_boxes_to_image(boxes, image_shape)[:, 1:].reshape(-1, 4)
            labels = class_ids.expand_as(image_scores)[:, 1:].reshape(-1)
            image_scores = image_scores[:, 1:].reshape(-1)

            keep = torch.where(image_scores > self.score_thresh)[0]
            boxes, image_scores, labels = boxes[keep], image_scores[keep], labels[keep]
            keep = box_ops.remove_small_boxes(boxes, min_size=1e-2)
            boxes, image_scores, labels = boxes[keep], image_scores[keep], labels[keep]
            keep = box_ops.batched_nms(boxes, image_scores, labels, self.nms_thresh)
            keep = keep[: self.detections_per_img]
            all_boxes.append(boxes[keep])
            all_scores.append(image_scores[keep])
            all_labels.append(labels[keep])
        return all_boxes, all_scores, all_labels


def _predictor_in_features(box_predictor: nn.Module) -> int:
    """The input width of a torchvision-style predictor (one with a ``cls_score`` linear layer)."""
    cls_score = getattr(box_predictor, "cls_score", None)
    if not isinstance(cls_score, nn.Linear):
        raise ValueError("EQL needs a box predictor with a `cls_score` nn.Linear (to read its input width)")
    return cls_score.in_features


def _checked_balanced_l1(settings: dict[str, float] | None) -> dict[str, float] | None:
    """The balanced L1 settings as floats, checked now rather than at the first training step."""
    if settings is None:
        return None
    if set(settings) != BALANCED_L1_KEYS:
        raise ValueError(f"balanced_l1 must have exactly the keys {sorted(BALANCED_L1_KEYS)}; got {sorted(settings)}")
    settings = {key: float(value) for key, value in settings.items()}
    empty = torch.zeros(0)
    balanced_l1_loss(empty, empty, **settings, reduction="sum")  # raises LossArgumentError on α, γ, β <= 0
    return settings
