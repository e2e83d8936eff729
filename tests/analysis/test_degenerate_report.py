"""A report of a run that has barely trained says so in words where its figures would be empty."""

from __future__ import annotations

import json
import shutil

import pytest

from libra_cli.report.detections import DetectionOptions
from libra_cli.workflow import report_runs


@pytest.mark.slow
def test_a_one_iteration_run_gets_words_instead_of_empty_figures(tiny_run, tmp_path):
    run = shutil.copytree(tiny_run, tmp_path / "baseline")
    # The state of a run that has detected nothing yet: every category's AP is 0.
    metrics_path = run / "eval" / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    for row in metrics["per_category"]:
        row["AP"] = 0.0
    metrics_path.write_text(json.dumps(metrics))
    out = tmp_path / "report"
    # Scores are probabilities below 1 after one iteration: a threshold of 1 keeps none, the column is empty.
    report_runs([run], out, detections=DetectionOptions(score_thr=1.0))
    text = " ".join((out / "report.md").read_text().split())
    # tiny_run trained 1 iteration with log_interval 1: one training record, no curve.
    assert "Each run logged 1 training record: too few points for curves" in text
    assert not list(out.glob("*loss_terms*.png")) and not list(out.glob("*cls_vs_reg*.png"))
    assert "baseline: every category's AP is 0 (no box matched at IoU ≥ 0.5), so there are no bars to draw" in text
    assert not list(out.glob("*category_ap*.png"))
    assert "baseline: no detection with score ≥ 1 on these images, so the column is empty" in text
    assert "AR1, AR10 and AR100: recall with at most 1, 10 and 100 detections per image." in text
