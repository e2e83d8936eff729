"""``libra predict RUN_DIR|FILE INPUT... --out DIR`` — a trained detector on new images: JSON and drawings."""

from __future__ import annotations

from pathlib import Path

import typer

from libra_cli.api import Detector
from libra_cli.cli.display import RichDisplay
from libra_cli.cli.ui import console, handle_errors
from libra_cli.errors import LibraError
from libra_cli.predict import PREDICTIONS, predict_files


@handle_errors
def predict_command(
    source: Path = typer.Argument(
        ..., help="A run directory made by `libra train`, or a weights file from `libra export`."
    ),
    inputs: list[str] = typer.Argument(
        ..., help="Image files, folders and glob patterns (JPEG, PNG, BMP, WebP, TIFF)."
    ),
    out: Path = typer.Option(..., "--out", help="Folder for predictions.json and the drawn images."),
    checkpoint: str = typer.Option(
        "best", "--checkpoint", help="For a run directory: best | last | a checkpoint path."
    ),
    device: str = typer.Option(None, "--device", help="cpu | cuda | cuda:N (default: the run's, CPU without CUDA)."),
    batch_size: int = typer.Option(4, "--batch-size", help="Images per inference batch."),
    score_thr: float = typer.Option(
        0.3, "--score-thr", help="Keep detections with at least this score (0 keeps all, as `libra eval` does)."
    ),
    amp: bool = typer.Option(None, "--amp/--no-amp", help="Autocast on CUDA (default: the run's train.amp)."),
    draw: bool = typer.Option(True, "--draw/--no-draw", help="Write each image with its detections drawn."),
    force: bool = typer.Option(False, "--force", help="Write into an --out folder that already holds files."),
) -> None:
    """Detect objects on new images: OUT/predictions.json (COCO results + file and category names) and drawings."""
    if source.is_dir():
        detector = Detector.from_run(source, checkpoint=checkpoint, device=device)
    elif source.is_file():
        if checkpoint != "best":
            raise LibraError(f"--checkpoint: only for a run directory; {source} is a weights file")
        detector = Detector.from_file(source, device=device)
    else:
        raise LibraError(f"{source}: not found (expected a run directory or a weights file from `libra export`)")
    summary = predict_files(
        detector,
        inputs,
        out,
        batch_size=batch_size,
        score_thr=score_thr,
        amp=amp,
        draw=draw,
        force=force,
        display=RichDisplay(),
    )
    drawn = f", {len(summary.drawn)} drawn images" if summary.drawn else ""
    skipped = f"; {len(summary.skipped)} skipped" if summary.skipped else ""
    console.print(
        f"{summary.processed} images, {summary.detections} detections (score ≥ {score_thr:g}){skipped} → "
        f"{summary.out / PREDICTIONS}{drawn}",
        highlight=False,
        soft_wrap=True,
    )
