"""``libra analyze sampling|features|gradients|tail|errors RUN_DIR`` — the diagnostics of a run.

One command per analysis of ``libra_cli.analysis.ANALYSES``, each made by :func:`analysis_command` from its
entry: the options of an analysis that runs the model (``analysis.runner.MODEL_OPTIONS``, then ``--threads``)
and its own, as flags; its help. Each runs through ``libra_cli.workflow.analyse_run`` (which reads and checks
the inputs before the progress bar starts, returns a dict and writes ``RUN_DIR/analysis/<name>.json``, ``.csv``
and ``.png``) and prints the analysis's tables (``report.analysis_tables.RUN_TABLES``, where it has them) and notes.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import typer

from libra_cli.analysis import ANALYSES
from libra_cli.analysis.runner import MODEL_OPTIONS, Analysis, Option
from libra_cli.cli.display import RichDisplay
from libra_cli.cli.ui import console, handle_errors
from libra_cli.errors import LibraError
from libra_cli.report.analysis_tables import RUN_TABLES
from libra_cli.report.terminal import fold_constant_columns, render_rich
from libra_cli.workflow import analyse_run

app = typer.Typer(
    help="Imbalance diagnostics of a run: sampling (IoU of negatives), features (pyramid levels), gradients, "
    "tail (per-class positive vs discouraging gradients); errors (where the AP goes, from the detections).",
    no_args_is_help=True,
)

RUN_DIR = typer.Argument(..., help="A run directory made by `libra train`.")
THREADS = Option(
    "threads",
    "--threads",
    None,
    "CPU threads for torch (default: torch's choice). 1 is fastest on a CPU that other jobs share.",
    int,
)


def _parameter(option: Option) -> inspect.Parameter:
    flag = typer.Option(option.default, option.flags, help=option.help)
    return inspect.Parameter(option.keyword, inspect.Parameter.KEYWORD_ONLY, default=flag, annotation=option.type)


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        if threads < 1:
            raise LibraError(f"--threads: must be at least 1, got {threads}")
        # Threads that spin-wait for cores other jobs hold slow every operator down; fewer help then.
        torch.set_num_threads(threads)


def analysis_command(analysis: Analysis) -> Callable[..., None]:
    """The ``libra analyze NAME`` command of ``analysis``: RUN_DIR, then the flags of its options (an analysis
    that runs the model: ``MODEL_OPTIONS``, ``--threads``, then its own), its help as the command's."""

    def command(run_dir: Path, threads: int | None = None, **options: Any) -> None:
        _set_threads(threads)
        announce = lambda line: console.print(line, highlight=False)  # noqa: E731
        result, written = analyse_run(run_dir, analysis.name, display=RichDisplay(), announce=announce, **options)
        run = SimpleNamespace(label=Path(run_dir).name, analyses={analysis.name: result})
        for block in RUN_TABLES.get(analysis.name, lambda run: [])(run):  # an analysis without tables prints none
            console.print(render_rich(fold_constant_columns(block)))
        for line in analysis.notes(result):
            console.print(line)
        folder = next(iter(written.values())).parent
        console.print(f"written to {folder}: {', '.join(written)}")

    options = (*MODEL_OPTIONS, THREADS, *analysis.options) if analysis.reads_model else analysis.options
    parameters = [
        inspect.Parameter("run_dir", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=RUN_DIR, annotation=Path),
        *(_parameter(option) for option in options),
    ]
    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
    command.__doc__ = analysis.help
    command.__name__ = f"{analysis.name}_command"
    return handle_errors(command)


for _analysis in ANALYSES.values():
    app.command(_analysis.name)(analysis_command(_analysis))
