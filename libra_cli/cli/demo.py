"""``libra demo`` — the whole story on the embedded synthetic benchmark: data → baseline and Libra runs →
the three imbalance analyses → a markdown report (the pipeline is :func:`libra_cli.workflow.demo`)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.panel import Panel

from libra_cli.cli.display import RichDisplay
from libra_cli.cli.ui import console, handle_errors
from libra_cli.rundir import ANALYSIS, RunLayout
from libra_cli.workflow import DEMO_ANALYSES, DEMO_ANALYSIS_IMAGES, ERRORS, DemoResult, demo


def summary_panel(result: DemoResult, synth_dir: Path, out: Path) -> Panel:
    """Where everything the demo made lives, with the two runs' AP."""
    lines = [f"benchmark   {synth_dir} (annotations/, images/)"]
    for name, metrics in result.metrics.items():
        summary = metrics["summary"]
        lines.append(f"{name:<11} {result.runs[name]}  AP {summary['AP']:.3f}  AP50 {summary['AP50']:.3f}")
        lines.append(f"{'':<11} metrics: {RunLayout(result.runs[name]).metrics}")
    lines.append(f"analyses    {out}/<run>/{ANALYSIS}/ ({', '.join((*DEMO_ANALYSES, ERRORS))})")
    lines.append(f"report      {result.report}")
    lines.append(f"wall time   {result.minutes:.1f} min")
    lines.append("then        libra ablate experiments/ablation_table2.yaml --seeds 3")
    return Panel("\n".join(lines), title="libra demo", expand=False)


@handle_errors
def demo_command(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Folder for the demo's runs."),
    synth_dir: Path = typer.Option(Path("data/synth"), "--synth-dir", help="Where the benchmark is generated."),
    report_dir: Path = typer.Option(Path("reports/demo"), "--report", help="Where the report is written."),
    max_iters: int = typer.Option(None, "--max-iters", help="Override the demo schedule's length."),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    analysis_images: int = typer.Option(DEMO_ANALYSIS_IMAGES, "--analysis-images", help="Images per analysis."),
    with_libra: bool = typer.Option(
        True, "--with-libra/--baseline-only", help="Train the full Libra R-CNN run beside the baseline."
    ),
    jobs: int = typer.Option(None, "--jobs", help="Runs trained at once (default: 2 on a multi-core CPU)."),
) -> None:
    """Benchmark → baseline and full Libra R-CNN runs → the three analyses → report."""
    result = demo(
        out,
        synth_dir,
        report_dir=report_dir,
        max_iters=max_iters,
        device=device,
        seed=seed,
        analysis_images=analysis_images,
        with_libra=with_libra,
        jobs=jobs,
        display=RichDisplay(),
    )
    console.print(summary_panel(result, synth_dir, out))
