"""`libra config PRESET [flags] [--diff]` prints the config `libra train` would save, or what differs from
the defaults."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from libra_cli.cli import app
from libra_cli.config import RunConfig, load_config

runner = CliRunner()


def test_prints_the_resolved_config_as_train_saves_it(tmp_path):
    synth_dir = str(tmp_path / "not_generated_yet")
    args = ["libra", "--backbone", "resnet50", "--epochs", "12", "--lr-milestones-epochs", "8,11"]
    args += ["--image-size", "320", "--synth-dir", synth_dir]
    result = runner.invoke(app, ["config", *args])
    assert result.exit_code == 0, result.output
    expected = load_config(
        "libra",
        {
            "data": {"synth_dir": synth_dir},
            "model": {"backbone": "resnet50", "min_size": 320, "max_size": 320},
            "train": {"epochs": 12, "lr_milestones_epochs": [8, 11]},
        },
    )
    # The synthetic benchmark's 500 training images at batch 4: 125 iterations an epoch, 12 epochs = 1500,
    # the milestones after epochs 8 and 11 at iterations 1000 and 1375.
    expected.train.max_iters = 1500
    expected.train.lr_milestones = (1000 / 1500, 1375 / 1500)
    assert yaml.safe_load(result.output) == expected.to_dict()
    # What save_config writes, character for character, then a comment with the schedule.
    body, note = result.output.rsplit("# ", 1)
    assert body == yaml.safe_dump(expected.to_dict(), sort_keys=False)
    assert not (tmp_path / "not_generated_yet").exists()  # counted from the spec, nothing generated
    assert note.startswith(
        "schedule: 12 epochs × 125 iterations (500 training images of the synthetic benchmark, generated on first "
        "use, before dropping unannotated ones, global batch 4) = 1500 iterations; peak lr 0.02, ×0.1 at "
        "iterations 1000, 1375"
    )


@pytest.mark.parametrize("preset", ["baseline_1x", "paper_baseline_1x", "libra_1x"])
def test_the_1x_presets_train_12_epochs_of_1500_iterations_on_the_coco_like_benchmark(preset, tmp_path):
    # The paper's 1x: 12 epochs, ×0.1 after epochs 8 and 11. 500 images at batch 4 = 125 iterations an epoch.
    synth_dir = str(tmp_path / "synth")
    result = runner.invoke(app, ["config", preset, "--synth-dir", synth_dir])
    assert result.exit_code == 0, result.output
    config = yaml.safe_load(result.output)
    assert config["data"]["synth_difficulty"] == "coco-like"
    assert (config["train"]["epochs"], config["train"]["max_iters"]) == (12, 1500)
    assert [round(m * 1500) for m in config["train"]["lr_milestones"]] == [1000, 1375]
    assert config["train"]["warmup_iters"] == 100
    assert "= 1500 iterations" in result.output.splitlines()[-1]


def test_with_the_dataset_flags_an_epoch_schedule_is_printed_in_iterations(tiny_benchmark):
    from libra_cli.data.build import benchmark_paths

    paths = benchmark_paths(tiny_benchmark)
    data = ["--train-ann", str(paths.train_ann), "--train-images", str(paths.train_images)]
    data += ["--val-ann", str(paths.val_ann), "--val-images", str(paths.val_images)]
    args = ["config", "--epochs", "3", "--lr-milestones-epochs", "2", "--batch-size", "3", *data]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    train = yaml.safe_load(result.output)["train"]
    # 8 training images in batches of 3: ⌈8 / 3⌉ = 3 iterations an epoch, 3 epochs = 9, milestone 2 × 3 = 6.
    assert train["max_iters"] == 9 and train["lr_milestones"] == [6 / 9]
    assert result.output.splitlines()[-1] == (
        "# schedule: 3 epochs × 3 iterations (8 training images, global batch 3) = 9 iterations; "
        "peak lr 0.02, ×0.1 at iterations 6"
    )


def test_without_a_preset_it_prints_the_defaults():
    result = runner.invoke(app, ["config"])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.output) == RunConfig().to_dict()


def test_diff_lists_exactly_the_changed_fields():
    result = runner.invoke(
        app, ["config", "libra", "--diff", "--frozen-stages", "1", "--set", "train.scale_lr=true", "--lr", "0.02"]
    )
    assert result.exit_code == 0, result.output
    diff = yaml.safe_load(result.output)
    config, defaults = load_config("libra", {"model": {"frozen_stages": 1}, "train": {"scale_lr": True}}), RunConfig()
    expected = {}
    for section, values in config.to_dict().items():
        changed = {k: v for k, v in values.items() if v != defaults.to_dict()[section][k]}
        if changed:
            expected[section] = changed
    assert diff == expected
    # libra.yaml's model settings (the RPN cap and the reference's box-head init, RPN floor and loss divisor)
    # plus the flag's frozen stages.
    assert diff["model"] == {
        "box_head_init": "reference",
        "rpn_min_pos_iou": 0.3,
        "rpn_loss_norm": "reference",
        "frozen_stages": 1,
        "rpn_neg_pos_ub": 5,
    }
    assert diff["train"] == {"out": "runs/libra", "scale_lr": True}  # --lr 0.02 is the default: not listed
    # The diff is itself a preset giving the same config.
    assert load_config(None, diff) == config


def test_diff_of_the_defaults_is_empty():
    result = runner.invoke(app, ["config", "--diff"])
    assert result.exit_code == 0 and yaml.safe_load(result.output) == {}


def test_bad_values_are_one_line_errors():
    result = runner.invoke(app, ["config", "--frozen-stages", "7"])
    assert result.exit_code == 2
    assert [line for line in result.output.splitlines() if line.strip()] == [
        "error: model.frozen_stages (--frozen-stages): must lie in 0..4, got 7"
    ]
