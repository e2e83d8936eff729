"""``libra report RUN_DIR... --out reports/NAME`` — a Markdown (and optionally HTML) report of runs."""

from __future__ import annotations

from pathlib import Path

import typer

from libra_cli.cli.ui import console, handle_errors
from libra_cli.report.collect import run_label
from libra_cli.report.detections import DetectionOptions
from libra_cli.workflow import report_runs

REPORTS_ROOT = Path("reports")


@handle_errors
def report_command(
    run_dirs: list[Path] = typer.Argument(..., help="Run directories (runs differing only by seed are grouped)."),
    out: Path = typer.Option(None, "--out", help="Report folder (default: reports/NAME of the first run)."),
    baseline: str = typer.Option(
        None,
        "--baseline",
        help="Run label or directory to measure Δ against (default: the run with no components).",
    ),
    html: bool = typer.Option(False, "--html", help="Also write a self-contained report.html (images inlined)."),
    title: str = typer.Option(None, "--title", help="Report title."),
    detections: bool = typer.Option(
        True,
        "--detections/--no-detections",
        help="Draw the ground truth and each run's detections on a few validation images.",
    ),
    score_thr: float = typer.Option(0.5, "--score-thr", help="Draw only detections with at least this score."),
    seed: int = typer.Option(
        0, "--seed", help="Seed drawing the validation images shown besides those the baseline misses most."
    ),
) -> None:
    """Write report.md with the runs' tables (metrics, ablation, LVIS, errors, training, analyses) and figures."""
    target = out or REPORTS_ROOT / run_label(run_dirs[0]).replace("/", "_")
    drawing = DetectionOptions(enabled=detections, score_thr=score_thr, seed=seed)
    path = report_runs(run_dirs, target, baseline=baseline, html=html, title=title, detections=drawing)
    console.print(str(path), highlight=False, soft_wrap=True)
    if html:
        console.print(str(path.with_name("report.html")), highlight=False, soft_wrap=True)
