"""Run directories to analyse: one trained for 1 iteration, and untrained ("fresh") variants of it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from libra_cli.config import apply_overrides, save_config
from libra_cli.engine.checkpoint import save_checkpoint
from libra_cli.engine.train import train
from libra_cli.models.build import build_detector
from libra_cli.rundir import RunLayout
from tests.conftest import tiny_config


@pytest.fixture(scope="session")
def tiny_run(tiny_benchmark, tmp_path_factory) -> Path:
    """A baseline Faster R-CNN trained for 1 iteration on the tiny benchmark (checkpoints last and best)."""
    out = tmp_path_factory.mktemp("analysis_runs") / "baseline"
    train(tiny_config(tiny_benchmark, out, train__max_iters=1, train__seed=0))
    return out


def make_fresh_run(base: Path, out: Path, overrides: dict[str, dict]) -> Path:
    """A run directory with ``base``'s data and config plus ``overrides`` whose only checkpoint is the
    randomly initialised detector (iteration 0) — what a run looks like before it trains."""
    config = apply_overrides(RunLayout(base).read_config(), overrides, "test")
    layout = RunLayout(out)
    layout.root.mkdir(parents=True)
    save_config(config, layout.config)
    shutil.copy(RunLayout(base).dataset, layout.dataset)
    info = layout.read_dataset_info()
    torch.manual_seed(0)
    model = build_detector(
        config,
        len(info["category_ids"]),
        images_per_class=torch.tensor(info["images_per_class"]),
        num_images=info["num_images"],
    )
    save_checkpoint(layout.last, {"model": model.state_dict(), "iteration": 0})
    return out


@pytest.fixture(scope="session")
def fresh_libra_run(tiny_run, tmp_path_factory) -> Path:
    """Untrained Faster R-CNN with every Libra component and EQL on (sigmoid classifier)."""
    out = tmp_path_factory.mktemp("analysis_runs") / "libra_fresh"
    overrides = {"libra": {"iou_sampling": True, "bfp": True, "balanced_l1": True, "eql": True, "bl1_alpha": 0.2}}
    return make_fresh_run(tiny_run, out, overrides)


@pytest.fixture(scope="session")
def fresh_retinanet_run(tiny_run, tmp_path_factory) -> Path:
    """Untrained RetinaNet with BFP and balanced L1."""
    out = tmp_path_factory.mktemp("analysis_runs") / "retinanet_fresh"
    overrides = {"model": {"arch": "retinanet"}, "libra": {"bfp": True, "balanced_l1": True}}
    return make_fresh_run(tiny_run, out, overrides)
