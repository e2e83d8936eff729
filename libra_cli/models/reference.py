"""The plain torchvision detectors, written directly against torchvision's public constructors.

They are what libra's ``build_detector`` must equal with every Libra switch off: the tests compare
their losses, and the benchmark measures libra against them. Every setting is read from
``config.model``; ``num_classes`` counts foreground classes.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn
from torchvision.models import resnet
from torchvision.models.detection import FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d

from libra_cli.config import RunConfig
from libra_cli.errors import LibraError


def _norm_layer(kind: str) -> Callable[[int], nn.Module]:
    if kind == "gn":
        return partial(nn.GroupNorm, 32)
    return nn.BatchNorm2d if kind == "bn" else FrozenBatchNorm2d


def torchvision_faster_rcnn(config: RunConfig, num_classes: int) -> FasterRCNN:
    """Faster R-CNN with a ResNet-FPN written directly against torchvision's public constructors.

    Every setting is read from ``config.model``, so the result is the detector libra builds with every
    switch off — the reference the benchmark compares against. ``num_classes`` counts foreground classes.
    """
    m = config.model
    if m.arch != "faster_rcnn":
        raise LibraError(f"model.arch: expected faster_rcnn, got {m.arch!r}")
    return FasterRCNN(**_two_stage_arguments(config, num_classes))


def torchvision_mask_rcnn(config: RunConfig, num_classes: int) -> MaskRCNN:
    """Mask R-CNN: the Faster R-CNN of :func:`torchvision_faster_rcnn` plus torchvision's default mask branch
    (14×14 RoIAlign with sampling ratio 2, four 256-channel convolutions, the 28×28 mask predictor)."""
    m = config.model
    if m.arch != "mask_rcnn":
        raise LibraError(f"model.arch: expected mask_rcnn, got {m.arch!r}")
    # The mask RoI pool and mask head are left to torchvision's defaults; the predictor must be given
    # (torchvision builds it only together with the box predictor, whose input width it fixes at 1024).
    mask_predictor = MaskRCNNPredictor(256, 256, num_classes + 1)
    return MaskRCNN(**_two_stage_arguments(config, num_classes), mask_predictor=mask_predictor)


def _two_stage_arguments(config: RunConfig, num_classes: int) -> dict:
    """The constructor arguments of torchvision's ``FasterRCNN`` (and ``MaskRCNN``) for ``config.model``."""
    m = config.model
    body = getattr(resnet, m.backbone)(weights=None, norm_layer=_norm_layer(m.norm))
    width = 64 if m.backbone in ("resnet18", "resnet34") else 256  # channels of layer1 (basic / bottleneck)
    backbone = BackboneWithFPN(
        body,
        {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"},
        [width, width * 2, width * 4, width * 8],
        m.fpn_channels,
        extra_blocks=LastLevelMaxPool(),
    )
    anchors = AnchorGenerator(tuple((s,) for s in m.anchor_sizes), (tuple(m.aspect_ratios),) * len(m.anchor_sizes))
    return dict(
        backbone=backbone,
        num_classes=None,
        min_size=m.min_size,
        max_size=m.max_size,
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=m.rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=m.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=m.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=m.rpn_post_nms_top_n_test,
        rpn_batch_size_per_image=m.rpn_batch_size_per_image,
        box_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], 7, m.roi_sampling_ratio),
        box_head=TwoMLPHead(m.fpn_channels * 7 * 7, m.box_head_dim),
        box_predictor=FastRCNNPredictor(m.box_head_dim, num_classes + 1),
        box_score_thresh=m.score_thresh,
        box_detections_per_img=m.detections_per_image,
        box_batch_size_per_image=m.roi_batch_size_per_image,
        box_positive_fraction=m.roi_positive_fraction,
    )


def torchvision_retinanet(config: RunConfig, num_classes: int) -> RetinaNet:
    """RetinaNet on ResNet-FPN P3–P7 with three anchor scales per level, from torchvision's parts."""
    m = config.model
    body = getattr(resnet, m.backbone)(weights=None, norm_layer=_norm_layer(m.norm))
    width = 64 if m.backbone in ("resnet18", "resnet34") else 256
    backbone = BackboneWithFPN(
        body,
        {"layer2": "0", "layer3": "1", "layer4": "2"},
        [width * 2, width * 4, width * 8],
        m.fpn_channels,
        extra_blocks=LastLevelP6P7(m.fpn_channels, m.fpn_channels),
    )
    sizes = tuple((s, round(s * 2 ** (1 / 3)), round(s * 2 ** (2 / 3))) for s in m.anchor_sizes)
    anchors = AnchorGenerator(sizes, (tuple(m.aspect_ratios),) * len(sizes))
    head = RetinaNetHead(
        m.fpn_channels,
        anchors.num_anchors_per_location()[0],
        num_classes + 1,
        norm_layer=partial(nn.GroupNorm, 32) if m.norm == "gn" else None,
    )
    return RetinaNet(
        backbone,
        num_classes + 1,
        min_size=m.min_size,
        max_size=m.max_size,
        anchor_generator=anchors,
        head=head,
        score_thresh=m.score_thresh,
        detections_per_img=m.detections_per_image,
        topk_candidates=1000,
    )
