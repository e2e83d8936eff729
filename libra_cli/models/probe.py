"""A public view of a detector's intermediate results, for the analyses and for users' own diagnostics.

torchvision's detectors return only losses (training) or detections (inference). The imbalance analyses
need what lies between: the pyramid before and after BFP, the proposals the RPN hands the RoI head in
training, their IoUs with the ground truth, the RoIs the sampler picks, and the box head's outputs.
:class:`DetectorProbe` computes each of them once, with the detector's own modules and public methods,
so an analysis never re-wires a detector by hand::

    probe = DetectorProbe(model)                     # a detector from build_detector, in eval mode
    batch = probe.forward_to_proposals(images, targets)
    matched_gt, labels, max_ious = probe.match(batch.proposals_with_gt, batch.targets)
    rois = probe.sample(batch.proposals, batch.targets)
    box_features, class_logits, box_regression = probe.box_head(batch, rois.boxes)

Everything runs under the caller's grad mode; nothing changes the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import concat_box_prediction_layers

from libra_cli.models.roi_heads import match_proposals

Targets = list[dict[str, torch.Tensor]]


@dataclass
class ProbeBatch:
    """One batch through the detector up to the RoI head.

    Attributes:
        images: the resized, normalised, padded batch (``tensors`` [B, 3, H, W], ``image_sizes`` (h, w)).
        targets: per image {"boxes" [G_i, 4] (x1, y1, x2, y2) in the resized pixels, "labels" [G_i]}.
        pyramid: the FPN's levels, each [B, C, H_l, W_l] (before BFP).
        features: the levels the heads see: after BFP when the detector has it, else ``pyramid``.
        proposals: Faster R-CNN only, per image [N_i, 4]: the proposals its RPN hands the RoI head in
            training (the training pre/post-NMS counts, ground truth not yet added); None for RetinaNet.
    """

    images: ImageList
    targets: Targets
    pyramid: dict[str, torch.Tensor]
    features: dict[str, torch.Tensor]
    proposals: list[torch.Tensor] | None = None
    _heads: nn.Module | None = None

    @property
    def proposals_with_gt(self) -> list[torch.Tensor]:
        """The proposals with each image's ground-truth boxes appended, as the RoI head trains on them."""
        if self.proposals is None or self._heads is None:
            raise ValueError("this batch has no proposals (a RetinaNet detector)")
        gt_boxes = [t["boxes"].to(self.proposals[0].dtype) for t in self.targets]
        return self._heads.add_gt_proposals(self.proposals, gt_boxes)


@dataclass
class SampledRoIs:
    """The RoIs the RoI head's sampler picks for a batch (torchvision's ``select_training_samples``).

    Attributes:
        boxes: per image [S_i, 4] (x1, y1, x2, y2).
        labels: per image Int64[S_i]: class 1..C, 0 background.
        regression_targets: per image [S_i, 4] encoded box deltas (meaningful for positives).
    """

    boxes: list[torch.Tensor]
    labels: list[torch.Tensor]
    regression_targets: list[torch.Tensor]


class DetectorProbe:
    """Intermediate results of a torchvision ``FasterRCNN``, ``MaskRCNN`` or ``RetinaNet`` as built by
    ``build_detector`` (a Mask R-CNN is probed as the Faster R-CNN it extends: its mask branch is not).

    Args:
        model: the detector (plain or with Libra components), normally in eval mode.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.is_two_stage = hasattr(model, "rpn") and hasattr(model, "roi_heads")

    @property
    def has_bfp(self) -> bool:
        return hasattr(self.model.backbone, "bfp")

    def transform(self, images: list[torch.Tensor], targets: Targets) -> tuple[ImageList, Targets]:
        """The detector's own transform: normalise, resize (boxes with the images) and pad."""
        return self.model.transform(images, targets)

    def pyramid(self, images: ImageList) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(FPN levels, the levels the heads see): the second is after BFP when the detector has it."""
        backbone = self.model.backbone
        if not self.has_bfp:
            features = backbone(images.tensors)
            return features, features
        fpn = backbone.backbone(images.tensors)
        return fpn, backbone.bfp(fpn)

    def training_proposals(self, images: ImageList, features: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """The proposals a Faster R-CNN's RPN hands its RoI head in training, whatever the model's mode.

        The RPN's own steps, through its public modules and methods: head, anchors, decoding, then
        ``filter_proposals``. The pre/post-NMS counts follow the RPN's mode and nothing else in
        ``filter_proposals`` does, so the RPN alone (not its submodules) is put in training mode for that
        call — which therefore keeps the training counts — and its mode is restored after.

        Returns:
            Per image [N_i, 4] (x1, y1, x2, y2), N_i <= the run's ``rpn_post_nms_top_n_train``.
        """
        rpn = self.model.rpn
        levels = list(features.values())
        objectness, deltas = rpn.head(levels)
        anchors = rpn.anchor_generator(images, levels)
        per_level = [o[0].shape[0] * o[0].shape[1] * o[0].shape[2] for o in objectness]
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        proposals = rpn.box_coder.decode(deltas.detach(), anchors).view(len(anchors), -1, 4)
        was_training = rpn.training
        rpn.training = True
        try:
            boxes, _ = rpn.filter_proposals(proposals, objectness, images.image_sizes, per_level)
        finally:
            rpn.training = was_training
        return boxes

    def forward_to_proposals(self, images: list[torch.Tensor], targets: Targets) -> ProbeBatch:
        """Transform, pyramid (and BFP) and, for Faster R-CNN, the training-time proposals of a batch."""
        image_list, targets = self.transform(images, targets)
        pyramid, features = self.pyramid(image_list)
        if not self.is_two_stage:
            return ProbeBatch(image_list, targets, pyramid, features)
        proposals = self.training_proposals(image_list, features)
        return ProbeBatch(image_list, targets, pyramid, features, proposals, self.model.roi_heads)

    def match(
        self, proposals: list[torch.Tensor], targets: Targets
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """Each proposal's matched GT index, label (>0 foreground, 0 background, −1 ignored) and largest
        IoU with any GT box, by the RoI head's matcher (``roi_heads.match_proposals``)."""
        gt_boxes = [t["boxes"].to(proposals[0].dtype) for t in targets]
        return match_proposals(
            self.model.roi_heads.proposal_matcher, proposals, gt_boxes, [t["labels"] for t in targets]
        )

    def sample(self, proposals: list[torch.Tensor], targets: Targets) -> SampledRoIs:
        """The RoIs the RoI head's sampler picks (GT boxes added, its sampler's random draws)."""
        heads = self.model.roi_heads
        if heads.has_mask():
            # A mask head's target check asks for masks that sampling never reads: empty ones stand in.
            targets = [
                t if "masks" in t else {**t, "masks": t["boxes"].new_zeros((len(t["boxes"]), 0, 0), dtype=torch.uint8)}
                for t in targets
            ]
        boxes, _, labels, regression_targets = heads.select_training_samples(proposals, targets)
        return SampledRoIs(boxes, labels, regression_targets)

    def box_head(self, batch: ProbeBatch, boxes: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(box features [R, D], class logits [R, K], box regression [R, (C + 1) × 4]) of ``boxes`` (per
        image, R in all) pooled from ``batch.features``."""
        heads = self.model.roi_heads
        box_features = heads.box_head(heads.box_roi_pool(batch.features, boxes, batch.images.image_sizes))
        class_logits, box_regression = heads.box_predictor(box_features)
        return box_features, class_logits, box_regression
