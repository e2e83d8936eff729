"""Item 2: faults during training — a diverging loss, SIGKILL at any moment, Ctrl-C — lose nothing.

The kill and interrupt tests launch ``python -m libra_cli train`` as a user would, stop it once its first
checkpoint exists, resume it with ``--resume`` and require, on CPU, exactly the uninterrupted run's
losses, evaluations, final metrics and weights.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time

import pytest
import torch
from typer.testing import CliRunner

from libra_cli.cli import app
from libra_cli.engine import setup as training_setup
from libra_cli.engine import train as train_module
from libra_cli.engine.checkpoint import load_checkpoint
from libra_cli.engine.interrupts import StepBoundaryInterrupts
from libra_cli.errors import LibraError
from tests.conftest import tiny_config
from tests.reliability.helpers import read_log, run_libra, start_libra, train_losses, wait_until, write_preset

runner = CliRunner()


def inject_nan(monkeypatch, term: str, at_step: int) -> None:
    """Make the detector's ``term`` NaN in its ``at_step``-th training forward pass (counting from 1)."""
    build = training_setup.build_detector

    def build_with_fault(*args, **kwargs):
        model = build(*args, **kwargs)
        calls = {"train": 0}

        def poison(module, inputs, output):
            if not module.training:
                return output
            calls["train"] += 1
            if calls["train"] == at_step:
                return {**output, term: output[term] * float("nan")}
            return output

        model.register_forward_hook(poison)
        return model

    monkeypatch.setattr(training_setup, "build_detector", build_with_fault)


@pytest.mark.slow
def test_a_nan_loss_stops_the_run_naming_the_iteration_and_terms_and_keeps_the_last_checkpoint(
    tiny_benchmark, tmp_path, monkeypatch
):
    inject_nan(monkeypatch, "loss_box_reg", at_step=3)
    preset = write_preset(tmp_path / "tiny.yaml", tiny_benchmark, train__max_iters=6, train__checkpoint_interval=2)
    run_dir = tmp_path / "run"
    result = runner.invoke(app, ["train", str(preset), "--out", str(run_dir)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    message = lines[0]
    assert "non-finite loss at iteration 3 (" in message
    for term in ("loss_classifier=", "loss_box_reg=nan", "loss_objectness=", "loss_rpn_box_reg="):
        assert term in message
    assert f"last good checkpoint kept at {run_dir / 'checkpoints' / 'last.pt'}" in message
    assert "lower --lr" in message
    # The checkpoint from step 2 is intact and finite; the log stops at step 2 and holds no NaN.
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert state["iteration"] == 2
    assert all(torch.isfinite(value).all() for value in state["model"].values() if value.is_floating_point())
    logged = train_losses(run_dir)
    assert [record["iter"] for record in logged] == [1, 2]
    assert all(math.isfinite(value) for record in logged for value in record.values())


@pytest.mark.slow
def test_a_nan_before_the_first_checkpoint_says_none_was_written(tiny_benchmark, tmp_path, monkeypatch):
    inject_nan(monkeypatch, "loss_objectness", at_step=1)
    expected = r"non-finite loss at iteration 1 \(.*loss_objectness=nan.*no checkpoint written yet"
    with pytest.raises(LibraError, match=expected):
        train_module.train(tiny_config(tiny_benchmark, tmp_path / "run", train__max_iters=3))
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()


# --- kill and interrupt ------------------------------------------------------------------------------
RUN = {"train__max_iters": 6, "train__checkpoint_interval": 2, "train__eval_interval": 2}


@pytest.fixture(scope="module")
def reference(tiny_benchmark, tmp_path_factory):
    """The preset and an uninterrupted run of it (6 steps, checkpoints and evaluations every 2)."""
    root = tmp_path_factory.mktemp("faults")
    preset = write_preset(root / "tiny.yaml", tiny_benchmark, **RUN)
    run_libra(["train", str(preset), "--out", str(root / "reference")], root / "reference.txt")
    return preset, root / "reference"


def checkpoint_iteration(path) -> int:
    """The iteration of the checkpoint at ``path`` (0 if none yet); reading it races with its writer."""
    return int(load_checkpoint(path)["iteration"]) if path.exists() else 0


def assert_same_run(run_dir, reference_dir) -> None:
    """Exactly the same training losses, evaluations, final metrics, weights and best checkpoint."""
    assert train_losses(run_dir) == train_losses(reference_dir)
    evals = {r["iter"]: r for r in read_log(run_dir) if r["type"] == "eval"}
    reference_evals = {r["iter"]: r for r in read_log(reference_dir) if r["type"] == "eval"}
    assert evals == reference_evals and sorted(evals) == [2, 4, 6]
    metrics, reference_metrics = (
        json.loads((d / "eval" / "metrics.json").read_text()) for d in (run_dir, reference_dir)
    )
    assert metrics["summary"] == reference_metrics["summary"]
    assert metrics["per_category"] == reference_metrics["per_category"]
    for name in ("last.pt", "best.pt"):
        state, expected = (load_checkpoint(d / "checkpoints" / name) for d in (run_dir, reference_dir))
        assert (state["iteration"], state["best_ap"]) == (expected["iteration"], expected["best_ap"])
        for key, value in expected["model"].items():
            assert torch.equal(state["model"][key], value), key


@pytest.mark.slow
def test_sigkill_at_any_moment_then_resume_equals_the_uninterrupted_run(reference, tmp_path):
    preset, reference_dir = reference
    run_dir, out = tmp_path / "run", tmp_path / "out.txt"
    last = run_dir / "checkpoints" / "last.pt"
    args = ["train", str(preset), "--out", str(run_dir)]
    # Kill 1: as soon as the first checkpoint exists (the run is in step 3 or later).
    process = start_libra(args, out)
    wait_until(lambda: checkpoint_iteration(last) >= 2, process, out)
    process.kill()
    assert process.wait() == -signal.SIGKILL
    killed_at = checkpoint_iteration(last)
    # Kill 2: the resumed run, once it has written a newer checkpoint (unless the first got to the end).
    if killed_at < 6:
        process = start_libra([*args, "--resume"], out)
        wait_until(lambda: checkpoint_iteration(last) > killed_at, process, out)
        process.kill()
        process.wait()
    run_libra([*args, "--resume"], out)
    assert_same_run(run_dir, reference_dir)
    assert not list(last.parent.glob(".*.tmp"))


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_exits_cleanly_and_resumes_exactly(reference, tmp_path):
    preset, reference_dir = reference
    run_dir, out = tmp_path / "run", tmp_path / "out.txt"
    last = run_dir / "checkpoints" / "last.pt"
    args = ["train", str(preset), "--out", str(run_dir)]
    process = start_libra(args, out)
    wait_until(lambda: checkpoint_iteration(last) >= 2, process, out)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 130, out.read_text()[-2000:]
    assert "interrupted" in out.read_text() and "Traceback" not in out.read_text()
    state = load_checkpoint(last)
    assert 2 <= state["iteration"] <= 6
    # What a checkpoint holds besides the weights: everything resuming needs.
    assert state["scheduler"] == {"type": "step", "iteration": state["iteration"]}
    assert state["data"] == {
        "seed": 0,
        "global_batch_size": 2,
        "repeat_factor_thr": None,  # the sampling settings the data order depends on
        "aspect_ratio_grouping": False,
        "next_iteration": state["iteration"],
    }
    assert {"optimizer", "scaler", "rng"} <= set(state) and {"torch", "python"} <= set(state["rng"])
    run_libra([*args, "--resume"], out)
    assert_same_run(run_dir, reference_dir)


def test_a_signal_during_an_update_is_raised_when_the_update_is_complete():
    before = signal.getsignal(signal.SIGINT)  # Python's own handler, or SIG_IGN when started in the background
    signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupts = StepBoundaryInterrupts()
    interrupts.install()
    finished = []
    try:
        with pytest.raises(KeyboardInterrupt):
            with interrupts.atomic():
                os.kill(os.getpid(), signal.SIGINT)
                finished.append("after the signal")  # still runs: the update is not cut in half
        assert finished == ["after the signal"]
        with pytest.raises(KeyboardInterrupt):  # outside an update the signal interrupts at once
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                time.sleep(0.001)
            finished.append("never")
        assert finished == ["after the signal"]
    finally:
        interrupts.restore()
        restored = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, before)
    assert restored is signal.default_int_handler  # the handler that was there before install


class InterruptAfter:
    """A progress sink that raises KeyboardInterrupt once ``step`` steps are done."""

    def __init__(self, step: int) -> None:
        self.step = step

    def start(self, total, completed):
        pass

    def update(self, iteration, record):
        if iteration == self.step:
            raise KeyboardInterrupt

    def stop(self):
        pass


@pytest.mark.slow
def test_a_resume_between_log_lines_logs_the_same_window_means(tiny_benchmark, tmp_path):
    # Log every 2 steps, stop after step 3: the checkpoint carries step 3's loss terms, so the resumed
    # run's line for step 4 is still the mean over steps 3 and 4.
    settings = {"train__max_iters": 4, "train__log_interval": 2, "train__checkpoint_interval": 100}
    train_module.train(tiny_config(tiny_benchmark, tmp_path / "full", **settings))
    with pytest.raises(KeyboardInterrupt):
        train_module.train(tiny_config(tiny_benchmark, tmp_path / "part", **settings), progress=InterruptAfter(3))
    state = load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")
    assert state["iteration"] == 3 and len(state["log_window"]) == 1
    train_module.train(tiny_config(tiny_benchmark, tmp_path / "part", **settings), resume=True)
    assert [r["iter"] for r in train_losses(tmp_path / "part")] == [2, 4]
    assert train_losses(tmp_path / "part") == train_losses(tmp_path / "full")
