"""A trained run brought back: its detector rebuilt from the run directory, and what it was trained on.

The run directory's files are read and written by ``libra_cli/rundir.py``; this module builds the
``dataset.json`` payload, the EQL frequency denominator derived from it, the device to run on, and the
detector of a checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from libra_cli.config import RunConfig
from libra_cli.data.build import absolute_paths
from libra_cli.engine.checkpoint import load_checkpoint
from libra_cli.errors import LibraError
from libra_cli.rundir import RunLayout


def dataset_info(paths: Any, train_set: Any, given: Any = None) -> dict[str, Any]:
    """The ``dataset.json`` payload of a run: where its data lives and the training set's categories and
    per-class counts (``paths`` is a ``DataPaths``, ``train_set`` a ``DetectionDataset``).

    The paths are saved absolute, so that the run can be evaluated, analysed and reported from any working
    directory; ``given`` (the ``DataPaths`` as the user typed them) is kept under "given" for display."""
    names = ("train_ann", "train_images", "val_ann", "val_images")
    absolute = absolute_paths(paths)
    return {
        **{name: str(getattr(absolute, name)) for name in names},
        "given": {name: str(getattr(given if given is not None else paths, name)) for name in names},
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


def run_is_finished(layout: RunLayout, max_iters: int) -> bool:
    """Trained and evaluated: the run's last checkpoint is at ``max_iters`` (or past it) and
    ``eval/metrics.json`` exists. `libra ablate` and `libra demo` reuse such a run instead of training."""
    if not layout.last.is_file():
        return False
    iteration = int(load_checkpoint(layout.last)["iteration"])
    return iteration >= max_iters and layout.metrics.is_file()


def resolve_device(name: str) -> torch.device:
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise LibraError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    return torch.device(name)


def detector_with_state(
    config: RunConfig, categories: dict[str, Any], state: dict[str, torch.Tensor], mismatch: str
) -> nn.Module:
    """The detector of ``config`` for a training set's ``categories`` (its ``dataset.json`` fields: category
    ids, images per class, the EQL denominator's counts) with the trained ``state`` loaded. The state
    supersedes the config's initial weights files, which are not read; a state of another shape is a
    LibraError ``"<mismatch> (<torch's first line>)"``."""
    from libra_cli.models.build import build_detector

    config.model.weights = None
    config.model.backbone_weights = None
    model = build_detector(
        config,
        len(categories["category_ids"]),
        images_per_class=torch.tensor(categories["images_per_class"]),
        num_images=eql_frequency_denominator(categories, config.libra.eql_freq),
    )
    try:
        model.load_state_dict(state)  # float16 tensors (a half weights file) are copied into float32 parameters
    except RuntimeError as exc:
        raise LibraError(f"{mismatch} ({str(exc).splitlines()[0]})") from exc
    return model


def load_trained_model(
    run_dir: str | Path, checkpoint: str = "best", device: str | None = None
) -> tuple[RunConfig, nn.Module, dict[str, Any], dict[str, Any]]:
    """Rebuild a run's detector and load a checkpoint ("best", "last" or a path).

    Returns (config, model on device in eval mode, dataset info, checkpoint metadata).
    """
    layout = RunLayout(run_dir)
    if not layout.root.is_dir():
        raise LibraError(f"{run_dir}: run directory not found")
    config = layout.read_config()
    info = layout.read_dataset_info()
    if checkpoint in ("best", "last"):
        path = layout.best if checkpoint == "best" and layout.best.is_file() else layout.last
    else:
        path = Path(checkpoint)
    state = load_checkpoint(path)
    model = detector_with_state(config, info, state["model"], f"{path}: does not match the run's detector")
    target = resolve_device(device or config.train.device)
    model.to(target).eval()
    meta = {"checkpoint": str(path), "iteration": int(state["iteration"])}
    return config, model, info, meta
