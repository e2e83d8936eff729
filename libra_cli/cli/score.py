"""``libra score GT RESULTS`` — score any detector's results file with libra's COCO / LVIS evaluator."""

from __future__ import annotations

from pathlib import Path

import typer

from libra_cli import workflow
from libra_cli.cli.display import RichDisplay
from libra_cli.cli.ui import category_table, console, handle_errors, metrics_table


@handle_errors
def score_command(
    gt: Path = typer.Argument(..., help="Ground truth: a COCO or LVIS annotation JSON."),
    results: Path = typer.Argument(
        ..., help="Results file: a JSON list of {image_id, category_id, bbox [x, y, w, h] | segmentation, score}."
    ),
    iou_type: str = typer.Option("bbox", "--iou-type", help="bbox (box AP) | segm (mask AP, RLE segmentations)."),
    out: Path = typer.Option(
        None, "--out", help="Write OUT/metrics.json (and with --errors OUT/analysis/errors.json, .csv, .png)."
    ),
    errors: bool = typer.Option(
        False, "--errors", help="Also the error decomposition (COCO's C75 … FN and TIDE's error kinds)."
    ),
    evaluator: str = typer.Option(
        "auto",
        "--evaluator",
        help="Who scores box AP: auto | official (pycocotools, lvis) | faster (faster-coco-eval).",
    ),
) -> None:
    """Score a results file with the protocol `libra eval` uses (COCO, or LVIS' federated one)."""
    metrics = workflow.score_results(
        gt, results, iou_type=iou_type, out=out, errors=errors, evaluator=evaluator, display=RichDisplay()
    )
    console.print(metrics_table(metrics, title=f"{results.name} · {metrics['evaluator']}"))
    console.print(category_table(metrics))
    if "errors" in metrics:
        from libra_cli.report.analysis_tables import error_tables
        from libra_cli.report.terminal import render_rich

        for block in error_tables(metrics["errors"]):
            console.print(render_rich(block))
        if metrics["errors"]["note"]:
            console.print(f"note: {metrics['errors']['note']}")
    if out is not None:
        console.print(f"metrics written to {out / 'metrics.json'}")
