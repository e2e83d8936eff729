"""Ablation grids: every configuration of a grid file trained for every seed, resumably.

A grid file names a base preset and, per run label, the settings that differ from it::

    base: baseline
    runs:
      baseline: {}
      iou_sampling:
        libra: {iou_sampling: true}

Seed ``s`` of run ``label`` lives in ``OUT_ROOT/label/seed<s>`` with ``train.seed = s``. Re-running a grid
is safe: finished runs (last checkpoint at ``max_iters`` and ``eval/metrics.json`` present) are skipped
and interrupted ones resume from ``checkpoints/last.pt``, so an interrupted grid costs nothing already
done. A folder that holds a run with other settings is never resumed or overwritten.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from libra_cli.config import RunConfig, apply_overrides, read_yaml, resolve_preset, validate
from libra_cli.errors import LibraError
from libra_cli.rundir import RunLayout

GRID_KEYS = ("base", "runs")
# Set by the grid runner itself, so a grid must not set them.
RUNNER_SETTINGS = {"train": ("out", "seed")}
# Settings an existing run may differ in and still be resumed or reused: where it runs, not what it does.
PLACEMENT_SETTINGS = {("train", "out"), ("train", "device"), ("data", "num_workers")}
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

RunStatus = Literal["new", "resume", "done"]
Outcome = Literal["skipped", "trained", "resumed", "failed"]


@dataclass(frozen=True)
class Grid:
    path: Path
    base: RunConfig  # the base preset resolved (defaults when the grid names none)
    runs: dict[str, dict[str, dict[str, Any]]]  # label → {section: {field: value}} on top of the base


@dataclass(frozen=True)
class PlannedRun:
    label: str
    seed: int
    config: RunConfig  # fully resolved: train.out is the run directory, train.seed the seed

    @property
    def run_dir(self) -> Path:
        return Path(self.config.train.out)

    @property
    def name(self) -> str:
        return f"{self.label}/seed{self.seed}"


@dataclass(frozen=True)
class GridOutcome:
    run: PlannedRun
    outcome: Outcome
    error: str | None = None


def _base_config(base: Any, grid_path: Path) -> RunConfig:
    if base is None:
        return RunConfig()
    if not isinstance(base, str) or not base:
        raise LibraError(f"{grid_path}: base: expected a preset name or YAML path, got {base!r}")
    # A relative YAML path is looked up next to the grid file when it is not found from the working folder.
    candidate = Path(base)
    if not candidate.is_absolute() and not candidate.exists() and (grid_path.parent / candidate).is_file():
        base = str(grid_path.parent / candidate)
    try:
        path = resolve_preset(base)
        return apply_overrides(RunConfig(), read_yaml(path), str(path))
    except LibraError as exc:
        raise LibraError(f"{grid_path}: base: {exc}") from exc


def load_grid(path: str | Path) -> Grid:
    """Read and check a grid file; every problem is a one-line LibraError naming the file and the key."""
    grid_path = Path(path)
    if not grid_path.is_file():
        raise LibraError(f"{grid_path}: grid file not found")
    data = read_yaml(grid_path)
    if not isinstance(data, dict):
        raise LibraError(f"{grid_path}: expected a mapping with 'base' and 'runs'")
    unknown = [key for key in data if key not in GRID_KEYS]
    if unknown:
        raise LibraError(f"{grid_path}: unknown key {unknown[0]!r} (known: {', '.join(GRID_KEYS)})")
    base = _base_config(data.get("base"), grid_path)
    runs = data.get("runs")
    if not isinstance(runs, dict) or not runs:
        raise LibraError(f"{grid_path}: runs: expected a non-empty mapping of run labels to settings")
    checked: dict[str, dict[str, dict[str, Any]]] = {}
    for label, overrides in runs.items():
        if isinstance(label, bool) or not isinstance(label, str | int):
            raise LibraError(f"{grid_path}: runs: label {label!r} must be a name")
        label = str(label)
        if not _LABEL.match(label):
            raise LibraError(f"{grid_path}: runs.{label}: a label must be a folder name (letters, digits, _ . -)")
        where = f"{grid_path}: runs.{label}"
        overrides = overrides or {}
        if not isinstance(overrides, dict):
            raise LibraError(f"{where}: expected a mapping of sections (data, model, libra, train)")
        for section, fields in RUNNER_SETTINGS.items():
            for name in fields:
                if isinstance(overrides.get(section), dict) and name in overrides[section]:
                    raise LibraError(f"{where}.{section}.{name}: set by `libra ablate` (use --out-root / --seeds)")
        config = apply_overrides(base, overrides, where)
        try:
            validate(config)
        except LibraError as exc:
            raise LibraError(f"{where}: {exc}") from exc
        checked[label] = overrides
    return Grid(grid_path, base, checked)


def plan_runs(
    grid: Grid, seeds: int, out_root: str | Path, overrides: dict[str, dict[str, Any]] | None = None
) -> list[PlannedRun]:
    """Every (seed, label) of the grid as a resolved config, seed-major: all labels of seed 0 first, so a
    grid stopped part-way still has one complete set of configurations to compare.

    ``overrides`` (``{section: {field: value}}``, e.g. ``--max-iters``) apply to every run after the grid's
    own settings; seeds are 0 … ``seeds`` − 1.
    """
    if seeds < 1:
        raise LibraError(f"--seeds: must be at least 1, got {seeds}")
    for section, fields in RUNNER_SETTINGS.items():
        for name in fields:
            if name in (overrides or {}).get(section, {}):
                raise LibraError(f"{section}.{name}: set by `libra ablate` (use --out-root / --seeds)")
    planned = []
    for seed in range(seeds):
        for label, run_overrides in grid.runs.items():
            config = apply_overrides(grid.base, run_overrides, f"{grid.path}: runs.{label}")
            if overrides:
                config = apply_overrides(config, overrides, "command line")
            run_dir = Path(out_root) / label / f"seed{seed}"
            config = apply_overrides(config, {"train": {"out": str(run_dir), "seed": seed}}, "libra ablate")
            validate(config)
            planned.append(PlannedRun(label, seed, config))
    return planned


def _differences(saved: RunConfig, planned: RunConfig) -> list[str]:
    old, new = saved.to_dict(), planned.to_dict()
    return [
        f"{section}.{name}: {old[section].get(name)!r} → {value!r}"
        for section, fields in new.items()
        for name, value in fields.items()
        if (section, name) not in PLACEMENT_SETTINGS and old[section].get(name) != value
    ]


def run_status(run: PlannedRun) -> RunStatus:
    """``done`` (:meth:`RunLayout.is_finished`), ``resume`` (a checkpoint to continue from) or ``new``.
    A folder holding a run with other settings raises LibraError."""
    layout = RunLayout(run.run_dir)
    if layout.config.is_file():
        differences = _differences(layout.read_config(), run.config)
        if differences:
            raise LibraError(
                f"{layout.root}: holds a run with other settings ({'; '.join(differences[:3])}); "
                "remove it or choose another --out-root"
            )
    if not layout.last.is_file():
        return "new"
    return "done" if layout.is_finished(run.config.train.max_iters) else "resume"


Trainer = Callable[..., Any]  # trainer(config, *, resume: bool, show: bool) — e.g. cli.train.run_training


def _train_quietly(config: RunConfig, *, resume: bool, show: bool) -> Any:
    from libra_cli.engine.train import train

    return train(config, resume=resume)


def run_grid(
    planned: list[PlannedRun],
    *,
    trainer: Trainer = _train_quietly,
    show: bool = True,
    on_progress: Callable[[int, int, PlannedRun | None], None] | None = None,
    statuses: list[RunStatus] | None = None,
) -> list[GridOutcome]:
    """Train every planned run that is not finished, in order; return what happened to each.

    ``on_progress(done, total, current)`` is called before each run (``current`` about to start) and once
    at the end (``current`` None); finished runs count as done. A run that fails with a LibraError (e.g. a
    non-finite loss) is recorded and the grid goes on; Ctrl-C stops the grid, the run's checkpoint kept.
    ``statuses`` are the runs' :func:`run_status` when the caller has them already (each reads a checkpoint).
    """
    if statuses is None:
        statuses = [run_status(run) for run in planned]  # refuse foreign folders before training anything
    total, done = len(planned), 0
    outcomes: list[GridOutcome] = []
    for run, status in zip(planned, statuses, strict=True):
        if status == "done":
            outcomes.append(GridOutcome(run, "skipped"))
            done += 1
            continue
        if on_progress is not None:
            on_progress(done, total, run)
        try:
            trainer(run.config, resume=status == "resume", show=show)
            outcomes.append(GridOutcome(run, "resumed" if status == "resume" else "trained"))
        except LibraError as exc:
            outcomes.append(GridOutcome(run, "failed", str(exc)))
        done += 1
    if on_progress is not None:
        on_progress(done, total, None)
    return outcomes


def run_grid_parallel(
    planned: list[PlannedRun],
    *,
    jobs: int,
    threads: int | None = None,
    on_event: Callable[[str, Any, Any], None] | None = None,
    statuses: list[RunStatus] | None = None,
) -> list[GridOutcome]:
    """:func:`run_grid` with up to ``jobs`` runs trained at once, each in its own process
    (:func:`libra_cli.engine.parallel.train_parallel`; ``on_event`` as there). Same outcomes, same run
    folders, same skip and resume rules; a failed run does not stop the others."""
    from libra_cli.engine.parallel import TrainJob, train_parallel

    if statuses is None:
        statuses = [run_status(run) for run in planned]  # refuse foreign folders before training anything
    outcomes: dict[str, GridOutcome] = {}
    to_train: list[TrainJob] = []
    for run, status in zip(planned, statuses, strict=True):
        if status == "done":
            outcomes[run.name] = GridOutcome(run, "skipped")
        else:
            to_train.append(TrainJob(run.name, run.config, resume=status == "resume"))
    by_name = {run.name: run for run in planned}
    for result in train_parallel(to_train, max_parallel=jobs, threads=threads, on_event=on_event):
        run = by_name[result.job.name]
        if result.status == "done":
            outcomes[run.name] = GridOutcome(run, "resumed" if result.job.resume else "trained")
        else:
            outcomes[run.name] = GridOutcome(run, "failed", result.error or result.status)
    return [outcomes[run.name] for run in planned if run.name in outcomes]


def report_dirs(planned: list[PlannedRun]) -> list[Path]:
    """The run directories of the grid that hold a run (config.yaml written), in plan order by label."""
    position = {label: index for index, label in enumerate(dict.fromkeys(run.label for run in planned))}
    ordered = sorted(planned, key=lambda run: (position[run.label], run.seed))
    return [run.run_dir for run in ordered if RunLayout(run.run_dir).config.is_file()]
