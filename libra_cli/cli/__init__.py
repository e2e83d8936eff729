"""The ``libra`` command: one Typer command per file, each a thin layer over a library function.

Commands are imported only when they run. ``libra --help`` lists them from :data:`COMMANDS` alone, so that it
prints at once instead of first importing torch, torchvision and every command's module; ``libra train …``
imports the train module (and what it needs) and nothing else.

A command's ``--help`` keeps every flag name whole: on terminals narrower than
:data:`RICH_HELP_MIN_COLUMNS` it is click's plain option list instead of rich's panels.

Registering a command is one line in :data:`COMMANDS`: its name, where it lives (``module:attribute``, the
attribute a command function or a ``typer.Typer`` of sub-commands) and the one line ``libra --help`` shows
for it (a test checks it against the command's own help), e.g.::

    LazyCommand("export", "libra_cli.cli.export:export_command", "Write weights to share: …"),

:func:`load_command` gives the click command of a name, for tests that inspect a command's options.
"""

from __future__ import annotations

import importlib
import shutil
from dataclasses import dataclass
from typing import Any

import typer
from typer.core import TyperGroup

from libra_cli import __version__


@dataclass(frozen=True)
class LazyCommand:
    name: str
    target: str  # "module:attribute": a command function, or a typer.Typer holding sub-commands
    help: str  # what `libra --help` lists, without importing the module


COMMANDS = (
    LazyCommand("train", "libra_cli.cli.train:train_command", "Train a detector. Without dataset flags it uses the default synthetic benchmark."),  # noqa: E501
    LazyCommand("eval", "libra_cli.cli.evaluate:eval_command", "Evaluate a trained run: detections.json (segmentations.json for Mask R-CNN) and metrics.json in RUN_DIR/eval (another set's: in RUN_DIR/eval/<set>/ or --out)."),  # noqa: E501
    LazyCommand("demo", "libra_cli.cli.demo:demo_command", "Benchmark → baseline and full Libra R-CNN runs → the three analyses → report."),  # noqa: E501
    LazyCommand("report", "libra_cli.cli.report:report_command", "Write report.md with the runs' tables (metrics, ablation, LVIS, errors, training, analyses) and figures."),  # noqa: E501
    LazyCommand("ablate", "libra_cli.cli.ablate:ablate_command", "Train a grid of configurations × seeds (finished runs skipped, stopped ones resumed), then report."),  # noqa: E501
    LazyCommand("config", "libra_cli.cli.config_cmd:config_command", "Print the config `libra train` would run with the same arguments, as YAML (its config.yaml)."),  # noqa: E501
    LazyCommand("score", "libra_cli.cli.score:score_command", "Score a results file with the protocol `libra eval` uses (COCO, or LVIS' federated one)."),  # noqa: E501
    LazyCommand("predict", "libra_cli.cli.predict:predict_command", "Detect objects on new images: OUT/predictions.json (COCO results + file and category names) and drawings."),  # noqa: E501
    LazyCommand("export", "libra_cli.cli.export:export_command", "Write weights to share: no optimizer or training state; `libra predict` and Detector.from_file read it."),  # noqa: E501
    LazyCommand("data", "libra_cli.cli.data:app", "Datasets: generate the synthetic benchmark, draw a dataset's ground truth, count what a file holds."),  # noqa: E501
    LazyCommand("analyze", "libra_cli.cli.analyze:app", "Imbalance diagnostics of a run: sampling (IoU of negatives), features (pyramid levels), gradients, tail (per-class positive vs discouraging gradients); errors (where the AP goes, from the detections)."),  # noqa: E501
)  # fmt: skip
_BY_NAME = {command.name: command for command in COMMANDS}


# Below this many columns a command's --help is click's plain list (every flag whole, its help under it);
# the panels of the rich help cut long flag names such as --no-aspect-ratio-grouping to fit.
RICH_HELP_MIN_COLUMNS = 120


def load_command(name: str) -> Any:
    """The click command (or group) of the registered command ``name``, its module imported now."""
    entry = _BY_NAME[name]
    module_name, attribute = entry.target.split(":")
    target = getattr(importlib.import_module(module_name), attribute)
    markup = "rich" if shutil.get_terminal_size().columns >= RICH_HELP_MIN_COLUMNS else None
    if isinstance(target, typer.Typer):
        target.rich_markup_mode = markup
        command = typer.main.get_group(target)
    else:
        holder = typer.Typer(pretty_exceptions_enable=False, add_completion=False, rich_markup_mode=markup)
        holder.command(name)(target)
        command = typer.main.get_command(holder)
    command.name = name
    return command


class LazyCommandGroup(TyperGroup):
    """The root group: lists the registered commands from their table entry, imports one when it runs."""

    def list_commands(self, ctx: Any) -> list[str]:
        return [*super().list_commands(ctx), *_BY_NAME]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in _BY_NAME:
            return super().get_command(ctx, cmd_name)
        # For the listing in `libra --help`: the name and the help line, nothing imported.
        return typer.core.TyperCommand(name=cmd_name, help=_BY_NAME[cmd_name].help)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0] in _BY_NAME:
            return args[0], load_command(args[0]), args[1:]
        return super().resolve_command(ctx, args)


app = typer.Typer(
    name="libra",
    cls=LazyCommandGroup,
    help="Balanced learning for object detection: train, evaluate, analyse and report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


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
