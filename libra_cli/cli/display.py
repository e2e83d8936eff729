"""The terminal's view of the workflow layer: progress bars, the start table of a run, metrics tables."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from libra_cli.cli.ui import (
    ParallelTrainProgress,
    PlainCount,
    TrainProgress,
    category_table,
    console,
    count_progress,
    metrics_table,
)
from libra_cli.config import RunConfig
from libra_cli.engine.distributed import is_main_process
from libra_cli.workflow import Count, Display, TrainHooks


class RichDisplay(Display):
    """Shows the workflow with rich: one bar per counted task, a start table and a progress bar per run
    trained here, one bar per run trained side by side, the metrics of each finished run."""

    def message(self, text: str) -> None:
        console.print(text, highlight=False, soft_wrap=True)  # paths stay whole, copyable

    @contextlib.contextmanager
    def count(self, label: str, total: int) -> Iterator[Count | None]:
        if not console.is_terminal:  # a log file: coarse lines instead of a bar that prints only at its end
            yield PlainCount(label, total)
            return
        with count_progress(label) as progress:
            task = progress.add_task(label, total=total)

            def count(done: int, of: int) -> None:
                progress.update(task, completed=done, total=of or total)

            yield count

    def training(self, config: RunConfig) -> TrainHooks:
        from libra_cli.cli.train import describe_start, run_label  # the command module imports this one

        label = run_label(config)

        def on_end(result: Any) -> None:
            if result.finished_before and is_main_process():
                console.print(
                    f"{label}: already trained to iteration {result.iterations} and evaluated; nothing to resume "
                    f"(`libra eval {result.run_dir}` evaluates it again, --extend trains it on)",
                    highlight=False,
                )
                if result.metrics is not None:
                    console.print(metrics_table(result.metrics, title=f"{label} @ {result.iterations}"))
                return
            if result.metrics is not None and is_main_process():
                console.print(metrics_table(result.metrics, title=f"{label} @ {result.iterations}"))
                console.print(category_table(result.metrics))
                minutes = result.wall_s / 60
                console.print(f"trained {result.iterations} iterations in {minutes:.1f} min → {result.run_dir}")

        def on_start(info: dict[str, Any]) -> None:
            describe_start(config, info)

        return TrainHooks(on_start=on_start, progress=TrainProgress(label), on_end=on_end)

    @contextlib.contextmanager
    def side_by_side(self, total: int, finished: int) -> Iterator[Callable[[str, Any, Any], None] | None]:
        with ParallelTrainProgress() as view:
            runs = view.progress.add_task("runs", total=total, completed=finished, status="")

            def on_event(kind: str, job: Any, payload: Any) -> None:
                view(kind, job, payload)
                if kind in ("done", "failed", "interrupted"):
                    view.progress.advance(runs)

            yield on_event

    def next_run(self, done: int, total: int, name: str | None) -> None:
        if name is not None and total > 1:
            console.print(f"[bold]run {done + 1} of {total}[/bold]: {name}")

    def reused(self, name: str, metrics: dict[str, Any]) -> None:
        console.print(f"{name}: already trained, reusing it")
        console.print(metrics_table(metrics, title=name))
