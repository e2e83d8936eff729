"""``libra analyze sampling|features|gradients|tail RUN_DIR`` — the imbalance diagnostics on a run.

Each command calls one library function of ``libra_cli.analysis`` (which returns a dict), writes
``RUN_DIR/analysis/<name>.json``, ``.csv`` and ``.png``, and prints a table.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import typer
from rich.table import Table

from libra_cli.analysis.common import DEFAULT_BATCH_SIZE
from libra_cli.analysis.features import analyze_features, write_features
from libra_cli.analysis.gradients import analyze_gradients, write_gradients
from libra_cli.analysis.sampling import METHODS, analyze_sampling, write_sampling
from libra_cli.analysis.tail import analyze_tail, write_tail
from libra_cli.cli.ui import console, count_progress, handle_errors
from libra_cli.errors import LibraError

app = typer.Typer(
    help="Imbalance diagnostics of a run: sampling (IoU of negatives), features (pyramid levels), gradients, "
    "tail (per-class positive vs discouraging gradients).",
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


def _run_with_progress(
    name: str, analysis: Callable[..., dict[str, Any]], threads: int | None, **kwargs: Any
) -> dict[str, Any]:
    if threads is not None:
        if threads < 1:
            raise LibraError(f"--threads: must be at least 1, got {threads}")
        # Threads that spin-wait for cores other jobs hold slow every operator down; fewer help then.
        torch.set_num_threads(threads)
    with count_progress(name) as progress:
        task = progress.add_task(f"{name} · images", total=kwargs["num_images"])

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        return analysis(progress=update, **kwargs)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _print_written(written: dict[str, Path]) -> None:
    folder = next(iter(written.values())).parent
    console.print(f"written to {folder}: {', '.join(written)}")


def sampling_table(result: dict[str, Any]) -> Table:
    edges = result["bin_edges"]
    reading = result.get("settings", {}).get("reading")
    title = f"sampled negatives by IoU ({result['images']} {result['split']} images"
    table = Table(title=title + (f"; IoU-balanced: {reading} reading)" if reading else ")"))
    table.add_column("IoU")
    for method in METHODS:
        table.add_column(method, justify="right")
    for k in range(len(edges) - 1):
        table.add_row(
            f"[{edges[k]:.2f}, {edges[k + 1]:.2f})",
            *(_pct(result["methods"][m]["fractions"][k]) for m in METHODS),
        )
    table.add_section()
    table.add_row("negatives", *(str(result["methods"][m]["num_negatives"]) for m in METHODS))
    table.add_row("IoU > 0.05", *(_pct(result["methods"][m]["share_above_0.05"]) for m in METHODS), style="bold")
    return table


def features_table(result: dict[str, Any]) -> Table:
    table = Table(title=f"pyramid levels ({result['images']} {result['split']} images)")
    columns = ["level", "mean", "std", "mean |x|", "energy"]
    if result["bfp"]:
        columns += ["BFP mean", "BFP std", "BFP mean |x|", "BFP energy", "‖residual‖/‖FPN‖"]
    columns.append("RoIs")
    for column in columns:
        table.add_column(column, justify="left" if column == "level" else "right")
    roi_levels = result["roi_levels"] or {}
    for row in result["levels"]:
        cells = [
            row["level"],
            _num(row["mean"]),
            _num(row["std"]),
            _num(row["mean_abs"]),
            _pct(row["energy_share"]),
        ]
        if result["bfp"]:
            cells += [
                _num(row["bfp_mean"]),
                _num(row["bfp_std"]),
                _num(row["bfp_mean_abs"]),
                _pct(row["bfp_energy_share"]),
                _num(row["bfp_residual_ratio"]),
            ]
        cells.append(str(roi_levels.get(row["level"], "—")))
        table.add_row(*cells)
    return table


def gradient_tables(result: dict[str, Any]) -> tuple[Table, Table]:
    losses = result["losses"]
    smooth, balanced = losses["smooth_l1"], losses["balanced_l1"]
    balance = Table(
        title=f"box regression: inliers vs outliers (loss ≥ 1), {result['num_samples']} coordinates "
        f"of {result['num_positives']} positives",
        caption=f"smooth L1 β={smooth['beta']:.3g} (torchvision's); balanced L1 α={balanced['alpha']:g} "
        f"γ={balanced['gamma']:g} β={balanced['beta']:g}; ratio = mean gradient per inlier / per outlier",
    )
    for column in ("loss", "inliers", "outliers", "grad/in", "grad/out", "ratio", "in share"):
        balance.add_column(column, justify="left" if column == "loss" else "right", no_wrap=True)
    labels = {"smooth_l1": "smooth L1", "balanced_l1": "balanced L1", "smooth_l1_beta_1": "smooth L1 β=1"}
    for name, stats in losses.items():
        balance.add_row(
            labels.get(name, name),
            str(stats["num_inliers"]),
            str(stats["num_outliers"]),
            _num(stats["inlier_mean_grad"]),
            _num(stats["outlier_mean_grad"]),
            _pct(stats["inlier_outlier_ratio"]),
            _pct(stats["inlier_grad_share"]),
        )
    objective = result["objective"]
    table = Table(title=f"objective balance ({objective['run_box_loss']}; gradients on the {objective['features']})")
    for column in ("loss_cls", "loss_reg", "‖∂L_cls/∂f‖", "‖∂L_reg/∂f‖", "reg / cls"):
        table.add_column(column, justify="right")
    table.add_row(
        _num(objective["loss_cls"], 4),
        _num(objective["loss_reg"], 4),
        _num(objective["grad_norm_cls"], 5),
        _num(objective["grad_norm_reg"], 5),
        _num(objective["grad_ratio_reg_over_cls"]),
    )
    return balance, table


LOWEST_CLASSES = 10
TAIL_CLASS_COLUMNS = ("class", "freq", "train images", "positive RoIs", "positive", "from fg", "from bg", "ratio")


def tail_tables(result: dict[str, Any]) -> tuple[Table, Table]:
    """The head/tail summary per group and the classes with the lowest positive/discouraging ratio."""
    eql = result["eql"]
    weights = "EQL weights" if eql["trained_with_eql"] else f"if EQL weights (λ={eql['lambda']:g})"
    groups = Table(
        title=f"positive / discouraging gradient per class ({result['classifier']}; {result['num_rois']} RoIs, "
        f"{result['num_positive_rois']} positive, {result['images']} {result['split']} images)",
        caption="mean of the per-class ratios; pooled = Σ positive / Σ discouraging",
    )
    for column in ("group", "classes", "positive RoIs", "mean ratio", f"mean ratio, {weights}", "pooled"):
        groups.add_column(column, justify="left" if column == "group" else "right")
    for stats in result["groups"].values():
        groups.add_row(
            stats["title"],
            str(stats["classes"]),
            str(stats["positive_rois"]),
            _num(stats["mean_ratio"], 4),
            _num(stats["mean_eql_ratio"], 4),
            _num(stats["pooled_ratio"], 4),
        )
    lowest = sorted(result["classes"], key=lambda row: (row["ratio"] is None, row["ratio"] or 0.0))[:LOWEST_CLASSES]
    classes = Table(title=f"the {len(lowest)} classes with the lowest ratio")
    for column in (*TAIL_CLASS_COLUMNS, weights):
        classes.add_column(column, justify="left" if column in ("class", "freq") else "right")
    for row in lowest:
        classes.add_row(
            row["name"],
            row["frequency"] or "—",
            str(row["images"]),
            str(row["positive_rois"]),
            _num(row["positive"], 4),
            _num(row["negative_foreground"], 4),
            _num(row["negative_background"], 4),
            _num(row["ratio"], 4),
            _num(row["eql_ratio"], 4) if row["tail"] else "=",
        )
    return groups, classes


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
    result = _run_with_progress(
        "sampling",
        analyze_sampling,
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
    console.print(sampling_table(result))
    _print_written(write_sampling(result))


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
    result = _run_with_progress(
        "features",
        analyze_features,
        threads,
        run_dir=run_dir,
        num_images=images,
        split=split,
        checkpoint=checkpoint,
        device=device,
        seed=seed,
        batch_size=batch_size,
    )
    console.print(features_table(result))
    if result["roi_levels"] is None:
        console.print(f"RoI levels: {result['roi_levels_note']}")
    _print_written(write_features(result))


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
    result = _run_with_progress(
        "gradients",
        analyze_gradients,
        threads,
        run_dir=run_dir,
        num_images=images,
        split=split,
        checkpoint=checkpoint,
        device=device,
        seed=seed,
        batch_size=batch_size,
    )
    for table in gradient_tables(result):
        console.print(table)
    _print_written(write_gradients(result))


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
    result = _run_with_progress(
        "tail",
        analyze_tail,
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
    for table in tail_tables(result):
        console.print(table)
    _print_written(write_tail(result))
