"""`libra demo` end to end on a 1-iteration schedule: every stage runs and the report links both runs."""

from __future__ import annotations

import json
import re

import pytest

from libra_cli.workflow import demo


@pytest.mark.slow
def test_demo_with_libra_runs_every_stage_and_reuses_finished_runs(tmp_path):
    out, synth, report_dir = tmp_path / "runs", tmp_path / "synth", tmp_path / "report"
    results = demo(out, synth, report_dir=report_dir, max_iters=1, analysis_images=2, with_libra=True).metrics
    assert set(results) == {"baseline", "libra"}
    for name in ("baseline", "libra"):
        metrics = json.loads((out / name / "eval" / "metrics.json").read_text())
        assert metrics["iteration"] == 1 and metrics["num_images"] == 100
        for analysis in ("sampling", "features", "gradients"):
            assert json.loads((out / name / "analysis" / f"{analysis}.json").read_text())["analysis"] == analysis
    config = (out / "libra" / "config.yaml").read_text()
    assert "iou_sampling: true" in config and "bfp: true" in config and "balanced_l1: true" in config
    report = (report_dir / "report.md").read_text()
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report):
        assert (report_dir / link).is_file(), link
    # A second call finds everything done and trains nothing.
    stamp = (out / "libra" / "checkpoints" / "last.pt").stat().st_mtime_ns
    again = demo(out, synth, report_dir=report_dir, max_iters=1, analysis_images=2, with_libra=True).metrics
    assert again["libra"]["summary"] == results["libra"]["summary"]
    assert (out / "libra" / "checkpoints" / "last.pt").stat().st_mtime_ns == stamp


def test_demo_refuses_zero_jobs_before_any_work(tmp_path):
    from typer.testing import CliRunner

    from libra_cli.cli import app

    result = CliRunner().invoke(
        app, ["demo", "--jobs", "0", "--out", str(tmp_path / "runs"), "--synth-dir", str(tmp_path / "synth")]
    )
    assert result.exit_code == 2
    assert "--jobs: must be at least 1, got 0" in result.output
    assert not (tmp_path / "synth").exists() and not (tmp_path / "runs").exists()
