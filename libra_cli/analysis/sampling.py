"""Sample-level imbalance: the IoU of the negatives each sampling method picks (Libra R-CNN §3.1, Fig. 2).

Random sampling draws most negatives from the huge pool of easy background (IoU ≈ 0 with every GT box),
while the hard negatives — those the classifier gets most wrong — overlap objects. The paper shows it
with three IoU histograms of sampled negatives: more than 60 % of hard negatives have IoU > 0.05, random
sampling gives only about 30 % above it, and IoU-balanced sampling follows the hard distribution without
mining (Libra R-CNN §3.1, §7).

For every image this module takes the proposals the RoI head would see in training (the RPN's
training top-n, GT boxes appended), each proposal's largest IoU with the GT boxes, and draws the
negatives (IoU < 0.5) three ways, the same number for each — the number the run's RoI sampler would
draw, ``batch_size_per_image − positives taken``:

- ``random``: uniformly, as torchvision's sampler (``RandomSampler``);
- ``hard``: the negatives with the largest classification loss of the background label under the run's
  model (OHEM-style, ``hard_negatives``): cross-entropy −log softmax(z)₀, or for an EQL run the sigmoid
  BCE with an all-zero target, Σ_j −log(1 − σ(z_j));
- ``iou_balanced``: Libra's sampler with the run's ``libra`` settings (used even if the run trained
  with random sampling).

Histogram bins are 0.05 wide over [0, 0.5) and half-open, [k·0.05, (k+1)·0.05): an IoU equal to an
inner edge counts in the upper bin. "Share above 0.05" counts IoU > 0.05 strictly, as the paper words it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from libra_cli.analysis.common import csv_text, figure_png
from libra_cli.analysis.runner import Analysis, Files, ImageRun, ModelAnalysis, Option
from libra_cli.config import RunConfig
from libra_cli.errors import LibraError
from libra_cli.models.parts import iou_sampler_from_config
from libra_cli.models.probe import DetectorProbe
from libra_cli.sampling import READINGS, IoUBalancedSampler, RandomSampler, hard_negatives

METHODS = ("random", "hard", "iou_balanced")
BIN_WIDTH = 0.05
NEGATIVE_IOU_THRESHOLD = 0.5  # the RoI head's assigner: IoU < 0.5 is background
EASY_IOU = 0.05  # the paper's Fig. 2 threshold between easy background and negatives near objects


def iou_bin_edges(width: float = BIN_WIDTH, upper: float = NEGATIVE_IOU_THRESHOLD) -> list[float]:
    """Equal bins of ``width`` over [0, upper]: [0, 0.05, 0.1, …, 0.5] (11 edges, 10 bins) by default.

    The edges are k·upper/K rounded to 12 decimals, so that 0.15 is the decimal 0.15 and not
    3 × 0.05 = 0.15000000000000002.
    """
    num_bins = round(upper / width)
    if num_bins < 1 or abs(num_bins * width - upper) > 1e-9:
        raise ValueError(f"upper={upper} is not a whole number of bins of width {width}")
    return [round(k * upper / num_bins, 12) for k in range(num_bins + 1)]


def iou_histogram(ious: torch.Tensor, edges: list[float]) -> list[int]:
    """Counts of ``ious`` in the half-open bins [e_k, e_{k+1}).

    The edges are compared in the dtype of ``ious``, so a float32 IoU stored at an edge (e.g. 0.35)
    compares equal to that edge and counts in the bin that starts there. Values outside
    [e_0, e_last) are not counted (a negative's IoU is always inside [0, 0.5)).

    Args:
        ious: Tensor[M] of IoU values.
        edges: K + 1 increasing bin edges.

    Returns:
        K counts.
    """
    num_bins = len(edges) - 1
    edge_tensor = torch.tensor(edges, dtype=ious.dtype, device=ious.device)
    # The number of edges at or below a value, minus one, is the bin starting at the last of them.
    index = (ious.reshape(-1, 1) >= edge_tensor).sum(dim=1) - 1
    inside = (index >= 0) & (index < num_bins)
    return torch.bincount(index[inside], minlength=num_bins).tolist()


def share_above(ious: torch.Tensor, threshold: float = EASY_IOU) -> float:
    """The fraction of ``ious`` strictly greater than ``threshold`` (0.0 for an empty tensor)."""
    if ious.numel() == 0:
        return 0.0
    return float((ious > threshold).sum()) / ious.numel()


def summarize_negatives(ious: torch.Tensor, edges: list[float]) -> dict[str, Any]:
    """Histogram, fractions, count and share above 0.05 of one method's sampled negatives.

    Args:
        ious: Tensor[M], the largest IoU with any GT box of every sampled negative (all images).

    Returns:
        {"counts": [K], "fractions": [K] (sum 1, or all 0 when M = 0), "num_negatives": M,
        "share_above_0.05": float, "mean_iou": float or None}.
    """
    counts = iou_histogram(ious, edges)
    total = sum(counts)
    return {
        "counts": counts,
        "fractions": [count / total if total else 0.0 for count in counts],
        "num_negatives": int(ious.numel()),
        "share_above_0.05": share_above(ious, EASY_IOU),
        "mean_iou": float(ious.double().mean()) if ious.numel() else None,
    }


def background_classification_loss(class_logits: torch.Tensor, sigmoid: bool) -> torch.Tensor:
    """The classification loss of each RoI if it is labelled background — what OHEM ranks negatives by.

    Softmax classifier ([R, C + 1] logits, background at column 0): the cross-entropy
    −log softmax(z)₀. Sigmoid classifier of an EQL run ([R, C] logits, no background logit): the BCE
    with an all-zero target summed over the classes, Σ_j −log(1 − σ(z_j)) = Σ_j softplus(z_j) (EQL
    keeps every weight at 1 for a background RoI, EQL paper §3).

    Returns:
        Tensor[R].
    """
    if sigmoid:
        return F.softplus(class_logits).sum(dim=1)
    return -F.log_softmax(class_logits, dim=1)[:, 0]


def negatives_three_ways(
    labels: torch.Tensor,
    max_iou: torch.Tensor,
    matched_gt: torch.Tensor,
    background_loss: torch.Tensor,
    *,
    random_sampler: RandomSampler,
    iou_sampler: IoUBalancedSampler,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """The negatives of one image chosen by random, hard and IoU-balanced sampling, equally many each.

    The count is what an RoI sampler with ``random_sampler``'s batch size and positive fraction takes:
    ``min(N⁻, batch − min(P, int(batch × fraction)))`` for P positives and N⁻ negatives.

    Args:
        labels: Int64Tensor[N]: > 0 positive, 0 negative, −1 ignored.
        max_iou: Tensor[N], each proposal's largest IoU with the GT boxes.
        matched_gt: Int64Tensor[N], the GT index each proposal is matched to.
        background_loss: Tensor[N], the classification loss if labelled background (only negatives read).
        random_sampler, iou_sampler: the two samplers (same batch size and positive fraction).
        generator: source of randomness for both samplers.

    Returns:
        {"random" | "hard" | "iou_balanced": Int64Tensor[n] of proposal indices}.
    """
    negatives = torch.where(labels == 0)[0]
    _, random_negative = random_sampler([labels], generator=generator)
    _, balanced_negative = iou_sampler([labels], [max_iou], [matched_gt], generator=generator)
    chosen = {
        "random": torch.where(random_negative[0])[0],
        "iou_balanced": torch.where(balanced_negative[0])[0],
    }
    chosen["hard"] = hard_negatives(background_loss, negatives, chosen["random"].numel())
    counts = {method: int(indices.numel()) for method, indices in chosen.items()}
    if len(set(counts.values())) != 1:
        raise RuntimeError(f"the samplers took different numbers of negatives: {counts}")
    return {method: chosen[method] for method in METHODS}


def iou_balanced_sampler_for(config: RunConfig, reading: str | None = None) -> IoUBalancedSampler:
    """The IoU-balanced sampler a run would use with ``--iou-sampling``: its model and ``libra`` settings,
    with the floor and the bins' upper end of a named reading ("reference" or "paper") when one is given,
    so that both readings can be measured on the same trained model."""
    if reading is not None:
        if reading not in READINGS:
            raise LibraError(f"--reading: {reading!r} is not one of {', '.join(READINGS)}")
        floor_thr, bins_upper = READINGS[reading]
        libra = dataclasses.replace(config.libra, iou_floor_thr=floor_thr, iou_bins_upper=bins_upper)
        config = dataclasses.replace(config, libra=libra)
    return iou_sampler_from_config(config)


def measure_sampling(run: ImageRun) -> dict[str, Any]:
    """IoU histograms of the negatives picked by random, hard and IoU-balanced sampling (paper Fig. 2).

    The option ``reading`` ("reference" or "paper") replaces the run's IoU-balanced floor and bins by a
    named reading's (see ``libra_cli.sampling.READINGS``); None keeps the run's own settings.

    Returns the ``sampling.json`` fields after the runner's: {"bin_edges", "methods": {method:
    summarize_negatives(...)}, "settings", "checkpoint"}.
    """
    inputs, seed = run.inputs, run.seed
    heads = inputs.model.roi_heads
    sigmoid = getattr(heads, "eql_tail_mask", None) is not None
    random_sampler = RandomSampler(heads.fg_bg_sampler.batch_size_per_image, heads.fg_bg_sampler.positive_fraction)
    iou_sampler = iou_balanced_sampler_for(inputs.config, run.options["reading"])
    generator = torch.Generator().manual_seed(seed)
    picked: dict[str, list[torch.Tensor]] = {method: [] for method in METHODS}
    num_candidates = 0
    for images, targets in run.batches():
        for max_ious, negatives, chosen in _negatives_of_batch(
            inputs.probe, images, targets, sigmoid, random_sampler, iou_sampler, generator
        ):
            for method, indices in chosen.items():
                picked[method].append(max_ious[indices].float().cpu())
            num_candidates += negatives.numel()

    edges = iou_bin_edges()
    model_cfg = inputs.config.model
    return {
        "bin_edges": edges,
        "methods": {method: summarize_negatives(torch.cat(picked[method]), edges) for method in METHODS},
        "settings": {
            **{name: getattr(iou_sampler, name) for name in SAMPLER_SETTINGS},
            "run_uses_iou_sampling": inputs.config.libra.iou_sampling,
            "rpn_pre_nms_top_n_train": model_cfg.rpn_pre_nms_top_n_train,
            "rpn_post_nms_top_n_train": model_cfg.rpn_post_nms_top_n_train,
            "hard_negative_loss": "sigmoid_bce" if sigmoid else "cross_entropy",
            "negative_candidates": num_candidates,
            "seed": seed,
        },
        "checkpoint": inputs.checkpoint,
    }


# The IoU-balanced sampler's settings sampling.json records, in its order.
SAMPLER_SETTINGS = (
    "batch_size_per_image",
    "positive_fraction",
    "num_bins",
    "floor_thr",
    "floor_fraction",
    "bins_upper",
    "reading",
    "neg_iou_thr",
    "pos_balance",
)


def _negatives_of_batch(
    probe: DetectorProbe,
    images: list[torch.Tensor],
    targets: list[dict[str, torch.Tensor]],
    sigmoid: bool,
    random_sampler: RandomSampler,
    iou_sampler: IoUBalancedSampler,
    generator: torch.Generator,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]]:
    """Per image of a batch: (max IoU of each proposal [N], indices of the negatives, the negatives each
    method picks as :func:`negatives_three_ways` gives them)."""
    batch = probe.forward_to_proposals(images, targets)
    proposals = batch.proposals_with_gt
    matched_gt, labels, max_ious = probe.match(proposals, batch.targets)

    # The background loss of every negative proposal, in one pass through the box head.
    negatives = [torch.where(image_labels == 0)[0] for image_labels in labels]
    negative_boxes = [boxes[index] for boxes, index in zip(proposals, negatives, strict=True)]
    _, class_logits, _ = probe.box_head(batch, negative_boxes)
    negative_losses = background_classification_loss(class_logits, sigmoid).split(
        [index.numel() for index in negatives]
    )
    for i in range(len(proposals)):
        loss = torch.zeros(labels[i].shape, dtype=negative_losses[i].dtype, device=labels[i].device)
        loss[negatives[i]] = negative_losses[i]
        chosen = negatives_three_ways(
            labels[i],
            max_ious[i],
            matched_gt[i],
            loss,
            random_sampler=random_sampler,
            iou_sampler=iou_sampler,
            generator=generator,
        )
        yield max_ious[i], negatives[i], chosen


READING = Option(
    "reading",
    "--reading",
    None,
    "IoU-balanced sampling as the reference code trains it (reference) or as the paper's text reads (paper); "
    "default: the run's own settings.",
    choices=tuple(READINGS),
)
analyze_sampling = ModelAnalysis(
    "sampling", measure_sampling, needs_roi_head="RetinaNet samples no RoIs", options=(READING,)
)


def sampling_csv(result: dict[str, Any]) -> str:
    """One row per IoU bin: its edges and each method's count and fraction."""
    edges = result["bin_edges"]
    header = ["iou_lo", "iou_hi"] + [f"{m}_{kind}" for m in METHODS for kind in ("count", "fraction")]
    rows = []
    for k in range(len(edges) - 1):
        row: list[Any] = [edges[k], edges[k + 1]]
        for method in METHODS:
            summary = result["methods"][method]
            row += [summary["counts"][k], round(summary["fractions"][k], 6)]
        rows.append(row)
    return csv_text(header, rows)


def sampling_figure(result: dict[str, Any]) -> bytes:
    """The paper's Fig. 2 view: the three IoU distributions of sampled negatives side by side (PNG)."""
    edges = result["bin_edges"]
    width = edges[1] - edges[0]
    figure = Figure(figsize=(7.5, 4.0))
    axes = figure.add_subplot()
    reading = result.get("settings", {}).get("reading")
    balanced = f"IoU-balanced, {reading} reading" if reading else "IoU-balanced"
    labels = {"random": "random", "hard": "hard (OHEM)", "iou_balanced": balanced}
    bar_width = width / (len(METHODS) + 1)
    for offset, method in enumerate(METHODS):
        summary = result["methods"][method]
        positions = [edges[k] + (offset + 1) * bar_width for k in range(len(edges) - 1)]
        label = f"{labels[method]} ({100 * summary['share_above_0.05']:.0f}% > {EASY_IOU})"
        axes.bar(positions, summary["fractions"], width=bar_width, label=label)
    axes.set_xticks(edges)
    axes.set_xlim(edges[0], edges[-1])
    axes.set_xlabel("IoU with the closest GT box")
    axes.set_ylabel("share of sampled negatives")
    axes.set_title(f"Negatives by IoU — {Path(result['run']).name}, {result['images']} {result['split']} images")
    axes.legend()
    return figure_png(figure)


write_sampling = Files("sampling", {"sampling.csv": sampling_csv}, {"sampling.png": sampling_figure})

ANALYSIS = Analysis(
    "sampling",
    "sample level (Libra R-CNN Fig. 2)",
    "IoU of the negatives random, hard (OHEM) and IoU-balanced sampling pick (the paper's Fig. 2).",
    analyze_sampling,
    write_sampling,
)
