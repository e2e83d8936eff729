"""Training's log as TensorBoard events in RUN_DIR/tb/: the JSONL log's scalars, read back with TensorBoard's
own reader, and no step shown twice after a resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from libra_cli.engine.train import train
from libra_cli.rundir import RunLayout
from tests.conftest import tiny_config

PREFIXES = {"train": "train", "eval": "val"}


def read_events(tb_dir) -> dict[str, list[tuple[int, float]]]:
    """Tag → (step, value) of every scalar event TensorBoard shows for the folder."""
    accumulator = EventAccumulator(str(tb_dir))
    accumulator.Reload()
    return {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]
    }


def expected_scalars(log_path) -> dict[str, list[tuple[int, float]]]:
    """The numbers of log.jsonl's train and eval records, tagged as TensorBoard should show them."""
    expected: dict[str, list[tuple[int, float]]] = {}
    for line in log_path.read_text().splitlines():
        record = json.loads(line)
        prefix = PREFIXES.get(record["type"])
        if prefix is None:
            continue
        for name, value in record.items():
            if name in ("type", "iter") or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            expected.setdefault(f"{prefix}/{name}", []).append((record["iter"], value))
    return expected


def assert_same_scalars(events, expected) -> None:
    assert set(events) == set(expected)
    for tag, points in expected.items():
        assert [step for step, _ in events[tag]] == [step for step, _ in points], tag
        # TensorBoard keeps a scalar as float32.
        logged = np.array([value for _, value in points], dtype=np.float32)
        assert np.array([value for _, value in events[tag]], dtype=np.float32) == pytest.approx(logged), tag


def test_records_become_tagged_scalars_and_a_resume_purges_later_steps(tmp_path):
    layout = RunLayout(tmp_path)
    log = layout.open_log(resume_from=None)
    log.write({"type": "start", "iter": 0, "world_size": 1, "components": []})
    for step in (10, 20, 30):
        log.write({"type": "train", "iter": step, "lr": 0.01, "loss": 1.0 / step, "loss_box_reg": 0.5 / step})
    log.write({"type": "eval", "iter": 30, "AP": 0.25, "APs": None})
    log.close()
    # Resumed from the checkpoint at 20: the log keeps 10 and 20, the new session logs 30 again (other values).
    log = layout.open_log(resume_from=20)
    log.write({"type": "train", "iter": 30, "lr": 0.001, "loss": 0.02, "loss_box_reg": 0.01})
    log.write({"type": "eval", "iter": 30, "AP": 0.5, "APs": None})
    log.close()
    events = read_events(layout.tb_dir)
    # The start record is no time series; APs is null; the second session's step-30 values replace the first's.
    assert set(events) == {"train/lr", "train/loss", "train/loss_box_reg", "val/AP"}
    assert events["train/loss"] == [(10, pytest.approx(0.1)), (20, pytest.approx(0.05)), (30, pytest.approx(0.02))]
    assert events["train/lr"] == [(10, pytest.approx(0.01)), (20, pytest.approx(0.01)), (30, pytest.approx(0.001))]
    assert events["val/AP"] == [(30, 0.5)]
    assert_same_scalars(events, expected_scalars(layout.log))


def test_a_new_run_starts_from_an_empty_tb_folder(tmp_path):
    layout = RunLayout(tmp_path)
    log = layout.open_log(resume_from=None)
    log.write({"type": "train", "iter": 5, "loss": 3.0})
    log.close()
    log = layout.open_log(resume_from=None)  # a new run in the same folder (no checkpoint was left)
    log.write({"type": "train", "iter": 1, "loss": 2.0})
    log.close()
    assert read_events(layout.tb_dir) == {"train/loss": [(1, 2.0)]}


class CrashAt:
    """A progress sink that fails once training has completed ``iteration`` steps (after that step's log
    record was written, and before any checkpoint of that step)."""

    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    def start(self, total, completed):
        pass

    def update(self, iteration, record):
        if iteration == self.iteration:
            raise RuntimeError("crash")

    def stop(self):
        pass


@pytest.mark.slow
def test_training_writes_the_logs_scalars_to_tensorboard_once_per_step(tiny_benchmark, tmp_path):
    # 6 iterations, a log record each, a checkpoint every 2 and an evaluation at 3 and at the end. The run
    # crashes after logging step 3 (checkpoint at 2) and is resumed: step 3 is trained and logged again.
    options = {"train__max_iters": 6, "train__checkpoint_interval": 2, "train__eval_interval": 3}
    config = tiny_config(tiny_benchmark, tmp_path / "run", **options)
    with pytest.raises(RuntimeError, match="crash"):
        train(config, progress=CrashAt(3))
    train(config, resume=True)
    layout = RunLayout(tmp_path / "run")
    assert len(list(layout.tb_dir.glob("events.out.tfevents.*"))) == 2  # one file per session
    events = read_events(layout.tb_dir)
    expected = expected_scalars(layout.log)
    assert [step for step, _ in expected["train/loss"]] == [1, 2, 3, 4, 5, 6]
    assert [step for step, _ in expected["val/AP"]] == [3, 6]
    assert {"train/loss", "train/lr", "train/loss_classifier", "train/loss_box_reg", "val/AP"} <= set(events)
    assert_same_scalars(events, expected)
