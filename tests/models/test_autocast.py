"""Mixed precision on the CPU: every switch combination trains and evaluates under bfloat16 autocast.

``torch.autocast("cpu", dtype=torch.bfloat16)`` runs the convolutions and matmuls in bfloat16, as CUDA
autocast does, so the numerically sensitive parts of libra's own code (the BFP's non-local attention,
EQL's sigmoid cross-entropy, the balanced L1 logarithm, box decoding) are exercised without a GPU.

Expected dtypes under autocast: every loss term float32; detections' boxes and scores float32 (the
heads' outputs are decoded and scored in float32, ``libra_cli/models/precision.py``), labels int64.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from libra_cli.engine.step import TrainStep, forward_backward
from libra_cli.losses import balanced_l1_loss, equalization_loss
from libra_cli.models.bfp import NonLocal2d
from libra_cli.models.build import build_detector
from tests.conftest import tiny_config
from tests.models.test_mask_rcnn import narrow_mask_head, tiny_mask_config  # noqa: F401 (a fixture)

BF16 = torch.bfloat16
NUM_CLASSES = 3
IMAGE = 64  # smaller than tiny_config's 96: 56 detectors train and evaluate here
RETINANET_IMAGE = 160  # see _tiny_detector


def _inputs():
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(3, IMAGE, IMAGE, generator=generator) for _ in range(2)]
    targets = [
        {"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0], [20.0, 12.0, 60.0, 58.0]]), "labels": torch.tensor([1, 2])},
        {"boxes": torch.tensor([[2.0, 24.0, 26.0, 60.0]]), "labels": torch.tensor([3])},
    ]
    return images, targets


IMAGES, TARGETS = _inputs()

# Every switch combination. Faster R-CNN: RoI sampler (random, IoU-balanced or OHEM; the last two exclude
# each other) × BFP (off or each refinement) × balanced L1 × EQL = 3 × 4 × 2 × 2 = 48 detectors.
# RetinaNet: BFP × balanced L1 = 4 × 2 = 8 (the other switches are RoI-head parts). About 0.5 s each.
SAMPLERS = ({}, {"iou_sampling": True}, {"ohem": True})
BFPS = (
    {},
    {"bfp": True, "bfp_refine": "non_local"},
    {"bfp": True, "bfp_refine": "conv"},
    {"bfp": True, "bfp_refine": "none"},
)
BL1 = ({}, {"balanced_l1": True})
EQL = ({}, {"eql": True, "eql_lambda": 0.5})
FASTER_RCNN = [{**s, **b, **bl1, **e} for s, b, bl1, e in itertools.product(SAMPLERS, BFPS, BL1, EQL)]
RETINANET = [{**b, **bl1} for b, bl1 in itertools.product(BFPS, BL1)]
CASES = [("faster_rcnn", s) for s in FASTER_RCNN] + [("retinanet", s) for s in RETINANET]


def _label(case) -> str:
    arch, switches = case
    parts = [f"{k}={v}" if not isinstance(v, bool) else k for k, v in switches.items() if k != "eql_lambda"]
    return arch + ("[" + ",".join(parts) + "]" if parts else "[off]")


def _tiny_detector(benchmark, out, arch: str, switches: dict):
    overrides = {f"libra__{key}": value for key, value in switches.items()}
    # RetinaNet's P7 is a stride-2 convolution of P6; at 64 px P6 is 1×1, and torch's CPU bfloat16
    # convolution returns a non-finite weight gradient now and then for 1×1 inputs (about 1 call in 15
    # with a 3×3, stride-2, padding-1 kernel; not on CUDA, not in float32). At 160 px P6 is 3×3.
    size = IMAGE if arch == "faster_rcnn" else RETINANET_IMAGE
    config = tiny_config(
        benchmark,
        out,
        model__arch=arch,
        model__min_size=size,
        model__max_size=size,
        model__fpn_channels=16 if arch == "faster_rcnn" else 32,  # RetinaNet's head: GroupNorm(32)
        model__box_head_dim=32,
        model__anchor_sizes=[8, 16, 32, 64, 128],
        model__rpn_pre_nms_top_n_train=100,
        model__rpn_post_nms_top_n_train=50,
        model__roi_batch_size_per_image=32,
        **overrides,
    )
    torch.manual_seed(0)
    return build_detector(config, NUM_CLASSES, images_per_class=torch.tensor([8, 3, 1]), num_images=8)


@pytest.mark.parametrize("case", CASES, ids=[_label(c) for c in CASES])
def test_bf16_autocast_training_step_and_evaluation_are_finite(tiny_benchmark, tmp_path, case) -> None:
    arch, switches = case
    model = _tiny_detector(tiny_benchmark, tmp_path, arch, switches)

    # Training: the training loop's own forward/backward under CPU bf16 autocast (lr 0: weights kept).
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    step = TrainStep(model.train(), optimizer, torch.amp.GradScaler("cpu", enabled=False), BF16)
    torch.manual_seed(1)
    losses = forward_backward(step, IMAGES, TARGETS)
    for name, value in losses.items():
        assert value.dtype == torch.float32, (name, value.dtype)
        assert math.isfinite(float(value.detach())), (name, float(value.detach()))
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads, "no parameter received a gradient"
    for name, parameter in model.named_parameters():
        if parameter.grad is not None:
            assert parameter.grad.dtype == parameter.dtype == torch.float32, name
            assert bool(torch.isfinite(parameter.grad).all()), f"non-finite gradient of {name}"

    # Evaluation: eval-mode forward under autocast.
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=BF16):
        detections = model(IMAGES)
    assert len(detections) == len(IMAGES)
    for found in detections:
        assert found["boxes"].dtype == torch.float32
        assert found["scores"].dtype == torch.float32
        assert found["labels"].dtype == torch.int64
        assert bool(torch.isfinite(found["boxes"]).all()) and bool(torch.isfinite(found["scores"]).all())
        assert bool(((found["scores"] >= 0) & (found["scores"] <= 1)).all())


def test_boxes_are_decoded_in_float32_under_autocast(tiny_benchmark, tmp_path) -> None:
    """At COCO-sized coordinates bfloat16 steps by 4–8 px: decoding must not round the boxes to it."""
    model = _tiny_detector(tiny_benchmark, tmp_path, "faster_rcnn", {}).eval()
    head = model.roi_heads
    proposals = [torch.tensor([[1001.0, 603.0, 1203.0, 797.0]])]
    features = torch.randn(1, 32)
    with torch.no_grad():
        reference = head.box_coder.decode(model.roi_heads.box_predictor(features)[1], proposals)
        with torch.autocast("cpu", dtype=BF16):
            deltas = model.roi_heads.box_predictor(features)[1]
            decoded = head.box_coder.decode(deltas, proposals)
    assert deltas.dtype == torch.float32
    assert decoded.dtype == torch.float32
    # The deltas differ only by the bf16 matmul; the box stays within a fraction of a pixel of float32's.
    assert torch.allclose(decoded, reference, atol=0.5)


def test_non_local_attention_logits_are_float32_under_autocast() -> None:
    """Integer features make the float32 logits exact. They lie in 274..304, where bfloat16 steps by 2:
    rounding them would change attention weights by up to e¹ (softmax of logits close to each other)."""
    block = NonLocal2d(16)
    with torch.no_grad():
        for conv in (block.theta, block.phi):
            conv.weight.copy_(torch.eye(16).reshape(16, 16, 1, 1))
            conv.bias.zero_()
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(-1, 2, (1, 16, 4, 4), generator=generator).float()  # exact in bfloat16
    x[:, 0] = 17.0  # every logit is 17² = 289 plus the dot product of the 15 other channels
    with torch.no_grad():
        reference = block.attention(x)
        with torch.autocast("cpu", dtype=BF16):
            mixed = block.attention(x)
            output = block(x)
    assert mixed.dtype == torch.float32
    assert torch.allclose(mixed, reference, atol=1e-6)
    assert bool(torch.isfinite(output).all())


def test_losses_compute_in_float32_from_bfloat16_inputs() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = (torch.randn(64, 5, generator=generator) * 8).to(BF16)
    labels = torch.randint(0, 6, (64,), generator=generator)
    tail = torch.tensor([False, True, False, True, True])
    eql = equalization_loss(logits, labels, tail)
    assert eql.dtype == torch.float32
    assert torch.allclose(eql, equalization_loss(logits.float(), labels, tail), rtol=1e-6)

    pred = (torch.randn(64, 4, generator=generator) * 3).to(BF16)
    target = torch.zeros(64, 4, dtype=BF16)
    bl1 = balanced_l1_loss(pred, target, beta=0.11)
    assert bl1.dtype == torch.float32
    assert torch.allclose(bl1, balanced_l1_loss(pred.float(), target.float(), beta=0.11), rtol=1e-6)


def test_the_cases_are_every_switch_combination() -> None:
    assert len(FASTER_RCNN) == 3 * 4 * 2 * 2 and len(RETINANET) == 4 * 2
    keys = {tuple(sorted(c.items())) for c in FASTER_RCNN}
    assert len(keys) == 48  # no combination twice
    assert not any(c.get("iou_sampling") and c.get("ohem") for c in FASTER_RCNN)


# ---- Mask R-CNN --------------------------------------------------------------------------------------------
# The mask branch under bf16 autocast: its loss and the test-time mask probabilities are float32 (the mask
# predictor's logits are cast like the box predictor's), with the switches off and in two combinations.
MASK_RCNN_CASES = [
    {},
    {"iou_sampling": True, "bfp": True, "balanced_l1": True},
    {"eql": True, "eql_lambda": 0.5, "ohem": True},
]


def _with_masks(targets):
    """``targets`` with each box's instance mask: the box's pixels, uint8 [N, H, W]."""
    rows, cols = torch.arange(IMAGE)[:, None] + 0.5, torch.arange(IMAGE)[None, :] + 0.5
    with_masks = []
    for target in targets:
        masks = [
            ((cols >= x1) & (cols < x2) & (rows >= y1) & (rows < y2)) for x1, y1, x2, y2 in target["boxes"].tolist()
        ]
        with_masks.append({**target, "masks": torch.stack(masks).to(torch.uint8)})
    return with_masks


@pytest.mark.parametrize("switches", MASK_RCNN_CASES, ids=lambda s: _label(("mask_rcnn", s)))
def test_bf16_autocast_mask_rcnn_trains_and_evaluates_in_float32(tmp_path, narrow_mask_head, switches):  # noqa: F811
    config = tiny_mask_config(tmp_path, **{f"libra__{key}": value for key, value in switches.items()})
    torch.manual_seed(0)
    model = build_detector(config, NUM_CLASSES, images_per_class=torch.tensor([8, 3, 1]), num_images=8)

    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    step = TrainStep(model.train(), optimizer, torch.amp.GradScaler("cpu", enabled=False), BF16)
    torch.manual_seed(1)
    losses = forward_backward(step, IMAGES, _with_masks(TARGETS))
    assert "loss_mask" in losses
    for name, value in losses.items():
        assert value.dtype == torch.float32, (name, value.dtype)
        assert math.isfinite(float(value.detach())), (name, float(value.detach()))
    mask_weight = model.roi_heads.mask_predictor.mask_fcn_logits.weight
    assert mask_weight.grad is not None and mask_weight.grad.dtype == torch.float32
    for name, parameter in model.named_parameters():
        if parameter.grad is not None:
            assert bool(torch.isfinite(parameter.grad).all()), f"non-finite gradient of {name}"

    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=BF16):
        detections = model(IMAGES)
    for found in detections:
        assert found["masks"].dtype == torch.float32
        assert found["masks"].shape == (len(found["boxes"]), 1, IMAGE, IMAGE)
        assert bool(((found["masks"] >= 0) & (found["masks"] <= 1)).all())
