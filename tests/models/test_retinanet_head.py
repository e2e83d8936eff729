"""Libra RetinaNet's regression head: torchvision's layers and weights, balanced L1 loss (Libra R-CNN §3.3)."""

import copy
import math
from functools import partial

import pytest
import torch
from torch import nn
from torchvision.models.detection.retinanet import (
    RetinaNetClassificationHead,
    RetinaNetHead,
    RetinaNetRegressionHead,
)

from libra_cli.errors import LibraError
from libra_cli.models.retinanet import (
    BalancedL1RegressionHead,
    GroupNorm,
    P6FromC5P7NoReLU,
    use_balanced_l1,
    use_batch_normalised_losses,
)

CHANNELS = 16
NUM_ANCHORS = 3
NUM_CLASSES = 4


def make_head(norm_layer=None) -> RetinaNetHead:
    torch.manual_seed(0)
    return RetinaNetHead(CHANNELS, NUM_ANCHORS, NUM_CLASSES, norm_layer=norm_layer)


def balanced_l1(x, alpha, gamma, beta):
    """Libra R-CNN §3.3, one absolute error x."""
    b = math.exp(gamma / alpha) - 1
    if x < beta:
        return alpha / b * (b * x + 1) * math.log(b * x / beta + 1) - alpha * x
    return gamma * x + gamma / b - alpha * beta


def encode(anchor, gt):
    """RetinaNet's box encoding (weights 1, 1, 1, 1): (Δcx/aw, Δcy/ah, ln(gw/aw), ln(gh/ah))."""
    ax1, ay1, ax2, ay2 = anchor
    gx1, gy1, gx2, gy2 = gt
    aw, ah, gw, gh = ax2 - ax1, ay2 - ay1, gx2 - gx1, gy2 - gy1
    return [
        (gx1 + gw / 2 - ax1 - aw / 2) / aw,
        (gy1 + gh / 2 - ay1 - ah / 2) / ah,
        math.log(gw / aw),
        math.log(gh / ah),
    ]


@pytest.mark.parametrize("norm_layer", [None, partial(nn.GroupNorm, 4)], ids=["no-norm", "group-norm"])
def test_replacement_keeps_torchvisions_layers_weights_and_keys(norm_layer):
    plain = make_head(norm_layer)
    libra = copy.deepcopy(plain)
    original_tower = libra.regression_head.conv
    use_balanced_l1(libra, alpha=0.5, gamma=1.5, beta=0.11)

    regression = libra.regression_head
    assert isinstance(regression, BalancedL1RegressionHead)
    assert isinstance(regression, RetinaNetRegressionHead)
    assert regression.conv is original_tower  # the very layers, whatever norm layer built them
    assert regression.bbox_reg.in_channels == CHANNELS
    assert regression.bbox_reg.out_channels == NUM_ANCHORS * 4
    has_group_norm = any(isinstance(m, nn.GroupNorm) for m in regression.modules())
    assert has_group_norm == (norm_layer is not None)

    plain_state, libra_state = plain.state_dict(), libra.state_dict()
    assert list(plain_state) == list(libra_state)
    for key in plain_state:
        assert torch.equal(plain_state[key], libra_state[key]), key
    libra.load_state_dict(plain_state)  # strict: a torchvision checkpoint loads unchanged

    features = [torch.randn(2, CHANNELS, 8, 8, generator=torch.Generator().manual_seed(1))]
    assert torch.equal(libra(features)["bbox_regression"], plain(features)["bbox_regression"])


def _tiny_case():
    """Image 0: 4 anchors, one GT box; anchors 0 and 2 are foreground, 1 background, 3 ignored.
    Image 1: no GT box, every anchor background."""
    anchors = torch.tensor(
        [[8.0, 8.0, 24.0, 32.0], [40.0, 40.0, 56.0, 56.0], [12.0, 14.0, 36.0, 38.0], [0.0, 0.0, 20.0, 20.0]]
    )
    gt = [10.0, 10.0, 30.0, 40.0]
    targets = [
        {"boxes": torch.tensor([gt]), "labels": torch.tensor([1])},
        {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    matched_idxs = [torch.tensor([0, -1, 0, -2]), torch.full((4,), -1)]
    bbox_regression = torch.tensor(
        [
            [[0.05, -0.02, 0.3, 0.1], [1.0, 1.0, 1.0, 1.0], [-0.5, 0.2, -0.05, 0.04], [2.0, 2.0, 2.0, 2.0]],
            [[0.3, 0.3, 0.3, 0.3], [0.1, 0.1, 0.1, 0.1], [0.2, 0.2, 0.2, 0.2], [0.4, 0.4, 0.4, 0.4]],
        ]
    )
    return anchors, gt, targets, matched_idxs, bbox_regression


@pytest.mark.parametrize("alpha, gamma, beta", [(0.5, 1.5, 0.11), (0.3, 1.2, 0.5)])
def test_compute_loss_equals_the_per_image_formula(alpha, gamma, beta):
    head = make_head()
    use_balanced_l1(head, alpha=alpha, gamma=gamma, beta=beta)
    anchors, gt, targets, matched_idxs, bbox_regression = _tiny_case()

    loss = head.regression_head.compute_loss(
        targets, {"bbox_regression": bbox_regression}, [anchors, anchors], matched_idxs
    )

    # Image 0: the 4 deltas of each of its 2 foreground anchors, summed and divided by 2.
    image0 = 0.0
    for anchor_index in (0, 2):
        predicted = bbox_regression[0, anchor_index].tolist()
        target = encode(anchors[anchor_index].tolist(), gt)
        image0 += sum(balanced_l1(abs(p - t), alpha, gamma, beta) for p, t in zip(predicted, target, strict=True))
    image0 /= 2
    # Image 1 has no foreground anchor and contributes 0; the loss is the mean over the 2 images.
    expected = (image0 + 0.0) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)

    # RetinaNetHead.compute_loss reaches it under torchvision's key.
    head_outputs = {"bbox_regression": bbox_regression, "cls_logits": torch.zeros(2, 4, NUM_CLASSES)}
    losses = head.compute_loss(targets, head_outputs, [anchors, anchors], matched_idxs)
    assert losses["bbox_regression"].item() == pytest.approx(expected, rel=1e-5)


def test_loss_gradient_reaches_only_foreground_deltas():
    head = make_head()
    use_balanced_l1(head)
    anchors, _, targets, matched_idxs, bbox_regression = _tiny_case()
    bbox_regression.requires_grad_(True)
    head.regression_head.compute_loss(
        targets, {"bbox_regression": bbox_regression}, [anchors, anchors], matched_idxs
    ).backward()
    grad_norm_per_anchor = bbox_regression.grad.abs().sum(dim=-1)
    # Anchors 0 and 2 of image 0 are foreground; background, ignored and image 1's anchors get nothing.
    assert (grad_norm_per_anchor > 0).tolist() == [[True, False, True, False], [False, False, False, False]]


def test_defaults_and_invalid_parameters():
    head = make_head()
    use_balanced_l1(head)
    regression = head.regression_head
    assert (regression.alpha, regression.gamma, regression.beta) == (0.5, 1.5, 0.11)
    with pytest.raises(LibraError, match="beta"):
        use_balanced_l1(make_head(), alpha=0.5, gamma=1.5, beta=-1.0)


# --- the reference's loss normaliser and extra levels ---------------------------------------------------


def _two_images_with_2_and_30_positives():
    """Image 0: 40 anchors, the first 2 foreground (class 1); image 1: 40 anchors, the first 30 foreground.

    Each foreground anchor's box deltas sit at its target plus 1.0 (image 0) or 0.5 (image 1) in the first
    coordinate only, so its L1 loss is exactly 1.0 or 0.5. Its own class logit is 0 (image 0) or 2 (image 1),
    every other logit −30 (a focal loss of ~1e-27, nothing at float precision)."""
    num_anchors = 40
    anchors = torch.tensor([[float(4 * k), 0.0, float(4 * k + 16), 16.0] for k in range(num_anchors)])
    gt = torch.tensor([[2.0, 1.0, 18.0, 15.0]])
    targets = [{"boxes": gt, "labels": torch.tensor([1])}, {"boxes": gt, "labels": torch.tensor([1])}]
    matched = [torch.full((num_anchors,), -1), torch.full((num_anchors,), -1)]
    matched[0][:2] = 0
    matched[1][:30] = 0
    head = make_head()
    target_deltas = head.regression_head.box_coder.encode_single(gt.expand(num_anchors, 4), anchors)
    regression = target_deltas.unsqueeze(0).repeat(2, 1, 1)
    regression[0, :, 0] += 1.0
    regression[1, :, 0] += 0.5
    logits = torch.full((2, num_anchors, NUM_CLASSES), -30.0)
    logits[0, :2, 1] = 0.0
    logits[1, :30, 1] = 2.0
    outputs = {"cls_logits": logits, "bbox_regression": regression}
    return head, targets, outputs, [anchors, anchors], matched


def focal(p, alpha=0.25, gamma=2.0):
    """Sigmoid focal loss of a positive whose probability is p (Lin et al.; torchvision's defaults)."""
    return alpha * (1 - p) ** gamma * -math.log(p)


def test_batch_normaliser_divides_by_the_whole_batchs_positives():
    # L1 sums: image 0 has 2 × 1.0 = 2.0, image 1 has 30 × 0.5 = 15.0.
    #   torchvision: (2.0 / 2 + 15.0 / 30) / 2 = 0.75;  reference: (2.0 + 15.0) / 32 = 0.53125.
    # Focal sums: image 0: 2 × focal(σ(0)) = 2 × 0.0433217; image 1: 30 × focal(σ(2)) = 30 × 0.000451.
    #   torchvision: (f0 + f1) / 2;  reference: (2 f0 + 30 f1) / 32.
    f0, f1 = focal(0.5), focal(1 / (1 + math.exp(-2.0)))
    expected_tv = {"classification": (f0 + f1) / 2, "bbox_regression": 0.75}
    expected_batch = {"classification": (2 * f0 + 30 * f1) / 32, "bbox_regression": 0.53125}
    assert f0 == pytest.approx(0.0433217, rel=1e-5)

    head, targets, outputs, anchors, matched = _two_images_with_2_and_30_positives()
    plain = head.compute_loss(targets, outputs, anchors, matched)
    use_batch_normalised_losses(head)
    batch = head.compute_loss(targets, outputs, anchors, matched)
    for name in expected_tv:
        assert plain[name].item() == pytest.approx(expected_tv[name], rel=1e-5), name
        assert batch[name].item() == pytest.approx(expected_batch[name], rel=1e-5), name


def test_batch_normaliser_keeps_modules_and_works_with_balanced_l1():
    head, targets, outputs, anchors, matched = _two_images_with_2_and_30_positives()
    keys = list(head.state_dict())
    use_balanced_l1(head, alpha=0.5, gamma=1.5, beta=0.11)
    use_batch_normalised_losses(head)
    assert isinstance(head.regression_head, BalancedL1RegressionHead)
    assert isinstance(head.classification_head, RetinaNetClassificationHead)
    assert list(head.state_dict()) == keys
    # Every foreground anchor's error is 1.0 or 0.5 in one coordinate, both >= β = 0.11, so balanced L1
    # is γ·x + γ/b − α·β there (b = e³ − 1): (2 · L(1.0) + 30 · L(0.5)) / 32.
    b = math.exp(3) - 1
    loss = head.compute_loss(targets, outputs, anchors, matched)["bbox_regression"]
    expected = (2 * (1.5 * 1.0 + 1.5 / b - 0.055) + 30 * (1.5 * 0.5 + 1.5 / b - 0.055)) / 32
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_p6_from_c5_with_no_relu_before_p7():
    torch.manual_seed(0)
    block = P6FromC5P7NoReLU(in_channels=512, out_channels=64)
    c5 = torch.randn(1, 512, 9, 13)
    p3, p4, p5 = torch.randn(1, 64, 36, 52), torch.randn(1, 64, 18, 26), torch.randn(1, 64, 9, 13)
    results, names = block(
        [p3, p4, p5], [torch.randn(1, 128, 36, 52), torch.randn(1, 256, 18, 26), c5], ["0", "1", "2"]
    )
    assert names == ["0", "1", "2", "p6", "p7"]
    p6, p7 = results[3], results[4]
    # 3×3 stride-2 convs with padding 1: 9×13 → 5×7 → 3×4.
    assert p6.shape == (1, 64, 5, 7) and p7.shape == (1, 64, 3, 4)
    torch.testing.assert_close(p6, block.p6(c5))
    assert (p6 < 0).any()  # so a ReLU before P7 would change it
    torch.testing.assert_close(p7, block.p7(p6))
    assert not torch.allclose(p7, block.p7(torch.relu(p6)))


def test_batch_normaliser_counts_an_image_without_positives_as_one():
    # The reference (mmdetection v1's anchor_target) divides by Σᵢ max(1, nᵢ): with 0 and 30 positives that is
    # 1 + 30 = 31, not max(1, 0 + 30) = 30. Image 1's L1 sum is 30 × 0.5 = 15.0 and image 0 has no foreground
    # anchor (L1 sum 0), so the reference's box loss is 15.0 / 31 and torchvision's (0 / 1 + 15.0 / 30) / 2 = 0.25.
    head, targets, outputs, anchors, matched = _two_images_with_2_and_30_positives()
    matched[0][:] = -1
    outputs["cls_logits"][0, :2, 1] = -30.0  # image 0's anchors are all background now, each nearly loss-free
    plain = head.compute_loss(targets, outputs, anchors, matched)
    use_batch_normalised_losses(head)
    batch = head.compute_loss(targets, outputs, anchors, matched)
    assert plain["bbox_regression"].item() == pytest.approx(0.25, rel=1e-6)
    assert batch["bbox_regression"].item() == pytest.approx(15.0 / 31, rel=1e-6)


def test_group_norm_of_single_value_groups_is_its_bias():
    # One image, 4 channels in 4 groups, a 1 × 1 map: each group holds one value, x − mean = 0, so the
    # output is the bias and no gradient reaches the input (torch's own GroupNorm refuses this input).
    norm = GroupNorm(4, 4)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([2.0, -1.0, 0.5, 3.0]))
        norm.bias.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    x = torch.tensor([5.0, -7.0, 0.25, 100.0]).view(1, 4, 1, 1).requires_grad_(True)
    with pytest.raises(ValueError):
        nn.GroupNorm(4, 4)(x)
    out = norm(x)
    assert out.flatten().tolist() == [1.0, 2.0, 3.0, 4.0]
    out.sum().backward()
    assert x.grad.flatten().tolist() == [0.0, 0.0, 0.0, 0.0]
    assert GroupNorm(4, 4, affine=False)(x).flatten().tolist() == [0.0, 0.0, 0.0, 0.0]


def test_group_norm_elsewhere_is_torchs_and_keeps_its_keys():
    torch.manual_seed(0)
    plain = nn.GroupNorm(2, 4)
    ours = GroupNorm(2, 4)
    ours.load_state_dict(plain.state_dict())
    assert list(ours.state_dict()) == list(plain.state_dict()) == ["weight", "bias"]
    for shape in [(1, 4, 1, 1), (2, 4, 1, 1), (1, 4, 3, 3)]:  # two values per group or more: torch's path
        x = torch.randn(shape)
        assert torch.equal(ours(x), plain(x))
