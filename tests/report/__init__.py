"""Hand-written run directories for the report tests (no training): config, log, metrics, analyses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image

from libra_cli.config import RunConfig, apply_overrides, save_config
from libra_cli.engine.checkpoint import save_checkpoint

COCO_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def coco_summary(ap: float, step: float = 0.01) -> dict[str, float | None]:
    """AP as given, the other eleven metrics AP + k·step so every column holds a distinct value."""
    return {name: round(ap + index * step, 6) for index, name in enumerate(COCO_NAMES)}


def write_png(path: Path, colour: tuple[int, int, int] = (200, 30, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), colour).save(path)


def make_run(
    root: Path,
    name: str,
    *,
    seed: int = 0,
    libra: dict[str, Any] | None = None,
    summary: dict[str, float | None] | None = None,
    per_category: list[dict[str, Any]] | None = None,
    metrics_format: str = "coco",
    log: list[dict[str, Any]] | None = None,
    analyses: dict[str, dict[str, Any]] | None = None,
    max_iters: int = 40,
    extra: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """A finished-looking run directory under ``root/name``; ``summary=None`` leaves it unevaluated."""
    run_dir = root / name
    overrides: dict[str, dict[str, Any]] = {
        "train": {"out": str(run_dir), "seed": seed, "max_iters": max_iters},
        "libra": dict(libra or {}),
    }
    for section, values in (extra or {}).items():
        overrides.setdefault(section, {}).update(values)
    config = apply_overrides(RunConfig(), overrides, "fixture")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    (run_dir / "dataset.json").write_text(
        json.dumps({"category_ids": [1, 2], "images_per_class": [3, 3], "num_images": 4})
    )
    records = log if log is not None else default_log(max_iters)
    (run_dir / "log.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    if summary is not None:
        metrics = {
            "format": metrics_format,
            "summary": summary,
            "per_category": per_category or [],
            "num_images": 4,
            "iteration": max_iters,
        }
        (run_dir / "eval").mkdir(exist_ok=True)
        (run_dir / "eval" / "metrics.json").write_text(json.dumps(metrics))
    for analysis, data in (analyses or {}).items():
        (run_dir / "analysis").mkdir(exist_ok=True)
        (run_dir / "analysis" / f"{analysis}.json").write_text(json.dumps(data))
        write_png(run_dir / "analysis" / f"{analysis}.png")
    return run_dir


def default_log(max_iters: int) -> list[dict[str, Any]]:
    """Two logged windows of a Faster R-CNN run: cls terms 0.6 + 0.2 then 0.4 + 0.1, box-regression
    terms 0.3 + 0.05 then 0.2 + 0.05."""
    return [
        {"type": "start", "iter": 0, "components": []},
        {
            "type": "train",
            "iter": max_iters // 2,
            "lr": 0.01,
            "loss": 1.15,
            "loss_classifier": 0.6,
            "loss_box_reg": 0.3,
            "loss_objectness": 0.2,
            "loss_rpn_box_reg": 0.05,
            "time_per_iter": 0.5,
            "memory_mb": 100.0,
        },
        {
            "type": "train",
            "iter": max_iters,
            "lr": 0.001,
            "loss": 0.75,
            "loss_classifier": 0.4,
            "loss_box_reg": 0.2,
            "loss_objectness": 0.1,
            "loss_rpn_box_reg": 0.05,
            "time_per_iter": 0.7,
            "memory_mb": 120.0,
        },
        {"type": "eval", "iter": max_iters, "AP": 0.1},
    ]


def write_checkpoint(run_dir: Path, iteration: int) -> None:
    """A minimal libra checkpoint at ``iteration`` (no weights: only the fields the grid runner reads)."""
    save_checkpoint(run_dir / "checkpoints" / "last.pt", {"model": {}, "iteration": iteration})


def parse_table(markdown: str, heading: str, index: int = 0) -> list[dict[str, str]]:
    """The ``index``-th table after the line ``heading``, as {column: cell text} rows, Markdown
    backslash escapes undone (a ``\\|`` inside a cell stays inside it)."""
    lines = markdown.splitlines()
    tables: list[list[str]] = [[]]
    for line in lines[lines.index(heading) + 1 :]:
        if line.startswith("#"):  # the next heading ends the section
            break
        if line.startswith("|"):
            tables[-1].append(line)
        elif tables[-1]:
            tables.append([])
    tables = [block for block in tables if block]
    rows = [_split_row(line) for line in tables[index]]
    header, body = rows[0], rows[2:]
    return [dict(zip(header, row, strict=True)) for row in body]


def _split_row(line: str) -> list[str]:
    cells, cell, escaped = [], "", False
    for char in line.strip()[1:-1]:
        if escaped:
            cell += char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "|":
            cells.append(cell.strip())
            cell = ""
        else:
            cell += char
    cells.append(cell.strip())
    return [cell.strip("`") for cell in cells]


SAMPLING_ANALYSIS = {
    "analysis": "sampling",
    "run": "x",
    "images": 8,
    "split": "val",
    "bin_edges": [0.0, 0.05, 0.25, 0.5],
    "methods": {
        "random": {
            "counts": [70, 20, 10],
            "fractions": [0.7, 0.2, 0.1],
            "num_negatives": 100,
            "share_above_0.05": 0.3,
        },
        "hard": {
            "counts": [35, 40, 25],
            "fractions": [0.35, 0.4, 0.25],
            "num_negatives": 100,
            "share_above_0.05": 0.65,
        },
        "iou_balanced": {
            "counts": [40, 35, 25],
            "fractions": [0.4, 0.35, 0.25],
            "num_negatives": 100,
            "share_above_0.05": 0.6,
        },
    },
    "settings": {},
}
FEATURES_ANALYSIS = {
    "analysis": "features",
    "run": "x",
    "images": 8,
    "levels": [
        {
            "level": "P2",
            "mean": 0.1,
            "std": 1.5,
            "mean_abs": 0.9,
            "energy_share": 0.4,
            "bfp_mean": 0.12,
            "bfp_std": 1.2,
            "bfp_mean_abs": 0.8,
            "bfp_energy_share": 0.3,
            "bfp_residual_ratio": 0.25,
        },
        {
            "level": "P3",
            "mean": 0.2,
            "std": 1.0,
            "mean_abs": 0.7,
            "energy_share": 0.6,
            "bfp_mean": 0.2,
            "bfp_std": 1.1,
            "bfp_mean_abs": 0.75,
            "bfp_energy_share": 0.7,
            "bfp_residual_ratio": 0.5,
        },
    ],
    "bfp": True,
    "roi_levels": {"P2": 120, "P3": 30},
}
GRADIENTS_ANALYSIS = {
    "analysis": "gradients",
    "run": "x",
    "images": 8,
    "num_samples": 500,
    "losses": {
        "smooth_l1": {
            "beta": 1.0,
            "inlier_mean_grad": 0.2,
            "outlier_mean_grad": 1.0,
            "inlier_outlier_ratio": 0.2,
            "inlier_grad_share": 0.45,
            "outlier_grad_share": 0.55,
            "num_inliers": 400,
            "num_outliers": 100,
        },
        "balanced_l1": {
            "beta": 1.0,
            "alpha": 0.5,
            "gamma": 1.5,
            "inlier_mean_grad": 0.5,
            "outlier_mean_grad": 1.5,
            "inlier_outlier_ratio": 0.3333,
            "inlier_grad_share": 0.57,
            "outlier_grad_share": 0.43,
            "num_inliers": 400,
            "num_outliers": 100,
        },
    },
    "objective": {"loss_cls": 0.5, "loss_reg": 0.25, "grad_norm_cls": 2.0, "grad_norm_reg": 0.5},
}
