"""``libra report RUN_DIR... --out reports/NAME`` — a Markdown (and optionally HTML) report of runs."""

from __future__ import annotations

from pathlib import Path

import typer

from libra_cli.cli.ui import console, handle_errors
from libra_cli.report import build_report
from libra_cli.report.collect import run_label

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
) -> None:
    """Write report.md with the runs' tables (metrics, ablation, LVIS, training, analyses) and figures."""
    target = out or REPORTS_ROOT / run_label(run_dirs[0]).replace("/", "_")
    path = build_report(run_dirs, target, baseline=baseline, html=html, title=title)
    console.print(str(path), highlight=False, soft_wrap=True)
    if html:
        console.print(str(path.with_name("report.html")), highlight=False, soft_wrap=True)
