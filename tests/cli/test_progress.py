"""Progress where nobody watches a terminal (nohup, Slurm, a pipe): one plain line per log interval; and on a
terminal of 100 columns the training line keeps its iteration count and ETA."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console
from typer.testing import CliRunner

from libra_cli.cli import app, ui
from libra_cli.config import save_config
from tests.conftest import tiny_config

runner = CliRunner()
RECORD = {
    "loss": 1.2345,
    "loss_classifier": 0.5,
    "loss_box_reg": 0.3,
    "loss_objectness": 0.2,
    "loss_rpn_box_reg": 0.1,
    "lr": 0.02,
    "time_per_iter": 0.5,
}


def test_plain_line_has_iteration_losses_lr_time_and_eta():
    # 450 − 40 = 410 iterations left at 0.5 s each: 205 s = 3:25; 40 / 450 = 8.9 % → 8 %.
    assert ui.plain_train_line("bfp/seed0", 40, 450, RECORD) == (
        "bfp/seed0 40/450 (8%) loss 1.234 (classifier 0.500 box_reg 0.300 objectness 0.200 rpn_box_reg 0.100) "
        "lr 2.00e-02 0.50 s/it ETA 3:25"
    )


@pytest.mark.slow
def test_a_run_whose_output_is_not_a_terminal_prints_one_line_per_log_interval(tiny_benchmark, tmp_path):
    config = tiny_config(tiny_benchmark, tmp_path / "runs" / "r", train__max_iters=4)
    config.train.log_interval = 2
    save_config(config, tmp_path / "preset.yaml")
    result = runner.invoke(app, ["train", str(tmp_path / "preset.yaml")])  # CliRunner's output is no terminal
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("runs/r ")]
    # The start line, then iterations 2 and 4 of 4 (log_interval 2): each whole on one line.
    assert lines[0] == "runs/r 0/4: starting"
    pattern = r"runs/r {}/4 \({}%\) loss \d+\.\d{{3}} \(classifier .*\) lr \S+ \d+\.\d\d s/it ETA \d+:\d\d"
    assert len(lines) == 3
    assert re.fullmatch(pattern.format(2, 50), lines[1]) and re.fullmatch(pattern.format(4, 100), lines[2])
    assert lines[2].endswith("ETA 0:00")  # nothing left


def test_at_100_columns_the_training_line_keeps_iteration_and_eta(monkeypatch):
    terminal = Console(file=io.StringIO(), width=100, force_terminal=True, color_system=None)
    monkeypatch.setattr(ui, "console", terminal)
    progress = ui.TrainProgress("bfp/seed0")
    progress.start(450, 0)
    progress.update(40, RECORD)
    progress.stop()
    last = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", terminal.file.getvalue()).splitlines()[-1]
    assert len(last) <= 100
    assert "40/450" in last and "ETA" in last and "loss 1.234" in last
    assert last.rstrip().endswith("…")  # the losses that do not fit are cut, marked by an ellipsis
