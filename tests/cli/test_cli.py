"""The CLI is a thin layer: options reach the library, errors are one line with exit code 2."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from libra_cli.cli import app
from libra_cli.cli.train import overrides_from_flags

runner = CliRunner()


def test_unset_flags_do_not_override_the_preset():
    overrides = overrides_from_flags({"bfp": True, "iou_sampling": None, "image_size": 320, "max_iters": None})
    assert overrides == {"libra": {"bfp": True}, "model": {"min_size": 320, "max_size": 320}}


def test_data_synth_writes_a_benchmark(tmp_path):
    out = tmp_path / "synth"
    result = runner.invoke(
        app,
        [
            "data",
            "synth",
            str(out),
            "--num-train",
            "3",
            "--num-val",
            "2",
            "--image-size",
            "64",
            "--sparse-ids",
            "--num-classes",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    train = json.loads((out / "annotations" / "train.json").read_text())
    assert len(train["images"]) == 3
    assert [c["id"] for c in train["categories"]] != [1, 2, 3, 4]


def test_data_synth_long_tail_sizes_its_val_split_per_class(tmp_path):
    out = tmp_path / "lt"
    options = ["--num-train", "4", "--image-size", "64", "--num-classes", "3", "--long-tail"]
    result = runner.invoke(app, ["data", "synth", str(out), *options, "--val-per-class", "2"])
    assert result.exit_code == 0, result.output
    val = json.loads((out / "annotations" / "val.json").read_text())
    assert sorted(a["category_id"] for a in val["annotations"]) == [1, 1, 2, 2, 3, 3]  # 2 of each class
    # --num-val would do nothing to a class-balanced val split, and --val-per-class nothing without one.
    refused = runner.invoke(app, ["data", "synth", str(tmp_path / "a"), *options, "--num-val", "5"])
    assert refused.exit_code == 2 and "--val-per-class" in refused.output
    refused = runner.invoke(app, ["data", "synth", str(tmp_path / "b"), "--val-per-class", "5"])
    assert refused.exit_code == 2 and "--long-tail" in refused.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_bad_input_is_one_line_and_exit_code_2(tmp_path):
    missing = tmp_path / "missing.json"
    result = runner.invoke(
        app,
        [
            "train",
            "--train-ann",
            str(missing),
            "--train-images",
            str(tmp_path),
            "--val-ann",
            str(missing),
            "--val-images",
            str(tmp_path),
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert result.exit_code == 2
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "missing.json: annotation file not found" in lines[0]
    assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists()  # nothing was written before the error


def test_contradictory_flags_fail_before_any_work(tmp_path):
    result = runner.invoke(app, ["train", "--arch", "retinanet", "--eql", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "libra.eql" in result.output
    assert not (tmp_path / "run").exists()


def test_eval_of_a_missing_run_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["eval", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "run directory not found" in result.output


@pytest.mark.slow
def test_train_then_eval_through_the_cli(tiny_benchmark, tmp_path):
    paths = [
        str(tiny_benchmark / p)
        for p in ("annotations/train.json", "images/train", "annotations/val.json", "images/val")
    ]
    preset = tmp_path / "tiny.yaml"
    preset.write_text(
        "model: {fpn_channels: 32, box_head_dim: 64, roi_batch_size_per_image: 64,"
        " rpn_pre_nms_top_n_train: 300, rpn_post_nms_top_n_train: 100}\n"
        "data: {num_workers: 0, batch_size: 2}\n"
    )
    run_dir = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "train",
            str(preset),
            "--train-ann",
            paths[0],
            "--train-images",
            paths[1],
            "--val-ann",
            paths[2],
            "--val-images",
            paths[3],
            "--out",
            str(run_dir),
            "--max-iters",
            "2",
            "--image-size",
            "96",
            "--bfp",
            "--seed",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "bfp" in (run_dir / "config.yaml").read_text()
    result = runner.invoke(app, ["eval", str(run_dir), "--checkpoint", "last"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert metrics["iteration"] == 2 and metrics["format"] == "coco"
    assert len(metrics["summary"]) == 12
