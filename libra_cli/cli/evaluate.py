"""``libra eval RUN_DIR`` — inference plus COCO / LVIS (or Pascal VOC) metrics for a trained run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from libra_cli import workflow
from libra_cli.cli.display import RichDisplay
from libra_cli.cli.ui import category_table, console, handle_errors, metrics_table
from libra_cli.engine.distributed import is_main_process


def evaluate_run(run_dir: str | Path, *, show: bool = True, **options: Any) -> dict[str, Any]:
    """:func:`libra_cli.workflow.evaluate_run` with a progress bar and the metrics tables (``show``)."""
    metrics = workflow.evaluate_run(run_dir, display=RichDisplay() if show else workflow.QUIET, **options)
    if show and is_main_process():
        console.print(metrics_table(metrics, title=f"{Path(run_dir).name} @ {metrics.get('iteration')}"))
        console.print(category_table(metrics))
        if isinstance(metrics.get("segm"), dict):  # Mask R-CNN: the mask AP of the same detections
            segm = {**metrics["segm"], "num_images": metrics.get("num_images")}
            console.print(metrics_table(segm, title=f"{Path(run_dir).name} @ {metrics.get('iteration')} · masks"))
        if metrics.get("format") == "voc":
            summary = metrics["summary"]
            console.print(
                f"Pascal VOC mAP@0.5: [bold]{_percent(summary.get('mAP'))}[/] (area, VOC2010+), "
                f"mAP_07 [bold]{_percent(summary.get('mAP_07'))}[/] (11-point, VOC2007)"
            )
        console.print(f"detections and metrics of {metrics['eval_set']} written to {metrics['eval_dir']}")
    return metrics


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


@handle_errors
def eval_command(
    run_dir: Path = typer.Argument(..., help="A run directory made by `libra train`."),
    ann: Path = typer.Option(
        None,
        "--ann",
        help="Annotations to evaluate on (default: the run's val split): a COCO / LVIS JSON, or Pascal VOC as a "
        "year folder (its test split) or an ImageSets/Main/<split>.txt list.",
    ),
    images: Path = typer.Option(
        None, "--images", help="Image folder for --ann (VOC: the folder holding the year folder, or its JPEGImages)."
    ),
    out: Path = typer.Option(
        None,
        "--out",
        help="Folder for the results on --ann (default RUN_DIR/eval/<set>/, the annotation file's name); the run's "
        "own RUN_DIR/eval/ is kept for its val split.",
    ),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best | last | a checkpoint path."),
    device: str = typer.Option(None, "--device", help="cpu | cuda (default: the run's device)."),
    batch_size: int = typer.Option(None, "--batch-size", help="Images per inference batch."),
    evaluator: str = typer.Option(
        None,
        "--evaluator",
        help="Who scores box AP: auto | official (pycocotools, lvis) | faster (faster-coco-eval); "
        "default: the run's train.evaluator.",
    ),
) -> None:
    """Evaluate a trained run: detections.json (segmentations.json for Mask R-CNN) and metrics.json in RUN_DIR/eval
    (another set's: in RUN_DIR/eval/<set>/ or --out)."""
    evaluate_run(
        run_dir,
        ann=ann,
        images=images,
        out=out,
        checkpoint=checkpoint,
        device=device,
        batch_size=batch_size,
        evaluator=evaluator,
    )
