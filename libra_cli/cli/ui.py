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
    """The training loop's progress: iteration, losses, learning rate, ETA.

    On a terminal a rich progress bar; elsewhere (nohup, Slurm, torchrun to a file, a pipe) one plain line per
    log interval, flushed at once (:func:`plain_train_line`), since a bar there prints only when it ends.
    """

    BAR_WIDTH = 20

    def __init__(self, description: str = "train") -> None:
        self.description = description
        self.plain = not console.is_terminal
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=self.BAR_WIDTH),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=console,
        )
        self.task = None
        self.total = 0

    def start(self, total: int, completed: int) -> None:
        self.total = total
        if self.plain:
            plain_line(f"{self.description} {completed}/{total}: {'resuming' if completed else 'starting'}")
            return
        self.progress.start()
        self.task = self.progress.add_task(self.description, total=total, completed=completed, status="")

    def update(self, iteration: int, record: dict[str, Any] | None) -> None:
        if self.plain:
            if record is not None:
                plain_line(plain_train_line(self.description, iteration, self.total, record))
            return
        fields = {"status": self.fit(loss_status(record))} if record is not None else {}
        self.progress.update(self.task, completed=iteration, **fields)

    def fit(self, status: str) -> str:
        """``status`` cut to the width the bar's other columns leave, so that a narrow terminal loses the
        last loss terms, never the iteration count or the ETA."""
        digits = len(str(self.total))
        # description, bar, "done/total", "100%", elapsed "0:00:00", "ETA", remaining "0:00:00", 7 gaps
        others = len(self.description) + self.BAR_WIDTH + 2 * digits + 1 + 4 + 7 + 3 + 7 + 8
        room = console.width - others - 1
        if len(status) <= room:
            return status
        return status[: max(0, room - 1)] + "…" if room > 0 else ""

    def stop(self) -> None:
        if not self.plain:
            self.progress.stop()


def plain_line(text: str) -> None:
    """One line of progress for a log file: never wrapped, no markup, flushed at once."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)
    console.file.flush()


def plain_train_line(description: str, iteration: int, total: int, record: dict[str, Any]) -> str:
    """``train 40/450 (9%) loss 1.234 (classifier 0.500 …) lr 2.00e-02 0.52 s/it ETA 3:33`` of a log record;
    the ETA is the iterations left at the window's time per iteration."""
    per_iter = float(record.get("time_per_iter", 0.0))
    eta = _duration(max(0, total - iteration) * per_iter)
    percent = 100 * iteration // max(1, total)
    return f"{description} {iteration}/{total} ({percent}%) {loss_status(record)} {per_iter:.2f} s/it ETA {eta}"


def _duration(seconds: float) -> str:
    """``H:MM:SS`` (``M:SS`` under an hour)."""
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class PlainCount:
    """A counted task's progress for a log file: a line each time another tenth of the total is done."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total, self.shown = label, total, -1

    def __call__(self, done: int, of: int) -> None:
        total = of or self.total
        tenth = 10 * done // max(1, total)
        if tenth > self.shown:
            self.shown = tenth
            plain_line(f"{self.label} {done}/{total}")


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
