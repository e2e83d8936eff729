"""Weights to share: a trained detector in one file, and the one way to load a detector for inference.

``libra export RUN_DIR --out FILE`` writes a *weights file*: the model's ``state_dict`` (optionally in
float16), the run's resolved config and its categories (ids, names and the per-class image counts the
EQL classifier is built with), and the iteration it was taken at — no optimizer, scaler or random state.
Like mmdetection's ``publish_model`` the file's name carries the first 8 hex digits of its SHA-256
(``libra.pt`` → ``libra-1a2b3c4d.pt``), so a download can be checked against its name. The file holds only
tensors, numbers, strings and containers, and is read with ``torch.load(..., weights_only=True)``.

:func:`load_detector` takes a run directory (and a checkpoint name) or a weights file and returns the
detector ready for inference with what is needed to name its outputs.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from libra_cli.config import RunConfig, apply_overrides, validate
from libra_cli.engine.run import detector_with_state, load_trained_model, resolve_device
from libra_cli.errors import LibraError
from libra_cli.io import load_tensors_safely, write_named_by_hash
from libra_cli.rundir import RunLayout

WEIGHTS_FORMAT = "libra-weights-v1"
# What a weights file keeps of the run's dataset.json: enough to build the detector and name its labels.
CATEGORY_FIELDS = (
    "category_ids",
    "category_names",
    "images_per_class",
    "num_images",
    "num_annotated_images",
    "format",  # the annotations' format ("coco", "lvis", "voc"): LVIS keeps 300 detections per image
)


@dataclass
class LoadedDetector:
    """A detector ready for inference and what names its outputs."""

    config: RunConfig
    model: nn.Module  # on its device, in eval mode
    category_ids: list[int]  # the dataset's id of model label k + 1 (label 0 is the background)
    category_names: list[str]  # in the same order
    source: str  # the checkpoint or weights file read
    iteration: int  # the training iteration the weights were taken at
    annotation_format: str = "coco"  # of the training set: "coco", "lvis" or "voc"


def export_weights(
    run_dir: str | Path, out: str | Path, checkpoint: str = "best", half: bool = False, overwrite: bool = False
) -> tuple[Path, dict[str, Any]]:
    """Write run ``run_dir``'s detector (checkpoint "best", "last" or a path) as a weights file next to
    ``out`` with the SHA-256 prefix in its name; ``half`` stores floating tensors as float16.

    Returns (the path written, a summary: parameters, bytes, sha256, iteration). A file already at that name
    is a LibraError unless ``overwrite``.
    """
    out = Path(out)
    if out.suffix != ".pt":
        raise LibraError(f"--out {out}: a weights file name must end in .pt")
    config, model, info, meta = load_trained_model(run_dir, checkpoint, "cpu")
    state = {
        name: tensor.half() if half and tensor.is_floating_point() else tensor
        for name, tensor in model.state_dict().items()
    }
    payload = {
        "format": WEIGHTS_FORMAT,
        "model": state,
        "config": config.to_dict(),
        "categories": {key: info[key] for key in CATEGORY_FIELDS if key in info},
        "iteration": meta["iteration"],
        "dtype": "float16" if half else "float32",
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    path, digest = write_named_by_hash(out, data, overwrite=overwrite)
    summary = {
        "parameters": sum(parameter.numel() for parameter in model.parameters()),
        "bytes": len(data),
        "sha256": digest,
        "iteration": meta["iteration"],
    }
    return path, summary


def read_weights_file(path: str | Path) -> dict[str, Any]:
    """A weights file's content, checked; one-line LibraErrors for missing, corrupt or foreign files."""
    path = Path(path)
    if not path.is_file():
        raise LibraError(f"{path}: weights file not found")
    payload = load_tensors_safely(path, "weights file")
    if not isinstance(payload, dict) or payload.get("format") != WEIGHTS_FORMAT:
        hint = " (a training checkpoint: give its run directory, or export it with `libra export`)"
        is_checkpoint = isinstance(payload, dict) and "optimizer" in payload
        raise LibraError(f"{path}: not a libra weights file{hint if is_checkpoint else ''}")
    for key in ("model", "config", "categories", "iteration"):
        if key not in payload:
            raise LibraError(f"{path}: weights file misses field {key!r}")
    return payload


def load_weights_file(path: str | Path, device: str | None = None) -> LoadedDetector:
    """The detector of a weights file (:func:`export_weights`), in float32 on ``device`` (default: the
    config's device, else the CPU when CUDA is missing)."""
    payload = read_weights_file(path)
    config = apply_overrides(RunConfig(), payload["config"], f"{path}: config")
    validate(config)
    categories = payload["categories"]
    mismatch = f"{path}: does not match its own config's detector"
    model = detector_with_state(config, categories, payload["model"], mismatch)
    model.to(resolve_device(device or available_device(config.train.device))).eval()
    return LoadedDetector(
        config,
        model,
        list(categories["category_ids"]),
        list(categories["category_names"]),
        str(path),
        int(payload["iteration"]),
        categories.get("format", "coco"),
    )


def available_device(trained_on: str) -> str:
    """Where to run a detector trained on ``trained_on`` when no device is asked for: there, or on the CPU
    when it was a CUDA device and this machine has none."""
    return "cpu" if trained_on.startswith("cuda") and not torch.cuda.is_available() else trained_on


def load_detector(source: str | Path, checkpoint: str = "best", device: str | None = None) -> LoadedDetector:
    """A run directory (with ``checkpoint`` "best", "last" or a path) or a weights file, ready for inference
    on ``device`` (default: where it was trained, the CPU when that was CUDA and there is none here)."""
    source = Path(source)
    if source.is_dir():
        device = device or available_device(RunLayout(source).read_config().train.device)
        config, model, info, meta = load_trained_model(source, checkpoint, device)
        return LoadedDetector(
            config,
            model,
            list(info["category_ids"]),
            list(info["category_names"]),
            meta["checkpoint"],
            meta["iteration"],
            info.get("format", "coco"),
        )
    if source.is_file():
        return load_weights_file(source, device)
    raise LibraError(f"{source}: not found (expected a run directory or a weights file from `libra export`)")
