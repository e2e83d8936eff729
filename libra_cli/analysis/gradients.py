"""Objective-level imbalance: how inliers and outliers share the box-regression gradient (Libra R-CNN §3.3).

With x = |prediction − target| for one coordinate of the normalised box deltas (as the run's box coder
encodes them; the RoI head predicts them for the RoI's GT class), the paper calls a sample with loss
≥ 1.0 an outlier and the rest inliers, and observes that under smooth L1 "inliers only contribute 30 %
gradients average per sample compared with outliers". Balanced L1 raises the inliers' gradient
(α·ln(b·x + 1) instead of x/β) while keeping the outliers' at a constant γ.

Choices made here (the paper states them per sample without defining the unit):

- a *sample* is one coordinate of one positive, so a positive RoI gives four samples, each with its own
  x, loss and gradient |dL/dx|;
- the inlier/outlier split is made by each loss's own value, L(x) ≥ 1.0 (the paper's definition
  applied to the loss under study); the error at which L(x) = 1 is reported as ``outlier_error`` —
  1 + β/2 for smooth L1, ≈ 0.95 for balanced L1 with the defaults;
- smooth L1 uses the run's β: torchvision's RoI head uses 1/9 (Libra R-CNN §3.3); for RetinaNet, whose
  torchvision loss is plain L1, β = 1/9 too. Because the paper's baseline used β = 1, whose inliers
  get a much smaller gradient than under β = 1/9, the same statistics are also given for β = 1
  (``smooth_l1_beta_1``). Balanced L1 uses the run's α, γ and β (defaults 0.5, 1.5, 1.0; β 0.11 for
  RetinaNet), even if the run trained with smooth L1.

Reported per loss: the mean gradient per inlier and per outlier, their ratio (inlier / outlier), each
group's share of the summed gradient, and the group sizes. The objective-level balance compares the
classification and regression losses of the run's own training objective and the gradient norm each
puts on the features both branches share: the box head's output (the predictor's input) for Faster
R-CNN, the FPN maps for RetinaNet (whose two head towers share only those).

Faster R-CNN: the positives are the RoIs the run's sampler picks in training. RetinaNet: every
foreground anchor (matched IoU ≥ 0.5), as its regression loss uses them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torchvision.models.detection.roi_heads import fastrcnn_loss
from torchvision.ops import boxes as box_ops

from libra_cli.analysis.common import AnalysisInputs, csv_text, figure_png
from libra_cli.analysis.runner import Analysis, Files, ImageRun, ModelAnalysis
from libra_cli.components import TWO_STAGE
from libra_cli.config import resolved_component_settings
from libra_cli.losses import balanced_l1_grad, balanced_l1_loss, smooth_l1_grad, smooth_l1_loss_elementwise
from libra_cli.models.roi_heads import TORCHVISION_SMOOTH_L1_BETA, LibraRoIHeads

OUTLIER_LOSS = 1.0  # the paper's split: a sample with loss >= 1.0 is an outlier
PAPER_SMOOTH_L1_BETA = 1.0  # the smooth L1 β of the paper's Faster R-CNN baseline (its "30 %" statement)
CURVE_SETTINGS = ((0.5, 1.5), (0.2, 1.0), (0.5, 2.0))  # the (α, γ) of the paper's Table 6 and Fig. 5
CURVE_X_MAX = 3.0
CURVE_POINTS = 301  # x = 0, 0.01, …, 3.0


# ---- pure statistics ----------------------------------------------------------------------------------


def gradient_balance(loss: torch.Tensor, grad: torch.Tensor, outlier_loss: float = OUTLIER_LOSS) -> dict[str, Any]:
    """How inliers (loss < ``outlier_loss``) and outliers (loss >= it) share the gradient.

    Args:
        loss: Tensor[M], each sample's loss.
        grad: Tensor[M], each sample's gradient dL/dx (its magnitude is used).

    Returns:
        {"inlier_mean_grad", "outlier_mean_grad": mean |grad| of the group (None if empty),
        "inlier_outlier_ratio": inlier mean / outlier mean (None unless both groups are non-empty),
        "inlier_grad_share", "outlier_grad_share": the group's Σ|grad| over the total (sum 1; None when
        the total is 0), "num_inliers", "num_outliers"}.
    """
    magnitude = grad.abs().double()
    outlier = loss >= outlier_loss
    inlier_grads, outlier_grads = magnitude[~outlier], magnitude[outlier]
    inlier_mean = float(inlier_grads.mean()) if inlier_grads.numel() else None
    outlier_mean = float(outlier_grads.mean()) if outlier_grads.numel() else None
    total = float(magnitude.sum())
    return {
        "inlier_mean_grad": inlier_mean,
        "outlier_mean_grad": outlier_mean,
        "inlier_outlier_ratio": (inlier_mean / outlier_mean if inlier_mean is not None and outlier_mean else None),
        "inlier_grad_share": float(inlier_grads.sum()) / total if total > 0 else None,
        "outlier_grad_share": float(outlier_grads.sum()) / total if total > 0 else None,
        "num_inliers": int(inlier_grads.numel()),
        "num_outliers": int(outlier_grads.numel()),
    }


def balanced_l1_elementwise(x: torch.Tensor, alpha: float, gamma: float, beta: float) -> torch.Tensor:
    """The balanced L1 loss of absolute errors x >= 0, elementwise (Libra R-CNN §3.3)."""
    return balanced_l1_loss(x, torch.zeros_like(x), alpha, gamma, beta, reduction="none")


def error_at_loss(loss_of: Callable[[torch.Tensor], torch.Tensor], level: float = OUTLIER_LOSS) -> float:
    """The error x at which an increasing loss L(x) reaches ``level``, by bisection on [0, 2·level + 2].

    Every loss here grows at least linearly beyond β with slope >= 1 … γ, so the root lies in the
    bracket; 60 halvings give it to float64 precision.
    """
    low, high = 0.0, 2.0 * level + 2.0
    for _ in range(60):
        middle = (low + high) / 2
        if float(loss_of(torch.tensor([middle], dtype=torch.float64))[0]) < level:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def smooth_l1_balance(x: torch.Tensor, beta: float) -> dict[str, Any]:
    """:func:`gradient_balance` under smooth L1 with ``beta``: L = 0.5·x²/β below β, x − 0.5·β above."""
    x = x.double()
    return {
        "beta": beta,
        **gradient_balance(smooth_l1_loss_elementwise(x, beta), smooth_l1_grad(x, beta)),
        "outlier_error": error_at_loss(lambda t: smooth_l1_loss_elementwise(t, beta)),
    }


def balanced_l1_balance(x: torch.Tensor, alpha: float, gamma: float, beta: float) -> dict[str, Any]:
    """:func:`gradient_balance` under balanced L1 with α, γ, β (Libra R-CNN §3.3)."""
    x = x.double()
    return {
        "alpha": alpha,
        "gamma": gamma,
        "beta": beta,
        **gradient_balance(balanced_l1_elementwise(x, alpha, gamma, beta), balanced_l1_grad(x, alpha, gamma, beta)),
        "outlier_error": error_at_loss(lambda t: balanced_l1_elementwise(t, alpha, gamma, beta)),
    }


def loss_curves(
    x_max: float = CURVE_X_MAX,
    points: int = CURVE_POINTS,
    smooth_l1_betas: Sequence[float] = (1.0,),
    balanced_l1_settings: Sequence[tuple[float, float]] = CURVE_SETTINGS,
    balanced_l1_beta: float = 1.0,
) -> dict[str, Any]:
    """Loss and gradient of smooth L1 and balanced L1 over x in [0, x_max] (the paper's Fig. 5).

    Returns:
        {"x": [points], "smooth_l1": [{"beta", "loss", "grad"}], "balanced_l1": [{"alpha", "gamma",
        "beta", "loss", "grad"}]}, every list of values aligned with "x".
    """
    x = torch.linspace(0.0, x_max, points, dtype=torch.float64)
    return {
        "x": x.tolist(),
        "smooth_l1": [
            {
                "beta": beta,
                "loss": smooth_l1_loss_elementwise(x, beta).tolist(),
                "grad": smooth_l1_grad(x, beta).tolist(),
            }
            for beta in smooth_l1_betas
        ],
        "balanced_l1": [
            {
                "alpha": alpha,
                "gamma": gamma,
                "beta": balanced_l1_beta,
                "loss": balanced_l1_elementwise(x, alpha, gamma, balanced_l1_beta).tolist(),
                "grad": balanced_l1_grad(x, alpha, gamma, balanced_l1_beta).tolist(),
            }
            for alpha, gamma in balanced_l1_settings
        ],
    }


def gradient_norm(loss: torch.Tensor, inputs: Sequence[torch.Tensor], retain_graph: bool) -> float:
    """‖∂loss/∂inputs‖₂ over all inputs together (0 when the loss does not depend on them)."""
    if not loss.requires_grad:
        return 0.0
    grads = torch.autograd.grad(loss, list(inputs), retain_graph=retain_graph, allow_unused=True)
    return math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads if g is not None))


# ---- per-architecture collection ------------------------------------------------------------------------


class _Collector:
    """Regression errors of every positive and the per-image objective terms."""

    def __init__(self) -> None:
        self.errors: list[torch.Tensor] = []
        self.objective: list[tuple[float, float, float, float]] = []

    def add(self, errors: torch.Tensor, loss_cls: torch.Tensor, loss_reg: torch.Tensor, features) -> None:
        self.errors.append(errors.detach().double().cpu().reshape(-1))
        self.objective.append(
            (
                float(loss_cls.detach()),
                float(loss_reg.detach()),
                # The graph is kept: with RetinaNet the next image's losses share it.
                gradient_norm(loss_cls, features, retain_graph=True),
                gradient_norm(loss_reg, features, retain_graph=True),
            )
        )


def _collect_faster_rcnn(run: ImageRun, collector: _Collector) -> None:
    heads, probe = run.inputs.model.roi_heads, run.inputs.probe
    for images, targets in run.batches():
        with torch.no_grad():
            batch = probe.forward_to_proposals(images, targets)
            rois = probe.sample(batch.proposals, batch.targets)
            sampled, labels, regression_targets = rois.boxes, rois.labels, rois.regression_targets
            box_features, _, _ = probe.box_head(batch, sampled)
        for image_features, image_labels, image_targets in zip(
            box_features.split([len(boxes) for boxes in sampled]), labels, regression_targets, strict=True
        ):
            if image_labels.numel() == 0:
                continue
            shared = image_features.detach().requires_grad_(True)  # [S, D], the input of the predictor
            with torch.enable_grad():
                class_logits, box_regression = heads.box_predictor(shared)
                positives = torch.where(image_labels > 0)[0]
                deltas = box_regression.reshape(box_regression.shape[0], -1, 4)[positives, image_labels[positives]]
                errors = (deltas - image_targets[positives]).abs()
                if isinstance(heads, LibraRoIHeads):
                    losses = heads.box_losses(class_logits, box_regression, [image_labels], [image_targets])
                    loss_cls, loss_reg = losses["loss_classifier"], losses["loss_box_reg"]
                else:
                    loss_cls, loss_reg = fastrcnn_loss(class_logits, box_regression, [image_labels], [image_targets])
                collector.add(errors, loss_cls, loss_reg, [shared])


def _collect_retinanet(run: ImageRun, collector: _Collector) -> None:
    inputs = run.inputs
    model = inputs.model
    for images, targets in run.batches():
        with torch.no_grad():
            image_list, targets = inputs.probe.transform(images, targets)
            features = list(inputs.probe.pyramid(image_list)[1].values())
            anchors = model.anchor_generator(image_list, features)
        # The heads run once on the whole batch. Each image's losses depend on its own slice only, so their
        # gradients with respect to the batch's maps are that image's gradients.
        shared = [level.detach().requires_grad_(True) for level in features]
        with torch.enable_grad():
            head_outputs = model.head(shared)
        for index, (image_targets, image_anchors) in enumerate(zip(targets, anchors, strict=True)):
            gt_boxes = image_targets["boxes"]
            if gt_boxes.numel() == 0:
                matched = torch.full((len(image_anchors),), -1, dtype=torch.int64, device=image_anchors.device)
            else:  # RetinaNet's own matching (IoU >= 0.5 foreground, < 0.4 background, between ignored)
                matched = model.proposal_matcher(box_ops.box_iou(gt_boxes, image_anchors))
            image_outputs = {name: output[index : index + 1] for name, output in head_outputs.items()}
            with torch.enable_grad():
                losses = model.head.compute_loss([image_targets], image_outputs, [image_anchors], [matched])
            foreground = torch.where(matched >= 0)[0]
            target_deltas = model.head.regression_head.box_coder.encode_single(
                gt_boxes[matched[foreground]], image_anchors[foreground]
            )
            errors = (image_outputs["bbox_regression"][0, foreground] - target_deltas).abs()
            collector.add(errors, losses["classification"], losses["bbox_regression"], shared)


def run_box_loss(inputs: AnalysisInputs) -> str:
    """The box-regression loss the run trains with, as a short label."""
    if inputs.config.libra.balanced_l1:
        return "balanced_l1"
    return "smooth_l1" if inputs.arch in TWO_STAGE else "l1"


def measure_gradients(run: ImageRun) -> dict[str, Any]:
    """Inlier/outlier gradient balance of smooth L1 and balanced L1, and classification vs regression.

    Returns the ``gradients.json`` fields after the runner's: {"num_samples" (coordinates),
    "num_positives", "sample_unit", "mean_error", "losses": {"smooth_l1": {...}, "balanced_l1": {...},
    "smooth_l1_beta_1": {...}}, "objective": {"loss_cls", "loss_reg", "grad_norm_cls", "grad_norm_reg",
    "grad_ratio_reg_over_cls", "features", "run_box_loss", "num_images"}, "curves", "checkpoint"}.
    Objective values are means over the images with at least one sampled RoI (Faster R-CNN) or over all
    images (RetinaNet).
    """
    inputs = run.inputs
    inputs.model.requires_grad_(False)  # gradients are taken with respect to features only
    collector = _Collector()
    if inputs.arch in TWO_STAGE:
        _collect_faster_rcnn(run, collector)
        shared_features = "box head output (the input of the box predictor)"
    else:
        _collect_retinanet(run, collector)
        shared_features = "FPN maps (the input of both head towers)"

    errors = torch.cat(collector.errors) if collector.errors else torch.zeros(0, dtype=torch.float64)
    lib = inputs.config.libra
    bl1_beta = resolved_component_settings(inputs.config)["bl1_beta"]
    smooth_beta = TORCHVISION_SMOOTH_L1_BETA
    objective = torch.tensor(collector.objective, dtype=torch.float64).reshape(-1, 4)
    means = objective.mean(dim=0).tolist() if len(objective) else [None] * 4
    loss_cls, loss_reg, grad_cls, grad_reg = means
    return {
        "num_samples": int(errors.numel()),
        "num_positives": int(errors.numel()) // 4,
        "sample_unit": "coordinate",
        "mean_error": float(errors.mean()) if errors.numel() else None,
        "losses": {
            "smooth_l1": smooth_l1_balance(errors, smooth_beta),
            "balanced_l1": balanced_l1_balance(errors, lib.bl1_alpha, lib.bl1_gamma, bl1_beta),
            # The setting of the paper's statement: its Faster R-CNN baseline used smooth L1 with β = 1.
            "smooth_l1_beta_1": smooth_l1_balance(errors, PAPER_SMOOTH_L1_BETA),
        },
        "objective": {
            "loss_cls": loss_cls,
            "loss_reg": loss_reg,
            "grad_norm_cls": grad_cls,
            "grad_norm_reg": grad_reg,
            "grad_ratio_reg_over_cls": grad_reg / grad_cls if grad_cls else None,
            "features": shared_features,
            "run_box_loss": run_box_loss(inputs),
            "num_images": len(objective),
        },
        "curves": loss_curves(smooth_l1_betas=sorted({smooth_beta, 1.0})),
        "checkpoint": inputs.checkpoint,
    }


# Gradients are taken, so the images are walked outside inference mode.
analyze_gradients = ModelAnalysis("gradients", measure_gradients, inference=False)


# ---- files ------------------------------------------------------------------------------------------------

BALANCE_COLUMNS = (
    "inlier_mean_grad",
    "outlier_mean_grad",
    "inlier_outlier_ratio",
    "inlier_grad_share",
    "outlier_grad_share",
    "num_inliers",
    "num_outliers",
    "outlier_error",
)


def gradients_csv(result: dict[str, Any]) -> str:
    """One row per loss: its parameters and the inlier/outlier statistics."""
    header = ["loss", "alpha", "gamma", "beta", *BALANCE_COLUMNS]
    rows = []
    for name, stats in result["losses"].items():
        rows.append(
            [
                name,
                stats.get("alpha", ""),
                stats.get("gamma", ""),
                stats["beta"],
                *(stats[c] for c in BALANCE_COLUMNS),
            ]
        )
    return csv_text(header, rows)


def _curve_label(curve: dict[str, Any]) -> str:
    if "alpha" in curve:
        return f"balanced L1 α={curve['alpha']:g} γ={curve['gamma']:g}"
    return f"smooth L1 β={curve['beta']:.3g}"


def _balance_label(stats: dict[str, Any]) -> str:
    if "alpha" in stats:
        return f"balanced L1\nα={stats['alpha']:g} γ={stats['gamma']:g} β={stats['beta']:.3g}"
    return f"smooth L1\nβ={stats['beta']:.3g}"


def curves_csv(curves: dict[str, Any]) -> str:
    """One row per x: loss and gradient of every curve."""
    all_curves = curves["smooth_l1"] + curves["balanced_l1"]
    header = ["x"]
    for curve in all_curves:
        label = _curve_label(curve).replace(" ", "_")
        header += [f"{label}_loss", f"{label}_grad"]
    rows = []
    for index, x in enumerate(curves["x"]):
        row = [round(x, 6)]
        for curve in all_curves:
            row += [round(curve["loss"][index], 6), round(curve["grad"][index], 6)]
        rows.append(row)
    return csv_text(header, rows)


def curves_figure(curves: dict[str, Any]) -> bytes:
    """The paper's Fig. 5: gradient (left) and loss (right) against the regression error x (PNG)."""
    figure = Figure(figsize=(10.0, 4.0))
    grad_axes, loss_axes = figure.subplots(1, 2)
    for curve in curves["smooth_l1"] + curves["balanced_l1"]:
        style = "--" if "alpha" not in curve else "-"
        grad_axes.plot(curves["x"], curve["grad"], style, label=_curve_label(curve))
        loss_axes.plot(curves["x"], curve["loss"], style, label=_curve_label(curve))
    grad_axes.set_xlabel("regression error x")
    grad_axes.set_ylabel("gradient dL/dx")
    grad_axes.set_title("gradient")
    loss_axes.set_xlabel("regression error x")
    loss_axes.set_ylabel("loss")
    loss_axes.set_title("loss")
    loss_axes.legend(fontsize="small")
    return figure_png(figure)


def gradients_figure(result: dict[str, Any]) -> bytes:
    """Mean gradient per inlier and per outlier, and each group's gradient share, for both losses (PNG)."""
    figure = Figure(figsize=(10.0, 4.0))
    mean_axes, share_axes = figure.subplots(1, 2)
    names = list(result["losses"])
    positions = list(range(len(names)))
    for offset, group in ((-0.2, "inlier"), (0.2, "outlier")):
        means = [result["losses"][name][f"{group}_mean_grad"] or 0.0 for name in names]
        shares = [result["losses"][name][f"{group}_grad_share"] or 0.0 for name in names]
        mean_axes.bar([p + offset for p in positions], means, width=0.4, label=f"{group}s")
        share_axes.bar([p + offset for p in positions], shares, width=0.4, label=f"{group}s")
    for axes, title in ((mean_axes, "mean |dL/dx| per sample"), (share_axes, "share of the total gradient")):
        axes.set_xticks(positions, [_balance_label(result["losses"][name]) for name in names], fontsize="small")
        axes.set_title(title)
        axes.legend(loc="center right")
    figure.suptitle(f"Inliers vs outliers (loss ≥ 1) — {Path(result['run']).name}, {result['num_samples']} coordinates")
    return figure_png(figure)


write_gradients = Files(
    "gradients",
    {"gradients.csv": gradients_csv, "gradients_curves.csv": lambda result: curves_csv(result["curves"])},
    {"gradients.png": gradients_figure, "gradients_curves.png": lambda result: curves_figure(result["curves"])},
)

ANALYSIS = Analysis(
    "gradients",
    "objective level (Libra R-CNN Fig. 5)",
    "Inlier vs outlier gradients under smooth L1 and balanced L1, and classification vs regression.",
    analyze_gradients,
    write_gradients,
)
