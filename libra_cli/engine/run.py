"""A run directory is the unit of record; this module knows its layout.

RUN_DIR/
  config.yaml          the resolved config (what the run did)
  dataset.json         category ids/names and training-set class statistics
  log.jsonl            one JSON line per logged iteration and per evaluation
  checkpoints/last.pt  the latest state (model, optimizer, scaler, RNG, iteration)
  checkpoints/best.pt  the state with the best val AP so far
  eval/                detections.json, metrics.json (from training's final evaluation or `libra eval`)
  analysis/            outputs of `libra analyze`
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from libra_cli.config import RunConfig, load_run_config
from libra_cli.engine.checkpoint import atomic_write_text, load_checkpoint
from libra_cli.errors import LibraError


@dataclass(frozen=True)
class RunLayout:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def dataset(self) -> Path:
        return self.root / "dataset.json"

    @property
    def log(self) -> Path:
        return self.root / "log.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.pt"

    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"

    @property
    def analysis_dir(self) -> Path:
        return self.root / "analysis"


def dataset_info(paths: Any, train_set: Any) -> dict[str, Any]:
    """The ``dataset.json`` payload of a run: where its data lives and the training set's categories and
    per-class counts (``paths`` is a ``DataPaths``, ``train_set`` a ``DetectionDataset``)."""
    return {
        "train_ann": str(paths.train_ann),
        "train_images": str(paths.train_images),
        "val_ann": str(paths.val_ann),
        "val_images": str(paths.val_images),
        "format": train_set.format,
        "category_ids": train_set.category_ids,
        "category_names": train_set.category_names(),
        "images_per_class": train_set.images_per_class().tolist(),
        "instances_per_class": train_set.instances_per_class().tolist(),
        "num_images": len(train_set),
        "num_annotated_images": train_set.num_annotated_images(),
        "skipped_boxes": train_set.skipped_boxes,
        "skipped_images": train_set.skipped_images,
    }


def eql_frequency_denominator(info: dict[str, Any], mode: str) -> int:
    """The denominator of EQL's image frequencies f_j = images with class j / denominator (EQL paper §3).

    ``mode`` is ``libra.eql_freq``: "annotated" divides by the training images holding at least one
    annotation (the EQL authors' code), "all" by every training image (the paper's text, "the entire
    dataset"). A ``dataset.json`` written before the annotated count was recorded falls back to all
    images; a trained model's tail mask is restored from its checkpoint either way.
    """
    if mode == "all":
        return int(info["num_images"])
    return int(info.get("num_annotated_images", info["num_images"]))


def write_dataset_info(layout: RunLayout, info: dict[str, Any]) -> None:
    atomic_write_text(layout.dataset, json.dumps(info, indent=2))


def read_dataset_info(layout: RunLayout) -> dict[str, Any]:
    try:
        info = json.loads(layout.dataset.read_text())
    except FileNotFoundError as exc:
        raise LibraError(f"{layout.root}: not a run directory (no dataset.json)") from exc
    except json.JSONDecodeError as exc:
        raise LibraError(f"{layout.dataset}: not valid JSON ({exc})") from exc
    for key in ("category_ids", "images_per_class", "num_images"):
        if key not in info:
            raise LibraError(f"{layout.dataset}: missing field {key!r}")
    return info


def resolve_device(name: str) -> torch.device:
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise LibraError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    return torch.device(name)


def load_trained_model(
    run_dir: str | Path, checkpoint: str = "best", device: str | None = None
) -> tuple[RunConfig, nn.Module, dict[str, Any], dict[str, Any]]:
    """Rebuild a run's detector and load a checkpoint ("best", "last" or a path).

    Returns (config, model on device in eval mode, dataset info, checkpoint metadata).
    """
    from libra_cli.models.build import build_detector

    layout = RunLayout(Path(run_dir))
    if not layout.root.is_dir():
        raise LibraError(f"{run_dir}: run directory not found")
    config = load_run_config(layout.root)
    info = read_dataset_info(layout)
    if checkpoint in ("best", "last"):
        path = layout.best if checkpoint == "best" and layout.best.is_file() else layout.last
    else:
        path = Path(checkpoint)
    state = load_checkpoint(path)
    config.model.weights = None  # the checkpoint supersedes any initial weights file
    config.model.backbone_weights = None
    model = build_detector(
        config,
        len(info["category_ids"]),
        images_per_class=torch.tensor(info["images_per_class"]),
        num_images=eql_frequency_denominator(info, config.libra.eql_freq),
    )
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise LibraError(f"{path}: does not match the run's detector ({str(exc).splitlines()[0]})") from exc
    target = resolve_device(device or config.train.device)
    model.to(target).eval()
    meta = {"checkpoint": str(path), "iteration": int(state["iteration"])}
    return config, model, info, meta
