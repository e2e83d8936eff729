"""LibraRoIHeads: equal to torchvision's RoIHeads when plain, and each component checked on a built case.

The constructed cases use two GT boxes in a 64×64 image whose IoU with each proposal is known in closed
form: a proposal [0, 0, 16, h] lies inside GT A = [0, 0, 16, 16] and has IoU h/16 with it; a proposal
[32, 32, 56, 32 + h] lies inside GT B = [32, 32, 56, 56] and has IoU h/24 with it; boxes in the
bottom-left corner touch neither GT (IoU 0).
"""

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import MultiScaleRoIAlign, box_iou

from libra_cli.errors import LibraError
from libra_cli.losses import equalization_loss
from libra_cli.models.roi_heads import EQLPredictor, LibraRoIHeads
from libra_cli.sampling import IoUBalancedSampler, RandomSampler

NUM_CLASSES = 3
CHANNELS = 16
IMAGE = (64, 64)
GT_A = [0.0, 0.0, 16.0, 16.0]
GT_B = [32.0, 32.0, 56.0, 56.0]
BOX_CODER_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # torchvision's RoI-head default


def make_plain(batch_size=64, positive_fraction=0.25, score_thresh=0.05, fg_iou=0.5, bg_iou=0.5) -> RoIHeads:
    torch.manual_seed(0)
    pool = MultiScaleRoIAlign(["0"], output_size=7, sampling_ratio=2)
    box_head = TwoMLPHead(CHANNELS * 7 * 7, 32)
    predictor = FastRCNNPredictor(32, NUM_CLASSES + 1)
    return RoIHeads(
        pool, box_head, predictor, fg_iou, bg_iou, batch_size, positive_fraction, None, score_thresh, 0.5, 100
    )


def make_features(num_images=1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return {"0": torch.randn(num_images, CHANNELS, 8, 8, generator=generator)}


def random_boxes(n, generator) -> torch.Tensor:
    corners = torch.rand(n, 2, generator=generator) * 48
    sizes = 4 + torch.rand(n, 2, generator=generator) * 16
    return torch.cat([corners, corners + sizes], dim=1)


def in_a(h):
    """A proposal inside GT A with IoU h / 16."""
    return [0.0, 0.0, 16.0, h]


def in_b(h):
    """A proposal inside GT B with IoU h / 24."""
    return [32.0, 32.0, 56.0, 32.0 + h]


def away(k):
    """A proposal that overlaps neither GT box (IoU 0)."""
    return [0.0 + k % 5, 40.0, 8.0 + k % 5, 48.0 + k % 3]


def targets_ab():
    return {"boxes": torch.tensor([GT_A, GT_B]), "labels": torch.tensor([1, 2])}


class RecordingSampler:
    """Passes every call to ``sampler`` and keeps its inputs and outputs for the test to inspect."""

    def __init__(self, sampler):
        self.sampler = sampler
        self.calls = []

    def __call__(self, labels, max_ious, matched_gt):
        masks = self.sampler(labels, max_ious, matched_gt)
        # Copies of the lists: the head goes on to replace their entries by the sampled subsets.
        self.calls.append(
            {
                "labels": list(labels),
                "max_ious": list(max_ious),
                "matched_gt": list(matched_gt),
                "masks": masks,
            }
        )
        return masks


def encode(proposal, gt, weights=BOX_CODER_WEIGHTS):
    """Faster R-CNN box encoding written out: (wx·Δcx/pw, wy·Δcy/ph, ww·ln(gw/pw), wh·ln(gh/ph))."""
    px1, py1, px2, py2 = proposal
    gx1, gy1, gx2, gy2 = gt
    pw, ph, gw, gh = px2 - px1, py2 - py1, gx2 - gx1, gy2 - gy1
    pcx, pcy, gcx, gcy = px1 + pw / 2, py1 + ph / 2, gx1 + gw / 2, gy1 + gh / 2
    wx, wy, ww, wh = weights
    return [wx * (gcx - pcx) / pw, wy * (gcy - pcy) / ph, ww * math.log(gw / pw), wh * math.log(gh / ph)]


def balanced_l1(x, alpha, gamma, beta):
    """Libra R-CNN §3.3, one absolute error x."""
    b = math.exp(gamma / alpha) - 1
    if x < beta:
        return alpha / b * (b * x + 1) * math.log(b * x / beta + 1) - alpha * x
    return gamma * x + gamma / b - alpha * beta


def smooth_l1(x, beta):
    return 0.5 * x * x / beta if x < beta else x - 0.5 * beta


def cross_entropy(logits_row, label):
    log_sum = math.log(sum(math.exp(z) for z in logits_row))
    return log_sum - logits_row[label]


# ---- the plain head -----------------------------------------------------------------------------------


def test_from_plain_reuses_modules_and_settings():
    plain = make_plain(batch_size=32, positive_fraction=0.5, score_thresh=0.2, fg_iou=0.6, bg_iou=0.4)
    libra = LibraRoIHeads.from_plain(plain, num_classes=NUM_CLASSES)
    assert libra.box_roi_pool is plain.box_roi_pool
    assert libra.box_head is plain.box_head
    assert libra.box_predictor is plain.box_predictor
    assert (libra.proposal_matcher.high_threshold, libra.proposal_matcher.low_threshold) == (0.6, 0.4)
    assert (libra.fg_bg_sampler.batch_size_per_image, libra.fg_bg_sampler.positive_fraction) == (32, 0.5)
    assert libra.box_coder.weights == BOX_CODER_WEIGHTS
    assert (libra.score_thresh, libra.nms_thresh, libra.detections_per_img) == (0.2, 0.5, 100)
    # No component: no extra weights, so a plain checkpoint loads as is.
    assert libra.state_dict().keys() == plain.state_dict().keys()


def _batch():
    generator = torch.Generator().manual_seed(5)
    proposals = [random_boxes(120, generator), random_boxes(90, generator)]
    targets = [
        {"boxes": random_boxes(3, generator), "labels": torch.tensor([1, 3, 2])},
        {"boxes": random_boxes(2, generator), "labels": torch.tensor([2, 2])},
    ]
    return make_features(2), proposals, [IMAGE, IMAGE], targets


@pytest.mark.parametrize("sampler", [None, RandomSampler(64, 0.25)], ids=["torchvision-sampler", "RandomSampler"])
def test_without_components_losses_and_detections_equal_torchvision(sampler):
    # RandomSampler draws the same permutations as torchvision's sampler, so routing the sampling through
    # LibraRoIHeads' own select_training_samples must also reproduce torchvision's losses exactly.
    plain = make_plain()
    libra = LibraRoIHeads.from_plain(plain, num_classes=NUM_CLASSES, iou_sampler=sampler)
    features, proposals, shapes, targets = _batch()

    plain.train()
    libra.train()
    torch.manual_seed(11)
    _, plain_losses = plain(features, proposals, shapes, targets)
    torch.manual_seed(11)
    _, libra_losses = libra(features, proposals, shapes, targets)
    assert plain_losses.keys() == libra_losses.keys() == {"loss_classifier", "loss_box_reg"}
    for key in plain_losses:
        assert torch.equal(plain_losses[key], libra_losses[key]), key

    plain.eval()
    libra.eval()
    plain_detections, _ = plain(features, proposals, shapes)
    libra_detections, _ = libra(features, proposals, shapes)
    for expected, actual in zip(plain_detections, libra_detections, strict=True):
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(expected[key], actual[key]), key


def test_match_proposals_agrees_with_torchvision_and_returns_max_iou():
    plain = make_plain(fg_iou=0.6, bg_iou=0.4)  # a gap between the thresholds gives ignored (−1) labels
    libra = LibraRoIHeads.from_plain(plain, num_classes=NUM_CLASSES)
    generator = torch.Generator().manual_seed(2)
    gt_boxes = [random_boxes(3, generator), torch.zeros((0, 4))]
    gt_labels = [torch.tensor([3, 1, 2]), torch.zeros(0, dtype=torch.int64)]
    proposals = [torch.cat([random_boxes(200, generator), gt_boxes[0]]), random_boxes(10, generator)]

    matched, labels, max_ious = libra.match_proposals(proposals, gt_boxes, gt_labels)
    expected_matched, expected_labels = plain.assign_targets_to_proposals(proposals, gt_boxes, gt_labels)
    for i in range(2):
        assert torch.equal(matched[i], expected_matched[i])
        assert torch.equal(labels[i], expected_labels[i])
    assert set(labels[0].tolist()) == {-1, 0, 1, 2, 3}
    assert torch.equal(max_ious[0], box_iou(gt_boxes[0], proposals[0]).max(dim=0).values)
    assert max_ious[0][-3:].tolist() == [1.0, 1.0, 1.0]  # the appended GT boxes
    # An image without GT boxes: every proposal is background with IoU 0.
    assert labels[1].tolist() == [0] * 10
    assert max_ious[1].tolist() == [0.0] * 10


# ---- IoU-balanced sampling ----------------------------------------------------------------------------


def _sampling_case():
    """Image 0: 30 positives, 100 negatives at IoU 0, 50 at IoU 0.1, 30 at IoU 0.35–0.45.
    Image 1: 3 positives and 40 negatives at IoU 0, fewer than the batch asks for."""
    positives = [in_a(9 + 6 * k / 14) for k in range(15)] + [in_b(13 + 10 * k / 14) for k in range(15)]
    iou_zero = [away(k) for k in range(100)]
    iou_tenth = [in_a(1.6)] * 50
    iou_high = [in_a(5.6 + 1.6 * k / 29) for k in range(30)]
    image0 = positives + iou_zero + iou_tenth + iou_high
    known_iou0 = (
        [(9 + 6 * k / 14) / 16 for k in range(15)]
        + [(13 + 10 * k / 14) / 24 for k in range(15)]
        + [0.0] * 100
        + [0.1] * 50
        + [(5.6 + 1.6 * k / 29) / 16 for k in range(30)]
    )
    image1 = [in_a(12.0), in_a(14.0), in_b(20.0)] + [away(k) for k in range(40)]
    known_iou1 = [12 / 16, 14 / 16, 20 / 24] + [0.0] * 40
    proposals = [torch.tensor(image0), torch.tensor(image1)]
    return proposals, [known_iou0 + [1.0, 1.0], known_iou1 + [1.0, 1.0]], [targets_ab(), targets_ab()]


def test_iou_sampling_fills_the_quotas_from_the_right_candidates():
    proposals, known_ious, targets = _sampling_case()
    recorder = RecordingSampler(IoUBalancedSampler(batch_size_per_image=64, positive_fraction=0.25, num_bins=3))
    libra = LibraRoIHeads.from_plain(make_plain(), num_classes=NUM_CLASSES, iou_sampler=recorder)

    torch.manual_seed(0)
    sampled, matched, labels, regression_targets = libra.select_training_samples(proposals, targets)
    (call,) = recorder.calls

    # The candidates are the proposals followed by the two GT boxes (IoU 1, labelled with their class).
    for i in range(2):
        assert torch.allclose(call["max_ious"][i], torch.tensor(known_ious[i]), atol=1e-6)
        assert call["labels"][i][-2:].tolist() == [1, 2]
        assert call["matched_gt"][i][-2:].tolist() == [0, 1]

    # Image 0: int(64 · 0.25) = 16 positives of the 32, and 64 − 16 = 48 negatives, all below IoU 0.5.
    positive_mask, negative_mask = call["masks"][0][0], call["masks"][1][0]
    assert int(positive_mask.sum()) == 16 and int(negative_mask.sum()) == 48
    negative_ious = torch.tensor(known_ious[0])[negative_mask]
    assert bool((negative_ious < 0.5).all())
    # With 3 bins over [0, 1] each bin asks for int(48 / 3) = 16: the bin [1/3, 2/3) holds the 30
    # candidates at IoU 0.35–0.45 and gives 16 of them (random sampling would expect 48·30/180 = 8).
    assert int((negative_ious >= 1 / 3).sum()) >= 16
    assert (labels[0] > 0).sum().item() == 16 and (labels[0] == 0).sum().item() == 48
    assert sampled[0].shape == (64, 4) and regression_targets[0].shape == (64, 4)

    # Image 1: 5 positives (GT boxes included) and 40 negatives, fewer than asked: all are taken.
    assert sampled[1].shape == (45, 4)
    assert torch.equal(sampled[1][-2:], torch.tensor([GT_A, GT_B]))
    assert labels[1].tolist() == [1, 1, 2] + [0] * 40 + [1, 2]
    assert matched[1][:3].tolist() == [0, 0, 1] and matched[1][-2:].tolist() == [0, 1]

    torch.manual_seed(0)
    again = libra.select_training_samples(proposals, targets)
    for first, second in zip((sampled, matched, labels, regression_targets), again, strict=True):
        for a, b in zip(first, second, strict=True):
            assert torch.equal(a, b)


def test_iou_sampling_image_without_gt_samples_background_only():
    recorder = RecordingSampler(IoUBalancedSampler(batch_size_per_image=64, positive_fraction=0.25))
    libra = LibraRoIHeads.from_plain(make_plain(), num_classes=NUM_CLASSES, iou_sampler=recorder)
    libra.train()
    proposals = [random_boxes(100, torch.Generator().manual_seed(3))]
    targets = [{"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64)}]

    torch.manual_seed(0)
    _, losses = libra(make_features(), proposals, [IMAGE], targets)
    (call,) = recorder.calls
    assert call["labels"][0].tolist() == [0] * 100
    assert call["max_ious"][0].tolist() == [0.0] * 100
    assert int(call["masks"][1][0].sum()) == 64  # 64 of the 100 negatives, no positive
    assert losses["loss_box_reg"].item() == 0.0  # no positive RoI, no box loss


# ---- balanced L1 --------------------------------------------------------------------------------------

# 6 proposals in A, 4 in B and 5 away from both: with the GT boxes 12 positives (under the quota of 16)
# and 5 negatives (under 64 − 12), so both samplers take every RoI and the sampled set is known.
ALL_SAMPLED_PROPOSALS = (
    [in_a(h) for h in (9.0, 10.0, 11.5, 13.0, 14.0, 15.0)]
    + [in_b(h) for h in (13.0, 16.0, 19.0, 22.0)]
    + [away(k) for k in range(5)]
)
ALL_SAMPLED_LABELS = [1] * 6 + [2] * 4 + [0] * 5 + [1, 2]
ALL_SAMPLED_GT = [GT_A] * 6 + [GT_B] * 4 + [None] * 5 + [GT_A, GT_B]


def predictor_outputs(head, boxes):
    """The head's class logits and box deltas for ``boxes`` of one image, from its own modules."""
    with torch.no_grad():
        pooled = head.box_roi_pool(make_features(), [torch.tensor(boxes)], [IMAGE])
        return head.box_predictor(head.box_head(pooled))


def expected_box_loss(box_regression, per_coordinate_loss):
    total = 0.0
    boxes = ALL_SAMPLED_PROPOSALS + [GT_A, GT_B]
    for row, (box, label, gt) in enumerate(zip(boxes, ALL_SAMPLED_LABELS, ALL_SAMPLED_GT, strict=True)):
        if label == 0:
            continue
        predicted = box_regression[row, 4 * label : 4 * label + 4].tolist()
        total += sum(per_coordinate_loss(abs(p - t)) for p, t in zip(predicted, encode(box, gt), strict=True))
    return total / len(boxes)  # divided by every sampled RoI, positives and negatives


def test_formula_written_here_matches_the_spec_reference_values():
    for x, value in ((0.1, 0.031353), (0.5, 0.400568), (1.0, 1.078594), (2.0, 2.578594)):
        assert balanced_l1(x, 0.5, 1.5, 1.0) == pytest.approx(value, abs=1e-6)


@pytest.mark.parametrize("sampler", [None, IoUBalancedSampler(64, 0.25)], ids=["random", "iou-balanced"])
def test_balanced_l1_box_loss_equals_the_formula_on_the_sampled_positives(sampler):
    alpha, gamma, beta = 0.4, 1.0, 0.8
    libra = LibraRoIHeads.from_plain(
        make_plain(),
        num_classes=NUM_CLASSES,
        iou_sampler=sampler,
        balanced_l1={"alpha": alpha, "gamma": gamma, "beta": beta},
    )
    libra.train()
    _, losses = libra(make_features(), [torch.tensor(ALL_SAMPLED_PROPOSALS)], [IMAGE], [targets_ab()])

    class_logits, box_regression = predictor_outputs(libra, ALL_SAMPLED_PROPOSALS + [GT_A, GT_B])
    expected = expected_box_loss(box_regression, lambda x: balanced_l1(x, alpha, gamma, beta))
    assert losses["loss_box_reg"].item() == pytest.approx(expected, rel=1e-5)
    # The classifier keeps torchvision's cross-entropy, averaged over the 17 RoIs.
    expected_ce = (
        sum(cross_entropy(row, label) for row, label in zip(class_logits.tolist(), ALL_SAMPLED_LABELS, strict=True))
        / 17
    )
    assert losses["loss_classifier"].item() == pytest.approx(expected_ce, rel=1e-5)


def test_invalid_component_settings_are_rejected():
    plain = make_plain()
    with pytest.raises(ValueError, match="keys"):
        LibraRoIHeads.from_plain(plain, num_classes=NUM_CLASSES, balanced_l1={"alpha": 0.5, "gamma": 1.5})
    with pytest.raises(LibraError, match="beta"):
        LibraRoIHeads.from_plain(plain, num_classes=NUM_CLASSES, balanced_l1={"alpha": 0.5, "gamma": 1.5, "beta": 0.0})
    with pytest.raises(ValueError, match="classes"):
        LibraRoIHeads.from_plain(plain, num_classes=NUM_CLASSES + 1)
    with pytest.raises(ValueError, match="eql_tail_mask"):
        LibraRoIHeads.from_plain(plain, num_classes=NUM_CLASSES, eql_tail_mask=torch.zeros(2, dtype=torch.bool))


# ---- equalization loss --------------------------------------------------------------------------------

TAIL_MASK = torch.tensor([False, False, True])  # class 3 is a tail class; classes 1 and 2 are frequent


def make_eql_head(score_thresh=0.05):
    return LibraRoIHeads.from_plain(
        make_plain(score_thresh=score_thresh), num_classes=NUM_CLASSES, eql_tail_mask=TAIL_MASK
    )


def test_eql_predictor_is_a_sigmoid_classifier_with_the_reference_init():
    libra = make_eql_head()
    predictor = libra.box_predictor
    assert isinstance(predictor, EQLPredictor)
    assert predictor.cls_score.out_features == NUM_CLASSES  # no background logit
    assert predictor.bbox_pred.out_features == (NUM_CLASSES + 1) * 4
    # Every class starts at probability 0.001: bias = −ln(0.999 / 0.001) = −ln 999.
    assert torch.allclose(predictor.cls_score.bias, torch.full((NUM_CLASSES,), -math.log(999.0)))
    assert torch.equal(libra.state_dict()["eql_tail_mask"], TAIL_MASK)


def test_eql_loss_and_its_gradients():
    libra = make_eql_head()
    libra.train()
    captured = {}

    def keep_logits(module, inputs, outputs):
        outputs[0].retain_grad()
        captured["logits"] = outputs[0]

    hook = libra.box_predictor.register_forward_hook(keep_logits)
    _, losses = libra(make_features(), [torch.tensor(ALL_SAMPLED_PROPOSALS)], [IMAGE], [targets_ab()])
    hook.remove()
    logits = captured["logits"]
    assert logits.shape == (17, NUM_CLASSES)

    labels = torch.tensor(ALL_SAMPLED_LABELS)  # every RoI is sampled, in proposal order, GT boxes last
    expected = equalization_loss(logits.detach(), labels, TAIL_MASK)
    assert losses["loss_classifier"].item() == pytest.approx(expected.item(), rel=1e-6)

    losses["loss_classifier"].backward()
    tail_column = logits.grad[:, 2]
    foreground = labels > 0
    # A foreground RoI of class 1 or 2 sends no gradient to the tail class's logit ...
    assert torch.equal(tail_column[foreground], torch.zeros(int(foreground.sum())))
    # ... while background RoIs still push it down: dL/dz = σ(z) / R > 0.
    expected_background = torch.sigmoid(logits.detach()[~foreground, 2]) / 17
    assert torch.allclose(tail_column[~foreground], expected_background)

    # Without balanced L1 the box loss stays torchvision's smooth L1 with β = 1/9.
    _, box_regression = predictor_outputs(libra, ALL_SAMPLED_PROPOSALS + [GT_A, GT_B])
    expected_box = expected_box_loss(box_regression, lambda x: smooth_l1(x, 1 / 9))
    assert losses["loss_box_reg"].item() == pytest.approx(expected_box, rel=1e-5)


def test_eql_inference_scores_are_the_sigmoids():
    libra = make_eql_head(score_thresh=0.0)  # the 0.001 prior would fall under torchvision's 0.05
    libra.eval()
    captured = {}
    libra.box_predictor.register_forward_hook(lambda module, inputs, outputs: captured.update(logits=outputs[0]))
    # Two proposals far apart: the 2 × 3 (RoI, class) candidates survive per-class NMS.
    proposals = [torch.tensor([GT_A, [40.0, 40.0, 60.0, 60.0]])]
    (detections,), _ = libra(make_features(), proposals, [IMAGE])

    logits = captured["logits"]
    expected = sorted((torch.sigmoid(logits[i, k]).item(), k + 1) for i in range(2) for k in range(NUM_CLASSES))
    actual = sorted(zip(detections["scores"].tolist(), detections["labels"].tolist(), strict=True))
    assert len(actual) == 6
    for (expected_score, expected_label), (score, label) in zip(expected, actual, strict=True):
        assert label == expected_label and 1 <= label <= NUM_CLASSES
        assert 0 < score < 1 and score == pytest.approx(expected_score, rel=1e-6)


def test_select_detections_is_torchvisions_selection_given_probabilities():
    # Given softmax probabilities, the selection used for EQL's sigmoid scores reproduces torchvision's
    # postprocess_detections exactly.
    plain = make_plain()
    libra = LibraRoIHeads.from_plain(plain, num_classes=NUM_CLASSES)
    generator = torch.Generator().manual_seed(9)
    proposals = [random_boxes(40, generator), random_boxes(30, generator)]
    class_logits = 3 * torch.randn(70, NUM_CLASSES + 1, generator=generator)
    box_regression = torch.randn(70, (NUM_CLASSES + 1) * 4, generator=generator)

    expected = plain.postprocess_detections(class_logits, box_regression, proposals, [IMAGE, IMAGE])
    actual = libra.select_detections(F.softmax(class_logits, -1), box_regression, proposals, [IMAGE, IMAGE])
    assert sum(len(boxes) for boxes in expected[0]) > 0
    for expected_part, actual_part in zip(expected, actual, strict=True):
        for a, b in zip(expected_part, actual_part, strict=True):
            assert torch.equal(a, b)


# ---- the RoI head's box loss: torchvision's, the paper baseline's, L1 -----------------------------------


@pytest.mark.parametrize(
    ("box_loss", "per_coordinate"),
    [
        (partial(F.smooth_l1_loss, beta=1.0, reduction="sum"), lambda x: smooth_l1(x, 1.0)),
        (partial(F.l1_loss, reduction="sum"), lambda x: x),
    ],
    ids=["smooth-l1-beta-1", "l1"],
)
def test_box_loss_choice_equals_the_formula_on_the_sampled_positives(box_loss, per_coordinate):
    libra = LibraRoIHeads.from_plain(make_plain(), num_classes=NUM_CLASSES, box_loss=box_loss)
    libra.train()
    _, losses = libra(make_features(), [torch.tensor(ALL_SAMPLED_PROPOSALS)], [IMAGE], [targets_ab()])
    _, box_regression = predictor_outputs(libra, ALL_SAMPLED_PROPOSALS + [GT_A, GT_B])
    assert losses["loss_box_reg"].item() == pytest.approx(expected_box_loss(box_regression, per_coordinate), rel=1e-5)


def test_smooth_l1_beta_decides_the_box_loss_by_hand():
    # One positive RoI and one negative; the positive's deltas miss its target by 0.5 and 2.0 in two
    # coordinates. Summed over coordinates and divided by the 2 sampled RoIs:
    #   β = 1 (the paper's baseline): (0.5·0.5²/1 + (2.0 − 0.5)) / 2 = (0.125 + 1.5) / 2 = 0.8125
    #   β = 1/9 (torchvision):        ((0.5 − 1/18) + (2.0 − 1/18)) / 2 = 1.194444
    #   L1:                           (0.5 + 2.0) / 2 = 1.25
    labels = [torch.tensor([1, 0])]
    targets = [torch.zeros(2, 4)]
    box_regression = torch.zeros(2, (NUM_CLASSES + 1) * 4)
    box_regression[0, 4:8] = torch.tensor([0.5, -2.0, 0.0, 0.0])
    logits = torch.zeros(2, NUM_CLASSES + 1)
    cases = {
        partial(F.smooth_l1_loss, beta=1.0, reduction="sum"): 0.8125,
        None: 1.194444,
        partial(F.l1_loss, reduction="sum"): 1.25,
    }
    for box_loss, expected in cases.items():
        head = LibraRoIHeads.from_plain(make_plain(), num_classes=NUM_CLASSES, box_loss=box_loss)
        loss = head.box_losses(logits, box_regression, labels, targets)["loss_box_reg"]
        assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_box_loss_and_balanced_l1_are_exclusive():
    with pytest.raises(ValueError, match="either box_loss or balanced_l1"):
        LibraRoIHeads.from_plain(
            make_plain(),
            num_classes=NUM_CLASSES,
            box_loss=partial(F.l1_loss, reduction="sum"),
            balanced_l1={"alpha": 0.5, "gamma": 1.5, "beta": 1.0},
        )
