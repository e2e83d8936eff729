"""Mask R-CNN (``--arch mask_rcnn``): torchvision's MaskRCNN with every switch off, every Libra switch on
top of it, and the mask branch trained on the positives of libra's RoI sampler."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.roi_heads import RoIHeads, maskrcnn_loss

from libra_cli.errors import LibraError
from libra_cli.models.bfp import BackboneWithBFP
from libra_cli.models.build import build_detector
from libra_cli.models.reference import torchvision_mask_rcnn
from libra_cli.models.roi_heads import EQLPredictor, LibraRoIHeads
from libra_cli.sampling import IoUBalancedSampler
from libra_cli.sampling.ohem import OHEMSampler
from tests.conftest import tiny_config

NUM_CLASSES = 3
IMAGE = 64


def box_masks(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 [N, H, W]: each box's mask, the pixels of the box's lower-left triangle (a mask that is not
    the box itself, so a box-shaped prediction does not score a perfect mask)."""
    masks = torch.zeros(len(boxes), height, width, dtype=torch.uint8)
    rows = torch.arange(height)[:, None].float() + 0.5
    cols = torch.arange(width)[None, :].float() + 0.5
    for i, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        inside = (cols >= x1) & (cols < x2) & (rows >= y1) & (rows < y2)
        below_diagonal = (rows - y1) * (x2 - x1) >= (cols - x1) * (y2 - y1)
        masks[i] = (inside & below_diagonal).to(torch.uint8)
    return masks


def inputs(size: int = IMAGE):
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(3, size, size, generator=generator) for _ in range(2)]
    scale = size / IMAGE
    targets = [
        {
            "boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0], [20.0, 12.0, 60.0, 58.0]]) * scale,
            "labels": torch.tensor([1, 2]),
        },
        {"boxes": torch.tensor([[2.0, 24.0, 26.0, 60.0]]) * scale, "labels": torch.tensor([3])},
    ]
    for target in targets:
        target["masks"] = box_masks(target["boxes"], size, size)
    return images, targets


def tiny_mask_config(tmp_path, **overrides):
    settings = dict(
        model__arch="mask_rcnn",
        model__min_size=IMAGE,
        model__max_size=IMAGE,
        model__fpn_channels=16,
        model__box_head_dim=32,
        model__anchor_sizes=[8, 16, 32, 64, 128],
        model__rpn_pre_nms_top_n_train=100,
        model__rpn_post_nms_top_n_train=50,
        model__rpn_pre_nms_top_n_test=50,
        model__rpn_post_nms_top_n_test=30,
        model__roi_batch_size_per_image=32,
    )
    settings.update(overrides)
    return tiny_config(tmp_path, tmp_path / "run", **settings)


@pytest.fixture
def narrow_mask_head(monkeypatch):
    """A mask head of two 16-channel convolutions instead of torchvision's four of 256, for tests that
    train: the same code path at a fraction of the cost."""
    monkeypatch.setattr("libra_cli.models.build.MASK_HEAD_LAYERS", (16, 16))
    monkeypatch.setattr("libra_cli.models.build.MASK_PREDICTOR_CHANNELS", 16)


def tiny_mask_rcnn(tmp_path, **overrides):
    torch.manual_seed(0)
    config = tiny_mask_config(tmp_path, **overrides)
    return build_detector(config, NUM_CLASSES, images_per_class=torch.tensor([8, 3, 1]), num_images=8)


def test_all_switches_off_is_torchvisions_mask_rcnn(tmp_path):
    """Same weights, inputs and seed: identical losses (loss_mask included), gradients and detections."""
    config = tiny_mask_config(tmp_path, model__roi_align="torchvision")
    ours = build_detector(config, NUM_CLASSES)
    reference = torchvision_mask_rcnn(config, NUM_CLASSES)
    assert isinstance(ours, MaskRCNN) and type(ours.roi_heads) is RoIHeads
    reference.load_state_dict(ours.state_dict())  # every key matches: the same architecture
    images, targets = inputs()
    ours.train()
    reference.train()
    torch.manual_seed(7)
    our_losses = ours(images, targets)
    torch.manual_seed(7)
    reference_losses = reference(images, targets)
    assert set(our_losses) == {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
    assert our_losses.keys() == reference_losses.keys()
    for name in our_losses:
        torch.testing.assert_close(our_losses[name], reference_losses[name], rtol=0, atol=0)
    sum(our_losses.values()).backward()
    sum(reference_losses.values()).backward()
    reference_parameters = dict(reference.named_parameters())
    for name, parameter in ours.named_parameters():
        if parameter.grad is not None:
            torch.testing.assert_close(parameter.grad, reference_parameters[name].grad, rtol=0, atol=0)

    ours.eval()
    reference.eval()
    with torch.no_grad():
        our_detections, reference_detections = ours(images), reference(images)
    for found, expected in zip(our_detections, reference_detections, strict=True):
        assert found.keys() == expected.keys() == {"boxes", "labels", "scores", "masks"}
        assert found["masks"].shape == (len(found["boxes"]), 1, IMAGE, IMAGE)
        for key in found:
            assert torch.equal(found[key], expected[key]), key


def test_mask_branch_is_torchvisions_default(tmp_path):
    model = tiny_mask_rcnn(tmp_path, model__roi_align="grid_sample")
    heads = model.roi_heads
    assert heads.mask_roi_pool.output_size == (14, 14) and heads.mask_roi_pool.sampling_ratio == 2
    assert heads.mask_roi_pool.implementation == "grid_sample"  # the box branch's RoIAlign implementation
    convs = [m for m in heads.mask_head.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(16, 256, (3, 3))] + [
        (256, 256, (3, 3))
    ] * 3
    assert heads.mask_predictor.mask_fcn_logits.out_channels == NUM_CLASSES + 1  # background channel included


def test_switches_select_the_libra_parts_under_mask_rcnn(tmp_path):
    model = tiny_mask_rcnn(
        tmp_path, libra__iou_sampling=True, libra__bfp=True, libra__balanced_l1=True, libra__eql=True
    )
    assert isinstance(model.backbone, BackboneWithBFP) and model.backbone.bfp.refine_level == 2  # P4 of P2–P6
    heads = model.roi_heads
    assert isinstance(heads, LibraRoIHeads) and heads.has_mask()
    assert isinstance(heads.sampler, IoUBalancedSampler) and isinstance(heads.box_predictor, EQLPredictor)
    assert isinstance(tiny_mask_rcnn(tmp_path, libra__ohem=True).roi_heads.sampler, OHEMSampler)


def test_arch_is_validated_with_the_choices(tmp_path):
    with pytest.raises(
        LibraError, match=r"model.arch \(--arch\): must be one of faster_rcnn, mask_rcnn, retinanet; got 'mask_rnn'"
    ):
        tiny_mask_config(tmp_path, model__arch="mask_rnn")


SWITCHES = [
    {"iou_sampling": True},
    {"ohem": True},
    {"bfp": True, "bfp_refine": "non_local"},
    {"bfp": True, "bfp_refine": "conv"},
    {"bfp": True, "bfp_refine": "none"},
    {"balanced_l1": True},
    {"eql": True, "eql_lambda": 0.5},
]


@pytest.mark.parametrize("switches", SWITCHES, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_every_switch_trains_with_finite_losses_including_the_mask_loss(tmp_path, narrow_mask_head, switches):
    model = tiny_mask_rcnn(tmp_path, **{f"libra__{key}": value for key, value in switches.items()}).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9)
    images, targets = inputs()
    history = []
    torch.manual_seed(1)
    for _ in range(3):
        losses = model(images, targets)
        assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
        history.append({name: float(value.detach()) for name, value in losses.items()})
        optimizer.zero_grad()
        sum(losses.values()).backward()
        # the mask branch is trained: its predictor receives a gradient
        assert model.roi_heads.mask_predictor.mask_fcn_logits.weight.grad.abs().sum() > 0
        optimizer.step()
    assert all(math.isfinite(value) for step in history for value in step.values()), history
    # The binary cross-entropy of 28×28 masks is positive and, on one repeated batch, falls.
    assert all(step["loss_mask"] > 0 for step in history)
    assert history[-1]["loss_mask"] < history[0]["loss_mask"], [step["loss_mask"] for step in history]


class KnownPositives:
    """A RoI sampler that picks fixed proposal indices: ``positives`` and ``negatives`` per image."""

    def __init__(self, positives: list[list[int]], negatives: list[list[int]]) -> None:
        self.positives, self.negatives = positives, negatives

    def __call__(self, labels, max_ious, matched_gt):
        positive_masks, negative_masks = [], []
        for image_labels, positives, negatives in zip(labels, self.positives, self.negatives, strict=True):
            positive, negative = (
                torch.zeros_like(image_labels, dtype=torch.bool),
                torch.zeros_like(image_labels, dtype=torch.bool),
            )
            positive[positives] = True
            negative[negatives] = True
            assert bool((image_labels[positive] > 0).all()) and bool((image_labels[negative] == 0).all())
            positive_masks.append(positive)
            negative_masks.append(negative)
        return positive_masks, negative_masks


@pytest.mark.parametrize("changes_loss", [False, True], ids=["torchvision-forward", "libra-forward"])
def test_mask_loss_is_computed_on_the_samplers_positives_only(tmp_path, narrow_mask_head, changes_loss):
    """Proposals 0 and 1 overlap GT 0 and GT 1 (IoU > 0.5), 2 is background, 3 overlaps GT 0 but is not
    sampled: the mask loss is torchvision's ``maskrcnn_loss`` of proposals 0 and 1 against GT masks 0 and 1."""
    model = tiny_mask_rcnn(tmp_path, libra__balanced_l1=changes_loss).eval()
    plain = model.roi_heads
    heads = LibraRoIHeads.from_plain(plain, num_classes=NUM_CLASSES, box_loss=getattr(plain, "box_loss", None))
    heads.sampler = KnownPositives(positives=[[0, 1]], negatives=[[2]])
    heads.train()
    assert heads.changes_loss is changes_loss
    gt_boxes = torch.tensor([[4.0, 4.0, 36.0, 36.0], [30.0, 20.0, 60.0, 60.0]])
    target = {"boxes": gt_boxes, "labels": torch.tensor([1, 2]), "masks": box_masks(gt_boxes, IMAGE, IMAGE)}
    proposals = torch.tensor(
        [[5.0, 5.0, 35.0, 35.0], [31.0, 21.0, 59.0, 59.0], [0.0, 44.0, 16.0, 60.0], [6.0, 4.0, 36.0, 34.0]]
    )
    torch.manual_seed(0)
    with torch.no_grad():
        features = model.backbone(torch.rand(1, 3, IMAGE, IMAGE))
        _, losses = heads(features, [proposals], [(IMAGE, IMAGE)], [target])
        positives = [proposals[:2]]
        logits = heads.mask_predictor(heads.mask_head(heads.mask_roi_pool(features, positives, [(IMAGE, IMAGE)])))
        expected = maskrcnn_loss(logits, positives, [target["masks"]], [target["labels"]], [torch.tensor([0, 1])])
        # Every labelled candidate (proposal 3 and the appended GT boxes too) would give another loss.
        everything = [torch.cat([proposals[[0, 1, 3]], gt_boxes])]
        all_logits = heads.mask_predictor(heads.mask_head(heads.mask_roi_pool(features, everything, [(IMAGE, IMAGE)])))
        matched = [torch.tensor([0, 1, 0, 0, 1])]
        unsampled = maskrcnn_loss(all_logits, everything, [target["masks"]], [target["labels"]], matched)
    torch.testing.assert_close(losses["loss_mask"], expected, rtol=1e-6, atol=1e-7)
    assert not torch.isclose(unsampled, expected, rtol=1e-3)


def test_eql_masks_are_taken_at_the_labels_of_the_sigmoid_scores(tmp_path, narrow_mask_head):
    """At test time each detection's mask is the sigmoid of the mask logits of its label, and with EQL the
    labels and scores are those of the sigmoid classifier."""
    model = tiny_mask_rcnn(tmp_path, libra__eql=True, libra__eql_lambda=0.5).eval()
    heads = model.roi_heads
    heads.score_thresh = 0.0
    with torch.no_grad():  # a classifier that is confident about some class, so that detections exist
        heads.box_predictor.cls_score.bias.copy_(torch.tensor([2.0, -1.0, 0.5]))
    captured = {}
    heads.mask_predictor.register_forward_hook(lambda module, args, output: captured.update(logits=output))
    torch.manual_seed(0)
    proposals = [torch.tensor([[4.0, 4.0, 36.0, 36.0], [30.0, 20.0, 60.0, 60.0], [0.0, 40.0, 24.0, 60.0]])]
    with torch.no_grad():
        features = model.backbone(torch.rand(1, 3, IMAGE, IMAGE))
        class_logits, box_regression = heads.box_predictor(
            heads.box_head(heads.box_roi_pool(features, proposals, [(IMAGE, IMAGE)]))
        )
        detections, _ = heads(features, proposals, [(IMAGE, IMAGE)])
    found = detections[0]
    assert len(found["labels"]) > 0 and found["masks"].shape == (len(found["labels"]), 1, 28, 28)
    # the scores are the sigmoids of the EQL classifier, not a softmax over them
    sigmoid_scores = torch.sigmoid(class_logits)
    for score, label in zip(found["scores"], found["labels"], strict=True):
        assert bool(torch.isclose(sigmoid_scores[:, label - 1], score).any())
    expected = captured["logits"][torch.arange(len(found["labels"])), found["labels"]].sigmoid()[:, None]
    torch.testing.assert_close(found["masks"], expected)


def test_probe_samples_a_mask_rcnn_without_masks_in_the_targets(tmp_path, narrow_mask_head):
    """The analyses' probe samples RoIs from box targets alone: a mask head's target check is satisfied."""
    from libra_cli.models.probe import DetectorProbe

    model = tiny_mask_rcnn(tmp_path, libra__balanced_l1=True).eval()
    model.roi_heads.sampler = KnownPositives(positives=[[0, 1]], negatives=[[2]])
    gt_boxes = torch.tensor([[4.0, 4.0, 36.0, 36.0], [30.0, 20.0, 60.0, 60.0]])
    proposals = torch.tensor([[5.0, 5.0, 35.0, 35.0], [31.0, 21.0, 59.0, 59.0], [0.0, 44.0, 16.0, 60.0]])
    sampled = DetectorProbe(model).sample([proposals], [{"boxes": gt_boxes, "labels": torch.tensor([1, 2])}])
    assert torch.equal(sampled.boxes[0], proposals)
    assert sampled.labels[0].tolist() == [1, 2, 0]
