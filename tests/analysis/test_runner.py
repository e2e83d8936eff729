"""The one analysis runner and the command factory: what a new analysis gets from one module and one entry."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from libra_cli.analysis import ANALYSES
from libra_cli.analysis.runner import Analysis, Files, ImageRun, ModelAnalysis, Option
from libra_cli.cli.analyze import analysis_command

runner = CliRunner()


def measure_count(run: ImageRun) -> dict:
    """A minimal analysis: how many images and GT boxes it walked, and its own option's value."""
    images = boxes = 0
    for batch, targets in run.batches():
        images += len(batch)
        boxes += sum(len(target["boxes"]) for target in targets)
    return {"walked": images, "boxes": boxes, "unit": run.options["unit"], "checkpoint": run.inputs.checkpoint}


UNIT = Option("unit", "--unit", "images", "What to count.", choices=("images", "boxes"))
analyze_count = ModelAnalysis("count", measure_count, options=(UNIT,))
write_count = Files("count", {"count.csv": lambda result: f"walked\n{result['walked']}\n"})
COUNT = Analysis("count", "a test", "Count the images walked.", analyze_count, write_count)


def test_the_runner_walks_the_first_images_in_batches_and_counts_progress(tiny_run):
    calls = []
    result = analyze_count(tiny_run, num_images=3, batch_size=2, checkpoint="last", progress=lambda *c: calls.append(c))
    # The first 3 train images in batches of 2: progress after 2, then after 3, of 3.
    assert calls == [(2, 3), (3, 3)]
    # The fields every analysis JSON starts with, then the measurement's own, in that order.
    assert list(result)[:4] == ["analysis", "run", "images", "split"]
    assert (result["analysis"], result["run"], result["images"], result["split"]) == (
        "count",
        str(tiny_run),
        3,
        "train",
    )
    assert (result["walked"], result["unit"]) == (3, "images")  # the option's default
    assert result["checkpoint"]["iteration"] == 1  # tiny_run trained 1 iteration; last.pt is that one


def test_written_files_are_the_json_and_the_tables(tiny_run, tmp_path):
    result = analyze_count(tiny_run, num_images=2, checkpoint="last", unit="boxes")
    written = write_count({**result, "run": str(tmp_path)})  # into RUN_DIR/analysis of the result's run
    assert written["count.json"] == tmp_path / "analysis" / "count.json"
    assert list(written) == ["count.json", "count.csv"]  # the JSON first
    assert json.loads(written["count.json"].read_text())["unit"] == "boxes"
    assert written["count.csv"].read_text() == "walked\n2\n"


def test_a_command_made_from_an_entry_has_the_common_and_its_own_flags(tiny_run, monkeypatch):
    monkeypatch.setitem(ANALYSES, "count", COUNT)  # the registry line of a new analysis
    app = typer.Typer()
    app.command("count")(analysis_command(COUNT))
    app.command("other")(lambda: None)  # two commands, so that typer keeps the sub-command's name
    help_text = runner.invoke(app, ["count", "--help"], env={"COLUMNS": "200"}).output
    for flag in ("--images", "--split", "--checkpoint", "--device", "--seed", "--batch-size", "--threads", "--unit"):
        assert flag in help_text, flag
    assert "Count the images walked." in help_text

    done = runner.invoke(app, ["count", str(tiny_run), "--images", "1", "--checkpoint", "last", "--unit", "boxes"])
    assert done.exit_code == 0, done.output
    assert f"written to {tiny_run / 'analysis'}: count.json, count.csv" in done.output.replace("\n", "")

    # A value outside the option's choices is refused in one line before the run is read.
    refused = runner.invoke(app, ["count", str(tiny_run), "--unit", "pixels"])
    assert refused.exit_code == 2
    assert refused.output.strip() == "error: --unit: 'pixels' is not one of images, boxes"


def test_every_listed_analysis_has_a_command_with_its_options():
    from libra_cli.cli import load_command

    group = load_command("analyze")
    assert list(group.commands) == list(ANALYSES)  # one command per entry, in the registry's order
    for name, analysis in ANALYSES.items():
        flags = {flag for parameter in group.commands[name].params for flag in parameter.opts}
        own = {option.flags.split("/")[0] for option in analysis.options}
        assert own <= flags, name
        assert ("--threads" in flags) == analysis.reads_model, name  # the model options come with --threads
