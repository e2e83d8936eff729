"""The report's figures, drawn with matplotlib's object API (``Figure``, no pyplot state) to PNG files.

Each function takes plain numbers and a target path, draws one figure and returns the path, so the
figures are reproducible from the tables alone. Text that comes from a dataset (category names, run
labels) is shown literally: ``$`` is escaped so that matplotlib does not read it as mathtext.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

# Colours of LVIS's frequency groups (the COCO and LVIS evaluation protocols): rare, common, frequent.
FREQUENCY_COLOURS = {"r": "#d62728", "c": "#ff7f0e", "f": "#1f77b4"}
FREQUENCY_NAMES = {"r": "rare", "c": "common", "f": "frequent"}
PLAIN_COLOUR = "#4c72b0"
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
DPI = 110
# Beyond this many categories a bar per name is unreadable: the chart becomes a sorted AP profile.
MAX_LABELLED_CATEGORIES = 60


def literal(text: str) -> str:
    """Text shown as typed: matplotlib would render ``$…$`` as math."""
    return str(text).replace("$", r"\$")


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # The figures use constrained layout, so no second "tight" layout pass is needed when saving.
    figure.savefig(path, dpi=DPI, pil_kwargs={"compress_level": 3})
    return path


@dataclass(frozen=True)
class Bar:
    name: str
    value: float
    error: float | None = None  # sample std over seeds; None for a single run
    frequency: str | None = None  # LVIS "r" | "c" | "f"


def plot_category_ap(bars: list[Bar], title: str, path: Path) -> Path:
    """Horizontal bars of per-category AP, best on top, coloured by LVIS frequency group when known."""
    bars = sorted(bars, key=lambda bar: -bar.value)
    coloured = any(bar.frequency in FREQUENCY_COLOURS for bar in bars)
    colours = [FREQUENCY_COLOURS.get(bar.frequency or "", PLAIN_COLOUR) if coloured else PLAIN_COLOUR for bar in bars]
    errors = [bar.error or 0.0 for bar in bars]
    has_errors = any(errors)
    if len(bars) <= MAX_LABELLED_CATEGORIES:
        figure = Figure(figsize=(7.0, max(2.2, 0.26 * len(bars) + 1.0)), layout="constrained")
        axes = figure.add_subplot()
        positions = list(range(len(bars)))
        axes.barh(positions, [bar.value for bar in bars], color=colours, xerr=errors if has_errors else None)
        axes.set_yticks(positions, [literal(bar.name) for bar in bars], fontsize=8)
        axes.invert_yaxis()
        axes.set_xlabel("AP (IoU 0.50:0.95)")
        axes.set_xlim(0, max(1e-3, min(1.0, max((b.value + (b.error or 0) for b in bars), default=1.0) * 1.1)))
    else:
        figure = Figure(figsize=(8.0, 3.2), layout="constrained")
        axes = figure.add_subplot()
        axes.bar(range(len(bars)), [bar.value for bar in bars], color=colours, width=1.0)
        axes.set_xlabel(f"categories sorted by AP ({len(bars)})")
        axes.set_ylabel("AP (IoU 0.50:0.95)")
    if coloured:
        present = [key for key in FREQUENCY_COLOURS if any(bar.frequency == key for bar in bars)]
        axes.legend(
            handles=[Patch(color=FREQUENCY_COLOURS[key], label=FREQUENCY_NAMES[key]) for key in present],
            loc="lower right",
            fontsize=8,
        )
    axes.set_title(literal(title), fontsize=10)
    axes.grid(axis="x" if len(bars) <= MAX_LABELLED_CATEGORIES else "y", alpha=0.3)
    return _save(figure, path)


@dataclass(frozen=True)
class Series:
    label: str  # legend entry; runs of one group share it and appear once
    x: list[float]
    y: list[float]
    colour: str = PLAIN_COLOUR
    dashed: bool = False


@dataclass
class Panel:
    title: str
    ylabel: str
    series: list[Series] = field(default_factory=list)
    log_y: bool = False
    # Legend entries (in black) for what a solid and a dashed line mean, when a panel uses both.
    line_styles: tuple[str, str] | None = None


def plot_panels(panels: list[Panel], path: Path, ncols: int = 3, xlabel: str = "iteration") -> Path:
    """Small multiples of line plots sharing one legend below them (each label listed once)."""
    ncols = max(1, min(ncols, len(panels)))
    nrows = math.ceil(len(panels) / ncols)
    labels = list(dict.fromkeys(literal(series.label) for panel in panels for series in panel.series))
    styles = next((panel.line_styles for panel in panels if panel.line_styles), None)
    entries = len(labels) + (2 if styles else 0)
    panel_w, panel_h = (4.2, 3.0) if ncols > 1 else (6.0, 3.4)
    width = panel_w * ncols
    legend_columns = max(1, min(entries, int(width // 1.6)))
    legend_h = 0.25 * math.ceil(entries / legend_columns) + 0.2 if entries else 0.0
    height = panel_h * nrows + legend_h
    figure = Figure(figsize=(width, height))
    # Fixed margins in inches (constrained layout would cost a second of layout per figure).
    figure.subplots_adjust(
        left=0.75 / width,
        right=1 - 0.2 / width,
        top=1 - 0.35 / height,
        bottom=(legend_h + 0.55) / height,
        wspace=0.32,
        hspace=0.55,
    )
    axes_grid = figure.subplots(nrows, ncols, squeeze=False)
    handles: dict[str, object] = {}
    for index, panel in enumerate(panels):
        axes = axes_grid[index // ncols][index % ncols]
        for series in panel.series:
            (line,) = axes.plot(
                series.x,
                series.y,
                color=series.colour,
                linestyle="--" if series.dashed else "-",
                linewidth=1.4,
            )
            handles.setdefault(literal(series.label), line)
        axes.set_title(literal(panel.title), fontsize=10)
        axes.set_xlabel(xlabel, fontsize=8)
        axes.set_ylabel(literal(panel.ylabel), fontsize=8)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        positive = all(value > 0 for series in panel.series for value in series.y if not math.isnan(value))
        if panel.log_y and positive and any(series.y for series in panel.series):
            axes.set_yscale("log")
        axes.grid(alpha=0.3)
        axes.tick_params(labelsize=8)
    for index in range(len(panels), nrows * ncols):
        axes_grid[index // ncols][index % ncols].set_visible(False)
    if styles:
        handles[styles[0]] = Line2D([], [], color="black", linestyle="-")
        handles[styles[1]] = Line2D([], [], color="black", linestyle="--")
    if handles:
        figure.legend(
            list(handles.values()),
            list(handles.keys()),
            loc="lower center",
            ncols=legend_columns,
            fontsize=8,
            frameon=False,
        )
    return _save(figure, path)
