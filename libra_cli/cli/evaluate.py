"""``libra eval RUN_DIR`` — inference plus COCO / LVIS metrics for a trained run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from libra_cli import workflow
from libra_cli.cli.display import RichDisplay
from libra_cli.cli.ui import category_table, console, handle_errors, metrics_table
from libra_cli.engine.distributed import is_main_process
from libra_cli.rundir import RunLayout


def evaluate_run(run_dir: str | Path, *, show: bool = True, **options: Any) -> dict[str, Any]:
    """:func:`libra_cli.workflow.evaluate_run` with a progress bar and the metrics tables (``show``)."""
    metrics = workflow.evaluate_run(run_dir, display=RichDisplay() if show else workflow.QUIET, **options)
    if show and is_main_process():
        console.print(metrics_table(metrics, title=f"{Path(run_dir).name} @ {metrics.get('iteration')}"))
        console.print(category_table(metrics))
        console.print(f"detections and metrics written to {RunLayout(run_dir).eval_dir}")
    return metrics


@handle_errors
def eval_command(
    run_dir: Path = typer.Argument(..., help="A run directory made by `libra train`."),
    ann: Path = typer.Option(None, "--ann", help="Annotations to evaluate on (default: the run's val split)."),
    images: Path = typer.Option(None, "--images", help="Image folder for --ann."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best | last | a checkpoint path."),
    device: str = typer.Option(None, "--device", help="cpu | cuda (default: the run's device)."),
    batch_size: int = typer.Option(None, "--batch-size", help="Images per inference batch."),
) -> None:
    """Evaluate a trained run: detections.json and metrics.json in RUN_DIR/eval."""
    evaluate_run(run_dir, ann=ann, images=images, checkpoint=checkpoint, device=device, batch_size=batch_size)
