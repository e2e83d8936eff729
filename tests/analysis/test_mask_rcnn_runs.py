"""The analyses on a Mask R-CNN run. They look at the backbone, the pyramid, the RPN and the box branch, which
Mask R-CNN shares with Faster R-CNN: given the same weights for those parts, every analysis of a Mask R-CNN
run must equal the same analysis of the Faster R-CNN run, number for number."""

from __future__ import annotations

import pytest
import torch

from libra_cli.analysis import ANALYSES
from libra_cli.engine.checkpoint import load_checkpoint, save_checkpoint
from libra_cli.rundir import RunLayout
from tests.analysis.conftest import make_fresh_run

MODEL_ANALYSES = ("sampling", "features", "gradients", "tail")


@pytest.fixture(scope="module")
def twin_runs(tiny_run, tmp_path_factory):
    """An untrained Faster R-CNN run and a Mask R-CNN run holding the same weights in every shared part."""
    root = tmp_path_factory.mktemp("mask_twins")
    faster = make_fresh_run(tiny_run, root / "faster", {"libra": {"iou_sampling": True, "bfp": True}})
    mask = make_fresh_run(
        tiny_run, root / "mask", {"libra": {"iou_sampling": True, "bfp": True}, "model": {"arch": "mask_rcnn"}}
    )
    shared = load_checkpoint(RunLayout(faster).last)["model"]
    state = load_checkpoint(RunLayout(mask).last)["model"]
    mask_only = sorted(set(state) - set(shared))
    assert mask_only and all(key.startswith("roi_heads.mask_") for key in mask_only)
    assert set(shared) <= set(state)
    state.update(shared)
    save_checkpoint(RunLayout(mask).last, {"model": state, "iteration": 0})
    return faster, mask


def _without_paths(value):
    if isinstance(value, dict):
        return {key: _without_paths(item) for key, item in value.items() if key not in ("run", "checkpoint")}
    if isinstance(value, list):
        return [_without_paths(item) for item in value]
    return value


@pytest.mark.parametrize("name", MODEL_ANALYSES)
def test_each_analysis_of_a_mask_rcnn_run_equals_its_faster_rcnn_twins(twin_runs, name):
    faster, mask = twin_runs
    options = {"num_images": 2, "checkpoint": "last", "seed": 0}
    if name == "tail":
        options["over_training"] = False
    torch.manual_seed(0)
    expected = ANALYSES[name].analyze(faster, **options)
    torch.manual_seed(0)
    found = ANALYSES[name].analyze(mask, **options)
    assert _without_paths(found) == _without_paths(expected)
