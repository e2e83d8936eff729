"""Reports from run directories: Markdown (and optionally self-contained HTML) with tables and figures.

``build_report(run_dirs, out_dir)`` reads each run's config, log, metrics and analyses (``collect.py``),
groups runs that differ only by seed, and writes ``report.md`` with its PNG figures into ``out_dir``
(tables in ``tables.py`` and ``analysis_tables.py``, figures in ``plots.py``, sections in
``sections.py``, the block model in ``document.py``, rendering in ``markdown.py`` / ``html.py``).
"""

from __future__ import annotations

from pathlib import Path

from libra_cli.errors import LibraError
from libra_cli.io import atomic_write_text
from libra_cli.report.collect import find_baseline, group_runs, load_runs
from libra_cli.report.detections import DetectionOptions
from libra_cli.report.html import render_html
from libra_cli.report.markdown import render_markdown
from libra_cli.report.sections import build_document

DEFAULT_TITLE = "libra report"


def build_report(
    run_dirs: list[str | Path],
    out_dir: str | Path,
    *,
    baseline: str | None = None,
    html: bool = False,
    title: str | None = None,
    drawing: DetectionOptions | None = None,
) -> Path:
    """Write ``out_dir/report.md`` (plus figures, and ``report.html`` when ``html``) and return its path.

    ``baseline`` names the run (label or directory) that Δ values are measured against; by default it is
    the configuration with no component switched on. A path that is not a run directory raises a
    one-line LibraError before anything is written. ``drawing`` sets the figure of drawn detections
    (whether to draw, the score threshold, the seed that picks the images).
    """
    runs = load_runs(list(run_dirs))
    groups = group_runs(runs)
    reference = find_baseline(groups, baseline)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise LibraError(f"{out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    document = build_document(groups, out, baseline=reference, title=title or DEFAULT_TITLE, drawing=drawing)
    report = out / "report.md"
    atomic_write_text(report, render_markdown(document))
    if html:
        atomic_write_text(out / "report.html", render_html(document, out))
    return report


__all__ = ["build_report"]
