"""Weights to share (``libra export``) and what a finished run keeps."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from libra_cli.api import Detector
from libra_cli.cli import app
from libra_cli.engine.train import train
from libra_cli.engine.weights import WEIGHTS_FORMAT, export_weights
from libra_cli.errors import LibraError
from libra_cli.io import load_tensors_safely
from tests.conftest import tiny_config
from tests.runs import untrained_run

runner = CliRunner()


@pytest.fixture(scope="module")
def run(tiny_benchmark, tmp_path_factory) -> Path:
    return untrained_run(tiny_benchmark, tmp_path_factory.mktemp("weights") / "run", seed=3)


def test_export_writes_weights_config_and_categories_named_by_their_hash(run, tmp_path):
    result = runner.invoke(app, ["export", str(run), "--out", str(tmp_path / "libra.pt")])
    assert result.exit_code == 0, result.output
    (path,) = tmp_path.glob("libra-*.pt")
    # The name carries the first 8 hex digits of the file's own SHA-256 (mmdetection's publish_model).
    assert path.name == f"libra-{hashlib.sha256(path.read_bytes()).hexdigest()[:8]}.pt"
    payload = load_tensors_safely(path, "weights file")
    assert payload["format"] == WEIGHTS_FORMAT
    assert set(payload) == {"format", "model", "config", "categories", "iteration", "dtype"}  # no optimizer
    assert payload["categories"]["category_names"] == ["red circle", "blue square", "red triangle"]
    assert payload["config"]["model"]["fpn_channels"] == 32  # tiny_config's
    # Every tensor of the run's checkpoint, unchanged.
    checkpoint = load_tensors_safely(run / "checkpoints" / "best.pt", "checkpoint")["model"]
    assert payload["model"].keys() == checkpoint.keys()
    assert all(torch.equal(payload["model"][k], checkpoint[k]) for k in checkpoint)


def test_an_exported_file_predicts_what_its_run_predicts(run, tiny_benchmark, tmp_path):
    path, _ = export_weights(run, tmp_path / "w.pt")
    image = tiny_benchmark / "images" / "val" / "000000.png"
    (from_run,) = Detector.from_run(run, device="cpu").predict(image, score_thr=0.0)
    (from_file,) = Detector.from_file(path, device="cpu").predict(image, score_thr=0.0)
    assert len(from_run.scores) > 0
    torch.testing.assert_close(from_file.boxes, from_run.boxes, rtol=0, atol=0)
    torch.testing.assert_close(from_file.scores, from_run.scores, rtol=0, atol=0)
    assert from_file.category_names == from_run.category_names
    result = runner.invoke(app, ["predict", str(path), str(image), "--out", str(tmp_path / "out"), "--score-thr", "0"])
    assert result.exit_code == 0, result.output
    assert len(json.loads((tmp_path / "out" / "predictions.json").read_text())) == len(from_run.scores)


def test_half_stores_float16_at_about_half_the_size(run, tmp_path):
    full, full_info = export_weights(run, tmp_path / "full.pt")
    half, half_info = export_weights(run, tmp_path / "half.pt", half=True)
    payload = load_tensors_safely(half, "weights file")
    floating = [t for t in payload["model"].values() if t.is_floating_point()]
    assert floating and all(t.dtype == torch.float16 for t in floating)
    # Two bytes per value instead of four; integer buffers and the config are a tiny part of the file.
    assert 0.49 < half_info["bytes"] / full_info["bytes"] < 0.52
    (found,) = Detector.from_file(half, device="cpu").predict(
        torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    )
    assert found.boxes.dtype == torch.float32  # loaded back into the float32 model


def test_export_refuses_bad_input_in_one_line(run, tmp_path):
    cases = [
        (["export", str(tmp_path / "nope"), "--out", str(tmp_path / "a.pt")], "run directory not found"),
        (["export", str(run), "--out", str(tmp_path / "a.onnx")], "a weights file name must end in .pt"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and message in result.output, result.output
    path, _ = export_weights(run, tmp_path / "w.pt")
    with pytest.raises(LibraError, match="exists already"):
        export_weights(run, tmp_path / "w.pt")


@pytest.mark.slow
def test_a_finished_run_keeps_one_full_training_state(tiny_benchmark, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(tiny_benchmark, out, train__max_iters=2, train__seed=0))
    last = load_tensors_safely(out / "checkpoints" / "last.pt", "checkpoint")
    best = load_tensors_safely(out / "checkpoints" / "best.pt", "checkpoint")
    assert {"optimizer", "scaler", "rng"} <= set(last)  # what --resume needs
    assert set(best) == {"format", "model", "iteration", "best_ap"}  # the weights alone
    # SGD with momentum keeps one buffer per parameter: the full state is about twice the weights.
    ratio = (out / "checkpoints" / "last.pt").stat().st_size / (out / "checkpoints" / "best.pt").stat().st_size
    assert 1.9 < ratio < 2.1
