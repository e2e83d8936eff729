"""Feature-level imbalance: how the pyramid levels differ, and what BFP changes (Libra R-CNN §3.2).

Per pyramid level, over N images, of every activation x of the level's maps:

    mean = E[x],   std = √(E[x²] − E[x]²),   mean_abs = E[|x|],
    energy_share = Σ x² over the level / Σ x² over all levels      (the shares sum to 1)

for the FPN output and, when the run has BFP, for the BFP output too, with the relative size of the
residual the BFP adds, ‖bfp_out − fpn_out‖ / ‖fpn_out‖ (Frobenius norms summed over all images before
the ratio). Only each image's own region of a padded batch is counted: at a level with stride s, the
first ⌈h/s⌉ rows and ⌈w/s⌉ columns of an image of size h × w.

The RoI head pools each RoI from one level, chosen as in the FPN paper (Eq. 1) by torchvision's
``LevelMapper``: k = ⌊k₀ + log₂(√(w·h) / 224) + 10⁻⁶⌋ clamped to the pooled levels, with k₀ = 4. The
level is named P_k: a 224 × 224 RoI goes to P4, a 112 × 112 one to P3. The histogram counts the RoIs the
run's sampler would pick in training. RetinaNet has no RoI head, so it has no such histogram.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torchvision.ops.poolers import initLevelMapper

from libra_cli.analysis.common import csv_text, figure_png, pyramid_level_names
from libra_cli.analysis.runner import Analysis, Files, ImageRun, ModelAnalysis
from libra_cli.components import TWO_STAGE

# Columns of a level's running sums: number of values, Σx, Σx², Σ|x|.
COUNT, SUM, SUM_SQ, SUM_ABS = range(4)


def level_sums(values: torch.Tensor) -> torch.Tensor:
    """Running sums of one level's activations: Tensor[4] float64 (count, Σx, Σx², Σ|x|)."""
    values = values.detach().double()
    return torch.stack(
        [
            torch.tensor(float(values.numel()), dtype=torch.float64, device=values.device),
            values.sum(),
            (values * values).sum(),
            values.abs().sum(),
        ]
    ).cpu()


def level_statistics(sums: torch.Tensor) -> list[dict[str, float]]:
    """Mean, std, mean |x| and energy share of each level from its running sums.

    Args:
        sums: Tensor[L, 4] of (count, Σx, Σx², Σ|x|) per level.

    Returns:
        L dicts {"mean", "std", "mean_abs", "energy_share"}; std is the population standard deviation
        √(E[x²] − E[x]²); the energy shares are Σx² of a level over Σx² of all levels and sum to 1
        (all 0 when every activation is 0).
    """
    sums = sums.double()
    total_energy = float(sums[:, SUM_SQ].sum())
    stats = []
    for count, total, total_sq, total_abs in sums.tolist():
        mean = total / count if count else 0.0
        variance = max(total_sq / count - mean * mean, 0.0) if count else 0.0
        stats.append(
            {
                "mean": mean,
                "std": math.sqrt(variance),
                "mean_abs": total_abs / count if count else 0.0,
                "energy_share": total_sq / total_energy if total_energy > 0 else 0.0,
            }
        )
    return stats


def image_regions(
    level: torch.Tensor, image_sizes: list[tuple[int, int]], padded_size: tuple[int, int]
) -> list[torch.Tensor]:
    """Each image's own part of one level of a padded batch.

    Args:
        level: Tensor[B, C, H_l, W_l], the level for a batch padded to ``padded_size`` (H, W).
        image_sizes: per image, (h, w) before padding.

    Returns:
        Per image, Tensor[C, ⌈h·H_l/H⌉, ⌈w·W_l/W⌉] (a view).
    """
    height, width = padded_size
    regions = []
    for index, (h, w) in enumerate(image_sizes):
        rows = min(level.shape[-2], math.ceil(h * level.shape[-2] / height))
        cols = min(level.shape[-1], math.ceil(w * level.shape[-1] / width))
        regions.append(level[index, :, :rows, :cols])
    return regions


def pyramid_sums(
    levels: list[torch.Tensor], image_sizes: list[tuple[int, int]], padded_size: tuple[int, int]
) -> torch.Tensor:
    """Tensor[L, 4] running sums of a batch's pyramid, each image's own region only."""
    rows = []
    for level in levels:
        per_image = [level_sums(region) for region in image_regions(level, image_sizes, padded_size)]
        rows.append(torch.stack(per_image).sum(dim=0))
    return torch.stack(rows)


def squared_norms(
    levels: list[torch.Tensor], image_sizes: list[tuple[int, int]], padded_size: tuple[int, int]
) -> torch.Tensor:
    """Tensor[L] float64: Σ x² of each level over the images' own regions."""
    return pyramid_sums(levels, image_sizes, padded_size)[:, SUM_SQ]


def roi_level_histogram(
    boxes: torch.Tensor,
    k_min: int,
    k_max: int,
    canonical_scale: int = 224,
    canonical_level: int = 4,
) -> dict[str, int]:
    """How many RoIs the multi-scale RoI pooler assigns to each level P_{k_min} … P_{k_max}.

    Uses torchvision's ``LevelMapper`` (the FPN paper's Eq. 1):
    k = clamp(⌊canonical_level + log₂(√area / canonical_scale) + 10⁻⁶⌋, k_min, k_max).

    Args:
        boxes: Tensor[R, 4] (x1, y1, x2, y2) in the resized image's pixels.
        k_min, k_max: the finest and coarsest pooled level (2 and 5 for P2–P5).

    Returns:
        {"P{k}": count} for every k in k_min..k_max, in order.
    """
    mapper = initLevelMapper(k_min, k_max, canonical_scale=canonical_scale, canonical_level=canonical_level)
    counts = torch.zeros(k_max - k_min + 1, dtype=torch.int64)
    if boxes.numel():
        counts = torch.bincount(mapper([boxes]).cpu(), minlength=k_max - k_min + 1)
    return {f"P{k_min + offset}": int(count) for offset, count in enumerate(counts.tolist())}


def pooled_level_range(
    features: dict[str, torch.Tensor], featmap_names: list[str], image_sizes: list[tuple[int, int]]
) -> tuple[int, int]:
    """(k_min, k_max) of the pooled maps, inferred as torchvision's pooler does.

    A map of height H_l for images at most H high has stride 2^k with k = round(log₂(H / H_l)).
    """
    max_height = max(h for h, _ in image_sizes)
    levels = [round(math.log2(max_height / features[name].shape[-2])) for name in featmap_names]
    return levels[0], levels[-1]


class _PyramidSums:
    """Running sums over the batches: the FPN's and BFP's per-level sums, the BFP residual's Σx², the RoIs
    per pooling level."""

    def __init__(self) -> None:
        self.fpn: torch.Tensor | None = None
        self.bfp: torch.Tensor | None = None
        self.residual_sq: torch.Tensor | None = None
        self.roi_levels: dict[str, int] | None = None
        self.level_keys: list[str] = []

    @staticmethod
    def _add(total: torch.Tensor | None, batch: torch.Tensor) -> torch.Tensor:
        return batch if total is None else total + batch

    def add_pyramids(
        self, fpn: dict[str, torch.Tensor], features: dict[str, torch.Tensor], has_bfp: bool, sizes, padded
    ) -> None:
        self.level_keys = list(fpn.keys())
        self.fpn = self._add(self.fpn, pyramid_sums(list(fpn.values()), sizes, padded))
        if has_bfp:
            self.bfp = self._add(self.bfp, pyramid_sums(list(features.values()), sizes, padded))
            residual = [after - before for after, before in zip(features.values(), fpn.values(), strict=True)]
            self.residual_sq = self._add(self.residual_sq, squared_norms(residual, sizes, padded))

    def add_rois(self, counts: dict[str, int]) -> None:
        self.roi_levels = counts if self.roi_levels is None else {k: self.roi_levels[k] + counts[k] for k in counts}

    def levels(self, arch: str) -> list[dict[str, Any]]:
        """Per level {"level", "key", "mean", "std", "mean_abs", "energy_share"}, with BFP also the same
        prefixed "bfp_" and "bfp_residual_ratio"."""
        assert self.fpn is not None  # the dataset has at least one image
        names = pyramid_level_names(arch, len(self.level_keys))
        levels: list[dict[str, Any]] = [
            {"level": name, "key": key, **stats}
            for name, key, stats in zip(names, self.level_keys, level_statistics(self.fpn), strict=True)
        ]
        if self.bfp is not None:
            assert self.residual_sq is not None
            for row, stats, res_sq, base_sq in zip(
                levels, level_statistics(self.bfp), self.residual_sq.tolist(), self.fpn[:, SUM_SQ].tolist(), strict=True
            ):
                row.update({f"bfp_{name}": value for name, value in stats.items()})
                row["bfp_residual_ratio"] = math.sqrt(res_sq / base_sq) if base_sq > 0 else None
        return levels


def measure_features(run: ImageRun) -> dict[str, Any]:
    """Per-level statistics of the FPN (and BFP) outputs and the RoI-to-level histogram.

    Returns the ``features.json`` fields after the runner's: {"levels": [per level {"level", "mean",
    "std", "mean_abs", "energy_share"} plus, with BFP, the same prefixed "bfp_" and "bfp_residual_ratio"],
    "bfp", "roi_levels": {"P2": count, …} or None, "roi_levels_note", "checkpoint"}.
    """
    inputs = run.inputs
    model, probe = inputs.model, inputs.probe
    has_bfp = probe.has_bfp
    is_faster_rcnn = inputs.arch in TWO_STAGE  # Faster and Mask R-CNN: an RoI head
    sums = _PyramidSums()
    for images, targets in run.batches():
        image_list, targets = probe.transform(images, targets)
        sizes, padded = image_list.image_sizes, tuple(image_list.tensors.shape[-2:])
        fpn, features = probe.pyramid(image_list)
        sums.add_pyramids(fpn, features, has_bfp, sizes, padded)
        if is_faster_rcnn:
            sampled = probe.sample(probe.training_proposals(image_list, features), targets).boxes
            pooler = model.roi_heads.box_roi_pool
            k_min, k_max = pooled_level_range(features, pooler.featmap_names, sizes)
            sums.add_rois(
                roi_level_histogram(torch.cat(sampled), k_min, k_max, pooler.canonical_scale, pooler.canonical_level)
            )
    return {
        "levels": sums.levels(inputs.arch),
        "bfp": has_bfp,
        "roi_levels": sums.roi_levels,
        "roi_levels_note": (
            "RoIs sampled by the run's RoI sampler (training-time proposals, GT boxes added), assigned to "
            "levels by torchvision's LevelMapper (canonical 224 px at level 4)"
            if is_faster_rcnn
            else "skipped: RetinaNet has no RoI head"
        ),
        "checkpoint": inputs.checkpoint,
    }


analyze_features = ModelAnalysis("features", measure_features)


FEATURE_COLUMNS = ("mean", "std", "mean_abs", "energy_share")


def features_csv(result: dict[str, Any]) -> str:
    """One row per pyramid level (with the BFP columns when present) plus its RoI count."""
    columns = list(FEATURE_COLUMNS)
    if result["bfp"]:
        columns += [f"bfp_{name}" for name in FEATURE_COLUMNS] + ["bfp_residual_ratio"]
    header = ["level", *columns, "rois"]
    roi_levels = result["roi_levels"] or {}
    rows = [
        [row["level"], *(row[name] for name in columns), roi_levels.get(row["level"], "")] for row in result["levels"]
    ]
    return csv_text(header, rows)


def features_figure(result: dict[str, Any]) -> bytes:
    """Energy share per level (FPN, and BFP when present) beside the RoI-per-level histogram (PNG)."""
    names = [row["level"] for row in result["levels"]]
    figure = Figure(figsize=(10.0, 4.0))
    energy_axes, roi_axes = figure.subplots(1, 2)
    positions = list(range(len(names)))
    width = 0.4 if result["bfp"] else 0.6
    energy_axes.bar(
        [p - (width / 2 if result["bfp"] else 0) for p in positions],
        [row["energy_share"] for row in result["levels"]],
        width=width,
        label="FPN",
    )
    if result["bfp"]:
        energy_axes.bar(
            [p + width / 2 for p in positions],
            [row["bfp_energy_share"] for row in result["levels"]],
            width=width,
            label="BFP",
        )
    energy_axes.set_xticks(positions, names)
    energy_axes.set_ylabel("share of Σx² over all levels")
    energy_axes.set_title("feature energy per level")
    energy_axes.legend()
    if result["roi_levels"]:
        roi_names = list(result["roi_levels"])
        counts = list(result["roi_levels"].values())
        total = sum(counts) or 1
        roi_axes.bar(roi_names, [count / total for count in counts], width=0.6)
        roi_axes.set_ylabel("share of sampled RoIs")
        roi_axes.set_title("RoI pooling level (LevelMapper)")
    else:
        roi_axes.set_axis_off()
        roi_axes.text(0.5, 0.5, result["roi_levels_note"], ha="center", va="center", wrap=True)
    figure.suptitle(f"Pyramid levels — {Path(result['run']).name}, {result['images']} {result['split']} images")
    return figure_png(figure)


write_features = Files("features", {"features.csv": features_csv}, {"features.png": features_figure})


def features_notes(result: dict[str, Any]) -> list[str]:
    """Why the RoI levels are missing, under the tables (a RetinaNet run)."""
    return [f"RoI levels: {result['roi_levels_note']}"] if result["roi_levels"] is None else []


ANALYSIS = Analysis(
    "features",
    "feature level (Libra R-CNN §3.2)",
    "Per pyramid level: FPN (and BFP) activation statistics and the RoIs pooled from each level.",
    analyze_features,
    write_features,
    notes=features_notes,
)
