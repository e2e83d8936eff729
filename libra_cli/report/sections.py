"""The report's sections, in reading order: runs, metrics, ablation, LVIS, per-category AP, where the errors
go, detections drawn, training, analyses. Each section function appends blocks to the document and draws its
figures into the report folder (figures are referenced by file name, so links in ``report.md`` are relative and
resolve).
"""

from __future__ import annotations

import math
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from libra_cli.analysis.tide import TIDE_KINDS
from libra_cli.errors import LibraError
from libra_cli.report import analysis_tables, detections, plots, tables
from libra_cli.report.collect import (
    SEVERAL_MACHINES,
    SPIKE_FACTOR,
    RunGroup,
    RunRecord,
    describe_machine,
    loss_spike,
    loss_terms,
    machine_key,
    split_loss_terms,
    train_records,
)
from libra_cli.report.document import BulletList, Code, Document, Figure, Heading, Strong, Table, para, table
from libra_cli.report.significance import IntervalFinder
from libra_cli.rundir import ANALYSIS, METRICS, RunLayout

# What to look at in each figure `libra analyze` writes (one sentence each).
ANALYSIS_CAPTIONS = {
    "sampling.png": (
        "IoU histogram of the negatives each sampler picks: random sampling piles up near IoU 0, while "
        "IoU-balanced sampling should move its mass above 0.05 towards where the hard negatives lie "
        "(paper Fig. 2)."
    ),
    "features.png": (
        "Statistics of each pyramid level before and after BFP: look at whether BFP evens out the levels' "
        "energy shares, the feature-level imbalance it targets (Libra R-CNN §3.2)."
    ),
    "features_without_bfp.png": (
        "Statistics of each pyramid level of the FPN (no BFP in this run): look at how unevenly the energy "
        "is spread over the levels, the feature-level imbalance BFP targets (Libra R-CNN §3.2)."
    ),
    "gradients.png": (
        "Gradient share of inliers (loss < 1) and outliers under smooth L1 and balanced L1: balanced L1 "
        "should raise the inliers' share, which smooth L1 leaves to the outliers (Libra R-CNN §3.3)."
    ),
    "tail.png": (
        "Ratio of the positive to the discouraging gradient each class's logit receives, classes from frequent "
        "to rare: look at whether it falls towards the tail, as the EQL paper finds over LVIS training (Fig. 1), "
        "and how far EQL's weights (ticks) lift the tail classes by dropping the discouraging gradient from "
        "other classes' foreground."
    ),
    "gradients_curves.png": (
        "Loss and gradient of smooth L1 and balanced L1 against the regression error: balanced L1's gradient "
        "rises faster for small errors and is capped at γ for large ones (paper Fig. 5)."
    ),
}


class FigureNames:
    """File names for the figures in the report folder: readable, file-system safe and unique."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def __call__(self, *parts: str) -> str:
        stem = "_".join(re.sub(r"[^A-Za-z0-9._-]+", "-", part).strip("-._") or "x" for part in parts)
        name, counter = f"{stem}.png", 2
        while name in self.used:
            name, counter = f"{stem}_{counter}.png", counter + 1
        self.used.add(name)
        return name


def add_overview(document: Document, groups: list[RunGroup]) -> None:
    runs = [run for group in groups for run in group.runs]
    evaluated = sum(run.metrics is not None for run in runs)
    formats = sorted({str(run.metrics.get("format", "coco")).upper() for run in runs if run.metrics})
    document.add(
        para(
            f"{len(runs)} run{'s' if len(runs) != 1 else ''} in {len(groups)} configuration"
            f"{'s' if len(groups) != 1 else ''}, {evaluated} evaluated"
            + (f" ({', '.join(formats)} protocol)" if formats else "")
            + ". Metrics are the evaluators' fractions in [0, 1] on each run's validation split; "
            "runs that differ only by seed are grouped and shown as mean ± sample std (n − 1) over n seeds."
        )
    )


def add_runs(document: Document, groups: list[RunGroup]) -> None:
    document.add(Heading(2, "Runs"))
    differing = tables.config_differences(groups)
    document.add(
        para(
            "Component switches come from each run's ",
            Code("config.libra"),
            "; the last columns are the resolved settings in which the configurations differ"
            + ("." if differing else " (none: they share every other setting)."),
        )
    )
    document.add(tables.runs_table(groups))
    items = [(f"{run.label}: ", Code(str(run.path))) for group in groups for run in group.runs]
    document.add(BulletList(tuple(items)))
    add_machines(document, [run for group in groups for run in group.runs])


def add_machines(document: Document, runs: list[RunRecord]) -> None:
    """Which machine each run trained on (``engine/machine.py``), and what it means when they differ."""
    machines: dict[tuple, tuple[str, list[str]]] = {}
    unrecorded, moved = [], []
    for run in runs:
        key = machine_key(run)
        if key is None:
            unrecorded.append(run.label)
        elif key == SEVERAL_MACHINES:
            moved.append(run.label)
        else:
            machines.setdefault(key, (describe_machine(run.machines[0]), []))[1].append(run.label)
    who = "The runs that record their machine trained" if unrecorded else "Trained"
    if len(machines) == 1 and not moved:
        document.add(para(f"{who} on one machine: {next(iter(machines.values()))[0]}."))
    elif machines or moved:
        document.add(
            para(
                f"{who} on several machines. A seed fixes a run's initial weights, data order and samples, not "
                "its floating-point arithmetic: the same config and seed on another processor, thread count or "
                "library version is another run, as far from the first as another seed. Where the runs of a "
                "seed trained on different machines, a Δ paired over seeds pairs them by seed only."
            )
        )
        items = [(f"{description}: {', '.join(labels)}",) for description, labels in machines.values()]
        items += [(f"resumed on another machine: {label}",) for label in moved]
        document.add(BulletList(tuple(items)))
    if unrecorded:
        document.add(para(f"Machine not recorded (trained before libra recorded it): {', '.join(unrecorded)}."))


def add_metrics(document: Document, groups: list[RunGroup]) -> None:
    document.add(Heading(2, "COCO metrics"))
    if not any(tables.evaluated_runs(group) for group in groups):
        document.add(
            para(
                "No run has ",
                Code(METRICS),
                " yet: train to the end or run ",
                Code("libra eval"),
                ".",
            )
        )
        return
    missing = [run.label for group in groups for run in group.runs if run.metrics is None]
    if missing:
        document.add(para("Not evaluated (no ", Code(METRICS), "): " + ", ".join(missing) + "."))
    document.add(tables.metrics_table(groups))
    evaluated_on: dict[str, list[str]] = {}
    for group in groups:
        for run in group.runs:
            if run.metrics is not None:
                evaluated_on.setdefault(str(run.metrics.get("ann_file", "an unnamed file")), []).append(run.label)
    document.add(
        para(
            "Each run's own validation results (",
            Code(METRICS),
            "; evaluations on other sets are kept apart in eval/<set>/), on "
            + "; ".join(f"{ann} ({', '.join(labels)})" for ann, labels in evaluated_on.items())
            + ". AR1, AR10 and AR100: recall with at most 1, 10 and 100 detections per image.",
        )
    )
    add_unstable_runs(document, groups)
    add_masks_and_voc(document, groups)


def add_unstable_runs(document: Document, groups: list[RunGroup]) -> None:
    """One sentence per run whose training loss spiked (:func:`loss_spike`): its metrics, and every mean
    over seeds that includes them, speak of that instability more than of the configuration."""
    for group in groups:
        for run in group.runs:
            spike = loss_spike(run)
            if spike is None:
                continue
            ap = (run.metrics or {}).get("summary", {}).get("AP")
            ended = f"; it ended at AP {ap:.3f}" if isinstance(ap, int | float) else ""
            document.add(
                para(
                    Strong(f"{run.label}: training went unstable."),
                    f" Its logged loss reached {spike.loss:.4g} at iteration {spike.iteration}, at least "
                    f"{SPIKE_FACTOR:g}× its median {spike.median:.3g}{ended}. A mean over seeds that includes "
                    "this run measures that instability as much as the configuration.",
                )
            )


def add_masks_and_voc(document: Document, groups: list[RunGroup]) -> None:
    """Mask R-CNN runs: box and mask AP side by side. Pascal VOC runs: the VOC mAP beside the COCO-style AP."""
    masked = [group for group in groups if tables.has_masks(group)]
    if masked:
        intro = para(
            "Mask R-CNN runs: the box metrics above next to the mask metrics (COCOeval or LVISEval with iouType "
            "segm on ",
            Code("eval/segmentations.json"),
            "). Fractions in [0, 1].",
        )
        document.add(Heading(3, "Box and mask AP"), intro, tables.box_and_mask_table(masked))
        lvis_masked = [group for group in masked if tables.is_lvis(group)]
        if lvis_masked:
            document.add(tables.box_and_mask_table(lvis_masked, ("AP", "APr", "APc", "APf")))
    voc = [group for group in groups if tables.is_voc(group)]
    if voc:
        intro = para(
            "At IoU 0.5, difficult objects ignored: mAP is the area under the precision–recall curve (VOC2010+), "
            "mAP_07 the VOC2007 11-point metric; AP50 and AP are the COCO-style numbers of the same detections."
        )
        document.add(Heading(3, "Pascal VOC mAP"), intro, tables.metrics_table(voc, tables.VOC_METRICS))


def add_ablation(document: Document, groups: list[RunGroup], baseline: RunGroup | None) -> None:
    # Libra R-CNN's Table 2 is the frame only when some run switches on one of its steps (not for an
    # EQL-only or OHEM-only grid, whose paper numbers are elsewhere).
    libra_steps = any(
        getattr(run.config.libra, step) for group in groups for run in group.runs for step in tables.CUMULATIVE_ORDER
    )
    document.add(Heading(2, "Ablation (paper Table 2 layout)" if libra_steps else "Ablation"))
    if len(groups) < 2:
        document.add(para("One configuration only: an ablation needs runs with different component switches."))
        return
    if baseline is None:
        document.add(
            para(
                "No run has every component switched off, so there is no baseline: name one with ",
                Code("--baseline"),
                ".",
            )
        )
        return
    finder = IntervalFinder(baseline)
    result, cumulative = tables.ablation_table(groups, baseline, finder)
    order = (
        "rows add the components cumulatively in the paper's order"
        if cumulative
        else "rows are listed with the components each configuration switches on"
    )
    document.add(para(f"Δ is the difference of means from the baseline {baseline.label!r}; {order}."))
    document.add(result)
    every_interval = tables.intervals_table(groups, baseline, finder)
    if every_interval is not None:
        document.add(every_interval)
    if not libra_steps:
        return
    document.add(
        para(
            "For reference only: ",
            Strong("the paper's COCO numbers"),
            " (Libra R-CNN Table 2, ResNet-50-FPN, 12 epochs on COCO train2017, AP in %). They are not "
            "comparable in absolute value with the runs above (different data, backbone and schedule); "
            "compare the direction and rough size of each Δ.",
        )
    )
    document.add(tables.paper_table2())


def add_lvis(document: Document, groups: list[RunGroup]) -> None:
    lvis_groups = [group for group in groups if tables.is_lvis(group)]
    if not lvis_groups:
        return
    document.add(Heading(2, "LVIS metrics"))
    document.add(
        para(
            "APr, APc and APf average the categories seen in < 10, 10–99 and ≥ 100 training images; "
            "the equalization loss aims at APr and APc."
        )
    )
    document.add(tables.metrics_table(lvis_groups, tables.lvis_metric_names(lvis_groups)))
    document.add(
        para("For reference only: the EQL paper's LVIS v0.5 numbers (mask AP in %, not comparable in absolute value).")
    )
    document.add(tables.paper_eql_table())


def add_categories(document: Document, groups: list[RunGroup], out_dir: Path, names: FigureNames) -> None:
    evaluated = [group for group in groups if tables.evaluated_runs(group)]
    if not evaluated:
        return
    document.add(Heading(2, "Per-category AP"))
    for group in evaluated:
        stats = [item for item in tables.category_stats(group) if item.ap is not None]
        if not stats:
            continue
        bars = [plots.Bar(item.name, item.ap.mean, item.ap.std, item.frequency) for item in stats]
        n = tables.evaluated_runs(group)
        over = f" (mean over {n} seeds, bars ± std)" if n > 1 else ""
        if all(bar.value == 0 for bar in bars):
            document.add(
                para(
                    f"{group.label}: every category's AP is 0 (no box matched at IoU ≥ 0.5), so there are no bars "
                    "to draw; the run has not learned to detect yet."
                )
            )
            continue
        file = names("category_ap", group.label)
        plots.plot_category_ap(bars, f"{group.label}: per-category AP{over}", out_dir / file)
        lvis = any(item.frequency for item in stats)
        look = (
            "whether the rare (red) and common (orange) categories sit at the bottom, the long-tail "
            "imbalance EQL targets"
            if lvis
            else "the spread between the best and the worst categories and which ones lag"
        )
        document.add(
            Figure(
                file,
                f"per-category AP of {group.label}",
                f"Per-category AP of {group.label}{over}, best first: look at {look}.",
            )
        )
    categories = {item.category_id for group in evaluated for item in tables.category_stats(group)}
    if len(categories) <= 40:
        document.add(tables.category_table(evaluated))


def _curve(records: list[dict], key) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for record in records:
        value = key(record)
        if value is not None:
            xs.append(record["iter"])
            ys.append(float(value))
    return xs, ys


def add_training(document: Document, groups: list[RunGroup], out_dir: Path, names: FigureNames) -> None:
    logged = [(index, group) for index, group in enumerate(groups) if any(train_records(run) for run in group.runs)]
    if not logged:
        return
    document.add(Heading(2, "Training"))
    document.add(
        para(
            "Last logged window of each run (mean over seeds): the loss, the sum of the classification "
            "terms and the sum of the box-regression terms, their ratio, median seconds per iteration and "
            "peak memory."
        )
    )
    document.add(tables.training_table([group for _, group in logged]))

    terms: list[str] = ["loss"]
    for _, group in logged:
        for run in group.runs:
            for record in train_records(run):
                terms += [name for name in loss_terms(record) if name not in terms]
    loss_panels = [plots.Panel(term if term != "loss" else "total loss", "loss") for term in terms]
    lr_panel = plots.Panel("learning rate", "lr (log scale)", log_y=True)  # step drops are ×0.1
    balance_panel = plots.Panel(
        "classification vs box regression",
        "summed loss terms",
        line_styles=("classification", "box regression"),
    )
    for index, group in logged:
        colour = plots.colour(index)
        for run in group.runs:
            records = train_records(run)
            for panel, term in zip(loss_panels, terms, strict=True):
                xs, ys = _curve(records, lambda record, term=term: _number(record.get(term)))
                if xs:
                    panel.series.append(plots.Series(group.label, xs, ys, colour))
            if run is group.runs[0]:
                xs, ys = _curve(records, lambda record: _number(record.get("lr")))
                lr_panel.series.append(plots.Series(group.label, xs, ys, colour))
            xs, ys = _curve(records, lambda record: _sum_or_none(split_loss_terms(record)[0]))
            balance_panel.series.append(plots.Series(group.label, xs, ys, colour))
            xs, ys = _curve(records, lambda record: _sum_or_none(split_loss_terms(record)[1]))
            balance_panel.series.append(plots.Series(group.label, xs, ys, colour, dashed=True))

    panels = [panel for panel in loss_panels if panel.series] + ([lr_panel] if lr_panel.series else [])
    points = max((len(series.x) for panel in panels for series in panel.series), default=0)
    if points < 2:
        document.add(
            para(
                f"Each run logged {points} training record{'s' if points != 1 else ''}: too few points for curves "
                "(the table above holds the values); log more often with --log-interval or train longer."
            )
        )
        return
    file = names("loss_terms")
    plots.plot_panels(panels, out_dir / file)
    document.add(
        Figure(
            file,
            "loss terms and learning rate over training",
            "Each loss term and the learning rate over training, one colour per configuration (seeds share "
            "it): look for curves that fall and flatten, for the term a component lowers, and for learning "
            "rates that coincide (otherwise the losses are not comparable iteration by iteration).",
        )
    )
    file = names("cls_vs_reg")
    plots.plot_panels([balance_panel], out_dir / file, ncols=1)
    document.add(
        Figure(
            file,
            "classification vs box-regression loss",
            "Summed classification terms (solid) against summed box-regression terms (dashed): the gap "
            "between them is the objective-level imbalance that balanced L1 addresses by raising the "
            "regression gradients of inliers.",
        )
    )


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return None
    return float(value)


def _sum_or_none(terms: dict[str, float]) -> float | None:
    return sum(terms.values()) if terms else None


@dataclass(frozen=True)
class AnalysisSection:
    """The report's subsection of one analysis: a heading, what the paper found, the tables across the runs,
    then per run its own tables and figures (None: a table without data, left out)."""

    heading: str
    intro: str | None
    tables: Callable[[list[RunRecord]], list[Table | None]]
    run_tables: Callable[[RunRecord], list[Table | None]]
    figures: tuple[str, ...]


ANALYSIS_SECTIONS = {
    "sampling": AnalysisSection(
        "Sample level: IoU of sampled negatives",
        "Share of each sampler's negatives with IoU > 0.05; the paper (Fig. 2) finds more than 60% "
        "of hard negatives above 0.05 but only 30% of randomly sampled ones.",
        lambda runs: [analysis_tables.sampling_share_table(runs)],
        lambda run: [analysis_tables.sampling_histogram_table(run)],
        ("sampling.png",),
    ),
    "features": AnalysisSection(
        "Feature level: pyramid statistics",
        None,
        lambda runs: [],
        lambda run: [analysis_tables.features_table(run)],
        ("features.png",),
    ),
    "gradients": AnalysisSection(
        "Objective level: box-regression gradients",
        "Inliers have a regression loss < 1, outliers ≥ 1 (Libra R-CNN §3.3); under smooth L1 the paper "
        "finds that inliers contribute only about 30% of the gradient per sample that outliers do.",
        lambda runs: [analysis_tables.gradients_table(runs), analysis_tables.objective_table(runs)],
        lambda run: [],
        ("gradients.png", "gradients_curves.png"),
    ),
    "tail": AnalysisSection(
        "Class level: positive vs discouraging gradients",
        "Per class, the gradient its logit receives from its own RoIs (positive) over the gradient from "
        "all other RoIs (discouraging), averaged within each group of classes; the EQL paper (§3, Fig. 1) "
        "finds the ratio far lower for rare classes, and EQL's weights remove the discouraging gradient "
        "that tail classes receive from other classes' foreground RoIs.",
        lambda runs: [analysis_tables.tail_table(runs)],
        lambda run: [],
        ("tail.png",),
    ),
}


def add_analyses(document: Document, groups: list[RunGroup], out_dir: Path, names: FigureNames) -> None:
    runs = [run for group in groups for run in group.runs]
    if not any(run.analyses or run.figures or run.analysis_errors for run in runs):
        return
    document.add(Heading(2, "Analyses"))
    document.add(para("Outputs of ", Code("libra analyze"), " found in the runs' ", Code(f"{ANALYSIS}/"), " folders."))
    for run in runs:
        for name, error in run.analysis_errors.items():
            document.add(para(f"{run.label}: {name} analysis skipped: {error}"))
    shown: set[Path] = set()

    for name, section in ANALYSIS_SECTIONS.items():
        with_analysis = [run for run in runs if name in run.analyses]
        if not with_analysis:
            continue
        document.add(Heading(3, section.heading))
        if section.intro:
            document.add(para(section.intro))
        document.add(*(block for block in section.tables(with_analysis) if block is not None))
        for run in with_analysis:
            document.add(*(block for block in section.run_tables(run) if block is not None))
            _add_analysis_figures(document, run, section.figures, out_dir, names, shown)

    others = [(run, path) for run in runs for path in run.figures if path not in shown]
    if others:
        document.add(Heading(3, "Other analysis figures"))
        for run, path in others:
            _copy_figure(document, run, path, out_dir, names, f"Figure {path.name} from {run.label}'s analysis folder.")


def _add_analysis_figures(
    document: Document,
    run: RunRecord,
    files: tuple[str, ...],
    out_dir: Path,
    names: FigureNames,
    shown: set[Path],
) -> None:
    for path in run.figures:
        if path.name in files:
            key = path.name
            if key == "features.png" and not run.analyses.get("features", {}).get("bfp"):
                key = "features_without_bfp.png"
            caption = f"{run.label}: {ANALYSIS_CAPTIONS[key]}"
            _copy_figure(document, run, path, out_dir, names, caption)
            shown.add(path)


def _copy_figure(
    document: Document, run: RunRecord, path: Path, out_dir: Path, names: FigureNames, caption: str
) -> None:
    file = names(run.label, path.stem)
    shutil.copyfile(path, out_dir / file)
    document.add(Figure(file, f"{path.stem} of {run.label}", caption))


# --- where the errors go (RUN_DIR/analysis/errors.json) ---------------------------------------------------

ERRORS = "errors"
ERROR_FIGURE = "errors.png"
# The COCO error decomposition's curves, each one fixing one more error kind (area "all", at most 100 detections
# per image).
ERROR_CURVES = ("C75", "C50", "Loc", "Sim", "Oth", "BG", "FN")
# Successive curves (upper, lower) and the error kind whose fixing gains the AP between them.
ERROR_GAPS = (
    ("C50", "C75", "localisation at strict IoU"),
    ("Loc", "C50", "poor localisation"),
    ("Sim", "Loc", "confusion with similar classes"),
    ("Oth", "Sim", "confusion with other classes"),
    ("BG", "Oth", "background false positives"),
    ("FN", "BG", "missed objects"),
)
# Error kinds compared with the baseline: (name, COCO gap upper − lower, the matching TIDE ΔAP).
ERROR_CHANGES = (
    ("localisation", "Loc", "C75", "loc"),
    ("class confusion", "Oth", "Loc", "cls"),
    ("background", "BG", "Oth", "bkg"),
    ("missed", "FN", "BG", "miss"),
)
# The error kind each component aims at (Libra R-CNN §3, EQL §3).
COMPONENT_TARGETS = {
    "balanced_l1": "localisation",
    "iou_sampling": "background",
    "bfp": "every kind, objects of every size",
    "eql": "class confusion (rare classes)",
}


def errors_analysis(run: RunRecord) -> tuple[dict | None, str | None]:
    """A run's ``analysis/errors.json`` and None, or None and why it cannot be used (None, None: no file)."""
    data = run.analyses.get(ERRORS)
    if ERRORS in run.analysis_errors:
        return None, run.analysis_errors[ERRORS]
    if data is None:
        layout = RunLayout(run.path)
        if not layout.has_analysis(ERRORS):
            return None, None
        try:
            data = layout.read_analysis(ERRORS)
        except LibraError as exc:
            return None, str(exc)
    where = RunLayout(run.path).analysis_json(ERRORS)
    for section, key in (("coco", "overall"), ("tide", "delta_ap")):
        if not isinstance((data.get(section) or {}).get(key), dict):
            return None, f"{where}: missing the '{section}.{key}' object"
    return data, None


def _number_or_none(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def error_gap(overall: dict, upper: str, lower: str) -> float | None:
    """AP gained by fixing the errors between two curves, ``upper − lower``. Without supercategories Sim
    is not defined: Sim − Loc is then None and Oth − Sim falls back to Oth − Loc (all class confusion)."""
    if lower == "Sim" and _number_or_none(overall.get("Sim")) is None:
        lower = "Loc"
    high, low = _number_or_none(overall.get(upper)), _number_or_none(overall.get(lower))
    return None if high is None or low is None else high - low


def _tide(data: dict, kind: str) -> float | None:
    return _number_or_none(data["tide"]["delta_ap"].get(kind))


def _mean(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return sum(present) / len(present) if present else None


def grouped_errors(groups: list[RunGroup], analysed: list[tuple[RunRecord, dict]]) -> list[tuple[RunGroup, list[dict]]]:
    """Each configuration with the ``errors.json`` of its runs that have one (configurations without any left out)."""
    by_run = {id(run): data for run, data in analysed}
    grouped = []
    for group in groups:
        found = [by_run[id(run)] for run in group.runs if id(run) in by_run]
        if found:
            grouped.append((group, found))
    return grouped


def _stat_cell(values: list[float | None], spread: bool) -> str:
    return tables.format_stat(tables.summarize(values), spread)


def errors_tables(grouped: list[tuple[RunGroup, list[dict]]]) -> list[Table]:
    """The decomposition's curve areas, its error-kind gaps and TIDE's ΔAP, one row per configuration (mean ±
    sample std over its seeds when any configuration has several)."""
    spread = any(len(found) > 1 for _, found in grouped)
    areas, gaps, tide = [], [], []
    for group, found in grouped:
        head = [group.label, str(len(found))]
        overall = [data["coco"]["overall"] for data in found]
        areas.append([*head, *(_stat_cell([_number_or_none(o.get(k)) for o in overall], spread) for k in ERROR_CURVES)])
        gaps.append(
            [*head, *(_stat_cell([error_gap(o, up, low) for o in overall], spread) for up, low, _ in ERROR_GAPS)]
        )
        tide.append(
            [
                *head,
                _stat_cell([_number_or_none(data["tide"].get("ap50")) for data in found], spread),
                *(_stat_cell([_tide(data, kind) for data in found], spread) for kind in TIDE_KINDS),
            ]
        )
    return [
        table(
            ["run", "n", *ERROR_CURVES],
            areas,
            [False, True] + [True] * len(ERROR_CURVES),
            "Area under each precision–recall curve of the COCO error decomposition (area all, at most 100 "
            "detections per image).",
        ),
        table(
            ["run", "n", *(f"{name}: {up} − {low}" for up, low, name in ERROR_GAPS)],
            gaps,
            [False, True] + [True] * len(ERROR_GAPS),
            "Error kind: AP gained by fixing it (the area between successive curves).",
        ),
        table(
            ["run", "n", "TIDE AP50", *(f"ΔAP {kind}" for kind in TIDE_KINDS)],
            tide,
            [False, True] + [True] * (1 + len(TIDE_KINDS)),
            "TIDE at IoU 0.5: AP50 gained by fixing each error type on its own.",
        ),
    ]


def errors_change_table(grouped: list[tuple[RunGroup, list[dict]]], baseline: RunGroup) -> Table | None:
    """Per configuration, the change of each error kind (COCO gap and TIDE ΔAP, means over seeds) against the
    baseline's mean, or None when the baseline has no ``errors.json``."""
    base = next((found for group, found in grouped if group is baseline), None)
    others = [(group, found) for group, found in grouped if group is not baseline]
    if not base or not others:
        return None

    def means(found: list[dict]) -> dict[str, tuple[float | None, float | None]]:
        return {
            name: (
                _mean([error_gap(data["coco"]["overall"], up, low) for data in found]),
                _mean([_tide(data, kind) for data in found]),
            )
            for name, up, low, kind in ERROR_CHANGES
        }

    reference = means(base)
    rows = []
    for group, found in others:
        row: list = [
            group.label,
            str(len(found)),
            ", ".join(COMPONENT_TARGETS[c] for c in group.components if c in COMPONENT_TARGETS) or "—",
        ]
        for name, (gap, tide) in means(found).items():
            base_gap, base_tide = reference[name]
            row.append(tables.format_delta(None if gap is None or base_gap is None else gap - base_gap))
            row.append(tables.format_delta(None if tide is None or base_tide is None else tide - base_tide))
        rows.append(row)
    headers = ["run", "n", "its components target"]
    for name, up, low, kind in ERROR_CHANGES:
        headers += [f"Δ {name} ({up} − {low})", f"Δ TIDE {kind}"]
    return table(headers, rows, [False, True, False] + [True] * (2 * len(ERROR_CHANGES)))


def add_errors(
    document: Document, groups: list[RunGroup], baseline: RunGroup | None, out_dir: Path, names: FigureNames
) -> set[Path]:
    """The "Where the errors go" section from the runs' ``errors.json``; returns the figures it showed."""
    runs = [run for group in groups for run in group.runs]
    loaded = [(run, *errors_analysis(run)) for run in runs]
    analysed = [(run, data) for run, data, _ in loaded if data is not None]
    problems = [(run, problem) for run, _, problem in loaded if problem is not None]
    if not analysed and not problems:
        return set()
    document.add(Heading(2, "Where the errors go"))
    document.add(
        para(
            "From ",
            Code(f"{ANALYSIS}/{ERRORS}.json"),
            " (",
            Code("libra analyze errors"),
            "). The COCO error decomposition draws one precision–recall curve per step, each fixing one more "
            "kind of error: C75 and C50 are plain PR at IoU 0.75 and 0.5, Loc ignores localisation errors "
            "(IoU 0.1), Sim and Oth remove confusion with similar (same supercategory) and any other classes, "
            "BG removes the remaining (background) false positives and FN the missed objects. The area between "
            "two successive curves is the AP that fixing that error kind would gain; TIDE's ΔAP says the same at "
            "IoU 0.5, fixing each error type on its own. All values are fractions in [0, 1].",
        )
    )
    for run, problem in problems:
        document.add(para(f"{run.label}: errors analysis skipped: {problem}"))
    runs_by_note: dict[str, list[str]] = {}
    for run, data in analysed:
        if data.get("note"):
            runs_by_note.setdefault(data["note"], []).append(run.label)
    for note, labels in runs_by_note.items():  # a note shared by several runs is printed once
        who = "Every run" if len(labels) == len(analysed) > 1 else ", ".join(labels)
        document.add(para(f"{who}: {note}"))
    if not analysed:
        return set()
    grouped = grouped_errors(groups, analysed)
    document.add(*errors_tables(grouped))
    if any(_number_or_none(data["coco"]["overall"].get("Sim")) is None for _, data in analysed):
        document.add(
            para(
                "Sim is undefined where the categories carry fewer than two supercategories: Sim − Loc then "
                "prints — and Oth − Sim is Oth − Loc, all class confusion."
            )
        )
    if baseline is not None:
        change = errors_change_table(grouped, baseline)
        if change is not None:
            document.add(
                para(
                    f"Change of each error kind against the baseline {baseline.label!r} (means over seeds): "
                    "localisation Loc − C75 with TIDE loc, class confusion Oth − Loc with TIDE cls, background "
                    "BG − Oth with TIDE bkg, missed FN − BG with TIDE miss. A negative Δ means the run loses "
                    "less AP to that kind. What to look for: balanced L1 should shrink the localisation error; "
                    "IoU-balanced sampling the background (hard negative) error; BFP helps objects of every "
                    "size, so expect small gains spread over the kinds (compare APs, APm and APl above) rather "
                    "than one; EQL should reduce class confusion on the rare classes (see the per-category "
                    "entries of errors.json for the tail)."
                )
            )
            document.add(change)
    shown: set[Path] = set()
    # One figure per configuration: its first analysed run (the lowest seed).
    firsts = {id(next(run for run in group.runs if any(run is done for done, _ in analysed))) for group, _ in grouped}
    for run, _ in analysed:
        for path in run.figures:
            if path.name == ERROR_FIGURE and id(run) not in firsts:
                shown.add(path)  # not drawn, and kept out of the generic analyses section too
                continue
            if path.name == ERROR_FIGURE:
                caption = (
                    f"{run.label}: the COCO error decomposition's precision–recall curves over all categories; "
                    "each band between two curves is the AP gained by fixing one error kind: look at which "
                    "band is widest."
                )
                _copy_figure(document, run, path, out_dir, names, caption)
                shown.add(path)
    return shown


def _without_errors(groups: list[RunGroup], shown: set[Path]) -> list[RunGroup]:
    """The groups with the errors analysis and its figures taken out of the runs' records, for the
    generic analyses section (the errors section has shown them already)."""
    return [
        RunGroup(
            group.label,
            [
                replace(
                    run,
                    analyses={name: data for name, data in run.analyses.items() if name != ERRORS},
                    analysis_errors={name: text for name, text in run.analysis_errors.items() if name != ERRORS},
                    figures=[path for path in run.figures if path not in shown],
                )
                for run in group.runs
            ],
        )
        for group in groups
    ]


# --- detections drawn ---------------------------------------------------------------------------------------


def add_detections(
    document: Document,
    groups: list[RunGroup],
    baseline: RunGroup | None,
    out_dir: Path,
    names: FigureNames,
    options: detections.DetectionOptions,
) -> None:
    """Ground truth and each run's detections on a few validation images (``detections.py``)."""
    if not options.enabled:
        return
    # One column per configuration: its first evaluated run (the lowest seed), so a grid over seeds stays legible.
    runs = []
    for group in groups:
        evaluated_in_group = [run for run in group.runs if RunLayout(run.path).detections.is_file()]
        runs += evaluated_in_group[:1]
    evaluated = runs
    if not evaluated:
        return
    document.add(Heading(2, "Detections"))
    ordered = [run for run in (baseline.runs if baseline else []) if any(run is done for done in evaluated)]
    reference = (ordered or evaluated)[0]
    missing = detections.missing_validation(reference)
    if missing is not None:
        document.add(para(f"Not drawn: {missing} (the validation images of {reference.label})."))
        return
    file = names("detections")
    try:
        drawn = detections.detections_figure(runs, reference, out_dir / file, options)
    except LibraError as exc:
        document.add(para(f"Not drawn: {exc}"))
        return
    for note in drawn.skipped:
        document.add(para(f"No column for {note}."))
    if drawn.blank:
        document.add(
            para(
                f"{', '.join(drawn.blank)}: no detection with score ≥ {options.score_thr:g} on these images, so "
                "the column is empty (lower the threshold with --score-thr to see weaker detections)."
            )
        )
    worst = sum(choice.reason == "most missed" for choice in drawn.chosen)
    drawn_by_seed = len(drawn.chosen) - worst
    document.add(
        Figure(
            file,
            "ground truth and detections on validation images",
            f"Ground truth (first column) and the detections of each configuration's first run (lowest seed) "
            f"with score ≥ {options.score_thr:g} on "
            f"{len(drawn.chosen)} validation images, one colour per category: the {worst} images where "
            f"{drawn.reference} misses the most objects at IoU {detections.MATCH_IOU:g} (ties: smaller image id), "
            f"then {drawn_by_seed} drawn from the rest with seed {options.seed}; look at which objects each run "
            "finds that the others miss, and at how tightly the boxes fit.",
        )
    )


def build_document(
    groups: list[RunGroup],
    out_dir: Path,
    *,
    baseline: RunGroup | None,
    title: str,
    drawing: detections.DetectionOptions | None = None,
) -> Document:
    """The whole report; figures are written to ``out_dir``. ``drawing`` sets the detections figure
    (default: :class:`detections.DetectionOptions`' defaults)."""
    document = Document(title)
    names = FigureNames()
    add_overview(document, groups)
    add_runs(document, groups)
    add_metrics(document, groups)
    add_ablation(document, groups, baseline)
    add_lvis(document, groups)
    add_categories(document, groups, out_dir, names)
    shown_errors = add_errors(document, groups, baseline, out_dir, names)
    add_detections(document, groups, baseline, out_dir, names, drawing or detections.DetectionOptions())
    add_training(document, groups, out_dir, names)
    add_analyses(document, _without_errors(groups, shown_errors), out_dir, names)
    return document
