"""Reading run directories for a report: config, training log, metrics and analyses, grouped by seed.

A report reads files and never re-runs anything (the run directory is the unit of record, see
``rundir.py``). Runs whose resolved configs are identical except for ``train.seed`` and
``train.out`` are repetitions of one experiment and form a :class:`RunGroup`; everything the report
shows per experiment is shown per group (mean ± sample std over its seeds).
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from libra_cli.config import RunConfig
from libra_cli.engine.machine import ARITHMETIC_FIELDS
from libra_cli.errors import LibraError
from libra_cli.rundir import RunLayout

# Settings that never make two runs different experiments: where the run lives and its random seed.
SEED_KEYS = ("train.seed",)
IGNORED_KEYS = ("train.out",)
# Keys of a training log line that are not loss terms.
LOG_META_KEYS = ("type", "iter", "lr", "loss", "time_per_iter", "data_time_per_iter", "memory_mb")
_SEED_DIR = re.compile(r"^seed[_-]?\d+$")
# machine_key of a run whose starts (the first and its resumes) ran on machines of different arithmetic
SEVERAL_MACHINES = "several machines"


@dataclass
class RunRecord:
    """Everything a report needs from one run directory."""

    path: Path
    label: str
    config: RunConfig
    flat_config: dict[str, Any]
    log: list[dict[str, Any]]
    metrics: dict[str, Any] | None
    analyses: dict[str, dict[str, Any]] = field(default_factory=dict)  # name → parsed JSON
    analysis_errors: dict[str, str] = field(default_factory=dict)  # name → why it could not be read
    figures: list[Path] = field(default_factory=list)  # PNGs found in RUN_DIR/analysis/

    @property
    def seed(self) -> int:
        return self.config.train.seed

    @property
    def components(self) -> list[str]:
        return self.config.libra.enabled()

    @property
    def machines(self) -> list[dict[str, Any] | None]:
        """The machine of each start of the run, the first and every resume (``engine/machine.py``), oldest
        first; None for a start whose log record does not name one (a run trained before they were recorded)."""
        starts = [record for record in self.log if record.get("type") == "start"]
        return [record["machine"] if isinstance(record.get("machine"), dict) else None for record in starts]

    @property
    def iterations(self) -> int | None:
        """Iterations trained: the evaluation's iteration, else the last logged one."""
        if self.metrics is not None and isinstance(self.metrics.get("iteration"), int):
            return self.metrics["iteration"]
        iters = [record["iter"] for record in self.log if isinstance(record.get("iter"), int)]
        return max(iters) if iters else None


@dataclass
class RunGroup:
    """Runs of one configuration that differ only by seed (a single run is a group of one)."""

    label: str
    runs: list[RunRecord]

    @property
    def config(self) -> RunConfig:
        return self.runs[0].config

    @property
    def flat_config(self) -> dict[str, Any]:
        return self.runs[0].flat_config

    @property
    def seeds(self) -> list[int]:
        return [run.seed for run in self.runs]

    @property
    def components(self) -> list[str]:
        return self.runs[0].components

    def summary_values(self, name: str, iou_type: str = "bbox") -> list[float | None]:
        """One summary metric (e.g. "AP") of every run of the group; None where a run has none.
        ``iou_type`` "segm": the mask metrics a Mask R-CNN run keeps under ``"segm"`` in its metrics."""
        values = []
        for run in self.runs:
            metrics = run.metrics or {}
            if iou_type == "segm":
                metrics = metrics.get("segm") or {}
            values.append(metrics.get("summary", {}).get(name))
        return values


def arithmetic(machine: dict[str, Any]) -> tuple[Any, ...]:
    """The fields of a machine record that decide a run's arithmetic (``ARITHMETIC_FIELDS``)."""
    return tuple(machine.get(name) for name in ARITHMETIC_FIELDS)


def machine_key(run: RunRecord) -> tuple[Any, ...] | str | None:
    """What two runs must share to compute alike: the arithmetic of the machine every start of ``run`` ran
    on, :data:`SEVERAL_MACHINES` when its starts ran on machines that differ in it, None when a start does
    not record its machine."""
    machines = run.machines
    if not machines or any(machine is None for machine in machines):
        return None
    keys = {arithmetic(machine) for machine in machines}
    return keys.pop() if len(keys) == 1 else SEVERAL_MACHINES


def describe_machine(machine: dict[str, Any]) -> str:
    """One line: "NVIDIA H200 (CUDA 12.8), torch 2.14.1, torchvision 0.29.1" on a GPU; on a CPU its model, the
    instruction set torch used and the threads."""
    if machine.get("device") == "cuda":
        where = f"{machine.get('gpu', 'a GPU')} (CUDA {machine.get('cuda', '?')})"
    else:
        threads = machine.get("threads")
        where = (
            f"{machine.get('cpu', 'a CPU')} ({machine.get('cpu_capability', '?')}), "
            f"{threads} thread{'' if threads == 1 else 's'}"
        )
    return f"{where}, torch {machine.get('torch', '?')}, torchvision {machine.get('torchvision', '?')}"


def flatten_config(config: dict[str, Any]) -> dict[str, Any]:
    """``{"model": {"arch": "x"}}`` → ``{"model.arch": "x"}``; lists become tuples so values compare
    and hash."""
    flat: dict[str, Any] = {}
    for section, values in config.items():
        for key, value in (values or {}).items():
            flat[f"{section}.{key}"] = tuple(value) if isinstance(value, list) else value
    return flat


def run_label(path: Path) -> str:
    """The folder name; ``…/iou_sampling/seed1`` (`libra ablate`'s layout) reads ``iou_sampling/seed1``."""
    path = Path(path)
    if _SEED_DIR.match(path.name) and path.parent.name:
        return f"{path.parent.name}/{path.name}"
    return path.name or str(path)


def load_run(run_dir: str | Path, label: str | None = None) -> RunRecord:
    """Read one run directory; LibraError (one line) when ``run_dir`` is not one or a file is broken."""
    layout = RunLayout(run_dir)
    if not layout.root.is_dir():
        raise LibraError(f"{run_dir}: not a run directory (folder not found)")
    config = layout.read_config()  # raises "not a run directory (no config.yaml)"
    record = RunRecord(
        path=layout.root,
        label=label or run_label(layout.root),
        config=config,
        flat_config=flatten_config(config.to_dict()),
        log=layout.read_log(),
        metrics=layout.read_metrics(),
    )
    from libra_cli.analysis import ANALYSES  # every analysis, in the order listed (analysis imports report.plots)

    for name in ANALYSES:
        if not layout.has_analysis(name):
            continue
        try:
            record.analyses[name] = layout.read_analysis(name)
        except LibraError as exc:  # a half-written analysis should not hide the rest of the report
            record.analysis_errors[name] = str(exc)
    record.figures = layout.analysis_figures()
    return record


def unique_labels(paths: list[Path]) -> list[str]:
    """Labels for the runs, made unique by prefixing parent folders where two runs share a name."""
    labels = [run_label(path) for path in paths]
    depth = 1
    while len(set(labels)) < len(labels) and depth < 8:
        depth += 1
        counts = {label: labels.count(label) for label in labels}
        labels = [
            "/".join(Path(path).resolve().parts[-depth:]) if counts[label] > 1 else label
            for label, path in zip(labels, paths, strict=True)
        ]
    if len(set(labels)) < len(labels):  # the same directory given twice
        labels = [f"{label}#{index}" for index, label in enumerate(labels, start=1)]
    return labels


def load_runs(run_dirs: list[str | Path]) -> list[RunRecord]:
    if not run_dirs:
        raise LibraError("no run directories given")
    paths = [Path(path) for path in run_dirs]
    return [load_run(path, label) for path, label in zip(paths, unique_labels(paths), strict=True)]


def experiment_key(run: RunRecord) -> tuple[tuple[str, Any], ...]:
    """The resolved config without the seed and the output folder: equal keys = same experiment."""
    skip = set(SEED_KEYS) | set(IGNORED_KEYS)
    return tuple(sorted((key, value) for key, value in run.flat_config.items() if key not in skip))


def group_label(labels: list[str]) -> str:
    """``["bfp/seed0", "bfp/seed1"]`` (and ``["bfp/seed0"]``) → ``"bfp"``; labels with no common stem are
    joined with "+"."""
    stems = {re.sub(r"[/_-]?seed[_-]?\d+$", "", label) for label in labels}
    if len(stems) == 1 and next(iter(stems)):
        return next(iter(stems))
    if len(labels) == 1:
        return labels[0]
    prefix = labels[0]
    for label in labels[1:]:
        while not label.startswith(prefix):
            prefix = prefix[:-1]
    prefix = prefix.rstrip("/_-")
    return prefix if prefix else "+".join(labels)


def group_runs(runs: list[RunRecord]) -> list[RunGroup]:
    """Group runs with identical resolved configs except seed and output folder, in order of first
    appearance; within a group runs are ordered by seed."""
    grouped: dict[tuple, list[RunRecord]] = {}
    for run in runs:
        grouped.setdefault(experiment_key(run), []).append(run)
    groups = []
    for members in grouped.values():
        members = sorted(members, key=lambda run: run.seed)
        groups.append(RunGroup(group_label([run.label for run in members]), members))
    labels = [group.label for group in groups]
    for group in groups:  # two different experiments must not read the same
        if labels.count(group.label) > 1:
            group.label = "+".join(run.label for run in group.runs)
    return groups


def find_baseline(groups: list[RunGroup], baseline: str | None) -> RunGroup | None:
    """The group Δ values are measured against.

    ``baseline`` names a group label, a run label or a run directory; without it the first group with
    no Libra/EQL component switched on is the baseline (None when there is no such group).
    """
    if baseline is None:
        return next((group for group in groups if not group.components), None)
    wanted = Path(baseline).resolve() if Path(baseline).exists() else None
    for group in groups:
        if group.label == baseline:
            return group
        for run in group.runs:
            if run.label == baseline or (wanted is not None and run.path.resolve() == wanted):
                return group
    known = ", ".join(group.label for group in groups)
    raise LibraError(f"--baseline {baseline}: not one of the reported runs (labels: {known})")


def split_loss_terms(record: dict[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    """A training log line's loss terms split into (classification, box regression).

    torchvision names them ``loss_classifier``/``loss_objectness`` vs ``loss_box_reg``/``loss_rpn_box_reg``
    (Faster R-CNN) and ``classification`` vs ``bbox_regression`` (RetinaNet): a term about boxes or
    regression is a regression term, every other loss term a classification term.
    """
    cls_terms: dict[str, float] = {}
    reg_terms: dict[str, float] = {}
    for name, value in loss_terms(record).items():
        lowered = name.lower()
        if "box" in lowered or "reg" in lowered:
            reg_terms[name] = value
        else:
            cls_terms[name] = value
    return cls_terms, reg_terms


def loss_terms(record: dict[str, Any]) -> dict[str, float]:
    """The individual loss terms of a training log line (not the total ``loss``)."""
    return {
        name: float(value)
        for name, value in record.items()
        if name not in LOG_META_KEYS
        and (name.startswith("loss_") or name in ("classification", "bbox_regression"))
        and _is_number(value)
    }


def _is_number(value: Any) -> bool:
    """A JSON number of a log line (bool is an int to Python, not a number here)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def train_records(run: RunRecord) -> list[dict[str, Any]]:
    return [record for record in run.log if record.get("type") == "train" and isinstance(record.get("iter"), int)]


# A logged total loss this many times the run's median logged loss marks training that went unstable: a
# healthy run's first logged window (still in warm-up) is about 2-3 times its median.
SPIKE_FACTOR = 10.0


@dataclass(frozen=True)
class LossSpike:
    """The first logged window whose total loss was at least ``SPIKE_FACTOR`` × the run's median."""

    iteration: int
    loss: float
    median: float


def loss_spike(run: RunRecord) -> LossSpike | None:
    """Where ``run``'s training loss first rose to ``SPIKE_FACTOR`` times its median logged loss (or became
    non-finite), or None: a diverged or nearly diverged run, whose metrics speak of that instability rather
    than of its configuration."""
    losses = [
        (record["iter"], float(record["loss"])) for record in train_records(run) if _is_number(record.get("loss"))
    ]
    finite = sorted(loss for _, loss in losses if math.isfinite(loss))
    if not finite:
        return None
    median = statistics.median(finite)
    for iteration, loss in losses:
        if not math.isfinite(loss) or loss >= SPIKE_FACTOR * median:
            return LossSpike(iteration, loss, median)
    return None
