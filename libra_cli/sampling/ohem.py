"""Online hard example mining (OHEM) as a training-time RoI sampler.

Shrivastava, Gupta and Girshick, "Training Region-based Object Detectors with Online Hard Example
Mining", CVPR 2016 — the hard-mining approach Libra R-CNN §3.1 argues against (hard mining is sensitive
to noisy labels and costs a second pass; IoU-balanced sampling gets the hard negatives cheaply).

The rule, as in the OHEM paper's Fast R-CNN setting (its §4, the method):

1. The read-only RoI network scores every candidate RoI of an image (the proposals and GT boxes; a RoI
   between the IoU thresholds, label −1, is not a candidate) with its loss under the current model:
   classification loss, plus the box loss for a positive — the same loss the RoI is trained with.
2. Non-maximum suppression at IoU 0.7 with the loss as the score removes near-duplicate RoIs, so that
   one hard region does not fill the batch twice.
3. The B RoIs with the largest loss are kept, whatever their label: the paper drops Fast R-CNN's
   foreground fraction (and its ``bg_lo`` floor), since the losses now decide which RoIs matter. B is
   the head's usual batch size, so OHEM trains on as many RoIs as the random sampler.

So the positive fraction is whatever the losses decide (mmdetection's ``OHEMSampler`` instead keeps
the positive fraction and mines positives and negatives separately); this is the paper's choice. The
foreground/background thresholds stay torchvision's (IoU < 0.5 background, no lower floor), as for
every other sampler of libra.
"""

from __future__ import annotations

import torch
from torchvision.ops import nms

from libra_cli.sampling.sampler import hard_negatives

OHEM_NMS_THRESHOLD = 0.7  # the OHEM paper's NMS among the RoIs before selection


def sample_hardest_rois(
    roi_losses: torch.Tensor,
    labels: torch.Tensor,
    num: int,
    boxes: torch.Tensor | None = None,
    nms_thresh: float | None = OHEM_NMS_THRESHOLD,
) -> torch.Tensor:
    """The ``num`` candidate RoIs with the largest loss (OHEM's rule, module docstring).

    Deterministic: no randomness; among equal losses ``torch.topk`` decides.

    Args:
        roi_losses: Tensor[N], each RoI's loss under the current model.
        labels: LongTensor[N]: class label (> 0), background (0) or ignored (−1, never chosen).
        num: B, how many RoIs to take.
        boxes: Tensor[N, 4] (x1, y1, x2, y2), the RoIs; needed for the NMS step.
        nms_thresh: IoU above which a RoI with a smaller loss than an overlapping one is dropped; None
            (or no ``boxes``) skips the NMS step.

    Returns:
        LongTensor[min(num, candidates left)]: indices into the N RoIs, hardest first.
    """
    candidates = torch.where(labels >= 0)[0]
    if boxes is not None and nms_thresh is not None and candidates.numel():
        kept = nms(boxes[candidates].float(), roi_losses[candidates].float(), nms_thresh)
        candidates = candidates[kept]
    return hard_negatives(roi_losses, candidates, num)


class OHEMSampler:
    """The RoI sampler of OHEM, behind the interface of ``IoUBalancedSampler`` plus the RoIs' losses.

    ``ranks_by_loss`` tells the RoI head to score every candidate with the current model (without
    gradient) before sampling and to pass the scores as ``roi_losses``.

    Args:
        batch_size_per_image: B, RoIs sampled per image.
        nms_thresh: NMS among the RoIs before selection (the paper's 0.7); None skips it.
    """

    ranks_by_loss = True

    def __init__(self, batch_size_per_image: int = 512, nms_thresh: float | None = OHEM_NMS_THRESHOLD) -> None:
        if batch_size_per_image < 1:
            raise ValueError(f"batch_size_per_image must be positive, got {batch_size_per_image}")
        if nms_thresh is not None and not 0 < nms_thresh <= 1:
            raise ValueError(f"nms_thresh must be in (0, 1], got {nms_thresh}")
        self.batch_size_per_image = batch_size_per_image
        self.nms_thresh = nms_thresh

    def __repr__(self) -> str:
        return f"{type(self).__name__}(batch_size_per_image={self.batch_size_per_image}, nms_thresh={self.nms_thresh})"

    def __call__(
        self,
        labels: list[torch.Tensor],
        max_ious: list[torch.Tensor] | None = None,
        matched_gt: list[torch.Tensor] | None = None,
        *,
        roi_losses: list[torch.Tensor],
        proposals: list[torch.Tensor] | None = None,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Sample every image of a batch; ``max_ious`` and ``matched_gt`` are accepted and unused.

        Args:
            labels: per image, LongTensor[N_i]: class label (> 0), background (0) or ignored (−1).
            roi_losses: per image, Tensor[N_i]: each RoI's loss under the current model.
            proposals: per image, Tensor[N_i, 4] (x1, y1, x2, y2), for the NMS step (None skips it).

        Returns:
            (positive masks, negative masks): two lists of BoolTensor[N_i], disjoint per image.
        """
        boxes_per_image = proposals if proposals is not None else [None] * len(labels)
        positive_masks, negative_masks = [], []
        for labels_i, losses_i, boxes_i in zip(labels, roi_losses, boxes_per_image, strict=True):
            chosen = torch.zeros_like(labels_i, dtype=torch.bool)
            chosen[sample_hardest_rois(losses_i, labels_i, self.batch_size_per_image, boxes_i, self.nms_thresh)] = True
            positive_masks.append(chosen & (labels_i > 0))
            negative_masks.append(chosen & (labels_i == 0))
        return positive_masks, negative_masks
