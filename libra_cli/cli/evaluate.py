"""``libra eval RUN_DIR`` — inference plus COCO / LVIS metrics for a trained run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from libra_cli.cli.ui import category_table, console, count_progress, handle_errors, metrics_table, progress_callback
from libra_cli.data.build import build_eval_dataset
from libra_cli.engine.distributed import is_main_process
from libra_cli.engine.evaluate import evaluate_model
from libra_cli.engine.run import load_trained_model
from libra_cli.engine.train import amp_dtype
from libra_cli.errors import LibraError
from libra_cli.rundir import RunLayout


def evaluate_run(
    run_dir: str | Path,
    *,
    ann: str | Path | None = None,
    images: str | Path | None = None,
    checkpoint: str = "best",
    device: str | None = None,
    batch_size: int | None = None,
    show: bool = True,
) -> dict[str, Any]:
    """Evaluate a run's checkpoint on its val split (or on ``ann``/``images``) into ``RUN_DIR/eval``."""
    if (ann is None) != (images is None):
        raise LibraError("--ann and --images must be given together")
    config, model, info, meta = load_trained_model(run_dir, checkpoint, device)
    ann = ann if ann is not None else info["val_ann"]
    images = images if images is not None else info["val_images"]
    dataset = build_eval_dataset(ann, images, info["category_ids"], config.data.on_bad_sample)
    target = next(model.parameters()).device
    layout = RunLayout(run_dir)
    with count_progress("eval") as progress:
        callback = progress_callback(progress, "inference", len(dataset)) if show else None
        metrics = evaluate_model(
            model,
            dataset,
            layout,
            device=target,
            batch_size=batch_size or config.data.batch_size,
            num_workers=config.data.num_workers,
            autocast_dtype=amp_dtype(config, target),
            extra=meta,
            progress=callback,
        )
    if show and is_main_process():
        console.print(metrics_table(metrics, title=f"{Path(run_dir).name} @ {meta['iteration']}"))
        console.print(category_table(metrics))
        console.print(f"detections and metrics written to {layout.eval_dir}")
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
