"""``libra report``: prints the report path; a folder that is not a run is a one-line error (exit 2)."""

from __future__ import annotations

from typer.testing import CliRunner

from libra_cli.cli import app
from tests.report import coco_summary, make_run

runner = CliRunner()


def test_report_command_prints_the_report_path(tmp_path):
    run = make_run(tmp_path, "run", summary=coco_summary(0.25))
    out = tmp_path / "reports" / "r"
    result = runner.invoke(app, ["report", str(run), "--out", str(out), "--title", "My runs"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(out / "report.md")
    assert (out / "report.md").read_text().startswith("# My runs\n")


def test_report_command_rejects_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "plain").mkdir()
    result = runner.invoke(app, ["report", str(tmp_path / "plain"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "not a run directory (no config.yaml)" in lines[0]
