"""The terminal's view of the workflow layer: progress bars, the start table of a run, metrics tables."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

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


def eql_tail_summary(eql: dict[str, Any]) -> str:
    """TR(λ) and the tail classes (EQL paper §3), so users can judge their λ."""
    names = eql["tail_classes"]
    shown = ", ".join(names[:12]) + (f", … ({len(names)} in all)" if len(names) > 12 else "")
    return (
        f"λ = {eql['eql_lambda']:g}: {len(names)} tail classes, tail ratio TR(λ) = "
        f"{100 * eql['tail_ratio']:.2f}% [{shown or 'none'}]"
        + (f"; f_j over {eql['freq_denominator']} {eql['freq_mode']} images" if "freq_mode" in eql else "")
    )


def describe_components(config: RunConfig) -> str:
    """The switched-on components, IoU-balanced sampling with the reading it follows."""
    from libra_cli.sampling import iou_sampling_reading

    lib = config.libra
    names = []
    for name in lib.enabled():
        if name == "iou_sampling":
            name += f" ({iou_sampling_reading(lib.iou_floor_thr, lib.iou_bins_upper)} reading)"
        names.append(name)
    details = reference_details(config)
    if names:
        return ", ".join(names) + (f"; reference details: {', '.join(details)}" if details else "")
    return f"off; reference details: {', '.join(details)}" if details else "off (plain torchvision detector)"


def reference_details(config: RunConfig) -> list[str]:
    """The reference's training details (SPEC §9) that ``config`` switches on, as short names."""
    m, d, lib = config.model, config.data, config.libra
    details = [
        ("box-head init", m.box_head_init == "reference"),
        (f"RPN positives IoU >= {m.rpn_min_pos_iou:g}" if m.rpn_min_pos_iou else "", bool(m.rpn_min_pos_iou)),
        ("RPN loss divisor", m.rpn_loss_norm == "reference"),
        (f"RPN negatives <= {m.rpn_neg_pos_ub} x positives", m.rpn_neg_pos_ub is not None),
        ("unannotated images dropped", d.drop_unannotated),
        ("half-open last IoU bin", lib.iou_sampling and lib.iou_last_bin == "half-open"),
    ]
    return [name for name, on in details if on]


def describe_start(config: RunConfig, info: dict[str, Any]) -> None:
    """Print what is about to happen: data, model, switches, and EQL's tail classes."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("run", config.train.out)
    table.add_row(
        "train",
        f"{info['num_images']} images, {len(info['category_ids'])} classes ({info['format']}) "
        f"from {info['given']['train_ann']}",
    )
    table.add_row("val", f"{info['num_val_images']} images from {info['given']['val_ann']}")
    params = sum(p.numel() for p in info["model"].parameters()) / 1e6
    table.add_row(
        "model",
        f"{config.model.arch} {config.model.backbone}-FPN, {params:.1f} M parameters, "
        f"{config.model.min_size}px, device {info['device']}",
    )
    table.add_row("libra", describe_components(config))
    # The engine's schedule: an epoch schedule resolved into iterations, the lr after linear scaling.
    sched = info.get("schedule") or {"max_iters": config.train.max_iters, "lr": config.train.lr}
    epochs = f" ({sched['epochs']} epochs × {sched['iters_per_epoch']})" if sched.get("epochs") is not None else ""
    lr_text = f"lr {sched['lr']:g}"
    if sched.get("scale_lr"):
        lr_text += f" (= {config.train.lr:g} × {config.data.batch_size} / {config.train.reference_batch})"
    milestones = sched.get("milestone_iters")
    table.add_row(
        "schedule",
        f"{sched['max_iters']} iterations{epochs} × {config.data.batch_size} images"
        + (f" over {info['world_size']} processes" if info.get("world_size", 1) > 1 else "")
        + ", "
        f"{lr_text} ({config.train.schedule}"
        + (f", ×0.1 at {', '.join(map(str, milestones))}" if milestones else "")
        + ")"
        + (f", resuming at {info['start_iter']}" if info["start_iter"] else ""),
    )
    skipped = info.get("skipped", {})
    if any(skipped.values()):
        table.add_row(
            "skipped",
            f"{skipped['train_images']} + {skipped['val_images']} bad images, "
            f"{skipped['train_boxes']} + {skipped['val_boxes']} bad boxes "
            "(train + val, --on-bad-sample skip)",
        )
    if config.libra.eql:
        table.add_row("eql", eql_tail_summary(info["eql"]))
    console.print(table)
    if config.libra.eql and info["eql"].get("warning"):
        console.print(f"[yellow]warning:[/yellow] {escape(info['eql']['warning'])}")


def run_label(config: RunConfig) -> str:
    """A short name for progress output: the run folder with its parent (e.g. ``bfp/seed0``)."""
    out = Path(config.train.out)
    return f"{out.parent.name}/{out.name}" if out.parent.name else out.name
