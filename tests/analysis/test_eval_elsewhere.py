"""Evaluation on another set never replaces a run's own results, and a run trained with relative data paths is
evaluated, analysed and reported from any working directory."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
from typer.testing import CliRunner

from libra_cli.analysis.errors import analyze_errors
from libra_cli.cli import app
from libra_cli.engine.train import train
from libra_cli.workflow import evaluate_run
from tests.conftest import tiny_config

runner = CliRunner()


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def other_set(benchmark, folder):
    """The val split cut to its first 2 images, as a second annotation file ``other.json``."""
    val = json.loads((benchmark / "annotations" / "val.json").read_text())
    keep = {image["id"] for image in val["images"][:2]}
    val["images"] = [image for image in val["images"] if image["id"] in keep]
    val["annotations"] = [a for a in val["annotations"] if a["image_id"] in keep]
    path = folder / "other.json"
    path.write_text(json.dumps(val))
    return path


@pytest.mark.slow
def test_eval_on_another_set_writes_its_own_folder_and_keeps_the_runs_results(tiny_run, tiny_benchmark, tmp_path):
    run = shutil.copytree(tiny_run, tmp_path / "run")
    own = {name: digest(run / "eval" / name) for name in ("metrics.json", "detections.json")}
    other = other_set(tiny_benchmark, tmp_path)
    images = tiny_benchmark / "images" / "val"
    result = runner.invoke(app, ["eval", str(run), "--ann", str(other), "--images", str(images)])
    assert result.exit_code == 0, result.output
    # The run's own val results are byte for byte what training wrote.
    assert {name: digest(run / "eval" / name) for name in own} == own
    # The other set's results have a folder named after the annotation file (other.json → other).
    metrics = json.loads((run / "eval" / "other" / "metrics.json").read_text())
    assert metrics["num_images"] == 2 and metrics["eval_set"] == "other"  # the two images kept above
    assert (run / "eval" / "other" / "detections.json").is_file()
    assert "detections and metrics of other written to" in " ".join(result.output.split())
    # --out puts them where asked, and the errors analysis of that set reads that set's detections.
    elsewhere = tmp_path / "elsewhere"
    evaluate_run(run, ann=other, images=images, out=elsewhere)
    assert json.loads((elsewhere / "metrics.json").read_text())["num_images"] == 2
    assert {name: digest(run / "eval" / name) for name in own} == own
    errors = analyze_errors(run, ann=other)
    assert errors["detections"] == str(run / "eval" / "other" / "detections.json")
    assert errors["ann"] == str(other)


@pytest.mark.slow
def test_a_run_with_relative_data_paths_is_evaluated_from_another_folder(tiny_benchmark, tmp_path, monkeypatch):
    shutil.copytree(tiny_benchmark, tmp_path / "project" / "mydata")
    monkeypatch.chdir(tmp_path / "project")
    config = tiny_config(tiny_benchmark, tmp_path / "project" / "runs" / "r", train__max_iters=1)
    for split in ("train", "val"):  # paths as a user types them, relative to where `train` runs
        setattr(config.data, f"{split}_ann", f"mydata/annotations/{split}.json")
        setattr(config.data, f"{split}_images", f"mydata/images/{split}")
    train(config)
    run = tmp_path / "project" / "runs" / "r"
    info = json.loads((run / "dataset.json").read_text())
    assert info["val_images"] == str(tmp_path / "project" / "mydata" / "images" / "val")  # saved absolute
    assert info["given"]["val_images"] == "mydata/images/val"  # the typed form, for display
    monkeypatch.chdir(tmp_path)  # where `mydata/val` does not exist
    # Training's own evaluation names its ground truth absolute too: the errors analysis finds it from here.
    result = runner.invoke(app, ["analyze", "errors", str(run)])
    assert result.exit_code == 0, result.output
    metrics = evaluate_run(run, checkpoint="last")
    assert metrics["num_images"] == 4  # the tiny benchmark's whole val split (TINY_SPEC.num_val)
    report = runner.invoke(app, ["report", str(run), "--out", str(tmp_path / "report")])
    assert report.exit_code == 0, report.output
    # The report found the validation images to draw on: with the typed paths it would say "Not drawn: …".
    text = (tmp_path / "report" / "report.md").read_text()
    assert "Not drawn" not in text
    assert f"on {tmp_path / 'project' / 'mydata' / 'annotations' / 'val.json'} (r)" in text  # the set it read
    assert list((tmp_path / "report").glob("*detections*.png"))
