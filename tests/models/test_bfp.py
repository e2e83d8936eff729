"""Tests for the Balanced Feature Pyramid neck, its non-local block and the backbone wrapper (Libra R-CNN §3.2)."""

import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

from libra_cli.models.bfp import BackboneWithBFP, BalancedFeaturePyramid, NonLocal2d

REFINE_TYPES = ["none", "conv", "non_local"]


def _pyramid(sizes: list[tuple[int, int]], channels: int, batch: int = 2, seed: int = 0) -> OrderedDict:
    generator = torch.Generator().manual_seed(seed)
    return OrderedDict(
        (str(index), torch.randn(batch, channels, height, width, generator=generator))
        for index, (height, width) in enumerate(sizes)
    )


def _tiny_pyramid() -> OrderedDict:
    """Three 1-channel levels of sizes 4×4, 2×2, 1×1 with integer values (batch 1)."""
    finest = torch.tensor(
        [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0], [9.0, 10.0, 11.0, 12.0], [13.0, 14.0, 15.0, 16.0]]
    )
    middle = torch.tensor([[5.0, 3.0], [0.0, 4.0]])
    coarsest = torch.tensor([[1.0]])
    return OrderedDict([("p3", finest[None, None]), ("p4", middle[None, None]), ("p5", coarsest[None, None])])


# Expected output of gather–average–scatter with no refinement and refine level 1 on _tiny_pyramid():
#   gather:    4×4 max-pooled to 2×2 -> [[6, 8], [14, 16]] (max of each 2×2 block);
#              2×2 kept              -> [[5, 3], [0, 4]];
#              1×1 nearest to 2×2    -> [[1, 1], [1, 1]].
#   integrate: ([[6, 8], [14, 16]] + [[5, 3], [0, 4]] + [[1, 1], [1, 1]]) / 3 = [[12, 12], [15, 21]] / 3
#              = [[4, 4], [5, 7]].
#   scatter:   4×4 level + nearest upsampling [[4, 4, 4, 4], [4, 4, 4, 4], [5, 5, 7, 7], [5, 5, 7, 7]];
#              2×2 level + [[4, 4], [5, 7]];
#              1×1 level + max pooling of the whole map = 1 + 7.
TINY_EXPECTED = {
    "p3": [[5.0, 6.0, 7.0, 8.0], [9.0, 10.0, 11.0, 12.0], [14.0, 15.0, 18.0, 19.0], [18.0, 19.0, 22.0, 23.0]],
    "p4": [[9.0, 7.0], [5.0, 11.0]],
    "p5": [[8.0]],
}


def _assert_tiny_output(outputs: OrderedDict, expected: dict) -> None:
    assert list(outputs.keys()) == ["p3", "p4", "p5"]
    for name, values in expected.items():
        torch.testing.assert_close(outputs[name], torch.tensor(values)[None, None])


# --- shapes -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("refine_type", REFINE_TYPES)
def test_five_odd_sized_levels_keep_keys_and_shapes(refine_type: str) -> None:
    # Sizes a stride-2 pyramid gives for an odd input: 25×38 -> 13×19 -> 7×10 -> 4×5 -> 2×3.
    sizes = [(25, 38), (13, 19), (7, 10), (4, 5), (2, 3)]
    features = _pyramid(sizes, channels=8)
    bfp = BalancedFeaturePyramid(in_channels=8, num_levels=5, refine_level=2, refine_type=refine_type)
    outputs = bfp(features)
    assert list(outputs.keys()) == ["0", "1", "2", "3", "4"]
    assert [tuple(out.shape) for out in outputs.values()] == [(2, 8, h, w) for h, w in sizes]
    assert all(torch.isfinite(out).all() for out in outputs.values())


@pytest.mark.parametrize("refine_type", REFINE_TYPES)
@pytest.mark.parametrize("refine_level", [0, 1, 2])
def test_three_levels_keep_keys_and_shapes_at_every_refine_level(refine_type: str, refine_level: int) -> None:
    sizes = [(9, 12), (5, 6), (3, 3)]
    features = OrderedDict(
        (name, value) for name, value in zip(["p3", "p4", "p5"], _pyramid(sizes, 4).values(), strict=True)
    )
    bfp = BalancedFeaturePyramid(in_channels=4, num_levels=3, refine_level=refine_level, refine_type=refine_type)
    outputs = bfp(features)
    assert list(outputs.keys()) == ["p3", "p4", "p5"]
    assert [tuple(out.shape) for out in outputs.values()] == [(2, 4, h, w) for h, w in sizes]


# --- the algorithm by hand ----------------------------------------------------------------------------


def test_no_refinement_equals_gather_average_scatter_by_hand() -> None:
    bfp = BalancedFeaturePyramid(in_channels=1, num_levels=3, refine_level=1, refine_type="none")
    _assert_tiny_output(bfp(_tiny_pyramid()), TINY_EXPECTED)


def test_finest_refine_level_max_pools_every_coarser_level_in_scatter() -> None:
    # Refine level 0 (the 4×4): gather upsamples 2×2 and 1×1 by nearest interpolation.
    #   integrate: (4×4 level + [[5,5,3,3],[5,5,3,3],[0,0,4,4],[0,0,4,4]] + all ones) / 3
    #            = [[7,8,7,8],[11,12,11,12],[10,11,16,17],[14,15,20,21]] / 3.
    # scatter: 2×2 level + 2×2 block maxima [[12,12],[15,21]]/3 = [[4,4],[5,7]]; 1×1 level + 21/3 = 7.
    balanced = (
        torch.tensor(
            [
                [7.0, 8.0, 7.0, 8.0],
                [11.0, 12.0, 11.0, 12.0],
                [10.0, 11.0, 16.0, 17.0],
                [14.0, 15.0, 20.0, 21.0],
            ]
        )
        / 3.0
    )
    tiny = _tiny_pyramid()
    bfp = BalancedFeaturePyramid(in_channels=1, num_levels=3, refine_level=0, refine_type="none")
    outputs = bfp(tiny)
    torch.testing.assert_close(outputs["p3"], tiny["p3"] + balanced[None, None])
    torch.testing.assert_close(outputs["p4"], torch.tensor([[[[9.0, 7.0], [5.0, 11.0]]]]))
    torch.testing.assert_close(outputs["p5"], torch.tensor([[[[8.0]]]]))


def test_conv_refinement_acts_only_through_the_conv() -> None:
    bfp = BalancedFeaturePyramid(in_channels=1, num_levels=3, refine_level=1, refine_type="conv")
    with torch.no_grad():
        # An identity 3×3 kernel (centre tap 1, zero bias) leaves the balanced feature as it is, so conv
        # refinement must give exactly the no-refinement answer.
        bfp.refine.weight.zero_()
        bfp.refine.weight[0, 0, 1, 1] = 1.0
        bfp.refine.bias.zero_()
    _assert_tiny_output(bfp(_tiny_pyramid()), TINY_EXPECTED)

    with torch.no_grad():
        # A zero kernel with bias 2.5 turns the balanced feature into a constant 2.5 map: the conv output
        # replaces the balanced feature, so every level is its input plus 2.5.
        bfp.refine.weight.zero_()
        bfp.refine.bias.fill_(2.5)
    tiny = _tiny_pyramid()
    outputs = bfp(tiny)
    for name in tiny:
        torch.testing.assert_close(outputs[name], tiny[name] + 2.5)

    with torch.no_grad():
        # The reference's refine is conv then ReLU: a constant −2.5 map becomes 0, so every level is
        # returned unchanged.
        bfp.refine.bias.fill_(-2.5)
    outputs = bfp(tiny)
    for name in tiny:
        torch.testing.assert_close(outputs[name], tiny[name])


def test_conv_refinement_residual_is_non_negative() -> None:
    # The residual added to every level is a resize (nearest or max pooling) of ReLU(conv(balanced)),
    # so output − input >= 0 everywhere, whatever the weights and inputs (some conv outputs are negative).
    torch.manual_seed(7)
    features = _pyramid([(12, 16), (6, 8), (3, 4), (2, 2)], channels=8)
    bfp = BalancedFeaturePyramid(in_channels=8, num_levels=4, refine_level=1, refine_type="conv")
    with torch.no_grad():
        pre_relu = bfp.refine(torch.randn(1, 8, 6, 8))
        outputs = bfp(features)
    assert (pre_relu < 0).any()  # the ReLU has something to cut
    for name, level in features.items():
        assert (outputs[name] - level).min() >= 0, name


def test_xavier_init_covers_every_conv_of_the_non_local_block() -> None:
    # The authors' BFP applies Xavier-uniform (zero bias) to every conv it holds, the non-local block's
    # θ, φ, g and output conv included. For a 1×1 conv with 64 → 64 channels the bound is
    # sqrt(6 / (64 + 64)) = 0.2165 and a uniform weight's std is bound / √3 = 0.1250.
    torch.manual_seed(0)
    block = BalancedFeaturePyramid(in_channels=64, refine_type="non_local", init="xavier").refine
    bound = math.sqrt(6 / 128)
    for conv in (block.theta, block.phi, block.g, block.out_conv):
        assert conv.weight.abs().max() <= bound
        assert abs(conv.weight.std().item() - bound / math.sqrt(3)) < 0.01
        assert conv.bias.abs().max() == 0
    # mmcv's NonLocal2d init: θ, φ, g ~ N(0, 0.01²) and a zero output conv.
    identity = BalancedFeaturePyramid(in_channels=64, refine_type="non_local", init="identity").refine
    assert identity.out_conv.weight.abs().max() == 0 and identity.out_conv.bias.abs().max() == 0
    assert abs(identity.theta.weight.std().item() - 0.01) < 0.001


def test_unknown_init_is_rejected() -> None:
    with pytest.raises(ValueError, match="init must be one of xavier, identity"):
        BalancedFeaturePyramid(init="kaiming")


def test_non_local_refinement_at_init_equals_no_refinement() -> None:
    # With the identity init the non-local block starts as the identity, so the neck computes plain
    # integration at init.
    bfp = BalancedFeaturePyramid(in_channels=1, num_levels=3, refine_level=1, refine_type="non_local", init="identity")
    _assert_tiny_output(bfp(_tiny_pyramid()), TINY_EXPECTED)


# --- the non-local block ------------------------------------------------------------------------------


def test_non_local_block_starts_as_identity_and_stops_being_one_when_its_output_conv_changes() -> None:
    block = NonLocal2d(channels=6, reduction=2)
    x = torch.randn(2, 6, 5, 7, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(block(x), x, rtol=0.0, atol=0.0)

    with torch.no_grad():
        block.out_conv.weight.fill_(0.5)
    assert (block(x) - x).abs().max().item() > 1e-4


def test_attention_rows_sum_to_one() -> None:
    block = NonLocal2d(channels=4)
    with torch.no_grad():
        for conv in (block.theta, block.phi):
            conv.weight.normal_(0.0, 1.0)  # large logits: the softmax is far from uniform
    x = torch.randn(3, 4, 3, 5, generator=torch.Generator().manual_seed(2))
    attention = block.attention(x)
    assert attention.shape == (3, 15, 15)
    assert (attention >= 0).all()
    torch.testing.assert_close(attention.sum(dim=-1), torch.ones(3, 15))


def _identity_1x1(conv: torch.nn.Conv2d) -> None:
    with torch.no_grad():
        conv.weight.copy_(torch.eye(conv.out_channels, conv.in_channels)[:, :, None, None])
        conv.bias.zero_()


@pytest.mark.parametrize("use_scale", [False, True])
def test_non_local_block_matches_the_embedded_gaussian_formula(use_scale: bool) -> None:
    # With θ, φ, g and the output conv set to identity 1×1 convs, the block computes
    #   z = X + X Aᵀ,  A = softmax_rows(XᵀX / s),  s = √C if use_scale else 1,
    # for X the [C, N] matrix of the input; the expected value is computed here with NumPy.
    x_matrix = np.array([[0.1, 0.2, -0.3, 0.4], [0.5, -0.1, 0.0, 0.2]])  # [C=2, N=4], positions row-major
    logits = x_matrix.T @ x_matrix / (np.sqrt(2.0) if use_scale else 1.0)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    attention = exp / exp.sum(axis=1, keepdims=True)
    expected = x_matrix + x_matrix @ attention.T

    block = NonLocal2d(channels=2, reduction=1, use_scale=use_scale).double()
    for conv in (block.theta, block.phi, block.g, block.out_conv):
        _identity_1x1(conv)
    x = torch.from_numpy(x_matrix).reshape(1, 2, 2, 2)
    torch.testing.assert_close(block.attention(x)[0], torch.from_numpy(attention))
    torch.testing.assert_close(block(x), torch.from_numpy(expected).reshape(1, 2, 2, 2))


def test_non_local_block_rejects_zero_inner_channels() -> None:
    with pytest.raises(ValueError, match="inner channel"):
        NonLocal2d(channels=4, reduction=8)


# --- gradients ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("refine_type", REFINE_TYPES)
def test_gradients_reach_every_parameter_and_the_inputs(refine_type: str) -> None:
    features = _pyramid([(10, 14), (5, 7), (3, 4)], channels=4)
    for level in features.values():
        level.requires_grad_(True)
    bfp = BalancedFeaturePyramid(in_channels=4, num_levels=3, refine_level=1, refine_type=refine_type, init="identity")
    sum(out.sum() for out in bfp(features).values()).backward()

    for name, parameter in bfp.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
    for level in features.values():
        assert level.grad is not None and torch.isfinite(level.grad).all()
        if refine_type != "conv":
            # Without refinement (or through the identity non-local block at init) every path from an
            # input to the sum has weight +1 or more: the residual gives 1, gather/scatter add to it.
            assert (level.grad >= 1.0).all()
    if refine_type == "non_local":
        # θ/φ/g sit behind the zero output conv at init, so only the output conv learns on step one.
        assert bfp.refine.out_conv.weight.grad.abs().sum() > 0
        assert bfp.refine.out_conv.bias.grad.abs().sum() > 0
    if refine_type == "conv":
        assert bfp.refine.weight.grad.abs().sum() > 0
    if refine_type == "none":
        assert list(bfp.parameters()) == []


def test_non_local_inner_convs_get_gradient_once_the_output_conv_is_non_zero() -> None:
    block = NonLocal2d(channels=4)
    with torch.no_grad():
        block.out_conv.weight.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(3))
    x = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(4))
    (block(x) ** 2).sum().backward()
    for conv in (block.theta, block.phi, block.g):
        assert conv.weight.grad.abs().sum() > 0


# --- argument checks ----------------------------------------------------------------------------------


def test_unknown_refine_type_is_rejected() -> None:
    with pytest.raises(ValueError, match="refine_type"):
        BalancedFeaturePyramid(refine_type="attention")


@pytest.mark.parametrize("refine_level", [-1, 5])
def test_refine_level_outside_the_pyramid_is_rejected(refine_level: int) -> None:
    with pytest.raises(ValueError, match="refine_level"):
        BalancedFeaturePyramid(num_levels=5, refine_level=refine_level)


def test_wrong_number_of_levels_is_rejected_at_forward() -> None:
    bfp = BalancedFeaturePyramid(in_channels=1, num_levels=4, refine_level=1, refine_type="none")
    with pytest.raises(ValueError, match="expected 4 levels, got 3"):
        bfp(_tiny_pyramid())


# --- the backbone wrapper -----------------------------------------------------------------------------


def test_backbone_with_bfp_keeps_fpn_keys_and_shapes() -> None:
    torch.manual_seed(0)
    backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5)
    model = BackboneWithBFP(backbone, num_levels=5, refine_level=2, refine_type="non_local").eval()
    assert model.out_channels == 256

    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        fpn_outputs = backbone(x)
        outputs = model(x)
    # ResNet strides 4, 8, 16, 32 give 16, 8, 4, 2 pixels; the extra max-pool level halves 2 to 1.
    expected_shapes = {
        "0": (1, 256, 16, 16),
        "1": (1, 256, 8, 8),
        "2": (1, 256, 4, 4),
        "3": (1, 256, 2, 2),
        "pool": (1, 256, 1, 1),
    }
    assert list(outputs.keys()) == list(fpn_outputs.keys()) == list(expected_shapes.keys())
    assert {name: tuple(out.shape) for name, out in outputs.items()} == expected_shapes
    # The neck adds a non-zero balanced feature to every level.
    assert all((outputs[name] - fpn_outputs[name]).abs().max() > 0 for name in outputs)
