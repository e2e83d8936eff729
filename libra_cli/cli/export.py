"""``libra export RUN_DIR --out FILE`` — a trained detector's weights, config and categories in one file
(``--format onnx``: an ONNX graph of the whole detector, see ``libra_cli/engine/onnx_export.py``)."""

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
    file_format: str = typer.Option("pt", "--format", help="pt (weights for libra) | onnx (needs the onnx extra)."),
    check: list[Path] = typer.Option(
        None, "--check", help="ONNX: images run through both the eager model and the graph (needs onnxruntime)."
    ),
) -> None:
    """Write weights to share: no optimizer or training state; `libra predict` and Detector.from_file read it."""
    if not run_dir.is_dir():
        raise LibraError(f"{run_dir}: run directory not found")
    if file_format not in ("pt", "onnx"):
        raise LibraError(f"--format: expected pt or onnx, got {file_format!r}")
    if file_format == "onnx":
        if half:
            raise LibraError("--half: only for --format pt")
        _export_onnx(run_dir, out, checkpoint, check or [], force)
        return
    if check:
        raise LibraError("--check: only with --format onnx")
    path, summary = export_weights(run_dir, out, checkpoint, half=half, overwrite=force)
    console.print(
        f"{path}: {summary['parameters']:,} parameters at iteration {summary['iteration']}, "
        f"{summary['bytes'] / 1e6:.1f} MB, sha256 {summary['sha256']}",
        highlight=False,
        soft_wrap=True,
    )


def _export_onnx(run_dir: Path, out: Path, checkpoint: str, check: list[Path], force: bool) -> None:
    from libra_cli.engine.onnx_export import export_onnx
    from libra_cli.images import image_tensor, open_rgb

    images = [image_tensor(open_rgb(path)) for path in check]
    path, summary = export_onnx(run_dir, out, checkpoint, images, overwrite=force)
    console.print(
        f"{path}: {summary['bytes'] / 1e6:.1f} MB, sha256 {summary['sha256']}", highlight=False, soft_wrap=True
    )
    result = summary.get("check", "not asked")
    if result is None:
        console.print("not checked: onnxruntime is not installed", highlight=False)
    elif isinstance(result, dict):
        console.print(
            f"checked on {result['images']} images against the eager model: same detection counts "
            f"{'yes' if result['same_counts'] else 'NO'}, largest box difference {result['max_box_diff']:.2g} px, "
            f"score difference {result['max_score_diff']:.2g}",
            highlight=False,
            soft_wrap=True,
        )
