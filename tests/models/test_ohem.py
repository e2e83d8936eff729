"""OHEM in the RoI head: every candidate's loss under the current model, the top-B trained on.

The constructed case is test_roi_heads.py's: 15 proposals in a 64×64 image with known IoUs to two GT
boxes, the GT boxes appended as proposals (labels 1 ×6, 2 ×4, background ×5, then 1, 2).
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from libra_cli.engine.train import train
from libra_cli.models.roi_heads import TORCHVISION_SMOOTH_L1_BETA, LibraRoIHeads
from libra_cli.sampling.ohem import OHEMSampler
from tests.conftest import tiny_config
from tests.models.test_roi_heads import (
    ALL_SAMPLED_GT,
    ALL_SAMPLED_LABELS,
    ALL_SAMPLED_PROPOSALS,
    IMAGE,
    NUM_CLASSES,
    cross_entropy,
    encode,
    make_features,
    make_plain,
    predictor_outputs,
    smooth_l1,
    targets_ab,
)

CANDIDATES = ALL_SAMPLED_PROPOSALS + [ALL_SAMPLED_GT[-2], ALL_SAMPLED_GT[-1]]  # GT boxes appended


def expected_losses(head) -> list[float]:
    """Each candidate's training loss written out: cross-entropy, plus for a positive the smooth L1
    (β = 1/9, torchvision's) of its own class's 4 deltas against its encoded target."""
    logits, box_regression = predictor_outputs(head, CANDIDATES)
    losses = []
    for row, (box, label, gt) in enumerate(zip(CANDIDATES, ALL_SAMPLED_LABELS, ALL_SAMPLED_GT, strict=True)):
        loss = cross_entropy(logits[row].tolist(), label)
        if label > 0:
            predicted = box_regression[row, 4 * label : 4 * label + 4].tolist()
            target = encode(box, gt)
            loss += sum(
                smooth_l1(abs(p - t), TORCHVISION_SMOOTH_L1_BETA) for p, t in zip(predicted, target, strict=True)
            )
        losses.append(loss)
    return losses


def ohem_head(batch_size: int) -> LibraRoIHeads:
    head = LibraRoIHeads.from_plain(
        make_plain(), num_classes=NUM_CLASSES, sampler=OHEMSampler(batch_size, nms_thresh=None)
    )
    return head.train()


def test_candidate_losses_are_the_training_losses_of_every_roi():
    head = ohem_head(4)
    proposals = [torch.tensor(CANDIDATES)]
    labels = [torch.tensor(ALL_SAMPLED_LABELS)]
    gt_index = [torch.tensor([0 if gt == ALL_SAMPLED_GT[-2] else 1 for gt in ALL_SAMPLED_GT])]
    targets = head.encode_targets(proposals, [targets_ab()["boxes"]], gt_index)
    losses = head.candidate_losses(make_features(), proposals, [IMAGE], labels, targets)
    assert losses[0].tolist() == pytest.approx(expected_losses(head), rel=1e-4)
    assert not losses[0].requires_grad  # the read-only pass keeps no graph


def test_the_head_trains_on_the_top_b_rois_by_loss():
    head = ohem_head(4)
    expected = expected_losses(head)
    hardest = sorted(range(len(CANDIDATES)), key=lambda i: -expected[i])[:4]
    proposals, _, labels, _ = head.select_training_samples(
        [torch.tensor(ALL_SAMPLED_PROPOSALS)], [targets_ab()], make_features(), [IMAGE]
    )
    assert sorted(map(tuple, proposals[0].tolist())) == sorted(tuple(CANDIDATES[i]) for i in hardest)
    assert sorted(labels[0].tolist()) == sorted(ALL_SAMPLED_LABELS[i] for i in hardest)
    # Training through forward: the losses of those 4 RoIs, with a gradient.
    _, losses = head(make_features(), [torch.tensor(ALL_SAMPLED_PROPOSALS)], [IMAGE], [targets_ab()])
    assert set(losses) == {"loss_classifier", "loss_box_reg"}
    assert all(torch.isfinite(value) and value.requires_grad for value in losses.values())


@pytest.mark.slow
def test_training_with_ohem_logs_finite_losses(tiny_benchmark, tmp_path):
    config = tiny_config(
        tiny_benchmark, tmp_path / "run", train__max_iters=2, train__checkpoint_interval=10, libra__ohem=True
    )
    assert config.libra.enabled() == ["ohem"]
    assert train(config).iterations == 2
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    last = [record for record in log if record["type"] == "train"][-1]
    for term in ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"):
        assert torch.isfinite(torch.tensor(last[term])), term
    assert "  ohem: true" in (tmp_path / "run" / "config.yaml").read_text()


def test_the_head_takes_its_classification_loss_as_a_function():
    # A stand-in loss that returns 7 whatever it is given: the head reports exactly what it was handed.
    head = LibraRoIHeads.from_plain(
        make_plain(), num_classes=NUM_CLASSES, class_loss=lambda logits, labels, reduction="mean": torch.tensor(7.0)
    )
    losses = head.box_losses(
        torch.zeros(2, NUM_CLASSES + 1), torch.zeros(2, 16), [torch.tensor([1, 0])], [torch.zeros(2, 4)]
    )
    assert losses["loss_classifier"].item() == 7.0
    # Without one: cross-entropy, here of all-zero logits over 4 classes, ln 4 per RoI.
    plain_loss = LibraRoIHeads.from_plain(make_plain(), num_classes=NUM_CLASSES, box_loss=torch.nn.functional.l1_loss)
    losses = plain_loss.box_losses(torch.zeros(2, 4), torch.zeros(2, 16), [torch.tensor([1, 0])], [torch.zeros(2, 4)])
    assert losses["loss_classifier"].item() == pytest.approx(math.log(4))
