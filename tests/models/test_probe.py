"""DetectorProbe: each intermediate result equals what the detector itself computes in training."""

from __future__ import annotations

import torch

from libra_cli.models.build import build_detector
from libra_cli.models.probe import DetectorProbe
from tests.conftest import tiny_config


def batch(generator: torch.Generator) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    images = [torch.rand(3, 96, 96, generator=generator), torch.rand(3, 80, 96, generator=generator)]
    targets = [
        {"boxes": torch.tensor([[10.0, 12.0, 50.0, 60.0], [30.0, 5.0, 90.0, 40.0]]), "labels": torch.tensor([1, 3])},
        {"boxes": torch.tensor([[0.0, 0.0, 40.0, 30.0]]), "labels": torch.tensor([2])},
    ]
    return images, targets


def test_training_proposals_equal_the_rpn_in_training_mode_and_leave_the_model_alone(tmp_path):
    torch.manual_seed(0)
    model = build_detector(tiny_config(tmp_path, tmp_path / "run", libra__bfp=True), 3).eval()
    probe = DetectorProbe(model)
    images, targets = batch(torch.Generator().manual_seed(1))
    with torch.no_grad():
        probed = probe.forward_to_proposals(images, targets)
        # The detector's own training path: transform, backbone (BFP included), RPN in training mode.
        model.train()
        image_list, resized = model.transform(images, targets)
        features = model.backbone(image_list.tensors)
        expected, _ = model.rpn(image_list, features, resized)
        model.eval()
    assert probe.has_bfp
    assert list(probed.features) == list(features)
    for key in features:
        assert torch.equal(probed.features[key], features[key])
        assert not torch.equal(probed.pyramid[key], features[key])  # the FPN's levels, before BFP
    for mine, theirs in zip(probed.proposals, expected, strict=True):
        assert torch.equal(mine, theirs)
    # tiny_config keeps 100 proposals per image after NMS in training and 50 at test: the training count applies.
    assert max(len(p) for p in probed.proposals) > 50
    assert not model.training and not model.rpn.training  # the model's mode is restored


def test_match_sample_and_box_head_are_the_roi_heads_own(tmp_path):
    torch.manual_seed(0)
    model = build_detector(tiny_config(tmp_path, tmp_path / "run"), 3).eval()
    probe = DetectorProbe(model)
    images, targets = batch(torch.Generator().manual_seed(1))
    heads = model.roi_heads
    with torch.no_grad():
        probed = probe.forward_to_proposals(images, targets)
        with_gt = probed.proposals_with_gt
        matched, labels, max_ious = probe.match(with_gt, probed.targets)
        gt_boxes = [t["boxes"] for t in probed.targets]
        expected_matched, expected_labels = heads.assign_targets_to_proposals(
            with_gt, gt_boxes, [t["labels"] for t in probed.targets]
        )
        torch.manual_seed(5)
        rois = probe.sample(probed.proposals, probed.targets)
        torch.manual_seed(5)
        boxes, _, sampled_labels, regression = heads.select_training_samples(probed.proposals, probed.targets)
        _, logits, deltas = probe.box_head(probed, rois.boxes)
        pooled = heads.box_roi_pool(probed.features, boxes, probed.images.image_sizes)
        expected_logits, expected_deltas = heads.box_predictor(heads.box_head(pooled))
    for i in range(2):
        assert torch.equal(matched[i], expected_matched[i])
        assert torch.equal(labels[i], expected_labels[i])
        # the appended GT boxes are each matched at IoU 1
        assert max_ious[i][-len(gt_boxes[i]) :].tolist() == [1.0] * len(gt_boxes[i])
        assert torch.equal(rois.boxes[i], boxes[i])
        assert torch.equal(rois.labels[i], sampled_labels[i])
        assert torch.equal(rois.regression_targets[i], regression[i])
    assert torch.equal(logits, expected_logits) and torch.equal(deltas, expected_deltas)
    assert logits.shape == (sum(len(b) for b in boxes), 4)  # C + 1 = 4 classes


def test_a_retinanet_batch_has_no_proposals(tmp_path):
    model = build_detector(tiny_config(tmp_path, tmp_path / "run", model__arch="retinanet"), 3).eval()
    images, targets = batch(torch.Generator().manual_seed(1))
    with torch.no_grad():
        probed = DetectorProbe(model).forward_to_proposals(images, targets)
    assert probed.proposals is None
    assert list(probed.features) == list(probed.pyramid)
