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
def test_the_1x_presets_train_12_epochs_of_1500_iterations_on_the_coco_hard_benchmark(preset, tmp_path):
    # The paper's 1x: 12 epochs, ×0.1 after epochs 8 and 11. 500 images at batch 4 = 125 iterations an epoch.
    synth_dir = str(tmp_path / "synth")
    result = runner.invoke(app, ["config", preset, "--synth-dir", synth_dir])
    assert result.exit_code == 0, result.output
    config = yaml.safe_load(result.output)
    assert config["data"]["synth_difficulty"] == "coco-hard"
    assert (config["train"]["epochs"], config["train"]["max_iters"]) == (12, 1500)
    assert [round(m * 1500) for m in config["train"]["lr_milestones"]] == [1000, 1375]
    assert config["train"]["warmup_iters"] == 100
    # The reference's rate per image: lr 0.02 for 16 images, linearly scaled to the batch of 4: 0.02 × 4 / 16.
    assert config["train"]["scale_lr"] is True and config["train"]["reference_batch"] == 16
    assert "= 1500 iterations; peak lr 0.005," in result.output.splitlines()[-1]


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
        "error: model.frozen_stages (--frozen-stages): must lie in [0, 4]; got 7"
    ]


def test_list_shows_presets_and_grids_apart_with_their_header_line():
    result = runner.invoke(app, ["config", "--list"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    grids_at = next(i for i, line in enumerate(lines) if line.startswith("grids"))
    presets = {line.split()[0]: line for line in lines[1:grids_at]}
    grids = {line.split()[0] for line in lines[grids_at + 1 :]}
    # baseline.yaml's header starts "# Faster R-CNN ResNet-18-FPN trained from scratch on the synthetic
    # benchmark; every Libra switch off." — its first line, shown after the name.
    assert presets["baseline"].endswith(
        "Faster R-CNN ResNet-18-FPN trained from scratch on the synthetic benchmark; every Libra switch off."
    )
    # ablation_table2.yaml has `runs:`, so it is a grid; libra.yaml has none, so it is a preset.
    assert "ablation_table2" in grids and "ablation_table2" not in presets
    assert "libra" in presets and "libra" not in grids


def test_an_unknown_name_suggests_the_nearest_presets():
    result = runner.invoke(app, ["config", "libar"])
    assert result.exit_code == 2
    # difflib's ratio 2·M / (len(a) + len(b)) against "libar", M the matched characters ("lib" and one more):
    # libra 2·4/10 = 0.8, libra_1x 2·4/13 ≈ 0.62,
    # libra_paper 2·4/16 = 0.5, at the 0.5 cutoff; every other preset is below it. Best first.
    assert result.output.strip() == (
        "error: unknown preset 'libar' (did you mean libra, libra_1x or libra_paper? presets: libra config --list)"
    )


def test_a_grid_given_as_a_preset_is_refused_naming_ablate():
    result = runner.invoke(app, ["config", "ablation_table2"])
    assert result.exit_code == 2
    assert "is an ablation grid, not a preset (run it with `libra ablate ablation_table2`)" in result.output


def test_explain_comments_each_value_with_its_source():
    result = runner.invoke(app, ["config", "libra", "--explain", "--lr", "0.01"])
    assert result.exit_code == 0, result.output
    # Still YAML for the very config `libra config libra --lr 0.01` prints.
    assert yaml.safe_load(result.output) == load_config("libra", {"train": {"lr": 0.01}}).to_dict()
    lines = {line.split(":")[0].strip(): line for line in result.output.splitlines() if line.startswith("  ")}
    # libra.yaml: "  rpn_neg_pos_ub: 5              # the reference RPN sampler: at most 5 negatives per positive".
    assert lines["rpn_neg_pos_ub"] == (
        "  rpn_neg_pos_ub: 5  # libra.yaml: the reference RPN sampler: at most 5 negatives per positive"
    )
    assert lines["lr"] == "  lr: 0.01  # command line"
    # Not set by the preset nor the command line: the default and config.py's comment on the field.
    assert lines["fpn_channels"] == "  fpn_channels: 64  # default: channels of every pyramid level"


def test_ablate_takes_a_shipped_grid_by_name(tmp_path):
    out_root = tmp_path / "grid"
    result = runner.invoke(app, ["ablate", "ablation_table2", "--out-root", str(out_root), "--dry-run"])
    assert result.exit_code == 0, result.output
    # ablation_table2 has four rows (baseline, iou_sampling, bfp, balanced_l1): one seed each.
    assert "ablation plan: 4 runs in" in result.output
    result = runner.invoke(app, ["ablate", "ablation_tabel2", "--dry-run"])
    assert result.exit_code == 2 and "did you mean ablation_table2" in result.output
    result = runner.invoke(app, ["ablate", "libra", "--dry-run"])
    assert (
        result.exit_code == 2
        and "libra.yaml: is a preset, not a grid (train it with `libra train libra`)" in result.output
    )
