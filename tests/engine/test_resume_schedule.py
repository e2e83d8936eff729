"""--resume keeps the schedule a run was trained with: a changed one is refused naming what changed, --extend
trains a finished step schedule on at its final learning rate, and a finished run is not evaluated again."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest
from typer.testing import CliRunner

from libra_cli.cli import app
from libra_cli.config import save_config
from libra_cli.engine.checkpoint import load_checkpoint
from libra_cli.engine.train import train
from libra_cli.errors import LibraError
from libra_cli.rundir import RunLayout
from tests.conftest import tiny_config

runner = CliRunner()


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def with_iters(config, max_iters):
    return dataclasses.replace(config, train=dataclasses.replace(config.train, max_iters=max_iters))


@pytest.mark.slow
def test_resume_refuses_a_changed_schedule_and_extend_keeps_the_final_rate(tiny_benchmark, tmp_path):
    # 4 iterations, step schedule at 0.75 and 0.92 of them: lr drops ×0.1 at iterations round(3.0) = 3 and
    # round(3.68) = 4 (after a warm-up of 2), so the last step (iteration 3) ran at 0.01 × 0.1 = 1e-3.
    config = tiny_config(tiny_benchmark, tmp_path / "run", train__max_iters=4, train__checkpoint_interval=10)
    train(config)
    layout = RunLayout(tmp_path / "run")
    files = {path: digest(path) for path in (layout.config, layout.last, layout.metrics, layout.log)}

    # A longer --max-iters is a new schedule: refused in one line naming the field and its saved value.
    with pytest.raises(LibraError) as error:
        train(with_iters(config, 6), resume=True)
    message = str(error.value)
    assert "train.max_iters (--max-iters) saved 4, got 6" in message and "--extend" in message
    assert "\n" not in message
    # Resuming the finished run as it was says so and evaluates nothing: every file is as training left it.
    result = train(config, resume=True)
    assert result.finished_before and result.iterations == 4
    assert result.metrics == json.loads(layout.metrics.read_text())
    assert {path: digest(path) for path in files} == files

    # --extend to 6: the milestones stay at iterations 3 and 4 (fractions 3/6 and 4/6 of the new length),
    # so iterations 4 and 5 train at 0.01 × 0.1² = 1e-4. Rescaling 0.75 and 0.92 to 6 iterations instead
    # would put them at round(4.5) = 4 and round(5.52) = 6: iteration 4 back at 1e-3.
    train(with_iters(config, 6), resume=True, extend=True)
    log = [json.loads(line) for line in layout.log.read_text().splitlines()]
    lrs = {record["iter"]: record["lr"] for record in log if record["type"] == "train"}
    assert lrs[4] == pytest.approx(1e-3) and lrs[5] == pytest.approx(1e-4) and lrs[6] == pytest.approx(1e-4)
    saved = layout.read_config()
    assert saved.train.max_iters == 6 and saved.train.lr_milestones == pytest.approx((3 / 6, 4 / 6))
    assert int(load_checkpoint(layout.last)["iteration"]) == 6  # config.yaml matches the checkpoint

    # Back to the old --max-iters 4 on a checkpoint at 6: refused, config.yaml left at 6.
    with pytest.raises(LibraError, match=r"train\.max_iters \(--max-iters\) saved 6, got 4"):
        train(with_iters(saved, 4), resume=True)
    assert layout.read_config().train.max_iters == 6


@pytest.mark.slow
def test_the_train_command_says_a_resumed_run_is_finished(tiny_benchmark, tmp_path):
    config = tiny_config(tiny_benchmark, tmp_path / "run", train__max_iters=1)
    train(config)
    before = digest(RunLayout(tmp_path / "run").metrics)
    save_config(config, tmp_path / "preset.yaml")
    result = runner.invoke(app, ["train", str(tmp_path / "preset.yaml"), "--resume"])
    assert result.exit_code == 0, result.output
    assert "already trained to iteration 1 and evaluated; nothing to resume" in " ".join(result.output.split())
    assert digest(RunLayout(tmp_path / "run").metrics) == before
