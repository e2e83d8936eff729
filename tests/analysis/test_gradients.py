"""Gradient diagnostic: inliers vs outliers under smooth L1 and balanced L1, and the loss curves."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from libra_cli.analysis.gradients import (
    analyze_gradients,
    balanced_l1_balance,
    error_at_loss,
    gradient_balance,
    gradient_norm,
    loss_curves,
    smooth_l1_balance,
    smooth_l1_loss_elementwise,
    write_gradients,
)
from libra_cli.cli import app

runner = CliRunner()

ERRORS = torch.tensor([0.1, 0.5, 0.9, 1.5, 3.0])


def balanced_l1_by_hand(x: float, alpha: float = 0.5, gamma: float = 1.5) -> tuple[float, float]:
    """(loss, gradient) of balanced L1 with β = 1 from the paper's formulas, b = e^(γ/α) − 1."""
    b = math.exp(gamma / alpha) - 1
    if x < 1:
        return (alpha / b) * (b * x + 1) * math.log(b * x + 1) - alpha * x, alpha * math.log(b * x + 1)
    return gamma * x + gamma / b - alpha, gamma


def test_gradient_balance_splits_at_loss_one():
    # Losses 0.2, 0.99 (inliers) and 1.0, 3.0 (outliers: loss ≥ 1); gradients 0.2, 0.4, 1, 1 (signs ignored).
    stats = gradient_balance(torch.tensor([0.2, 0.99, 1.0, 3.0]), torch.tensor([0.2, -0.4, 1.0, 1.0]))
    assert stats["num_inliers"] == 2 and stats["num_outliers"] == 2
    assert stats["inlier_mean_grad"] == pytest.approx(0.3)
    assert stats["outlier_mean_grad"] == pytest.approx(1.0)
    assert stats["inlier_outlier_ratio"] == pytest.approx(0.3)
    assert stats["inlier_grad_share"] == pytest.approx(0.6 / 2.6)
    assert stats["outlier_grad_share"] == pytest.approx(2.0 / 2.6)


def test_gradient_balance_without_outliers():
    stats = gradient_balance(torch.tensor([0.1, 0.2]), torch.tensor([0.5, 0.5]))
    assert stats["outlier_mean_grad"] is None and stats["inlier_outlier_ratio"] is None
    assert stats["inlier_grad_share"] == 1.0 and stats["outlier_grad_share"] == 0.0


def test_smooth_l1_inliers_and_outliers():
    # β = 1: L = x²/2 below 1, x − 1/2 above → losses 0.005, 0.125, 0.405 | 1.0, 2.5: x = 1.5 has loss
    # exactly 1 and is an outlier. Gradients x below 1 (0.1, 0.5, 0.9, mean 0.5) and 1 above (mean 1).
    stats = smooth_l1_balance(ERRORS, beta=1.0)
    assert (stats["num_inliers"], stats["num_outliers"]) == (3, 2)
    assert stats["inlier_mean_grad"] == pytest.approx(0.5)
    assert stats["outlier_mean_grad"] == pytest.approx(1.0)
    assert stats["inlier_outlier_ratio"] == pytest.approx(0.5)
    assert stats["inlier_grad_share"] == pytest.approx(1.5 / 3.5)
    assert stats["outlier_grad_share"] == pytest.approx(2.0 / 3.5)
    assert stats["outlier_error"] == pytest.approx(1.5)  # L = 1 at x = 1 + β/2


def test_smooth_l1_with_torchvision_beta():
    # β = 1/9: L(x) = x − 1/18 above β, so the outliers start at x = 1 + 1/18; every x here but 0.1 gets
    # gradient 1 (x ≥ β), and 0.1 gets 0.1 / (1/9) = 0.9.
    stats = smooth_l1_balance(ERRORS, beta=1 / 9)
    assert stats["outlier_error"] == pytest.approx(1 + 1 / 18)
    assert (stats["num_inliers"], stats["num_outliers"]) == (3, 2)
    assert stats["inlier_mean_grad"] == pytest.approx((0.9 + 1 + 1) / 3)
    assert stats["inlier_outlier_ratio"] == pytest.approx((0.9 + 1 + 1) / 3)


def test_balanced_l1_inliers_and_outliers():
    by_hand = [balanced_l1_by_hand(x) for x in ERRORS.tolist()]
    losses = [loss for loss, _ in by_hand]
    grads = [grad for _, grad in by_hand]
    # The split by hand: L(0.9) ≈ 0.94 < 1 is an inlier, L(1.5) = 2.33 an outlier.
    assert [loss >= 1 for loss in losses] == [False, False, False, True, True]
    stats = balanced_l1_balance(ERRORS, alpha=0.5, gamma=1.5, beta=1.0)
    assert (stats["num_inliers"], stats["num_outliers"]) == (3, 2)
    assert stats["inlier_mean_grad"] == pytest.approx(sum(grads[:3]) / 3)
    assert stats["outlier_mean_grad"] == pytest.approx(1.5)  # γ
    assert stats["inlier_outlier_ratio"] == pytest.approx(sum(grads[:3]) / 3 / 1.5)
    assert stats["inlier_grad_share"] == pytest.approx(sum(grads[:3]) / sum(grads))
    # Balanced L1 gives the inliers a larger share of the gradient than smooth L1 (β = 1) does.
    assert stats["inlier_grad_share"] > smooth_l1_balance(ERRORS, beta=1.0)["inlier_grad_share"]


def test_error_at_loss_one_for_balanced_l1():
    x = error_at_loss(lambda t: balanced_l1_balance_loss(t))
    assert 0.9 < x < 1.0
    assert balanced_l1_by_hand(x)[0] == pytest.approx(1.0, abs=1e-9)


def balanced_l1_balance_loss(t: torch.Tensor) -> torch.Tensor:
    return torch.tensor([balanced_l1_by_hand(v)[0] for v in t.tolist()], dtype=torch.float64)


def test_loss_curves_at_known_points():
    curves = loss_curves()
    x = curves["x"]
    assert len(x) == 301 and x[0] == 0.0 and x[-1] == pytest.approx(3.0)
    at = {0.5: 50, 1.0: 100, 2.0: 200}
    assert [x[i] for i in at.values()] == pytest.approx([0.5, 1.0, 2.0])
    smooth = curves["smooth_l1"][0]
    assert smooth["beta"] == 1.0
    assert smooth["loss"][at[0.5]] == pytest.approx(0.125) and smooth["grad"][at[0.5]] == pytest.approx(0.5)
    assert smooth["loss"][at[2.0]] == pytest.approx(1.5) and smooth["grad"][at[2.0]] == pytest.approx(1.0)
    default, low, steep = curves["balanced_l1"]
    assert (
        default["alpha"],
        default["gamma"],
        low["alpha"],
        low["gamma"],
        steep["alpha"],
        steep["gamma"],
    ) == (
        0.5,
        1.5,
        0.2,
        1.0,
        0.5,
        2.0,
    )
    # Libra R-CNN §3.3 reference values for α = 0.5, γ = 1.5, β = 1.
    assert default["loss"][at[0.5]] == pytest.approx(0.400568, abs=1e-6)
    assert default["loss"][at[1.0]] == pytest.approx(1.078594, abs=1e-6)
    assert default["loss"][at[2.0]] == pytest.approx(2.578594, abs=1e-6)
    assert default["grad"][at[0.5]] == pytest.approx(0.5 * math.log((math.exp(3) - 1) * 0.5 + 1))
    assert default["grad"][at[2.0]] == pytest.approx(1.5)
    assert low["grad"][at[0.5]] == pytest.approx(0.2 * math.log((math.exp(5) - 1) * 0.5 + 1))
    assert low["grad"][at[2.0]] == pytest.approx(1.0)
    assert steep["grad"][at[2.0]] == pytest.approx(2.0)
    for curve in curves["smooth_l1"] + curves["balanced_l1"]:
        assert curve["loss"][0] == 0.0 and curve["grad"][0] == 0.0


def test_gradient_norm_of_a_known_loss():
    # L = ½‖f‖² → ∂L/∂f = f = (3, 4) → norm 5; a loss that does not depend on f has norm 0.
    features = torch.tensor([3.0, 4.0], requires_grad=True)
    assert gradient_norm(0.5 * (features * features).sum(), [features], retain_graph=False) == pytest.approx(5.0)
    assert gradient_norm(torch.tensor(2.0), [features], retain_graph=False) == 0.0


def test_smooth_l1_loss_used_is_torchvisions():
    # The analysis reuses the library's smooth L1: 0.5·x²/β below β and x − 0.5·β above.
    assert smooth_l1_loss_elementwise(torch.tensor([0.05, 1.0]), beta=1 / 9).tolist() == pytest.approx(
        [0.5 * 0.05**2 * 9, 1.0 - 0.5 / 9]
    )


# ---- end to end --------------------------------------------------------------------------------------------


def check_payload(payload, num_images):
    assert {"analysis", "run", "images", "num_samples", "losses", "objective"} <= set(payload)
    assert payload["analysis"] == "gradients" and payload["images"] == num_images
    assert payload["num_samples"] > 0 and payload["num_samples"] % 4 == 0  # four coordinates per positive
    for name in ("smooth_l1", "balanced_l1"):
        stats = payload["losses"][name]
        keys = {
            "beta",
            "inlier_mean_grad",
            "outlier_mean_grad",
            "inlier_outlier_ratio",
            "inlier_grad_share",
            "outlier_grad_share",
            "num_inliers",
            "num_outliers",
        }
        assert keys <= set(stats)
        assert stats["num_inliers"] + stats["num_outliers"] == payload["num_samples"]
        shares = (stats["inlier_grad_share"] or 0) + (stats["outlier_grad_share"] or 0)
        assert shares == pytest.approx(1.0)
    assert {"alpha", "gamma"} <= set(payload["losses"]["balanced_l1"])
    objective = payload["objective"]
    assert {"loss_cls", "loss_reg", "grad_norm_cls", "grad_norm_reg"} <= set(objective)
    assert objective["loss_cls"] > 0 and objective["grad_norm_cls"] > 0 and objective["grad_norm_reg"] >= 0


@pytest.mark.slow
def test_gradients_on_a_trained_run(tiny_run):
    result = analyze_gradients(tiny_run, num_images=2, checkpoint="last")
    written = write_gradients(result)
    payload = json.loads(written["gradients.json"].read_text())
    check_payload(payload, 2)
    assert payload["losses"]["smooth_l1"]["beta"] == pytest.approx(1 / 9)  # torchvision's RoI head
    assert payload["losses"]["balanced_l1"]["alpha"] == 0.5 and payload["objective"]["run_box_loss"] == "smooth_l1"
    folder = tiny_run / "analysis"
    for name in ("gradients.csv", "gradients.png", "gradients_curves.png", "gradients_curves.csv"):
        assert (folder / name).is_file() and (folder / name).stat().st_size > 0
    assert len((folder / "gradients_curves.csv").read_text().splitlines()) == 302  # header + 301 x values


@pytest.mark.slow
def test_gradients_command_on_a_fresh_libra_run(fresh_libra_run):
    result = runner.invoke(app, ["analyze", "gradients", str(fresh_libra_run), "--images", "2", "--checkpoint", "last"])
    assert result.exit_code == 0, result.output
    payload = json.loads((fresh_libra_run / "analysis" / "gradients.json").read_text())
    check_payload(payload, 2)
    # The run's own balanced L1 settings (α = 0.2 in the fixture, β = 1 for Faster R-CNN).
    assert payload["losses"]["balanced_l1"]["alpha"] == 0.2 and payload["losses"]["balanced_l1"]["beta"] == 1.0
    assert payload["objective"]["run_box_loss"] == "balanced_l1"


@pytest.mark.slow
def test_gradients_on_retinanet_use_foreground_anchors(fresh_retinanet_run):
    # Three images in batches of two: the last batch holds one 96-pixel image, whose P7 is 1 × 1 (the
    # head's GroupNorm then has one value per group). Each image's losses depend on its own maps only, so
    # the result equals that of one batch of three.
    result = analyze_gradients(fresh_retinanet_run, num_images=3, checkpoint="last", batch_size=2)
    check_payload(result, 3)
    assert result["losses"]["balanced_l1"]["beta"] == pytest.approx(0.11)  # Libra RetinaNet's β
    assert result["objective"]["features"].startswith("FPN maps")
    whole = analyze_gradients(fresh_retinanet_run, num_images=3, checkpoint="last", batch_size=3)
    assert whole["num_samples"] == result["num_samples"]
    for name in ("smooth_l1", "balanced_l1"):
        for key, value in whole["losses"][name].items():  # None where a side has no samples (no outliers)
            expected = value if value is None else pytest.approx(value, rel=1e-4)
            assert result["losses"][name][key] == expected, (name, key)
    for key in ("loss_cls", "loss_reg", "grad_norm_cls", "grad_norm_reg"):
        assert result["objective"][key] == pytest.approx(whole["objective"][key], rel=1e-4), key
