"""The ``libra`` command: one Typer command per file, each a thin layer over a library function."""

from __future__ import annotations

import typer

from libra_cli import __version__
from libra_cli.cli import ablate, analyze, config_cmd, data, demo, evaluate, report, score, train

app = typer.Typer(
    name="libra",
    help="Balanced learning for object detection: train, evaluate, analyse and report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("train")(train.train_command)
app.command("eval")(evaluate.eval_command)
app.command("demo")(demo.demo_command)
app.command("report")(report.report_command)
app.command("ablate")(ablate.ablate_command)
app.command("config")(config_cmd.config_command)
app.command("score")(score.score_command)
app.add_typer(data.app, name="data")
app.add_typer(analyze.app, name="analyze")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"libra {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """libra — Libra R-CNN components, equalization loss, imbalance diagnostics and reports."""


def main() -> None:
    app()
