"""``libra analyze sampling|features|gradients|tail|errors RUN_DIR`` — the diagnostics of a run.

Each command runs one analysis of ``libra_cli.analysis.ANALYSES`` through ``libra_cli.workflow.analyse_run``
(which returns a dict and writes
``RUN_DIR/analysis/<name>.json``, ``.csv`` and ``.png``) and prints its tables. ``errors`` reads the run's
detections instead of running the model; it checks them before its progress bar starts and then runs the
same steps (:func:`libra_cli.analysis.errors.errors_result`, :func:`~libra_cli.analysis.errors.write_errors`).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import typer

from libra_cli.analysis.common import DEFAULT_BATCH_SIZE
from libra_cli.analysis.errors import errors_result, load_error_inputs, write_errors
from libra_cli.cli.display import RichDisplay
from libra_cli.cli.ui import console, handle_errors
from libra_cli.errors import LibraError
from libra_cli.report.analysis_tables import RUN_TABLES
from libra_cli.report.document import Table, table
from libra_cli.report.terminal import fold_constant_columns, render_rich
from libra_cli.workflow import analyse_run

app = typer.Typer(
    help="Imbalance diagnostics of a run: sampling (IoU of negatives), features (pyramid levels), gradients, "
    "tail (per-class positive vs discouraging gradients); errors (where the AP goes, from the detections).",
    no_args_is_help=True,
)

RUN_DIR = typer.Argument(..., help="A run directory made by `libra train`.")
IMAGES = typer.Option(50, "--images", help="Number of images (the first N of the split).")
SPLIT = typer.Option("train", "--split", help="train | val.")
CHECKPOINT = typer.Option("best", "--checkpoint", help="best | last | a checkpoint path (e.g. an untrained one).")
DEVICE = typer.Option(None, "--device", help="cpu | cuda (default: the run's device).")
SEED = typer.Option(0, "--seed", help="Seed of the samplers' random draws (same seed, same numbers).")
BATCH_SIZE = typer.Option(DEFAULT_BATCH_SIZE, "--batch-size", help="Images per forward pass.")
THREADS = typer.Option(
    None,
    "--threads",
    help="CPU threads for torch (default: torch's choice). 1 is fastest on a CPU that other jobs share.",
)


def _run(name: str, threads: int | None, **options: Any) -> tuple[dict[str, Any], dict[str, Path]]:
    """:func:`libra_cli.workflow.analyse_run` with a progress bar; ``threads`` sets torch's thread count."""
    if threads is not None:
        if threads < 1:
            raise LibraError(f"--threads: must be at least 1, got {threads}")
        # Threads that spin-wait for cores other jobs hold slow every operator down; fewer help then.
        torch.set_num_threads(threads)
    return analyse_run(options.pop("run_dir"), name, display=RichDisplay(), **options)


def _print_written(written: dict[str, Path]) -> None:
    folder = next(iter(written.values())).parent
    console.print(f"written to {folder}: {', '.join(written)}")


def _print_tables(name: str, run_dir: Path, result: dict[str, Any]) -> None:
    """The report's tables of this analysis (``report.analysis_tables.RUN_TABLES``), drawn in the terminal."""
    run = SimpleNamespace(label=Path(run_dir).name, analyses={name: result})
    for block in RUN_TABLES[name](run):
        console.print(render_rich(fold_constant_columns(block)))


@app.command("sampling")
@handle_errors
def sampling_command(
    run_dir: Path = RUN_DIR,
    images: int = IMAGES,
    split: str = SPLIT,
    checkpoint: str = CHECKPOINT,
    device: str = DEVICE,
    seed: int = SEED,
    batch_size: int = BATCH_SIZE,
    threads: int = THREADS,
    reading: str = typer.Option(
        None,
        "--reading",
        help="IoU-balanced sampling as the reference code trains it (reference) or as the paper's text reads "
        "(paper); default: the run's own settings.",
    ),
) -> None:
    """IoU of the negatives random, hard (OHEM) and IoU-balanced sampling pick (the paper's Fig. 2)."""
    result, written = _run(
        "sampling",
        threads,
        run_dir=run_dir,
        num_images=images,
        split=split,
        checkpoint=checkpoint,
        device=device,
        seed=seed,
        batch_size=batch_size,
        reading=reading,
    )
    _print_tables("sampling", run_dir, result)
    _print_written(written)


@app.command("features")
@handle_errors
def features_command(
    run_dir: Path = RUN_DIR,
    images: int = IMAGES,
    split: str = SPLIT,
    checkpoint: str = CHECKPOINT,
    device: str = DEVICE,
    seed: int = SEED,
    batch_size: int = BATCH_SIZE,
    threads: int = THREADS,
) -> None:
    """Per pyramid level: FPN (and BFP) activation statistics and the RoIs pooled from each level."""
    result, written = _run(
        "features",
        threads,
        run_dir=run_dir,
        num_images=images,
        split=split,
        checkpoint=checkpoint,
        device=device,
        seed=seed,
        batch_size=batch_size,
    )
    _print_tables("features", run_dir, result)
    if result["roi_levels"] is None:
        console.print(f"RoI levels: {result['roi_levels_note']}")
    _print_written(written)


@app.command("gradients")
@handle_errors
def gradients_command(
    run_dir: Path = RUN_DIR,
    images: int = IMAGES,
    split: str = SPLIT,
    checkpoint: str = CHECKPOINT,
    device: str = DEVICE,
    seed: int = SEED,
    batch_size: int = BATCH_SIZE,
    threads: int = THREADS,
) -> None:
    """Inlier vs outlier gradients under smooth L1 and balanced L1, and classification vs regression."""
    result, written = _run(
        "gradients",
        threads,
        run_dir=run_dir,
        num_images=images,
        split=split,
        checkpoint=checkpoint,
        device=device,
        seed=seed,
        batch_size=batch_size,
    )
    _print_tables("gradients", run_dir, result)
    _print_written(written)


@app.command("tail")
@handle_errors
def tail_command(
    run_dir: Path = RUN_DIR,
    images: int = IMAGES,
    split: str = SPLIT,
    checkpoint: str = CHECKPOINT,
    device: str = DEVICE,
    seed: int = SEED,
    batch_size: int = BATCH_SIZE,
    threads: int = THREADS,
    over_training: bool = typer.Option(
        True, "--over-training/--no-over-training", help="Also measure the run's other checkpoints."
    ),
) -> None:
    """Per class: positive vs discouraging gradient of its logit, plain and with EQL weights (EQL paper Fig. 1)."""
    result, written = _run(
        "tail",
        threads,
        run_dir=run_dir,
        num_images=images,
        split=split,
        checkpoint=checkpoint,
        device=device,
        seed=seed,
        batch_size=batch_size,
        over_training=over_training,
    )
    _print_tables("tail", run_dir, result)
    _print_written(written)


@app.command("errors")
@handle_errors
def errors_command(
    run_dir: Path = RUN_DIR,
    ann: Path = typer.Option(
        None, "--ann", help="Ground truth to score against (default: the one `libra eval` used, else the val split)."
    ),
    images: Path = typer.Option(
        None, "--images", help="The images of --ann, as given to `libra eval` (only checked; boxes are all it reads)."
    ),
) -> None:
    """Where the AP goes: the COCO error decomposition (C75 … FN) and TIDE's error kinds at IoU 0.5.

    Reads RUN_DIR/eval/detections.json (with --ann, RUN_DIR/eval/<set>/detections.json when `libra eval --ann`
    wrote it); does not run the model.
    """
    # Read and check the inputs before the progress bar starts, so that bad input is one line.
    inputs = load_error_inputs(run_dir, ann=ann, images=images)
    console.print(f"detections {inputs.detections_file} scored against {inputs.ground_truth.path}", highlight=False)
    with RichDisplay().count(f"{Path(run_dir).name} · errors", len(inputs.ground_truth.category_ids)) as count:
        result = errors_result(inputs, count)
    written = write_errors(result)
    for block in error_tables(result):
        console.print(render_rich(block))
    if result["note"]:
        console.print(f"note: {result['note']}")
    _print_written(written)


def error_tables(result: dict[str, Any]) -> list[Table]:
    """The overall COCO breakdown (area under each curve and what the step from the previous kind gains)
    and TIDE's ΔAP and count per error kind."""
    coco, tide = result["coco"], result["tide"]
    rows, previous = [], None
    for kind in coco["kinds"]:
        area = coco["overall"][kind]
        gain = area - previous if area is not None and previous is not None else None
        rows.append([kind, _fraction(area), _fraction(gain)])
        previous = area if area is not None else previous
    breakdown = table(
        ["curve", "AP", "gain"], rows, [False, True, True], caption="COCO error decomposition (area all, overall)"
    )
    kinds = list(tide["delta_ap"])
    tide_rows = [[kind, _fraction(tide["delta_ap"][kind]), str(tide["counts"][kind])] for kind in kinds]
    errors = table(
        ["error", "ΔAP50", "count"],
        tide_rows,
        [False, True, True],
        caption=f"TIDE error kinds (AP50 {_fraction(tide['ap50'])})",
    )
    return [breakdown, errors]


def _fraction(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"
