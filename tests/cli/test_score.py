"""``libra score GT RESULTS``: the numbers ``libra eval`` gives for a run's own detections, bad input as one line."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from libra_cli import workflow
from libra_cli.cli import app
from libra_cli.data.build import benchmark_paths
from libra_cli.engine.train import train
from libra_cli.rundir import RunLayout
from tests.conftest import tiny_config
from tests.engine.test_metrics import COCO_BOXES, coco_dataset, perfect_detections

runner = CliRunner()


@pytest.mark.slow
def test_score_of_a_runs_detections_equals_its_evaluation(tiny_benchmark, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(tiny_benchmark, run, train__max_iters=2, train__seed=0))
    layout = RunLayout(run)
    evaluated = layout.read_metrics()  # what training's final evaluation (libra eval's code) wrote
    val_ann = benchmark_paths(tiny_benchmark).val_ann

    result = runner.invoke(app, ["score", str(val_ann), str(layout.detections), "--out", str(tmp_path / "score")])

    assert result.exit_code == 0, result.output
    scored = json.loads((tmp_path / "score" / "metrics.json").read_text())
    # The same file, the same ground truth, the same evaluator: every number equal.
    assert scored["summary"] == evaluated["summary"]
    assert any(value for value in evaluated["summary"].values())  # a comparison of numbers, not of zeros
    assert scored["per_category"] == evaluated["per_category"]
    assert scored["evaluator"] == evaluated["evaluator"]
    assert scored["num_detections"] == evaluated["num_detections"]


def write_coco(tmp_path, detections) -> tuple:
    gt, results = tmp_path / "gt.json", tmp_path / "results.json"
    gt.write_text(json.dumps(coco_dataset()))
    results.write_text(json.dumps(detections))
    return gt, results


def test_perfect_results_score_one_with_the_error_decomposition(tmp_path):
    gt, results = write_coco(tmp_path, perfect_detections(COCO_BOXES))
    out = tmp_path / "out"

    result = runner.invoke(app, ["score", str(gt), str(results), "--out", str(out), "--errors"])

    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    # Every non-crowd box found once at IoU 1 (the crowd box is ignored): AP 1 (test_metrics' fixture).
    assert metrics["summary"]["AP"] == pytest.approx(1.0)
    assert metrics["num_detections"] == len(perfect_detections(COCO_BOXES))
    errors = json.loads((out / "analysis" / "errors.json").read_text())
    # Nothing to forgive: every curve of the decomposition is the perfect one.
    assert errors["coco"]["overall"]["C75"] == pytest.approx(1.0)
    assert "TIDE error kinds" in result.output


def test_score_library_call_equals_evaluate_detections(tmp_path):
    from libra_cli.engine.metrics import evaluate_detections

    detections = perfect_detections(COCO_BOXES)[:-1]
    gt, results = write_coco(tmp_path, detections)
    scored = workflow.score_results(gt, results)
    direct = evaluate_detections(coco_dataset(), detections)
    assert scored["summary"] == direct["summary"] and scored["per_category"] == direct["per_category"]


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([{"image_id": 77, "category_id": 3, "bbox": [0, 0, 5, 5], "score": 0.5}],
         r"results\.json: detections\[0\]: image_id 77 is not an image of the ground truth"),
        ([{"image_id": 1, "category_id": 3, "bbox": [0, 0, 5, 5], "score": 0.5},
          {"image_id": 1, "category_id": 4, "bbox": [0, 0, 5, 5], "score": 0.5}],
         r"results\.json: detections\[1\]: category_id 4 is not a category of the ground truth"),
        ({"image_id": 1}, r"results\.json: expected a JSON list, got dict"),
        ([{"image_id": 1, "category_id": 3, "bbox": [0, 0, 5], "score": 0.5}],
         r"results\.json: detections\[0\]: bbox must be \[x, y, w, h\]"),
    ],
)  # fmt: skip
def test_bad_results_are_one_line_and_exit_code_2(tmp_path, records, message):
    gt, results = write_coco(tmp_path, records)
    result = runner.invoke(app, ["score", str(gt), str(results), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert __import__("re").search(message, " ".join(result.output.split())), result.output
    assert not (tmp_path / "out").exists()  # nothing written


def test_malformed_files_are_one_line(tmp_path):
    gt, results = write_coco(tmp_path, [])
    results.write_text("[{")
    broken = runner.invoke(app, ["score", str(gt), str(results)])
    assert broken.exit_code == 2 and "results.json: not valid JSON" in broken.output
    missing = runner.invoke(app, ["score", str(tmp_path / "none.json"), str(results)])
    assert missing.exit_code == 2 and "none.json: annotation file not found" in missing.output
    segm = runner.invoke(app, ["score", str(gt), str(results), "--iou-type", "segm", "--errors"])
    assert segm.exit_code == 2 and "--errors" in segm.output
