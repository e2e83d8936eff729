"""``build_detector``: compose a torchvision Faster R-CNN, Mask R-CNN or RetinaNet from a run config.

Every part is a torchvision module passed in by constructor injection; the switched-on components of
``libra_cli.components.COMPONENTS`` supply the parts they replace (``models/parts.py``: ``detector_parts``),
and this module puts them in:

- a backbone wrapper (``--bfp``: ``BackboneWithBFP``, pyramid in, balanced pyramid out);
- Faster R-CNN and Mask R-CNN: a RoI sampler (``--iou-sampling``, ``--ohem``), a box loss (``--balanced-l1``)
  or a classifier (``--eql``) make the RoI heads ``LibraRoIHeads``, a ``RoIHeads`` subclass with the same
  pooler, box head, mask branch and matcher that receives them;
- RetinaNet: a change to the head (``--balanced-l1``: the regression head's loss becomes balanced L1).

The reference code's other training choices are named options, each off (torchvision's behaviour) by
default: ``model.rpn_neg_pos_ub`` caps the RPN sampler's negatives; ``model.roi_box_loss`` /
``roi_smooth_l1_beta`` choose the RoI head's box loss (the paper's baseline: smooth L1 with β = 1);
``model.retinanet_loss_norm`` / ``retinanet_p6`` the RetinaNet loss divisor and extra levels;
``model.box_head_init`` the box head's initialisation; ``model.rpn_min_pos_iou`` / ``rpn_loss_norm`` the RPN's
floor on low-quality matches and its loss divisor (SPEC §9).

With every switch off the result is the plain torchvision model (the tests compare losses).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet
from torchvision.models.detection import FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d

from libra_cli.components import MASK_RCNN, TWO_STAGE
from libra_cli.config import RunConfig
from libra_cli.errors import LibraError
from libra_cli.io import load_tensors_safely
from libra_cli.models.box_head import init_box_head_as_reference
from libra_cli.models.parts import DetectorParts, TrainingStats, detector_parts
from libra_cli.models.precision import float32_outputs
from libra_cli.models.retinanet import GroupNorm, P6FromC5P7NoReLU, use_batch_normalised_losses
from libra_cli.models.roi_align import FastMultiScaleRoIAlign
from libra_cli.models.roi_heads import TORCHVISION_SMOOTH_L1_BETA, LibraRoIHeads
from libra_cli.models.rpn import FlooredLowQualityMatcher, use_reference_rpn_loss

RESNET_OUT_CHANNELS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}
GROUP_NORM_GROUPS = 32
# ``model.backbone_weights: imagenet``: torchvision's ImageNet weights of each backbone (the reference configs'
# "modelzoo://resnet50" / "torchvision://resnet50" are these files).
IMAGENET_WEIGHTS = "imagenet"
IMAGENET_WEIGHTS_ENUM = {
    "resnet18": "ResNet18_Weights",
    "resnet34": "ResNet34_Weights",
    "resnet50": "ResNet50_Weights",
}
# Set (to anything but "" or "0") to never download: a missing ImageNet file is then an error at once.
OFFLINE_ENV = "LIBRA_OFFLINE"
# Mask R-CNN's mask branch, torchvision's defaults: 14×14 RoIAlign with 2×2 sampling points per bin, four
# 3×3 convolutions of 256 channels, then a 2× deconvolution of 256 channels (28×28 masks, one per class).
MASK_POOL_SIZE = 14
MASK_SAMPLING_RATIO = 2
MASK_HEAD_LAYERS = (256, 256, 256, 256)
MASK_PREDICTOR_CHANNELS = 256


def norm_layer(kind: str):
    """Normalisation for the ResNet body. GroupNorm trains from scratch with small batches."""
    if kind == "gn":
        return lambda channels: nn.GroupNorm(GROUP_NORM_GROUPS, channels)
    if kind == "bn":
        return nn.BatchNorm2d
    return FrozenBatchNorm2d


def load_state_dict_file(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """Read a weights file without executing code from it (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise LibraError(f"{path}: {what} file not found")
    payload = load_tensors_safely(path, f"{what} file")
    if isinstance(payload, dict) and isinstance(payload.get("model"), dict):
        payload = payload["model"]
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise LibraError(f"{path}: {what} file does not hold a state_dict of tensors")
    return payload


def imagenet_weights_url(backbone: str) -> str:
    """The URL of torchvision's ``IMAGENET1K_V1`` weights of ``backbone`` (e.g. …/resnet50-0676ba61.pth)."""
    return getattr(resnet, IMAGENET_WEIGHTS_ENUM[backbone]).IMAGENET1K_V1.url


def imagenet_weights_path(backbone: str) -> Path:
    """Where torchvision keeps that file: ``torch.hub.get_dir()/checkpoints/<file name of the URL>``, i.e.
    ``$TORCH_HOME/hub/checkpoints`` (default ``~/.cache/torch/hub/checkpoints``)."""
    url = imagenet_weights_url(backbone)
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def fetch_imagenet_weights(backbone: str) -> Path:
    """The cached ImageNet weights file of ``backbone``, downloaded with torchvision's own downloader only when it
    is missing; with ``LIBRA_OFFLINE`` set, or when the download fails (no network), a one-line LibraError names
    the file and the folder to put it in."""
    path = imagenet_weights_path(backbone)
    if path.is_file():
        return path
    url = imagenet_weights_url(backbone)
    missing = f"model.backbone_weights: imagenet: {path.name} is not in {path.parent}"
    advice = f"download {url} into that folder (or set TORCH_HOME to where it is)"
    if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        raise LibraError(f"{missing} and {OFFLINE_ENV} is set; {advice}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), progress=False)
    except (OSError, RuntimeError, ValueError) as exc:  # URLError and HTTPError are OSErrors
        reason = str(getattr(exc, "reason", None) or exc).strip().splitlines()
        raise LibraError(
            f"{missing} and cannot be downloaded ({reason[0] if reason else type(exc).__name__}); {advice}"
        ) from exc
    return path


def check_backbone_weights(config: RunConfig) -> None:
    """Find (or fetch) the ImageNet file of ``backbone_weights: imagenet`` before a run starts any work."""
    if config.model.backbone_weights == IMAGENET_WEIGHTS:
        fetch_imagenet_weights(config.model.backbone)


def freeze_stages(body: nn.Module, frozen_stages: int) -> None:
    """Fix the ResNet's first ``frozen_stages`` stages (``requires_grad`` off): 1 = the stem (conv1, bn1) and
    layer1, k = the stem and layer1 … layerk; 0 changes nothing.

    The reference configs' ``frozen_stages=1`` (mmdetection, where 0 freezes the stem alone and −1 nothing).
    In torchvision's terms k ≥ 1 is ``trainable_layers = 4 − k`` and 0 is ``trainable_layers = 5``. The
    normalisation layers of frozen stages keep updating their running statistics with ``norm: bn``; use
    ``frozen_bn`` (the reference's choice) to fix them too.
    """
    if frozen_stages <= 0:
        return
    for name in ["conv1", "bn1", *(f"layer{k}" for k in range(1, frozen_stages + 1))]:
        for parameter in getattr(body, name).parameters():
            parameter.requires_grad_(False)


def build_backbone(config: RunConfig, wrap: Callable[[nn.Module], nn.Module] | None = None) -> nn.Module:
    """ResNet body + FPN, then ``wrap`` (the BFP neck of ``--bfp``) if given. Faster and Mask R-CNN use
    P2–P6, RetinaNet P3–P7 (Libra R-CNN §3.2)."""
    model_cfg = config.model
    body = getattr(resnet, model_cfg.backbone)(weights=None, norm_layer=norm_layer(model_cfg.norm))
    if model_cfg.backbone_weights:
        weights_file = model_cfg.backbone_weights
        if weights_file == IMAGENET_WEIGHTS:
            weights_file = fetch_imagenet_weights(model_cfg.backbone)
        state = load_state_dict_file(weights_file, "backbone weights")
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = body.load_state_dict(state, strict=False)
        if unexpected or [k for k in missing if not k.startswith("fc.")]:
            raise LibraError(
                f"{model_cfg.backbone_weights}: does not match {model_cfg.backbone} "
                f"(missing {len(missing)}, unexpected {len(unexpected)} keys)"
            )
    freeze_stages(body, model_cfg.frozen_stages)
    stage_channels = RESNET_OUT_CHANNELS[model_cfg.backbone] // 8
    channels = model_cfg.fpn_channels
    if model_cfg.arch in TWO_STAGE:
        returned, extra = [1, 2, 3, 4], LastLevelMaxPool()
    elif model_cfg.retinanet_p6 == "c5":
        returned, extra = [2, 3, 4], P6FromC5P7NoReLU(stage_channels * 8, channels)
    else:
        returned, extra = [2, 3, 4], LastLevelP6P7(channels, channels)
    return_layers = {f"layer{k}": str(i) for i, k in enumerate(returned)}
    in_channels = [stage_channels * 2 ** (k - 1) for k in returned]
    backbone: nn.Module = BackboneWithFPN(body, return_layers, in_channels, channels, extra_blocks=extra)
    return wrap(backbone) if wrap is not None else backbone


def build_detector(
    config: RunConfig,
    num_classes: int,
    *,
    images_per_class: torch.Tensor | None = None,
    num_images: int | None = None,
) -> nn.Module:
    """A torchvision detector for ``num_classes`` foreground classes (labels 1..C).

    ``images_per_class`` [C] and ``num_images`` (training-set statistics) are required by ``--eql``:
    ``num_images`` is the denominator of the image frequencies, which ``libra.eql_freq`` chooses (see
    ``libra_cli.engine.run.eql_frequency_denominator``).
    """
    model_cfg = config.model
    parts = detector_parts(config, TrainingStats(images_per_class, num_images))
    backbone = build_backbone(config, parts.wrap_backbone)
    anchor_sizes = tuple((size,) for size in model_cfg.anchor_sizes)
    common = dict(
        min_size=model_cfg.min_size,
        max_size=model_cfg.max_size,
        detections_per_img=model_cfg.detections_per_image,
    )
    if model_cfg.arch in TWO_STAGE:
        model = _build_faster_rcnn(config, parts, backbone, num_classes, anchor_sizes)
    else:
        # Three scales per level (x, x·2^(1/3), x·2^(2/3)), as in RetinaNet.
        sizes = tuple((s, round(s * 2 ** (1 / 3)), round(s * 2 ** (2 / 3))) for (s,) in anchor_sizes)
        anchors = AnchorGenerator(sizes, (tuple(model_cfg.aspect_ratios),) * len(sizes))
        head = RetinaNetHead(
            backbone.out_channels,
            anchors.num_anchors_per_location()[0],
            num_classes + 1,
            norm_layer=partial(GroupNorm, GROUP_NORM_GROUPS) if model_cfg.norm == "gn" else None,
        )
        if parts.retinanet_head is not None:
            parts.retinanet_head(head)
        if model_cfg.retinanet_loss_norm == "batch":
            use_batch_normalised_losses(head)
        model = RetinaNet(
            backbone,
            num_classes + 1,
            anchor_generator=anchors,
            head=head,
            score_thresh=model_cfg.score_thresh,
            topk_candidates=1000,
            **common,
        )
    # Under autocast the heads' outputs are decoded into boxes, scored and put into the losses in
    # float32: decoding half-precision deltas rounds box coordinates to 8 significant bits.
    if model_cfg.arch in TWO_STAGE:
        float32_outputs(model.rpn.head)
        float32_outputs(model.roi_heads.box_predictor)
        if model.roi_heads.has_mask():
            float32_outputs(model.roi_heads.mask_predictor)
    else:
        float32_outputs(model.head)
    if model_cfg.weights:
        state = load_state_dict_file(model_cfg.weights, "detector weights")
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise LibraError(f"{model_cfg.weights}: does not match the configured detector ({first})") from exc
    return model


def _build_faster_rcnn(
    config: RunConfig,
    parts: DetectorParts,
    backbone: nn.Module,
    num_classes: int,
    anchor_sizes: tuple[tuple[int, ...], ...],
) -> FasterRCNN:
    """Faster R-CNN, or Mask R-CNN (``model.arch: mask_rcnn``: the same detector plus torchvision's mask
    branch), with the RPN of the model settings and the RoI heads of the switched-on components."""
    model_cfg = config.model
    channels = backbone.out_channels
    anchors = AnchorGenerator(anchor_sizes, (tuple(model_cfg.aspect_ratios),) * len(anchor_sizes))
    pooler = FastMultiScaleRoIAlign(
        ["0", "1", "2", "3"],
        output_size=7,
        sampling_ratio=model_cfg.roi_sampling_ratio,
        implementation=model_cfg.roi_align,
    )
    box_head = TwoMLPHead(channels * 7 * 7, model_cfg.box_head_dim)
    predictor = FastRCNNPredictor(model_cfg.box_head_dim, num_classes + 1)
    mask_branch = _mask_branch(config, channels, num_classes) if model_cfg.arch == MASK_RCNN else {}
    model = (MaskRCNN if mask_branch else FasterRCNN)(
        backbone,
        num_classes=None,
        min_size=model_cfg.min_size,
        max_size=model_cfg.max_size,
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=model_cfg.rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=model_cfg.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=model_cfg.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=model_cfg.rpn_post_nms_top_n_test,
        rpn_batch_size_per_image=model_cfg.rpn_batch_size_per_image,
        box_roi_pool=pooler,
        box_head=box_head,
        box_predictor=predictor,
        box_score_thresh=model_cfg.score_thresh,
        box_detections_per_img=model_cfg.detections_per_image,
        box_batch_size_per_image=model_cfg.roi_batch_size_per_image,
        box_positive_fraction=model_cfg.roi_positive_fraction,
        **mask_branch,
    )
    _use_reference_rpn_choices(config, model.rpn)
    box_loss = parts.roi_box_loss if parts.roi_box_loss is not None else roi_box_loss(config)
    if parts.roi_sampler is not None or parts.eql_tail_mask is not None or box_loss is not None:
        model.roi_heads = LibraRoIHeads.from_plain(
            model.roi_heads,
            num_classes=num_classes,
            sampler=parts.roi_sampler,
            box_loss=box_loss,
            eql_tail_mask=parts.eql_tail_mask,
            eql_prior=parts.eql_prior,
        )
    if model_cfg.box_head_init == "reference":
        init_box_head_as_reference(model.roi_heads.box_head, model.roi_heads.box_predictor)
    return model


def _mask_branch(config: RunConfig, channels: int, num_classes: int) -> dict[str, nn.Module]:
    """Mask R-CNN's mask branch (torchvision's defaults, with the RoIAlign of ``model.roi_align``), as the
    keyword arguments of ``MaskRCNN``."""
    return dict(
        mask_roi_pool=FastMultiScaleRoIAlign(
            ["0", "1", "2", "3"],
            output_size=MASK_POOL_SIZE,
            sampling_ratio=MASK_SAMPLING_RATIO,
            implementation=config.model.roi_align,
        ),
        mask_head=MaskRCNNHeads(channels, MASK_HEAD_LAYERS, dilation=1),
        mask_predictor=MaskRCNNPredictor(MASK_HEAD_LAYERS[-1], MASK_PREDICTOR_CHANNELS, num_classes + 1),
    )


def _use_reference_rpn_choices(config: RunConfig, rpn: nn.Module) -> None:
    """The reference code's RPN choices the model settings switch on, put into torchvision's RPN in place:
    the cap on sampled negatives (``rpn_neg_pos_ub``), the floor on low-quality matches
    (``rpn_min_pos_iou``) and the loss divisor (``rpn_loss_norm: reference``)."""
    model_cfg = config.model
    if model_cfg.rpn_neg_pos_ub is not None:
        from libra_cli.sampling import NegPosCappedSampler

        plain = rpn.fg_bg_sampler
        rpn.fg_bg_sampler = NegPosCappedSampler(
            plain.batch_size_per_image, plain.positive_fraction, model_cfg.rpn_neg_pos_ub
        )
    if model_cfg.rpn_min_pos_iou is not None:
        plain_matcher = rpn.proposal_matcher
        rpn.proposal_matcher = FlooredLowQualityMatcher(
            plain_matcher.high_threshold, plain_matcher.low_threshold, model_cfg.rpn_min_pos_iou
        )
    if model_cfg.rpn_loss_norm == "reference":
        use_reference_rpn_loss(rpn)


def roi_box_loss(config: RunConfig):
    """The RoI head's box loss of the model settings, used unless a component (``--balanced-l1``)
    supplies one: ``loss(pred [P, 4], target [P, 4]) -> summed scalar``, or None for torchvision's own
    (smooth L1, β = 1/9).

    ``model.roi_box_loss``: smooth L1 with ``model.roi_smooth_l1_beta`` (the paper's mmdetection baseline
    uses β = 1.0) or plain L1.
    """
    model_cfg = config.model
    if model_cfg.roi_box_loss == "l1":
        return partial(F.l1_loss, reduction="sum")
    if math.isclose(model_cfg.roi_smooth_l1_beta, TORCHVISION_SMOOTH_L1_BETA, rel_tol=1e-9):
        return None
    return partial(F.smooth_l1_loss, beta=model_cfg.roi_smooth_l1_beta, reduction="sum")
