"""Shared fixtures: a tiny synthetic benchmark and a tiny, fast detector config."""

from __future__ import annotations

from pathlib import Path

import pytest

from libra_cli.config import RunConfig, load_config
from libra_cli.data.build import benchmark_paths
from libra_cli.data.synth import SynthSpec, generate_benchmark

TINY_SPEC = SynthSpec(num_train=8, num_val=4, image_size=96, num_classes=3, min_objects=1, max_objects=3, seed=3)


@pytest.fixture(scope="session")
def tiny_benchmark(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny_synth")
    generate_benchmark(root, TINY_SPEC)
    return root


@pytest.fixture(scope="session")
def tiny_lvis_benchmark(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny_lvis")
    generate_benchmark(
        root,
        SynthSpec(num_train=12, num_val=6, image_size=96, num_classes=6, long_tail=True, max_objects=4, seed=5),
    )
    return root


def tiny_config(benchmark: Path, out: Path, **overrides) -> RunConfig:
    """A detector small enough to train a few iterations in seconds on 2 CPU cores."""
    paths = benchmark_paths(benchmark)
    sections = {
        "data": {
            "train_ann": str(paths.train_ann),
            "train_images": str(paths.train_images),
            "val_ann": str(paths.val_ann),
            "val_images": str(paths.val_images),
            "batch_size": 2,
            "num_workers": 0,
        },
        "model": {
            "fpn_channels": 32,
            "min_size": 96,
            "max_size": 96,
            "box_head_dim": 64,
            "roi_batch_size_per_image": 64,
            "rpn_pre_nms_top_n_train": 300,
            "rpn_post_nms_top_n_train": 100,
            "rpn_pre_nms_top_n_test": 100,
            "rpn_post_nms_top_n_test": 50,
        },
        "train": {
            "out": str(out),
            "max_iters": 6,
            "lr": 0.01,
            "warmup_iters": 2,
            "log_interval": 1,
            "checkpoint_interval": 3,
        },
    }
    for key, value in overrides.items():
        section, field = key.split("__")
        sections.setdefault(section, {})[field] = value
    return load_config(None, sections)
