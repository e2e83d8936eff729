"""Epoch schedules and the linear scaling rule: the arithmetic worked out by hand, and a run that trains an
epoch schedule saves the iterations it derived."""

from __future__ import annotations

import json

import pytest
import yaml

from libra_cli.config import RunConfig, TrainConfig, load_config
from libra_cli.engine.schedule import (
    epoch_schedule,
    iterations_per_epoch,
    learning_rate,
    peak_lr,
    resolve_schedule,
    scaled_lr,
)
from libra_cli.engine.train import train
from libra_cli.errors import LibraError
from tests.conftest import tiny_config


def test_iterations_per_epoch_rounds_up():
    # COCO train2017: 118287 / 16 = 7392.94 → 7393 steps; an exact multiple has no extra step.
    assert iterations_per_epoch(118287, 16) == 7393
    assert iterations_per_epoch(64, 16) == 4
    assert iterations_per_epoch(65, 16) == 5
    assert iterations_per_epoch(3, 16) == 1


def test_coco_1x_schedule_by_hand():
    # 12 × 7393 = 88716; 8 × 7393 = 59144; 11 × 7393 = 81323.
    assert epoch_schedule(12, (8, 11), 118287, 16) == (88716, (59144, 81323))
    # LVIS v0.5 train: 57263 images / 16 = 3578.9 → 3579 per epoch; 12 × 3579 = 42948; 8 × = 28632; 11 × = 39369.
    assert epoch_schedule(12, (8, 11), 57263, 16) == (42948, (28632, 39369))


def test_resolved_schedule_drops_the_lr_at_the_milestone_iterations():
    config = load_config(None, {"train": {"epochs": 12, "lr_milestones_epochs": [8, 11], "warmup_iters": 500}})
    config = resolve_schedule(config, 118287)  # batch 4 (the default): 29572 per epoch
    tcfg = config.train
    assert iterations_per_epoch(118287, 4) == 29572
    assert tcfg.max_iters == 12 * 29572
    assert [round(m * tcfg.max_iters) for m in tcfg.lr_milestones] == [8 * 29572, 11 * 29572]
    assert learning_rate(tcfg, 8 * 29572 - 1) == pytest.approx(0.02)
    assert learning_rate(tcfg, 8 * 29572) == pytest.approx(0.002)
    assert learning_rate(tcfg, 11 * 29572) == pytest.approx(0.0002)


def test_milestone_fractions_give_the_iterations_back_exactly():
    for images in (118287, 57263, 99999, 1000, 17):
        for batch in (1, 2, 8, 16, 64):
            max_iters, milestones = epoch_schedule(12, (8, 11), images, batch)
            assert [round(it / max_iters * max_iters) for it in milestones] == list(milestones)


def test_without_epochs_the_config_is_unchanged():
    config = RunConfig()
    assert resolve_schedule(config, 1000) is config


def test_epochs_without_milestone_epochs_keep_the_fractions():
    config = load_config(None, {"train": {"epochs": 2}})
    resolved = resolve_schedule(config, 10)  # batch 4 → 3 per epoch
    assert resolved.train.max_iters == 6
    assert resolved.train.lr_milestones == config.train.lr_milestones


def test_linear_scaling_rule_by_hand():
    assert scaled_lr(0.02, 8, 16) == pytest.approx(0.01)
    assert scaled_lr(0.02, 16, 16) == pytest.approx(0.02)
    assert scaled_lr(0.01, 32, 16) == pytest.approx(0.02)
    on = load_config(None, {"data": {"batch_size": 8}, "train": {"scale_lr": True}})
    assert peak_lr(on) == pytest.approx(0.01)
    off = load_config(None, {"data": {"batch_size": 8}})
    assert peak_lr(off) == pytest.approx(0.02)
    # Warm-up and decay apply to the scaled rate: warm-up from lr/3 at iteration 0.
    tcfg = TrainConfig(lr=0.02, warmup_iters=500, warmup_factor=1 / 3, max_iters=1000)
    assert learning_rate(tcfg, 0, peak_lr(on)) == pytest.approx(0.01 / 3)
    assert learning_rate(tcfg, 500, peak_lr(on)) == pytest.approx(0.01)


@pytest.mark.parametrize(
    ("train_cfg", "message"),
    [
        ({"lr_milestones_epochs": [8]}, "needs train.epochs"),
        ({"epochs": 12, "lr_milestones_epochs": [8, 12]}, "must lie in (0, 12)"),
        ({"epochs": 0}, "train.epochs (--epochs): must be >= 1; got 0"),
        ({"reference_batch": 0}, "train.reference_batch (--reference-batch): must be >= 1; got 0"),
    ],
)
def test_schedule_settings_are_checked(train_cfg, message):
    with pytest.raises(LibraError, match=None) as info:
        load_config(None, {"train": train_cfg})
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_an_epoch_run_saves_and_logs_its_iterations(tiny_benchmark, tmp_path):
    # The tiny benchmark has 8 training images; batch 4 → 2 steps per epoch, 2 epochs → 4, milestone 1 → 2.
    out = tmp_path / "run"
    config = tiny_config(
        tiny_benchmark,
        out,
        data__batch_size=4,
        train__epochs=2,
        train__lr_milestones_epochs=[1],
        train__max_iters=3,
        train__checkpoint_interval=100,
        train__scale_lr=True,
        train__reference_batch=8,
    )
    seen = {}
    result = train(config, on_start=lambda info: seen.update(info["schedule"]))
    assert result.iterations == 4
    saved = yaml.safe_load((out / "config.yaml").read_text())["train"]
    assert saved["max_iters"] == 4 and saved["epochs"] == 2
    assert round(saved["lr_milestones"][0] * saved["max_iters"]) == 2
    assert seen == {
        "max_iters": 4,
        "milestone_iters": [2],
        "global_batch": 4,
        "lr": pytest.approx(0.005),  # 0.01 × 4 / 8
        "scale_lr": True,
        "epochs": 2,
        "iters_per_epoch": 2,
    }
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert records[0]["schedule"]["max_iters"] == 4
    lrs = {r["iter"]: r["lr"] for r in records if r["type"] == "train"}
    assert lrs[2] == pytest.approx(0.005 * (0.001 * 0.5 + 0.5))  # index 1: halfway through the 2 warm-up steps
    assert lrs[3] == pytest.approx(0.0005)  # index 2, the milestone: 0.005 × 0.1
