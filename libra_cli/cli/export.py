"""``libra export RUN_DIR --out FILE`` — a trained detector's weights, config and categories in one file."""

from __future__ import annotations

from pathlib import Path

import typer

from libra_cli.cli.ui import console, handle_errors
from libra_cli.engine.weights import export_weights
from libra_cli.errors import LibraError


@handle_errors
def export_command(
    run_dir: Path = typer.Argument(..., help="A run directory made by `libra train`."),
    out: Path = typer.Option(
        ..., "--out", help="File name (.pt); the SHA-256's first 8 hex digits are added: libra.pt → libra-1a2b3c4d.pt."
    ),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best | last | a checkpoint path."),
    half: bool = typer.Option(False, "--half", help="Store the weights as float16 (half the size)."),
    force: bool = typer.Option(False, "--force", help="Replace a file of the same name."),
) -> None:
    """Write weights to share: no optimizer or training state; `libra predict` and Detector.from_file read it."""
    if not run_dir.is_dir():
        raise LibraError(f"{run_dir}: run directory not found")
    path, summary = export_weights(run_dir, out, checkpoint, half=half, overwrite=force)
    console.print(
        f"{path}: {summary['parameters']:,} parameters at iteration {summary['iteration']}, "
        f"{summary['bytes'] / 1e6:.1f} MB, sha256 {summary['sha256']}",
        highlight=False,
        soft_wrap=True,
    )
