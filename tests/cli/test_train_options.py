"""`libra train`'s options come from the config dataclasses: one per field, help from the field's comment,
today's flag names kept, `--set` for any field, and a new field is a new option without more code."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from libra_cli.cli import app, load_command
from libra_cli.cli.config_options import config_options, field_comment, overrides_from_options, with_config_options
from libra_cli.config import SECTIONS, DataConfig, LibraConfig, ModelConfig, load_config

runner = CliRunner()

# Every flag `libra train` had before its options were generated (listed from the hand-written command).
OPTIONS_BEFORE = {
    "--amp", "--arch", "--backbone", "--backbone-weights", "--balanced-l1", "--batch-size", "--bfp", "--bfp-init",
    "--bfp-refine", "--bfp-refine-level", "--bl1-alpha", "--bl1-beta", "--bl1-gamma", "--checkpoint-interval",
    "--device", "--eql", "--eql-freq", "--eql-lambda", "--eval-interval", "--image-size", "--iou-bins",
    "--iou-bins-upper", "--iou-floor-fraction", "--iou-floor-thr", "--iou-sampling", "--log-interval", "--long-tail",
    "--lr", "--max-iters", "--no-amp", "--no-balanced-l1", "--no-bfp", "--no-eql", "--no-iou-sampling",
    "--no-long-tail", "--no-pos-balance", "--norm", "--on-bad-sample", "--out", "--pos-balance", "--resume",
    "--retinanet-loss-norm", "--retinanet-p6", "--roi-align", "--roi-batch-size", "--roi-box-loss",
    "--roi-smooth-l1-beta", "--rpn-neg-pos-ub", "--schedule", "--seed", "--synth-dir", "--train-ann",
    "--train-images", "--val-ann", "--val-images", "--warmup-iters", "--weights", "--workers",
}  # fmt: skip


def train_params() -> list[Any]:
    return load_command("train").params


def option_names() -> set[str]:
    return {name for param in train_params() for name in (*param.opts, *param.secondary_opts)}


@pytest.fixture
def trained_configs(monkeypatch) -> list[Any]:
    """The configs `libra train` would train, captured instead of training."""
    configs: list[Any] = []
    monkeypatch.setattr("libra_cli.workflow.train_run", lambda config, **_: configs.append(config))
    return configs


def test_every_flag_of_the_hand_written_command_still_exists():
    assert OPTIONS_BEFORE - option_names() == set()


def test_every_config_field_has_an_option_with_its_comment_as_help():
    params = {param.name: param for param in train_params()}
    for section, cls in SECTIONS.items():
        for field in dataclasses.fields(cls):
            param = params[field.name]  # the option's parameter is the field's name
            assert f"--{field.name.replace('_', '-')}" in param.opts, (section, field.name)
            assert field_comment(cls, field.name), f"{section}.{field.name} has no comment for its --help"
            assert param.help.startswith(field_comment(cls, field.name)[:20])


def test_field_comments_are_read_from_the_trailing_comment_and_the_lines_above():
    assert field_comment(DataConfig, "batch_size") == "images per iteration (global batch)"
    assert field_comment(ModelConfig, "rpn_neg_pos_ub") == (
        "RPN sampler: at most this many negatives per positive (reference Libra configs: 5); null: no cap (torchvision)"
    )
    # Two comment lines above the field, joined.
    assert field_comment(LibraConfig, "eql_freq").startswith('f_j\'s denominator: "annotated" = images with')
    assert field_comment(LibraConfig, "eql_freq").endswith('(the paper text\'s "entire dataset")')


def test_unset_options_leave_the_preset_alone(trained_configs):
    result = runner.invoke(app, ["train", "libra"])
    assert result.exit_code == 0, result.output
    assert trained_configs == [load_config("libra")]


def test_old_flag_names_and_generated_names_set_the_same_fields(trained_configs):
    old = ["--workers", "0", "--long-tail", "--roi-batch-size", "64", "--image-size", "96"]
    new = ["--num-workers", "0", "--synth-long-tail", "--roi-batch-size-per-image", "64"]
    new += ["--min-size", "96", "--max-size", "96"]
    for flags in (old, new):
        assert runner.invoke(app, ["train", *flags]).exit_code == 0
    by_old, by_new = trained_configs
    assert by_old == by_new
    assert (by_old.data.num_workers, by_old.data.synth_long_tail) == (0, True)
    assert (by_old.model.roi_batch_size_per_image, by_old.model.min_size, by_old.model.max_size) == (64, 96, 96)


def test_lists_are_comma_separated_and_paths_normalised_as_before(trained_configs):
    flags = ["--anchor-sizes", "8,16,32,64,128", "--lr-milestones", "0.5,0.9", "--scale-jitter", "0.8,1.25"]
    result = runner.invoke(app, ["train", *flags, "--out", "./runs/x/", "--no-amp", "--lr", "0.01"])
    assert result.exit_code == 0, result.output
    config = trained_configs[0]
    assert config.model.anchor_sizes == (8, 16, 32, 64, 128)
    assert config.train.lr_milestones == (0.5, 0.9)
    assert config.data.scale_jitter == (0.8, 1.25)
    assert config.train.out == "runs/x"  # a path option, as --out always was: str(Path("./runs/x/"))
    assert (config.train.amp, config.train.lr) == (False, 0.01)


def test_set_reaches_any_field_after_the_flags(trained_configs):
    settings = ["train.grad_clip=null", "data.scale_jitter=[0.8, 1.2]", "model.box_head_dim=128", "train.max_iters=7"]
    args = ["train", "--max-iters", "5", *(arg for setting in settings for arg in ("--set", setting))]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    config = trained_configs[0]
    assert config.train.grad_clip is None  # only --set can give a None
    assert config.data.scale_jitter == (0.8, 1.2)
    assert config.model.box_head_dim == 128
    assert config.train.max_iters == 7  # --set is applied after --max-iters


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("optim.lr=0.1", "command line: unknown section 'optim' (known: data, model, libra, train)"),
        ("model.nope=1", "command line: model.nope is not a known setting"),
        ("model.min_size=big", "command line: model.min_size: expected an integer, got 'big'"),
        ("min_size=320", "--set min_size=320: expected SECTION.FIELD=VALUE"),
        ("model.min_size", "--set model.min_size: expected SECTION.FIELD=VALUE"),
        ("model.anchor_sizes=[8, 16", "--set model.anchor_sizes=[8, 16: the value is not valid YAML"),
    ],
)
def test_a_bad_set_is_one_line_and_exit_code_2(trained_configs, setting, message):
    result = runner.invoke(app, ["train", "--set", setting])
    assert result.exit_code == 2
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0]
    assert trained_configs == []


@dataclass
class DataWithCrop(DataConfig):
    crop_size: int = 0  # square crop of each training image in pixels (0: no crop)
    # What to crop around: "center" or "random",
    # chosen per image.
    crop_mode: str = "center"


def test_a_new_dataclass_field_is_a_new_option_with_no_other_code():
    options = config_options({"data": DataWithCrop})
    by_field = {option.field: option for option in options}
    assert len(options) == len(dataclasses.fields(DataConfig)) + 2
    crop = by_field["crop_size"]
    assert (crop.names, crop.value_type, crop.panel) == (("--crop-size",), int, "Data")
    assert crop.help == "square crop of each training image in pixels (0: no crop)"
    assert by_field["crop_mode"].help == 'What to crop around: "center" or "random", chosen per image.'
    assert by_field["batch_size"].help == "images per iteration (global batch)"  # inherited, from config.py

    seen: list[dict] = []

    def command(**fields: Any) -> None:
        seen.append(overrides_from_options(options, fields))

    toy = typer.Typer()
    toy.command()(with_config_options(command, options))
    result = runner.invoke(toy, ["--crop-size", "3", "--crop-mode", "random", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert seen == [{"data": {"crop_size": 3, "crop_mode": "random", "batch_size": 2}}]
    help_text = runner.invoke(toy, ["--help"], env={"COLUMNS": "200"}).output
    assert "--crop-size" in help_text and "square crop of each training image" in help_text


def test_a_flag_declared_twice_is_refused_when_the_command_is_built():
    options = config_options({"data": DataConfig})

    def command(*, batch_size: int = typer.Option(None, "--batch-size"), **fields: Any) -> None:
        pass

    with pytest.raises(ValueError, match="flags declared twice: --batch-size"):
        with_config_options(command, options)
