"""Run directories for the inference tests, built without training: a tiny benchmark with sparse category ids
and untrained detectors (seeded) saved as runs, which predict, evaluate and export like trained ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from libra_cli.data.build import benchmark_paths, build_train_dataset
from libra_cli.engine.checkpoint import save_checkpoint, weights_state
from libra_cli.engine.run import dataset_info
from libra_cli.models.build import build_detector
from libra_cli.rundir import RunLayout
from tests.conftest import tiny_config

# The tiny benchmark's category ids 1, 2, 3 become 10, 20, 30: the model's labels 1 … 3 must be mapped back.
SPARSE_IDS = {1: 10, 2: 20, 3: 30}


def sparse_benchmark(benchmark: Path, out: Path) -> Path:
    """A copy of ``benchmark`` whose category ids are :data:`SPARSE_IDS` (names unchanged)."""
    shutil.copytree(benchmark, out)
    for split in ("train", "val"):
        path = out / "annotations" / f"{split}.json"
        data = json.loads(path.read_text())
        for category in data["categories"]:
            category["id"] = SPARSE_IDS[category["id"]]
        for annotation in data["annotations"]:
            annotation["category_id"] = SPARSE_IDS[annotation["category_id"]]
        path.write_text(json.dumps(data))
    return out


def untrained_run(benchmark: Path, out: Path, seed: int = 0, **overrides) -> Path:
    """A run directory (config, dataset.json, checkpoints/best.pt and last.pt at iteration 0) holding the
    detector of ``tiny_config(benchmark, out, **overrides)`` as initialised with ``torch.manual_seed(seed)``."""
    config = tiny_config(benchmark, out, **overrides)
    layout = RunLayout(out)
    layout.root.mkdir(parents=True)
    layout.write_config(config)
    paths = benchmark_paths(benchmark)
    info = dataset_info(paths, build_train_dataset(config.data, paths))
    layout.write_dataset_info(info)
    torch.manual_seed(seed)
    model = build_detector(
        config, len(info["category_ids"]), images_per_class=torch.tensor(info["images_per_class"]), num_images=8
    )
    save_checkpoint(layout.best, weights_state(model, 0))
    save_checkpoint(layout.last, weights_state(model, 0))
    return out
