"""The report's tables: numbers from run groups, formatted as they are printed.

Metrics are kept as the evaluators write them (fractions in [0, 1], printed with 3 decimals). A group of
seeds shows ``mean ± std`` with the sample standard deviation (n − 1 in the denominator); a group of one
run has no spread, printed "—". Missing values (``null`` in metrics.json) print as "—" and stay out of
means. The paper's numbers (Libra R-CNN Table 2) are COCO/LVIS percentages from full-size training and appear only
in their own, separately labelled tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from libra_cli import components
from libra_cli.config import RunConfig, resolved_component_settings
from libra_cli.report.collect import (
    IGNORED_KEYS,
    SEED_KEYS,
    RunGroup,
    split_loss_terms,
    train_records,
)
from libra_cli.report.document import Code, Table, table
from libra_cli.report.significance import CONFIDENCE, NOISE_NOT_MEASURED, DeltaInterval, IntervalFinder

COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
ABLATION_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
LVIS_METRICS = ("AP", "AP50", "AP75", "APr", "APc", "APf")
COMPONENTS = tuple(component.switch for component in components.COMPONENTS)
COMPONENT_TITLES = {component.switch: component.label for component in components.COMPONENTS}
# The paper's Table 2 adds the components in this order, each on top of the previous ones.
CUMULATIVE_ORDER = tuple(component.switch for component in components.COMPONENTS if component.table2_step)
SWITCH_KEYS = tuple(f"libra.{name}" for name in COMPONENTS)
DASH = "—"

# Libra R-CNN Table 2: COCO val2017, ResNet-50-FPN Faster R-CNN, 1x schedule, AP in %.
PAPER_TABLE2 = (
    ("baseline", (35.9, 58.0, 38.4, 21.2, 39.5, 46.4)),
    ("+ IoU-balanced sampling", (36.8, 58.0, 40.0, 21.1, 40.3, 48.2)),
    ("+ BFP", (37.7, 59.4, 40.9, 22.4, 41.3, 49.3)),
    ("+ balanced L1 (full Libra)", (38.5, 59.3, 42.0, 22.9, 42.1, 50.5)),
)
# EQL paper (Tan et al., CVPR 2020): LVIS v0.5 val, R50-FPN Mask R-CNN, mask AP in % (box AP in the last column).
PAPER_EQL = (
    ("Mask R-CNN baseline", (20.1, 7.2, 19.9, 25.4, 20.5)),
    ("+ EQL", (22.8, 11.3, 24.7, 25.1, 23.3)),
)


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation of the non-missing values; ``std`` is None for n = 1."""

    mean: float
    std: float | None
    n: int


def summarize(values: list[float | None]) -> Stat | None:
    present = [float(value) for value in values if value is not None and not math.isnan(float(value))]
    if not present:
        return None
    n = len(present)
    mean = sum(present) / n
    std = math.sqrt(sum((value - mean) ** 2 for value in present) / (n - 1)) if n > 1 else None
    return Stat(mean, std, n)


def format_number(value: float | None, digits: int = 3) -> str:
    return DASH if value is None else f"{value:.{digits}f}"


def format_stat(stat: Stat | None, with_std: bool, digits: int = 3) -> str:
    """``0.400 ± 0.100`` (with_std), ``0.400 ± —`` for a single run among groups, ``0.400`` otherwise."""
    if stat is None:
        return DASH
    if not with_std:
        return f"{stat.mean:.{digits}f}"
    spread = DASH if stat.std is None else f"{stat.std:.{digits}f}"
    return f"{stat.mean:.{digits}f} ± {spread}"


def format_delta(value: float | None, digits: int = 3) -> str:
    return DASH if value is None else f"{value:+.{digits}f}"


def format_general(value: Any) -> str:
    """An analysis statistic: 4 significant digits, integers as they are, missing as "—"."""
    if value is None:
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return DASH if math.isnan(value) else f"{value:.4g}"
    return str(value)


def format_share(value: Any) -> str:
    return DASH if not isinstance(value, int | float) else f"{100 * value:.1f}%"


def group_stat(group: RunGroup, name: str, iou_type: str = "bbox") -> Stat | None:
    return summarize(group.summary_values(name, iou_type))


def evaluated_runs(group: RunGroup) -> int:
    return sum(run.metrics is not None for run in group.runs)


def show_spread(groups: list[RunGroup]) -> bool:
    """Print ``mean ± std`` when any group repeats a configuration over seeds."""
    return any(len(group.runs) > 1 for group in groups)


def config_differences(groups: list[RunGroup]) -> list[str]:
    """Flattened setting names whose values differ between groups (seed, output folder and the component
    switches, shown in their own columns, excluded), in config order."""
    skip = set(SEED_KEYS) | set(IGNORED_KEYS) | set(SWITCH_KEYS)
    keys: list[str] = []
    for group in groups:
        keys += [key for key in group.flat_config if key not in keys and key not in skip]
    return [key for key in keys if len({repr(group.flat_config.get(key)) for group in groups}) > 1]


def _setting(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(str(item) for item in value) + "]"
    return "null" if value is None else str(value)


# Data settings whose null means the default synthetic benchmark (config.py, ``DataConfig.train_ann``).
SYNTHETIC_DATA_KEYS = ("data.train_ann", "data.train_images", "data.val_ann", "data.val_images")


def resolved_setting(config: RunConfig, key: str) -> str:
    """A flattened setting as the run used it, for display: a null the detector builder or the data
    loader fills in later reads as what it becomes.

    ``libra.bfp_refine_level`` and ``libra.bl1_beta`` resolve per architecture
    (``resolved_component_settings``: refine level 2 for Faster / Mask R-CNN, 1 for RetinaNet — P4 in
    both pyramids; β 1.0 and 0.11), the data files to the synthetic benchmark in ``data.synth_dir``.
    A resolved default is marked "(default)"; every other value prints as it is saved. A component's
    setting in a run with that component off is marked so ("0.035 (EQL off)"): it did not act on training.
    """
    section, name = key.split(".", 1)
    owner = components.setting_owner(name) if section == "libra" else None
    shown = _resolved_value(config, key)
    return f"{shown} ({owner.label} off)" if owner and not getattr(config.libra, owner.switch) else shown


def _resolved_value(config: RunConfig, key: str) -> str:
    section, name = key.split(".", 1)
    value = getattr(getattr(config, section), name)
    resolved = resolved_component_settings(config)
    if key == "libra.bfp_refine_level":
        level = resolved["bfp_refine_level"]
        first = 3 if config.model.arch == components.RETINANET else 2  # P3–P7 or P2–P6
        return f"{level} (P{first + level}{', default' if value is None else ''})"
    if key == "libra.bl1_beta" and value is None:
        return f"{resolved['bl1_beta']:g} (default)"
    if key in SYNTHETIC_DATA_KEYS and value is None:
        return f"synthetic benchmark in {config.data.synth_dir} (default)"
    return _setting(tuple(value) if isinstance(value, list) else value)


def runs_table(groups: list[RunGroup]) -> Table:
    """One row per configuration: switches, architecture, seeds, iterations and the settings that differ."""
    differing = config_differences(groups)
    headers = [
        "run",
        "n",
        "seeds",
        "arch",
        *(COMPONENT_TITLES[name] for name in COMPONENTS),
        "iters",
        *differing,
    ]
    rows = []
    for group in groups:
        config = group.config
        iterations = sorted({run.iterations for run in group.runs if run.iterations is not None})
        rows.append(
            [
                group.label,
                str(len(group.runs)),
                ", ".join(str(seed) for seed in group.seeds),
                f"{config.model.arch} {config.model.backbone}",
                *("✓" if getattr(config.libra, name) else DASH for name in COMPONENTS),
                ", ".join(str(it) for it in iterations) or DASH,
                *(Code(resolved_setting(config, key)) for key in differing),
            ]
        )
    numeric = [False, True, False, False, *(False for _ in COMPONENTS), True, *(False for _ in differing)]
    return table(headers, rows, numeric)


def metrics_table(groups: list[RunGroup], names: tuple[str, ...] = COCO_METRICS) -> Table:
    """Summary metrics per group (mean ± std over seeds when any group has several)."""
    present = [name for name in names if any(group_stat(group, name) is not None for group in groups)]
    columns = present or list(names[:6])
    spread = show_spread(groups)
    rows = [
        [
            group.label,
            str(evaluated_runs(group)),
            *(format_stat(group_stat(group, name), spread) for name in columns),
        ]
        for group in groups
    ]
    return table(["run", "n", *columns], rows, [False, True, *(True for _ in columns)])


BOX_AND_MASK = ("AP", "AP50", "AP75")
VOC_METRICS = ("mAP", "mAP_07", "AP50", "AP")


def has_masks(group: RunGroup) -> bool:
    """A group with mask metrics (Mask R-CNN runs evaluated with their segmentations)."""
    return any((run.metrics or {}).get("segm") for run in group.runs)


def is_voc(group: RunGroup) -> bool:
    return any("mAP" in (run.metrics or {}).get("summary", {}) for run in group.runs)


def box_and_mask_table(groups: list[RunGroup], names: tuple[str, ...] = BOX_AND_MASK) -> Table:
    """Box and mask metrics side by side, mean ± std over seeds when any group has several."""
    spread = show_spread(groups)
    rows = [
        [
            group.label,
            str(evaluated_runs(group)),
            *(format_stat(group_stat(group, name), spread) for name in names),
            *(format_stat(group_stat(group, name, "segm"), spread) for name in names),
        ]
        for group in groups
    ]
    headers = [f"box {name}" for name in names] + [f"mask {name}" for name in names]
    return table(["run", "n", *headers], rows, [False, True, *(True for _ in headers)])


def lvis_metric_names(groups: list[RunGroup]) -> tuple[str, ...]:
    """LVIS_METRICS plus the AR entry LVISEval names after its detection limit (``AR@300``)."""
    extra = []
    for group in groups:
        for run in group.runs:
            for name in (run.metrics or {}).get("summary", {}):
                if name.startswith("AR@") and name not in extra:
                    extra.append(name)
    return LVIS_METRICS + tuple(extra[:1])


def is_lvis(group: RunGroup) -> bool:
    return any((run.metrics or {}).get("format") == "lvis" for run in group.runs)


def cumulative_settings(groups: list[RunGroup], baseline: RunGroup) -> list[tuple[str, RunGroup]] | None:
    """Rows in the paper's Table 2 order when the runs are its cumulative ablation.

    That is the case when the baseline has no component on and every group's components are a distinct
    prefix of (IoU sampling, BFP, balanced L1); the row names then follow the paper: each row names every
    component it adds to the row above, so rows that skip steps read e.g.
    "+ IoU-balanced sampling + BFP + balanced L1" for full Libra straight after the baseline.
    """
    if baseline.components:
        return None
    prefixes = {}
    for group in groups:
        components = tuple(group.components)
        if components != CUMULATIVE_ORDER[: len(components)] or components in prefixes:
            return None
        prefixes[components] = group
    rows, previous = [], 0
    for components in sorted(prefixes, key=len):
        added = CUMULATIVE_ORDER[previous : len(components)]
        rows.append((" ".join(f"+ {COMPONENT_TITLES[name]}" for name in added) or "baseline", prefixes[components]))
        previous = len(components)
    return rows


def describe_components(group: RunGroup) -> str:
    return " + ".join(COMPONENT_TITLES[name] for name in group.components) or "no components"


def ablation_table(
    groups: list[RunGroup], baseline: RunGroup, intervals: IntervalFinder | None = None
) -> tuple[Table, bool]:
    """The paper's Table 2 layout: AP … APl with Δ against the baseline (difference of group means), and
    next to ΔAP its 95 % confidence interval and verdict (``significance.py``; the caption names the
    method of each row).

    Returns the table and whether its rows are the paper's cumulative order.
    """
    ordered, cumulative = ablation_rows(groups, baseline)
    finder = intervals or IntervalFinder(baseline)
    spread = show_spread(groups)
    headers = ["setting", "run", "n"]
    for name in ABLATION_METRICS:
        headers += [name, f"Δ{name}", *(INTERVAL_HEADERS if name == INTERVAL_METRIC else ())]
    rows, shown = [], []
    for setting, group in ordered:
        row: list[Any] = [setting, group.label, str(evaluated_runs(group))]
        for name in ABLATION_METRICS:
            stat, reference = group_stat(group, name), group_stat(baseline, name)
            delta = None if group is baseline or stat is None or reference is None else stat.mean - reference.mean
            row += [format_stat(stat, spread), format_delta(delta)]
            if name == INTERVAL_METRIC:
                interval = None if group is baseline else finder.interval(group, name)
                row += [format_interval(interval), (interval.verdict if interval else None) or DASH]
                if interval is not None:
                    shown.append((group.label, interval))
        rows.append(row)
    numeric = [False, False, True, *(header != "verdict" for header in headers[3:])]
    return table(headers, rows, numeric, interval_caption(shown)), cumulative


def ablation_rows(groups: list[RunGroup], baseline: RunGroup) -> tuple[list[tuple[str, RunGroup]], bool]:
    """The ablation's (setting, group) rows, baseline first, and whether they are the paper's cumulative order."""
    ordered = cumulative_settings(groups, baseline)
    if ordered is not None:
        return ordered, True
    others = [group for group in groups if group is not baseline]
    rows = [(f"baseline ({describe_components(baseline)})", baseline)]
    return rows + [(describe_components(group), group) for group in others], False


def intervals_table(groups: list[RunGroup], baseline: RunGroup, intervals: IntervalFinder) -> Table | None:
    """Every Δ of the ablation table with its 95 % confidence interval and verdict, one column per metric
    (``Δ [low, high] verdict``); None when no row has an interval."""
    ordered, _ = ablation_rows(groups, baseline)
    rows, shown = [], []
    for setting, group in ordered:
        if group is baseline:
            continue
        row: list[Any] = [setting, group.label]
        for name in ABLATION_METRICS:
            interval = intervals.interval(group, name)
            shown.append(interval)
            stat, reference = group_stat(group, name), group_stat(baseline, name)
            cell = format_delta(None if stat is None or reference is None else stat.mean - reference.mean)
            if interval.low is not None and interval.high is not None:
                cell += f" {format_interval(interval)} {interval.verdict}"
            row.append(cell)
        rows.append(row)
    if not any(interval.low is not None for interval in shown):
        return None
    caption = (
        f"Every Δ against the baseline with its {100 * CONFIDENCE:g} % confidence interval and verdict, by the "
        "method the ΔAP caption names for each row (the bootstrap resamples the same images for every metric)."
    )
    headers = ["setting", "run", *(f"Δ{name}" for name in ABLATION_METRICS)]
    return table(headers, rows, [False, False] + [True] * len(ABLATION_METRICS), caption)


# The metric whose Δ gets its confidence interval in the ablation table itself (every metric's is in
# intervals_table): one interval column keeps that table readable.
INTERVAL_METRIC = "AP"
INTERVAL_HEADERS = ("95 % CI", "verdict")


def format_interval(interval: DeltaInterval | None, digits: int = 3) -> str:
    if interval is None or interval.low is None or interval.high is None:
        return DASH
    return f"[{interval.low:+.{digits}f}, {interval.high:+.{digits}f}]"


def interval_caption(rows: list[tuple[str, DeltaInterval]]) -> str | None:
    """Which interval each row's "95 % CI" is, rows with the same method named together."""
    if not rows:
        return None
    methods: dict[str, list[str]] = {}
    for label, interval in rows:
        key = interval.detail if interval.low is not None else f"none ({interval.detail})"
        methods.setdefault(key, []).append(label)
    parts = "; ".join(f"{method}: {', '.join(labels)}" for method, labels in methods.items())
    return (
        f"{100 * CONFIDENCE:g} % CI of Δ{INTERVAL_METRIC} — {parts}. The t interval of the per-seed differences "
        "when both groups ran the same seeds, Welch's t interval over the seeds of both groups when they did not, "
        "or for one run against one run a paired bootstrap over the validation images (percentiles 2.5 and 97.5 "
        "of the resampled differences) widened by the seed-to-seed spread measured for both runs' preset and "
        'schedule; the verdict is "better" or "worse" when the interval excludes 0 on that side, "within noise" '
        f'otherwise, and "{NOISE_NOT_MEASURED}" when a bootstrap interval excludes 0 but no seed-to-seed spread '
        "was measured (the images' noise alone does not make a verdict)."
    )


def paper_table2() -> Table:
    """Libra R-CNN's Table 2 with Δ against the paper's own baseline, in AP points (%)."""
    base = PAPER_TABLE2[0][1]
    headers = ["setting (paper, COCO val2017, R50-FPN 1x)"]
    for name in ABLATION_METRICS:
        headers += [f"{name} (%)", f"Δ{name}"]
    rows = []
    for index, (setting, values) in enumerate(PAPER_TABLE2):
        row = [setting]
        for value, reference in zip(values, base, strict=True):
            row += [f"{value:.1f}", DASH if index == 0 else f"{value - reference:+.1f}"]
        rows.append(row)
    return table(headers, rows, [False, *(True for _ in range(2 * len(ABLATION_METRICS)))])


def paper_eql_table() -> Table:
    headers = ["setting (paper, LVIS v0.5 val, R50-FPN Mask R-CNN)", "AP (%)", "APr", "APc", "APf", "box AP"]
    rows = [[setting, *(f"{value:.1f}" for value in values)] for setting, values in PAPER_EQL]
    return table(headers, rows, [False, True, True, True, True, True])


@dataclass(frozen=True)
class CategoryAP:
    category_id: Any
    name: str
    frequency: str | None
    num_gt: int | None
    ap: Stat | None


def category_stats(group: RunGroup) -> list[CategoryAP]:
    """Per-category AP of a group (mean ± std over its seeds), sorted by mean AP, best first; categories
    without AP (no ground truth) last."""
    by_id: dict[Any, dict[str, Any]] = {}
    for run in group.runs:
        for row in (run.metrics or {}).get("per_category", []) or []:
            entry = by_id.setdefault(
                row.get("category_id"),
                {
                    "name": str(row.get("name", row.get("category_id"))),
                    "frequency": row.get("frequency"),
                    "num_gt": row.get("num_gt"),
                    "values": [],
                },
            )
            entry["values"].append(row.get("AP"))
    stats = [
        CategoryAP(cid, entry["name"], entry["frequency"], entry["num_gt"], summarize(entry["values"]))
        for cid, entry in by_id.items()
    ]
    return sorted(stats, key=lambda item: (item.ap is None, -(item.ap.mean if item.ap else 0.0), str(item.name)))


def category_table(groups: list[RunGroup]) -> Table:
    """Per-category AP, one column per group, rows in the first group's order (best first)."""
    spread = show_spread(groups)
    per_group = [{item.category_id: item for item in category_stats(group)} for group in groups]
    order = [item.category_id for item in category_stats(groups[0])]
    for stats in per_group[1:]:
        order += [cid for cid in stats if cid not in order]
    lvis = any(item.frequency for stats in per_group for item in stats.values())
    headers = ["category", "id", *(["freq"] if lvis else []), "GT boxes", *(group.label for group in groups)]
    rows = []
    for cid in order:
        first = next(stats[cid] for stats in per_group if cid in stats)
        row = [
            first.name,
            str(cid),
            *([first.frequency or DASH] if lvis else []),
            format_general(first.num_gt),
        ]
        row += [format_stat(stats[cid].ap, spread) if cid in stats else DASH for stats in per_group]
        rows.append(row)
    numeric = [False, True, *([False] if lvis else []), True, *(True for _ in groups)]
    return table(headers, rows, numeric)


@dataclass(frozen=True)
class TrainingSummary:
    final_loss: Stat | None
    final_cls: Stat | None
    final_reg: Stat | None
    time_per_iter: Stat | None
    peak_memory_mb: float | None


def training_summary(group: RunGroup) -> TrainingSummary:
    """Last logged losses (mean over seeds), median seconds per iteration, peak memory."""
    losses, cls_sums, reg_sums, times, memory = [], [], [], [], []
    for run in group.runs:
        records = train_records(run)
        if not records:
            continue
        last = records[-1]
        cls_terms, reg_terms = split_loss_terms(last)
        losses.append(last.get("loss"))
        cls_sums.append(sum(cls_terms.values()) if cls_terms else None)
        reg_sums.append(sum(reg_terms.values()) if reg_terms else None)
        run_times = sorted(r["time_per_iter"] for r in records if isinstance(r.get("time_per_iter"), int | float))
        times.append(run_times[len(run_times) // 2] if run_times else None)
        memory += [r["memory_mb"] for r in records if isinstance(r.get("memory_mb"), int | float)]
    return TrainingSummary(
        summarize(losses),
        summarize(cls_sums),
        summarize(reg_sums),
        summarize(times),
        max(memory) if memory else None,
    )


def training_table(groups: list[RunGroup]) -> Table:
    spread = show_spread(groups)
    headers = ["run", "final loss", "cls terms", "box-reg terms", "cls / reg", "s / iter", "peak memory (MB)"]
    rows = []
    for group in groups:
        summary = training_summary(group)
        ratio = None
        if summary.final_cls and summary.final_reg and summary.final_reg.mean > 0:
            ratio = summary.final_cls.mean / summary.final_reg.mean
        rows.append(
            [
                group.label,
                format_stat(summary.final_loss, spread),
                format_stat(summary.final_cls, spread),
                format_stat(summary.final_reg, spread),
                format_number(ratio, 2),
                format_stat(summary.time_per_iter, spread),
                format_number(summary.peak_memory_mb, 0),
            ]
        )
    return table(headers, rows, [False, *(True for _ in headers[1:])])
