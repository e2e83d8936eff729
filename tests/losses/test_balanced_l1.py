"""Balanced L1 and smooth L1: values, reductions, gradients and numerical safety (Libra R-CNN §3.3).

Expected values come from ``balanced_l1_reference``, the formula of Libra R-CNN §3.3 in Python's ``math``
at full double precision, or from hand-worked numbers — never from the functions under test.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from libra_cli.errors import LibraError
from libra_cli.losses import (
    balanced_l1_b,
    balanced_l1_grad,
    balanced_l1_loss,
    smooth_l1_grad,
    smooth_l1_loss_elementwise,
)

ALPHA, GAMMA = 0.5, 1.5
B_DEFAULT = math.exp(GAMMA / ALPHA) - 1  # e^3 − 1


def balanced_l1_reference(x: float, alpha: float = ALPHA, gamma: float = GAMMA, beta: float = 1.0) -> float:
    """Libra R-CNN §3.3 in plain math: L(x) for an absolute error x >= 0."""
    b = math.exp(gamma / alpha) - 1
    if x < beta:
        return alpha / b * (b * x + 1) * math.log(b * x / beta + 1) - alpha * x
    return gamma * x + gamma / b - alpha * beta


def loss_of_errors(errors: list[float], **kwargs) -> torch.Tensor:
    """Balanced L1 with target 0, so that x = |error|; float64 for exact comparisons."""
    pred = torch.tensor(errors, dtype=torch.float64)
    return balanced_l1_loss(pred, torch.zeros_like(pred), reduction="none", **kwargs)


# Reference values for α = 0.5, γ = 1.5, β = 1, rounded to 6 decimals.
SPEC_VALUES = {0.1: 0.031353, 0.5: 0.400568, 1.0: 1.078594, 2.0: 2.578594}


def test_b_is_e_to_the_gamma_over_alpha_minus_one():
    assert B_DEFAULT == pytest.approx(19.0855, abs=1e-4)
    assert balanced_l1_b(ALPHA, GAMMA) == pytest.approx(B_DEFAULT, rel=1e-15)


@pytest.mark.parametrize("x", sorted(SPEC_VALUES))
def test_reference_formula_agrees_with_spec_rounded_values(x):
    # The independent math implementation reproduces the published reference numbers.
    assert balanced_l1_reference(x) == pytest.approx(SPEC_VALUES[x], abs=1e-6)


def test_loss_equals_full_precision_reference_values():
    xs = sorted(SPEC_VALUES)
    got = loss_of_errors(xs)
    for x, value in zip(xs, got.tolist(), strict=True):
        assert value == pytest.approx(balanced_l1_reference(x), abs=1e-6)
        assert value == pytest.approx(SPEC_VALUES[x], abs=1e-6)


def test_reductions_on_a_box_delta_batch():
    # [2, 4] box deltas; the errors (0.1, 0.5, 1.0, 2.0, 0, 0.25, 3, 0.75) cover both branches.
    pred = torch.tensor([[0.1, -0.5, 1.0, 2.5], [0.3, 0.0, -3.0, 0.75]], dtype=torch.float64)
    target = torch.tensor([[0.0, 0.0, 0.0, 0.5], [0.3, 0.25, 0.0, 0.0]], dtype=torch.float64)
    errors = [[0.1, 0.5, 1.0, 2.0], [0.0, 0.25, 3.0, 0.75]]
    expected = [[balanced_l1_reference(x) for x in row] for row in errors]
    flat = [v for row in expected for v in row]

    none = balanced_l1_loss(pred, target, reduction="none")
    assert none.shape == (2, 4)
    assert torch.allclose(none, torch.tensor(expected, dtype=torch.float64), atol=1e-12)
    assert balanced_l1_loss(pred, target, reduction="sum").item() == pytest.approx(sum(flat), abs=1e-12)
    assert balanced_l1_loss(pred, target, reduction="mean").item() == pytest.approx(sum(flat) / 8, abs=1e-12)
    # "mean" is the default.
    assert balanced_l1_loss(pred, target).item() == pytest.approx(sum(flat) / 8, abs=1e-12)


def test_symmetric_in_pred_and_target():
    generator = torch.Generator().manual_seed(0)
    pred = torch.randn(64, 4, generator=generator, dtype=torch.float64) * 2
    target = torch.randn(64, 4, generator=generator, dtype=torch.float64) * 2
    forward = balanced_l1_loss(pred, target, reduction="none")
    backward = balanced_l1_loss(target, pred, reduction="none")
    assert torch.equal(forward, backward)


def test_zero_loss_and_finite_zero_gradient_at_zero_error():
    for beta in (0.11, 1.0):
        pred = torch.tensor([0.0, 0.7, -1.3], dtype=torch.float64, requires_grad=True)
        loss = balanced_l1_loss(pred, pred.detach().clone(), beta=beta, reduction="none")
        assert torch.equal(loss, torch.zeros(3, dtype=torch.float64))
        loss.sum().backward()
        # |pred − target| has a zero subgradient at 0: no NaN, no push in either direction.
        assert torch.equal(pred.grad, torch.zeros(3, dtype=torch.float64))


@pytest.mark.parametrize("x", [0.01, 0.1, 0.3, 0.5, 0.9, 0.999, 1.001, 1.5, 2.0, 10.0])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_autograd_gradient_is_paper_eq7_for_beta_one(x, sign):
    # Paper Eq. 7: dL/dx = α·ln(b·x + 1) for x < 1, γ otherwise; d/dpred carries the sign of pred − target.
    target = torch.tensor([0.3], dtype=torch.float64)
    pred = (target + sign * x).clone().requires_grad_(True)
    balanced_l1_loss(pred, target, reduction="sum").backward()
    magnitude = ALPHA * math.log(B_DEFAULT * x + 1) if x < 1 else GAMMA
    assert pred.grad.item() == pytest.approx(sign * magnitude, abs=1e-9)


def test_eq7_gradient_reaches_gamma_at_one():
    # The paper's constraint α·ln(b + 1) = γ: the inlier gradient meets the outlier gradient at x = 1.
    assert ALPHA * math.log(B_DEFAULT + 1) == pytest.approx(GAMMA, abs=1e-12)


@pytest.mark.parametrize("beta", [0.11, 0.5, 1.0, 2.0])
def test_loss_is_continuous_at_beta(beta):
    # The two branches of the formula meet at x = β ...
    b = B_DEFAULT
    left_branch = ALPHA / b * (b * beta + 1) * math.log(b * beta / beta + 1) - ALPHA * beta
    right_branch = GAMMA * beta + GAMMA / b - ALPHA * beta
    assert left_branch == pytest.approx(right_branch, abs=1e-12)
    # ... and the implementation's left and right limits agree (its slope is at most γ, so a 1e-9 step
    # changes the loss by less than 2e-9).
    eps = 1e-9
    left, at, right = loss_of_errors([beta - eps, beta, beta + eps], beta=beta).tolist()
    assert left == pytest.approx(right_branch, abs=1e-6)
    assert at == pytest.approx(right_branch, abs=1e-6)
    assert right == pytest.approx(right_branch, abs=1e-6)
    assert left == pytest.approx(right, abs=1e-6)


@pytest.mark.parametrize("beta", [0.11, 0.5, 1.0, 2.0])
def test_closed_form_gradient_equals_autograd(beta):
    xs = [0.0, 0.003, 0.05, 0.1, 0.3, 0.45, 0.8, 0.99, 1.2, 1.9, 2.5, 7.0]
    xs = [x for x in xs if abs(x - beta) > 1e-3]  # the gradient may jump at β itself
    x = torch.tensor(xs, dtype=torch.float64)
    pred = x.clone().requires_grad_(True)
    balanced_l1_loss(pred, torch.zeros_like(pred), beta=beta, reduction="sum").backward()
    closed = balanced_l1_grad(x, ALPHA, GAMMA, beta)
    # autograd's d|x|/dx at x = 0 is 0; compare there only on the positive side.
    nonzero = x > 0
    assert torch.allclose(closed[nonzero], pred.grad[nonzero], atol=1e-10)
    # Above β the gradient is exactly γ.
    assert torch.all(closed[x > beta] == GAMMA)


def test_closed_form_gradient_for_beta_one_is_eq7():
    xs = [0.0, 0.2, 0.6, 1.0, 4.0]
    got = balanced_l1_grad(torch.tensor(xs, dtype=torch.float64)).tolist()
    expected = [ALPHA * math.log(B_DEFAULT * x + 1) if x < 1 else GAMMA for x in xs]
    assert got == pytest.approx(expected, abs=1e-12)


def test_large_errors_give_finite_gradients_in_float32():
    # b·x overflows float32 here (19 × 3e37 > 3.4e38) although the loss itself, 1.5 × 3e37, does not:
    # the branch that is not selected must not send 0·inf = NaN back.
    pred = torch.tensor([3e37, -3e37, 0.5], dtype=torch.float32, requires_grad=True)
    loss = balanced_l1_loss(pred, torch.zeros(3), reduction="none")
    assert torch.isfinite(loss).all()
    loss.sum().backward()
    expected = [GAMMA, -GAMMA, ALPHA * math.log(B_DEFAULT * 0.5 + 1)]
    assert pred.grad.tolist() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_are_computed_in_float32(dtype):
    # 4000 is representable in both half types, but b·4000 ≈ 76,000 exceeds float16's maximum of 65,504.
    pred = torch.tensor([0.5, 4000.0], dtype=dtype, requires_grad=True)
    target = torch.zeros(2, dtype=dtype)
    loss = balanced_l1_loss(pred, target, reduction="none")
    assert loss.dtype == torch.float32
    assert loss.tolist() == pytest.approx([balanced_l1_reference(0.5), balanced_l1_reference(4000.0)], rel=1e-5)
    loss.sum().backward()
    assert pred.grad.dtype == dtype
    assert torch.isfinite(pred.grad).all()
    assert pred.grad[1].item() == GAMMA


@pytest.mark.parametrize("reduction", ["avg", "Mean", "", None])
def test_unknown_reduction_is_rejected(reduction):
    x = torch.zeros(2)
    with pytest.raises(LibraError, match="reduction"):
        balanced_l1_loss(x, x, reduction=reduction)
    with pytest.raises(ValueError, match="reduction"):
        balanced_l1_loss(x, x, reduction=reduction)


@pytest.mark.parametrize("parameter", ["alpha", "gamma", "beta"])
@pytest.mark.parametrize("value", [0.0, -1.0, math.nan, math.inf])
def test_non_positive_parameters_are_rejected(parameter, value):
    x = torch.zeros(2)
    with pytest.raises(ValueError, match=parameter):
        balanced_l1_loss(x, x, **{parameter: value})
    with pytest.raises(LibraError, match=parameter):
        balanced_l1_grad(x, **{"alpha": ALPHA, "gamma": GAMMA, "beta": 1.0, parameter: value})


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="same shape"):
        balanced_l1_loss(torch.zeros(3, 4), torch.zeros(4, 3))


def test_gradient_helpers_reject_negative_errors():
    with pytest.raises(ValueError, match=">= 0"):
        balanced_l1_grad(torch.tensor([0.5, -0.1]))
    with pytest.raises(ValueError, match=">= 0"):
        smooth_l1_grad(torch.tensor([-0.1]))
    with pytest.raises(ValueError, match=">= 0"):
        smooth_l1_loss_elementwise(torch.tensor([-0.1]))


@pytest.mark.parametrize("beta", [1 / 9, 0.5, 1.0, 2.0])
def test_smooth_l1_helpers_match_torch(beta):
    generator = torch.Generator().manual_seed(1)
    pred = torch.randn(200, generator=generator, dtype=torch.float64) * 2 * beta
    target = torch.randn(200, generator=generator, dtype=torch.float64) * beta
    x = (pred - target).abs()

    expected = F.smooth_l1_loss(pred, target, beta=beta, reduction="none")
    assert torch.allclose(smooth_l1_loss_elementwise(x, beta), expected, atol=1e-12)

    pred_leaf = pred.clone().requires_grad_(True)
    F.smooth_l1_loss(pred_leaf, target, beta=beta, reduction="sum").backward()
    # torch differentiates with respect to pred, which carries the sign of pred − target.
    assert torch.allclose(smooth_l1_grad(x, beta) * torch.sign(pred - target), pred_leaf.grad, atol=1e-12)


def test_smooth_l1_hand_values():
    # β = 1: 0.5·0.5² = 0.125 with gradient 0.5; 2 − 0.5 = 1.5 with gradient 1.
    # β = 1/9: 0.05 < β gives 0.5·0.0025·9 = 0.01125 with gradient 0.45.
    x = torch.tensor([0.5, 2.0], dtype=torch.float64)
    assert smooth_l1_loss_elementwise(x, 1.0).tolist() == pytest.approx([0.125, 1.5], abs=1e-15)
    assert smooth_l1_grad(x, 1.0).tolist() == pytest.approx([0.5, 1.0], abs=1e-15)
    small = torch.tensor([0.05], dtype=torch.float64)
    assert smooth_l1_loss_elementwise(small, 1 / 9).item() == pytest.approx(0.01125, abs=1e-15)
    assert smooth_l1_grad(small, 1 / 9).item() == pytest.approx(0.45, abs=1e-15)
