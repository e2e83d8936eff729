"""`libra config PRESET [flags] [--diff]` prints the config `libra train` would save, or what differs from
the defaults."""

from __future__ import annotations

import yaml
from typer.testing import CliRunner

from libra_cli.cli import app
from libra_cli.config import RunConfig, load_config

runner = CliRunner()


def test_prints_the_resolved_config_as_train_saves_it():
    args = ["libra", "--backbone", "resnet50", "--epochs", "12", "--lr-milestones-epochs", "8,11"]
    args += ["--image-size", "320"]
    result = runner.invoke(app, ["config", *args])
    assert result.exit_code == 0, result.output
    expected = load_config(
        "libra",
        {
            "model": {"backbone": "resnet50", "min_size": 320, "max_size": 320},
            "train": {"epochs": 12, "lr_milestones_epochs": [8, 11]},
        },
    )
    assert yaml.safe_load(result.output) == expected.to_dict()
    # What save_config writes, character for character, then a comment: without the training set the
    # epochs cannot be counted in iterations yet.
    body, note = result.output.rsplit("# ", 1)
    assert body == yaml.safe_dump(expected.to_dict(), sort_keys=False)
    assert note.startswith("train.max_iters: derived from train.epochs = 12")


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
    assert diff["model"] == {"frozen_stages": 1, "rpn_neg_pos_ub": 5}
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
        "error: model.frozen_stages (--frozen-stages): must lie in [0, 4]; got 7"
    ]
