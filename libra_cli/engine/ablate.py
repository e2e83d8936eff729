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
done. A folder that holds a run with other settings is never resumed or overwritten. This module plans
a grid; :func:`libra_cli.workflow.train_grid` trains it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from libra_cli.config import SECTIONS, RunConfig, apply_overrides, is_grid, read_yaml, resolve_preset, validate
from libra_cli.errors import LibraError
from libra_cli.rundir import RunLayout

GRID_KEYS = ("base", "runs")
# Set by the grid runner itself, so a grid must not set them.
RUNNER_SETTINGS = {"train": ("out", "seed")}
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


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
    """Read and check a grid file (a YAML path or the name of a shipped grid); every problem is a one-line
    LibraError naming the file and the key."""
    grid_path = resolve_preset(str(path), kind="grid")
    data = read_yaml(grid_path)
    if not isinstance(data, dict):
        raise LibraError(f"{grid_path}: expected a mapping with 'base' and 'runs'")
    if data and not is_grid(data) and set(data) <= set(SECTIONS):
        raise LibraError(f"{grid_path}: is a preset, not a grid (train it with `libra train {path}`)")
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


def report_dirs(planned: list[PlannedRun]) -> list[Path]:
    """The run directories of the grid that hold a run (config.yaml written), in plan order by label."""
    position = {label: index for index, label in enumerate(dict.fromkeys(run.label for run in planned))}
    ordered = sorted(planned, key=lambda run: (position[run.label], run.seed))
    return [run.run_dir for run in ordered if RunLayout(run.run_dir).config.is_file()]
