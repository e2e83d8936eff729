"""Terminal presentation shared by the commands: errors, progress bars and metric tables."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from libra_cli.errors import LibraError

console = Console()
err_console = Console(stderr=True)

EXIT_BAD_INPUT = 2


def handle_errors(func: Callable) -> Callable:
    """Turn LibraError into one red line on stderr and exit code 2; Ctrl-C into exit code 130."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except LibraError as exc:
            # The message is data (file names, values, category names): never read it as markup.
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/] — progress so far is saved; continue with --resume")
            raise typer.Exit(130) from None

    return wrapper


def count_progress(description: str) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


class TrainProgress:
    """A rich progress bar for the training loop: iteration, losses, learning rate, ETA."""

    def __init__(self, description: str = "train") -> None:
        self.description = description
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=console,
        )
        self.task = None

    def start(self, total: int, completed: int) -> None:
        self.progress.start()
        self.task = self.progress.add_task(self.description, total=total, completed=completed, status="")

    def update(self, iteration: int, record: dict[str, Any] | None) -> None:
        fields = {"status": loss_status(record)} if record is not None else {}
        self.progress.update(self.task, completed=iteration, **fields)

    def stop(self) -> None:
        self.progress.stop()


def loss_status(record: dict[str, Any]) -> str:
    """``loss 1.234 (classifier 0.5 …) lr 2.00e-02`` for a training log record."""
    losses = " ".join(
        f"{name.removeprefix('loss_')} {value:.3f}" for name, value in record.items() if name.startswith("loss_")
    )
    return f"loss {record['loss']:.3f} ({losses}) lr {record['lr']:.2e}"


class ParallelTrainProgress:
    """One progress bar per simultaneous training run; use as ``on_event`` of ``train_parallel``.

    Finished runs print their metrics table; failures print one line. ``after`` (optional) is called with
    each finished job's name and TrainResult.
    """

    def __init__(self, after: Callable[[str, Any], None] | None = None) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=console,
        )
        self.tasks: dict[str, Any] = {}
        self.after = after

    def __enter__(self) -> ParallelTrainProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def __call__(self, kind: str, job: Any, payload: Any) -> None:
        if kind == "start":
            if job.name not in self.tasks:
                self.tasks[job.name] = self.progress.add_task(job.name, total=payload["total"], status="")
            self.progress.update(self.tasks[job.name], completed=payload["completed"], total=payload["total"])
        elif kind == "update" and job.name in self.tasks:
            fields = {"status": loss_status(payload["record"])} if payload["record"] else {}
            self.progress.update(self.tasks[job.name], completed=payload["iteration"], **fields)
        elif kind == "done":
            if job.name in self.tasks:
                self.progress.remove_task(self.tasks.pop(job.name))
            if payload.metrics is not None:
                console.print(metrics_table(payload.metrics, title=f"{job.name} @ {payload.iterations}"))
            console.print(f"{job.name}: trained {payload.iterations} iterations in {payload.wall_s / 60:.1f} min")
            if self.after is not None:
                self.after(job.name, payload)
        elif kind == "failed":
            err_console.print(f"[bold red]{escape(job.name)} failed:[/] {escape(str(payload))}", highlight=False)
        elif kind == "interrupted":
            err_console.print(f"[yellow]{escape(job.name)} interrupted[/] — its checkpoint is kept for resuming")


def progress_callback(progress: Progress, description: str, total: int) -> Callable[[int, int], None]:
    task = progress.add_task(description, total=total)

    def callback(done: int, _total: int) -> None:
        progress.update(task, completed=done)

    return callback


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def metrics_table(metrics: dict[str, Any], title: str = "evaluation") -> Table:
    """The summary metrics, six to a row with their names above (AP family, then AR family): fits 80 columns."""
    summary = metrics["summary"]
    names = list(summary)
    fmt = metrics.get("format", "coco").upper()
    table = Table(title=f"{title} ({fmt}, {metrics.get('num_images', '?')} images)", show_header=False)
    for _ in range(min(6, len(names))):
        table.add_column(justify="right")
    for start in range(0, len(names), 6):
        row = names[start : start + 6]
        table.add_row(*(f"[bold]{name}[/]" for name in row))
        table.add_row(*(_fmt(summary[name]) for name in row), end_section=True)
    return table


def category_table(metrics: dict[str, Any], limit: int = 10) -> Table:
    rows = [row for row in metrics.get("per_category", []) if row.get("AP") is not None]
    rows.sort(key=lambda row: row["AP"], reverse=True)
    shown = rows if len(rows) <= limit else rows[: limit // 2] + rows[-(limit - limit // 2) :]
    table = Table(title="per-category AP" + ("" if len(rows) <= limit else f" (best and worst of {len(rows)})"))
    table.add_column("category")
    table.add_column("id", justify="right")
    if any("frequency" in row for row in shown):
        table.add_column("freq")
    table.add_column("AP", justify="right")
    table.add_column("AP50", justify="right")
    for row in shown:
        cells = [str(row.get("name", "")), str(row["category_id"])]
        if any("frequency" in r for r in shown):
            cells.append(str(row.get("frequency", "")))
        cells += [_fmt(row["AP"]), _fmt(row.get("AP50"))]
        table.add_row(*cells)
    return table
