"""Balanced L1 loss for box regression (Libra R-CNN, Pang et al., CVPR 2019, Sec. 3.3; Libra R-CNN §3.3).

Smooth L1 lets outliers (large regression errors) dominate the gradient: an inlier's gradient grows only
linearly from zero while every outlier contributes the full clipped gradient. Balanced L1 raises the
inliers' gradient with a logarithmic ramp, α·ln(b·x + 1), that meets the outliers' constant gradient γ
at x = β. With x = |prediction − target| and b = e^(γ/α) − 1:

    L(x) = (α/b)·(b·x + 1)·ln(b·x/β + 1) − α·x     if x < β
    L(x) = γ·x + γ/b − α·β                          otherwise

The smooth L1 loss (as torchvision defines it) is exposed here too, with both closed-form gradients,
so that the gradient analysis can compare how inliers and outliers share the gradient under each.

Precision: every function computes in the input's floating dtype promoted to at least float32 — float16
and bfloat16 inputs (as produced under autocast) are computed and returned in float32, float64 stays
float64 — because b·x/β overflows float16 for errors above about 3,400.
"""

import math

import torch

from libra_cli.errors import LibraError

REDUCTIONS = ("none", "mean", "sum")


class LossArgumentError(LibraError, ValueError):
    """A loss was given an invalid parameter (reduction, α, β, λ, a shape, a label).

    Both a ``LibraError`` (the CLI prints it as a one-line message, since loss parameters come from the
    user's config) and a ``ValueError`` (the conventional type for a bad argument value).
    """


def check_reduction(reduction: str) -> None:
    """Raise ``LossArgumentError`` unless ``reduction`` is one of "none", "mean", "sum"."""
    if reduction not in REDUCTIONS:
        raise LossArgumentError(f"reduction must be one of {', '.join(REDUCTIONS)}; got {reduction!r}")


def _check_balanced_l1_parameters(alpha: float, gamma: float, beta: float) -> None:
    for name, value in (("alpha", alpha), ("gamma", gamma), ("beta", beta)):
        if not (math.isfinite(value) and value > 0):
            raise LossArgumentError(f"balanced L1 {name} must be a finite number > 0; got {value}")


def _check_positive_beta(beta: float) -> None:
    if not (math.isfinite(beta) and beta > 0):
        raise LossArgumentError(f"smooth L1 beta must be a finite number > 0; got {beta}")


def _check_non_negative(x: torch.Tensor) -> None:
    if bool((x < 0).any()):
        raise LossArgumentError("x is an absolute error and must be >= 0 everywhere")


def _computation_dtype(tensor: torch.Tensor) -> torch.dtype:
    """The tensor's floating dtype promoted to at least float32 (float16/bfloat16 → float32)."""
    if not tensor.is_floating_point():
        return torch.float32
    return torch.promote_types(tensor.dtype, torch.float32)


def balanced_l1_b(alpha: float, gamma: float) -> float:
    """b = e^(γ/α) − 1, the constant that makes the inlier gradient α·ln(b·x + 1) reach γ at x = 1.

    ≈ 19.0855 for the defaults α = 0.5, γ = 1.5.
    """
    return math.expm1(gamma / alpha)


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def balanced_l1_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 0.5,
    gamma: float = 1.5,
    beta: float = 1.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Balanced L1 loss of ``pred`` against ``target``, applied elementwise (Libra R-CNN Sec. 3.3, Eq. 8).

    With x = |pred − target| and b = e^(γ/α) − 1:

        L(x) = (α/b)·(b·x + 1)·ln(b·x/β + 1) − α·x     if x < β
        L(x) = γ·x + γ/b − α·β                          otherwise

    L is continuous at x = β for any β > 0. For β = 1 its gradient is α·ln(b·x + 1) below 1 and γ above
    (Eq. 7, with α·ln(b + 1) = γ); for β ≠ 1 the gradient jumps at β (see ``balanced_l1_grad``).

    Args:
        pred: predictions of any shape, e.g. [N, 4] normalised box deltas (dx, dy, dw, dh).
        target: regression targets, same shape as ``pred``.
        alpha: α > 0, scales the inliers' gradient (0.5 in the paper).
        gamma: γ > 0, the outliers' constant gradient (1.5 in the paper).
        beta: β > 0, the error at which the loss turns linear (1.0 for Libra Faster R-CNN's RoI head,
            0.11 for Libra RetinaNet).
        reduction: "none" (shape of ``pred``), "mean" over all elements, or "sum".

    Returns:
        The loss in ``pred``'s dtype promoted to at least float32 (float16/bfloat16 → float32): a scalar
        for "mean" and "sum", a tensor shaped like ``pred`` for "none". "mean" of an empty input is NaN.

    Raises:
        LossArgumentError (a LibraError and a ValueError): unknown reduction, α, γ or β not > 0,
            or ``pred`` and ``target`` of different shapes.
    """
    check_reduction(reduction)
    _check_balanced_l1_parameters(alpha, gamma, beta)
    if pred.shape != target.shape:
        raise LossArgumentError(
            f"balanced L1: pred and target must have the same shape; got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    dtype = _computation_dtype(pred)
    x = (pred.to(dtype) - target.to(dtype)).abs()
    b = balanced_l1_b(alpha, gamma)

    # The inlier branch is evaluated at min(x, β): torch.where evaluates both branches, and on large
    # errors b·x could overflow, sending 0·inf = NaN back through the branch that is not selected.
    x_inlier = x.clamp(max=beta)
    inlier = (alpha / b) * (b * x_inlier + 1) * torch.log1p(b * x_inlier / beta) - alpha * x_inlier
    outlier = gamma * x + (gamma / b - alpha * beta)
    loss = torch.where(x < beta, inlier, outlier)
    return _reduce(loss, reduction)


def balanced_l1_grad(x: torch.Tensor, alpha: float = 0.5, gamma: float = 1.5, beta: float = 1.0) -> torch.Tensor:
    """dL/dx of the balanced L1 loss for absolute errors x >= 0, in closed form (elementwise).

    Differentiating the inlier branch of L gives

        dL/dx = α·ln(b·x/β + 1) + α·(1 − β)/(b·x + β)     if x < β
        dL/dx = γ                                          otherwise

    For β = 1 the second term vanishes and this is the paper's Eq. 7, α·ln(b·x + 1), which reaches γ at
    x = 1. For β ≠ 1 (e.g. RetinaNet's 0.11) the gradient is not continuous at β; it jumps by
    α·(1 − β)/(β·(b + 1)).

    Args:
        x: absolute errors |pred − target|, any shape, all >= 0.
        alpha, gamma, beta: as in ``balanced_l1_loss``.

    Returns:
        A tensor shaped like ``x``, in its dtype promoted to at least float32.
    """
    _check_balanced_l1_parameters(alpha, gamma, beta)
    _check_non_negative(x)
    x = x.to(_computation_dtype(x))
    b = balanced_l1_b(alpha, gamma)
    x_inlier = x.clamp(max=beta)
    inlier = alpha * torch.log1p(b * x_inlier / beta) + alpha * (1 - beta) / (b * x_inlier + beta)
    return torch.where(x < beta, inlier, torch.full_like(x, gamma))


def smooth_l1_loss_elementwise(x: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Smooth L1 loss of absolute errors x >= 0, as torchvision's detection heads define it.

        L(x) = 0.5·x²/β    if x < β
        L(x) = x − 0.5·β   otherwise

    Args:
        x: absolute errors |pred − target|, any shape, all >= 0.
        beta: β > 0 (torchvision's Faster R-CNN RoI head uses 1/9).

    Returns:
        A tensor shaped like ``x``, in its dtype promoted to at least float32.
    """
    _check_positive_beta(beta)
    _check_non_negative(x)
    x = x.to(_computation_dtype(x))
    return torch.where(x < beta, 0.5 * x * x / beta, x - 0.5 * beta)


def smooth_l1_grad(x: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """dL/dx of the smooth L1 loss for absolute errors x >= 0: x/β if x < β, else 1 (elementwise).

    Args:
        x: absolute errors |pred − target|, any shape, all >= 0.
        beta: β > 0.

    Returns:
        A tensor shaped like ``x``, in its dtype promoted to at least float32.
    """
    _check_positive_beta(beta)
    _check_non_negative(x)
    x = x.to(_computation_dtype(x))
    return torch.where(x < beta, x / beta, torch.ones_like(x))
