"""Ctrl-C while a grid trains runs side by side: every running job writes its checkpoint, nothing is lost."""

from __future__ import annotations

import signal

import pytest

from libra_cli.engine.checkpoint import load_checkpoint
from tests.reliability.helpers import read_log, run_libra, start_libra, wait_until, write_preset

MAX_ITERS = 400  # far more than the test waits for: the interrupt always lands mid-run


@pytest.mark.slow
def test_ctrl_c_stops_side_by_side_runs_with_their_checkpoints(tiny_benchmark, tmp_path):
    preset = write_preset(
        tmp_path / "tiny.yaml",
        tiny_benchmark,
        train__max_iters=MAX_ITERS,
        train__checkpoint_interval=1000,
        train__log_interval=1,
    )
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"base: {preset}\nruns:\n  baseline: {{}}\n  bfp: {{libra: {{bfp: true}}}}\n")
    root, out = tmp_path / "runs", tmp_path / "out.txt"
    args = ["ablate", str(grid), "--out-root", str(root), "--report", str(tmp_path / "report"), "--jobs", "2"]
    process = start_libra(args, out)
    logs = [root / name / "seed0" / "log.jsonl" for name in ("baseline", "bfp")]

    def both_training() -> bool:
        return all(log.is_file() and any(r["type"] == "train" for r in read_log(log.parent)) for log in logs)

    wait_until(both_training, process, out, timeout=180)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 130, out.read_text()[-2000:]
    text = out.read_text()
    assert "Traceback" not in text and "interrupted" in text
    for log in logs:
        # Written on the way out although the checkpoint interval was never reached.
        state = load_checkpoint(log.parent / "checkpoints" / "last.pt")
        assert 1 <= state["iteration"] < MAX_ITERS
        assert state["data"]["next_iteration"] == state["iteration"]
    # The same command would resume both.
    plan = tmp_path / "plan.txt"
    run_libra([*args, "--dry-run"], plan)
    assert plan.read_text().count(" resume ") == 2
