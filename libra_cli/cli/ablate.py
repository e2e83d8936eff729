"""``libra ablate GRID.yaml`` — train every configuration of a grid for every seed, then report."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from libra_cli.cli.display import RichDisplay
from libra_cli.cli.ui import console, handle_errors
from libra_cli.engine.ablate import PlannedRun, load_grid, plan_runs, report_dirs
from libra_cli.engine.parallel import default_parallel_jobs
from libra_cli.errors import LibraError
from libra_cli.workflow import RunState, decompose_errors, report_runs, run_state, train_grid


def plan_table(planned: list[PlannedRun], statuses: list[RunState], out_root: Path) -> Table:
    table = Table(title=f"ablation plan: {len(planned)} runs in {out_root}")
    for column in ("#", "run dir", "seed", "components", "status"):
        table.add_column(column, justify="right" if column in ("#", "seed") else "left")
    for index, (run, status) in enumerate(zip(planned, statuses, strict=True), start=1):
        components = ", ".join(run.config.libra.enabled()) or "none"
        table.add_row(str(index), run.name, str(run.seed), components, status)
    return table


@handle_errors
def ablate_command(
    grid: str = typer.Argument(
        ...,
        help="A shipped grid's name (libra config --list) or a grid YAML: {base: PRESET, runs: {label: {section: …}}}.",
    ),
    seeds: int = typer.Option(1, "--seeds", help="Seeds per configuration (0 … N−1)."),
    out_root: Path = typer.Option(None, "--out-root", help="Folder for the runs (default: runs/ablate/GRID_NAME)."),
    report: Path = typer.Option(
        None,
        "--report",
        help="Report folder (default: reports/GRID_NAME); each evaluated run's errors are decomposed first.",
    ),
    max_iters: int = typer.Option(None, "--max-iters", help="Override every run's number of iterations."),
    device: str = typer.Option(None, "--device", help="cpu | cuda | cuda:N for every run."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and what is already done; train nothing."),
    jobs: int = typer.Option(None, "--jobs", help="Runs trained at once (default: 2 on a multi-core CPU, 1 on GPU)."),
) -> None:
    """Train a grid of configurations × seeds (finished runs skipped, stopped ones resumed), then report."""
    spec = load_grid(grid)
    overrides: dict[str, dict] = {}
    if max_iters is not None:
        overrides.setdefault("train", {})["max_iters"] = max_iters
    if device is not None:
        overrides.setdefault("train", {})["device"] = device
    name = spec.path.stem
    root = out_root or Path("runs") / "ablate" / name
    planned = plan_runs(spec, seeds, root, overrides)
    statuses = [run_state(run.config) for run in planned]  # refuses folders holding other settings
    console.print(plan_table(planned, statuses, root))
    if dry_run:
        return

    parallel = jobs if jobs is not None else default_parallel_jobs(planned[0].config.train.device)
    if parallel < 1:
        raise LibraError(f"--jobs: must be at least 1, got {parallel}")
    outcomes = train_grid(planned, jobs=parallel, display=RichDisplay(), states=statuses)
    counts = {kind: sum(o.outcome == kind for o in outcomes) for kind in ("trained", "resumed", "skipped", "failed")}
    console.print(", ".join(f"{count} {kind}" for kind, count in counts.items()))
    dirs = report_dirs(planned)
    decompose_errors(dirs, display=RichDisplay())
    if dirs:
        path = report_runs(dirs, report or Path("reports") / name, title=f"Ablation: {name}")
        console.print(str(path), highlight=False, soft_wrap=True)
    failed = [outcome for outcome in outcomes if outcome.outcome == "failed"]
    if failed:
        first = failed[0]
        raise LibraError(f"{len(failed)} of {len(outcomes)} runs failed; first: {first.run.name}: {first.error}")
