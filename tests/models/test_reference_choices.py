"""The reference's training details kept as named options (SPEC §9), each checked by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection._utils import Matcher
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.models.detection.rpn import AnchorGenerator, RegionProposalNetwork, RPNHead
from torchvision.ops import box_iou

from libra_cli.models.box_head import init_box_head_as_reference
from libra_cli.models.rpn import FlooredLowQualityMatcher, ReferenceNormalisedRPN, use_reference_rpn_loss


def _within_5_percent(tensor: torch.Tensor, expected_std: float) -> bool:
    return abs(tensor.std().item() - expected_std) <= 0.05 * expected_std


def test_reference_box_head_init_xavier_fcs_and_normal_0_01_and_0_001_predictor():
    torch.manual_seed(0)
    head, predictor = TwoMLPHead(256 * 7 * 7, 1024), FastRCNNPredictor(1024, 81)
    # torchvision's nn.Linear default (Kaiming-uniform, a = √5): std 1/√(3·fan_in) = 1/√3072 ≈ 0.018 for both
    # predictor layers and 1/√(3·12544) ≈ 0.0052 for fc6.
    assert _within_5_percent(predictor.cls_score.weight, 1 / math.sqrt(3 * 1024))
    assert _within_5_percent(predictor.bbox_pred.weight, 1 / math.sqrt(3 * 1024))
    assert _within_5_percent(head.fc6.weight, 1 / math.sqrt(3 * 256 * 49))
    init_box_head_as_reference(head, predictor)
    # mmdetection v1: Xavier-uniform FCs, std √(2 / (fan_in + fan_out)); classifier N(0, 0.01²), regressor
    # N(0, 0.001²); every bias 0.
    assert _within_5_percent(head.fc6.weight, math.sqrt(2 / (256 * 49 + 1024)))
    assert _within_5_percent(head.fc7.weight, math.sqrt(2 / (1024 + 1024)))
    assert _within_5_percent(predictor.cls_score.weight, 0.01)
    assert _within_5_percent(predictor.bbox_pred.weight, 0.001)
    for layer in (head.fc6, head.fc7, predictor.cls_score, predictor.bbox_pred):
        assert torch.count_nonzero(layer.bias) == 0


def test_torchvision_rpn_and_retinanet_heads_already_start_as_the_reference():
    # mmdetection v1: RPNHead normal_init(std=0.01) on its conv, classifier and regressor; RetinaHead the same on
    # every tower conv and both outputs, the classifier's bias at the prior 0.01: −log((1 − 0.01) / 0.01) = −4.595.
    torch.manual_seed(0)
    rpn = RPNHead(512, 9)  # 4,608 classifier weights: a sample std within about 1 % of the true one
    assert _within_5_percent(rpn.conv[0][0].weight, 0.01)
    assert _within_5_percent(rpn.cls_logits.weight, 0.01) and _within_5_percent(rpn.bbox_pred.weight, 0.01)
    retina = RetinaNetHead(256, 9, 81)
    assert _within_5_percent(retina.classification_head.conv[0][0].weight, 0.01)
    assert _within_5_percent(retina.classification_head.cls_logits.weight, 0.01)
    assert _within_5_percent(retina.regression_head.bbox_reg.weight, 0.01)
    assert retina.classification_head.cls_logits.bias[0].item() == pytest.approx(-math.log(99), rel=1e-6)


def test_rpn_floor_keeps_a_gt_best_anchor_of_iou_0_25_negative():
    # GT A [0, 0, 10, 10]: its best anchor [0, 0, 10, 2.5] has IoU 25 / 100 = 0.25 < 0.3. GT B [20, 0, 30, 10]:
    # its best anchor [20, 0, 30, 4] has IoU 40 / 100 = 0.4 ≥ 0.3. Anchor 2 is far from both (IoU 0).
    gts = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 30.0, 10.0]])
    anchors = torch.tensor([[0.0, 0.0, 10.0, 2.5], [20.0, 0.0, 30.0, 4.0], [50.0, 50.0, 60.0, 60.0]])
    quality = box_iou(gts, anchors)
    assert quality[0, 0].item() == pytest.approx(0.25) and quality[1, 1].item() == pytest.approx(0.4)
    # torchvision: every GT's best anchor becomes positive (matched to its GT), whatever its IoU.
    assert Matcher(0.7, 0.3, allow_low_quality_matches=True)(quality).tolist() == [0, 1, Matcher.BELOW_LOW_THRESHOLD]
    # The reference (min_pos_iou 0.3): A's best anchor stays a negative (IoU 0.25 < 0.3), B's is positive.
    floored = FlooredLowQualityMatcher(0.7, 0.3, min_pos_iou=0.3)(quality)
    assert floored.tolist() == [Matcher.BELOW_LOW_THRESHOLD, 1, Matcher.BELOW_LOW_THRESHOLD]


def _rpn() -> RegionProposalNetwork:
    return RegionProposalNetwork(
        AnchorGenerator(((16,),), ((1.0,),)), RPNHead(8, 1), 0.7, 0.3, 256, 0.5, {"training": 10}, {"training": 10}, 0.7
    )


def test_rpn_reference_normaliser_counts_an_image_without_positives_as_one():
    # Image 0: 0 positives, 10 negatives; image 1: 3 positives, 5 negatives. With 256 anchors wanted per image
    # every one is sampled. torchvision divides by 0 + 10 + 3 + 5 = 18; the reference by
    # max(1, 0) + max(1, 3) + max(1, 10) + max(1, 5) = 1 + 3 + 10 + 5 = 19.
    labels = [torch.zeros(10), torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0])]
    objectness = torch.zeros(18, 1)  # every logit 0: BCE = ln 2 per sampled anchor, 18 ln 2 in all
    targets = [torch.zeros(10, 4), torch.zeros(8, 4)]
    deltas = torch.zeros(18, 4)
    deltas[10:13, 0] = 1.0  # the 3 positives are off by 1.0 in one coordinate: smooth L1 (β = 1/9) 1 − 1/18 each
    box_sum = 3 * (1 - 0.5 / 9)
    rpn = _rpn()
    plain = rpn.compute_loss(objectness, deltas, labels, targets)
    use_reference_rpn_loss(rpn)
    assert isinstance(rpn, ReferenceNormalisedRPN)
    reference = rpn.compute_loss(objectness, deltas, labels, targets)
    assert plain[0].item() == pytest.approx(math.log(2), rel=1e-6)
    assert plain[1].item() == pytest.approx(box_sum / 18, rel=1e-6)
    assert reference[0].item() == pytest.approx(18 * math.log(2) / 19, rel=1e-6)
    assert reference[1].item() == pytest.approx(box_sum / 19, rel=1e-6)


def test_rpn_reference_normaliser_equals_torchvisions_when_every_image_has_both():
    # Image 0: 2 positives, 4 negatives; image 1: 1 positive, 3 negatives: both divisors are 10, so the two
    # losses agree exactly (the same sample is drawn from the same seed).
    labels = [torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 0.0]), torch.tensor([1.0, 0.0, 0.0, 0.0])]
    objectness, deltas = torch.randn(10, 1), torch.randn(10, 4)
    targets = [torch.zeros(6, 4), torch.zeros(4, 4)]
    rpn = _rpn()
    torch.manual_seed(1)
    plain = rpn.compute_loss(objectness, deltas, labels, targets)
    use_reference_rpn_loss(rpn)
    torch.manual_seed(1)
    reference = rpn.compute_loss(objectness, deltas, labels, targets)
    expected_objectness = F.binary_cross_entropy_with_logits(objectness.flatten(), torch.cat(labels))
    assert plain[0].item() == pytest.approx(expected_objectness.item(), rel=1e-6)
    assert reference[0].item() == pytest.approx(plain[0].item(), rel=1e-6)
    assert reference[1].item() == pytest.approx(plain[1].item(), rel=1e-6)


def test_build_detector_puts_the_reference_choices_in_and_leaves_torchvision_otherwise(tmp_path):
    from torchvision.models.detection.rpn import RegionProposalNetwork as PlainRPN

    from libra_cli.models.build import build_detector
    from tests.conftest import tiny_config

    plain = build_detector(tiny_config(tmp_path, tmp_path / "run"), 3)
    assert type(plain.rpn) is PlainRPN and type(plain.rpn.proposal_matcher) is Matcher
    torch.manual_seed(0)
    reference = build_detector(
        tiny_config(
            tmp_path,
            tmp_path / "run",
            model__box_head_init="reference",
            model__rpn_min_pos_iou=0.3,
            model__rpn_loss_norm="reference",
            model__box_head_dim=1024,
        ),
        3,
    )
    assert isinstance(reference.rpn, ReferenceNormalisedRPN)
    matcher = reference.rpn.proposal_matcher
    assert isinstance(matcher, FlooredLowQualityMatcher)
    # The RPN's thresholds stay torchvision's (0.7 / 0.3, as the reference's); only the floor is added.
    assert (matcher.high_threshold, matcher.low_threshold, matcher.min_pos_iou) == (0.7, 0.3, 0.3)
    # fc7 is 1024 × 1024: Xavier-uniform std √(2 / 2048) = 0.03125; the regressor 16 × 1024 at N(0, 0.001²).
    assert _within_5_percent(reference.roi_heads.box_head.fc7.weight, math.sqrt(2 / 2048))
    assert _within_5_percent(reference.roi_heads.box_predictor.bbox_pred.weight, 0.001)
