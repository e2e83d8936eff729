"""Tables of the ``libra analyze`` outputs (RUN_DIR/analysis/*.json), one function per JSON schema.

Each table reads the fields it knows and prints "—" for any that are missing, so a report still builds
from an older or partial analysis file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from libra_cli.report.document import Table, table
from libra_cli.report.tables import DASH, format_general, format_share

SAMPLING_METHODS = ("random", "hard", "iou_balanced")


class AnalysedRun(Protocol):
    """What these tables read of a run: its label and its analyses' JSON by name (a ``RunRecord``)."""

    label: str
    analyses: dict[str, dict[str, Any]]


def sampling_share_table(runs: list[AnalysedRun]) -> Table:
    """Per run and sampling method: how many negatives and which share has IoU > 0.05 (paper Fig. 2)."""
    rows = []
    for run in runs:
        data = run.analyses["sampling"]
        methods = data.get("methods") or {}
        for method in [
            *(m for m in SAMPLING_METHODS if m in methods),
            *(m for m in methods if m not in SAMPLING_METHODS),
        ]:
            stats = methods[method] or {}
            reading = (data.get("settings") or {}).get("reading")
            rows.append(
                [
                    run.label,
                    f"{method} ({reading} reading)" if method == "iou_balanced" and reading else method,
                    format_general(stats.get("num_negatives")),
                    format_share(stats.get("share_above_0.05")),
                    format_general(data.get("images")),
                ]
            )
    headers = ["run", "method", "negatives", "IoU > 0.05", "images"]
    return table(headers, rows, [False, False, True, True, True])


def sampling_histogram_table(run: AnalysedRun) -> Table | None:
    """Share of negatives per IoU bin, one column per method."""
    data = run.analyses["sampling"]
    edges = data.get("bin_edges") or []
    methods = data.get("methods") or {}
    names = [m for m in SAMPLING_METHODS if m in methods] + [m for m in methods if m not in SAMPLING_METHODS]
    if len(edges) < 2 or not names:
        return None
    rows = []
    for index in range(len(edges) - 1):
        row = [f"[{edges[index]:.2f}, {edges[index + 1]:.2f})"]
        for name in names:
            fractions = (methods[name] or {}).get("fractions") or []
            row.append(format_share(fractions[index]) if index < len(fractions) else DASH)
        rows.append(row)
    reading = (data.get("settings") or {}).get("reading")
    caption = f"{run.label}: negatives per IoU bin ({format_general(data.get('images'))} {data.get('split', '')} images"
    caption += f"; IoU-balanced: {reading} reading)" if reading else ")"
    return table(["IoU bin", *names], rows, [False, *(True for _ in names)], caption=caption)


FEATURE_COLUMNS = ("mean", "std", "mean_abs", "energy_share")
BFP_FEATURE_COLUMNS = ("bfp_mean", "bfp_std", "bfp_mean_abs", "bfp_energy_share", "bfp_residual_ratio")


def features_table(run: AnalysedRun) -> Table | None:
    data = run.analyses["features"]
    levels = data.get("levels") or []
    if not levels:
        return None
    columns = list(FEATURE_COLUMNS)
    if data.get("bfp") or any(key in level for level in levels for key in BFP_FEATURE_COLUMNS):
        columns += list(BFP_FEATURE_COLUMNS)
    roi_levels = data.get("roi_levels") or {}
    headers = ["level", *columns, *(["RoIs assigned"] if roi_levels else [])]
    rows = []
    for level in levels:
        name = str(level.get("level", "?"))
        row = [name]
        for column in columns:
            value = level.get(column)
            row.append(format_share(value) if column.endswith("energy_share") else format_general(value))
        if roi_levels:
            row.append(format_general(roi_levels.get(name)))
        rows.append(row)
    caption = f"{run.label}: pyramid level statistics over {format_general(data.get('images'))} images"
    return table(headers, rows, [False, *(True for _ in headers[1:])], caption=caption)


GRADIENT_COLUMNS = (
    ("num_inliers", "inliers"),
    ("num_outliers", "outliers"),
    ("inlier_mean_grad", "inlier mean |grad|"),
    ("outlier_mean_grad", "outlier mean |grad|"),
    ("inlier_outlier_ratio", "inlier / outlier"),
    ("inlier_grad_share", "inlier share"),
    ("outlier_grad_share", "outlier share"),
)


def gradients_table(runs: list[AnalysedRun]) -> Table:
    """Per run and box loss: inlier vs outlier gradients (Libra R-CNN §3.3's diagnostic: outlier = loss ≥ 1)."""
    rows = []
    for run in runs:
        losses = run.analyses["gradients"].get("losses") or {}
        for loss_name, stats in losses.items():
            stats = stats or {}
            params = ", ".join(
                f"{key} {format_general(stats[key])}" for key in ("alpha", "gamma", "beta") if key in stats
            )
            row = [run.label, loss_name, params or DASH]
            for key, _ in GRADIENT_COLUMNS:
                value = stats.get(key)
                row.append(format_share(value) if key.endswith("_share") else format_general(value))
            rows.append(row)
    headers = ["run", "loss", "parameters", *(title for _, title in GRADIENT_COLUMNS)]
    return table(headers, rows, [False, False, False, *(True for _ in GRADIENT_COLUMNS)])


def objective_table(runs: list[AnalysedRun]) -> Table | None:
    """Classification vs regression loss and gradient norm at the analysed checkpoint."""
    keys = ("loss_cls", "loss_reg", "grad_norm_cls", "grad_norm_reg")
    rows = []
    for run in runs:
        objective = run.analyses["gradients"].get("objective") or {}
        if objective:
            rows.append([run.label, *(format_general(objective.get(key)) for key in keys)])
    if not rows:
        return None
    headers = ["run", "cls loss", "reg loss", "‖grad‖ cls", "‖grad‖ reg"]
    return table(headers, rows, [False, True, True, True, True])


def tail_table(runs: list[AnalysedRun]) -> Table:
    """Per run and class group: the mean ratio of positive to discouraging gradient, plain and with EQL
    weights (the EQL paper's Fig. 1 diagnostic, summarised)."""
    rows = []
    for run in runs:
        data = run.analyses["tail"]
        eql = data.get("eql") or {}
        weights = "trained" if eql.get("trained_with_eql") else f"if applied, λ {format_general(eql.get('lambda'))}"
        for key, stats in (data.get("groups") or {}).items():
            stats = stats or {}
            rows.append(
                [
                    run.label,
                    format_general(data.get("classifier")),
                    format_general(stats.get("title", key)),
                    format_general(stats.get("classes")),
                    format_general(stats.get("positive_rois")),
                    format_general(stats.get("mean_ratio")),
                    format_general(stats.get("mean_eql_ratio")),
                    weights,
                ]
            )
    headers = ["run", "classifier", "group", "classes", "positive RoIs", "mean ratio", "EQL-weighted", "EQL weights"]
    return table(headers, rows, [False, False, False, True, True, True, True, False])


LOWEST_CLASSES = 10


def tail_lowest_classes_table(run: AnalysedRun, limit: int = LOWEST_CLASSES) -> Table:
    """The ``limit`` classes whose logits get the least positive gradient for their discouraging one."""
    data = run.analyses["tail"]
    eql = data.get("eql") or {}
    weights = "EQL-weighted" if eql.get("trained_with_eql") else f"if EQL (λ {format_general(eql.get('lambda'))})"
    classes = data.get("classes") or []
    lowest = sorted(classes, key=lambda row: (row.get("ratio") is None, row.get("ratio") or 0.0))[:limit]
    rows = [
        [
            format_general(row.get("name")),
            format_general(row.get("frequency")),
            format_general(row.get("images")),
            format_general(row.get("positive_rois")),
            format_general(row.get("positive")),
            format_general(row.get("negative_foreground")),
            format_general(row.get("negative_background")),
            format_general(row.get("ratio")),
            format_general(row.get("eql_ratio")) if row.get("tail") else "=",
        ]
        for row in lowest
    ]
    headers = ["class", "freq", "train images", "positive RoIs", "positive", "from fg", "from bg", "ratio", weights]
    caption = f"{run.label}: the {len(lowest)} classes with the lowest ratio of positive to discouraging gradient"
    return table(headers, rows, [False, False, *(True for _ in headers[2:])], caption=caption)


def error_tables(result: dict[str, Any]) -> list[Table]:
    """The overall COCO breakdown (area under each curve and what the step from the previous kind gains)
    and TIDE's ΔAP and count per error kind."""
    coco, tide = result["coco"], result["tide"]
    rows, previous = [], None
    for kind in coco["kinds"]:
        area = coco["overall"][kind]
        gain = area - previous if area is not None and previous is not None else None
        rows.append([kind, _fraction(area), _fraction(gain)])
        previous = area if area is not None else previous
    breakdown = table(
        ["curve", "AP", "gain"], rows, [False, True, True], caption="COCO error decomposition (area all, overall)"
    )
    kinds = list(tide["delta_ap"])
    tide_rows = [[kind, _fraction(tide["delta_ap"][kind]), str(tide["counts"][kind])] for kind in kinds]
    errors = table(
        ["error", "ΔAP50", "count"],
        tide_rows,
        [False, True, True],
        caption=f"TIDE error kinds (AP50 {_fraction(tide['ap50'])})",
    )
    return [breakdown, errors]


def _fraction(value: float | None) -> str:
    return DASH if value is None else f"{value:.3f}"


def _present(*blocks: Table | None) -> list[Table]:
    return [block for block in blocks if block is not None]


# Per analysis, the tables of one run: `libra analyze NAME` prints them, the report holds them.
RUN_TABLES: dict[str, Callable[[AnalysedRun], list[Table]]] = {
    "sampling": lambda run: _present(sampling_share_table([run]), sampling_histogram_table(run)),
    "features": lambda run: _present(features_table(run)),
    "gradients": lambda run: _present(gradients_table([run]), objective_table([run])),
    "tail": lambda run: _present(tail_table([run]), tail_lowest_classes_table(run)),
    "errors": lambda run: error_tables(run.analyses["errors"]),
}
