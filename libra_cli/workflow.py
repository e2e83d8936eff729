"""The workflow layer: what a user does with runs — train, evaluate, analyse, report, demo, ablate — one
function each, called by every front end alike: the `libra` commands, `libra demo`, the grid of `libra
ablate` and the job processes that train runs side by side.

Callers choose only what is shown. A :class:`Display` receives the workflow's progress and results; the
base class shows nothing (scripts, tests, job processes), the CLI's ``RichDisplay`` draws progress bars
and tables. Whether a run is finished is decided in one place, :func:`run_state`.

Layers, top to bottom: ``cli`` → ``predict`` → ``workflow`` → ``analysis``, ``report``, ``api`` → ``engine`` →
``models`` → ``data``, ``sampling``, ``losses``, ``rundir`` → ``config`` → ``components`` → ``io`` and the
other leaves (the contract in pyproject.toml, checked by ``lint-imports``).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from libra_cli.config import RunConfig, load_config
from libra_cli.engine.run import run_is_finished
from libra_cli.errors import LibraError
from libra_cli.rundir import RunLayout, eval_set_name

RunState = Literal["new", "resume", "done"]
Outcome = Literal["skipped", "trained", "resumed", "failed"]
Count = Callable[[int, int], None]  # count(done, total): one step of a counted task

# Settings an existing run may differ in and still be resumed or reused: where it runs, not what it does.
PLACEMENT_SETTINGS = {("train", "out"), ("train", "device"), ("data", "num_workers")}
# Settings a run with an epoch schedule (train.epochs) derives from the training set's size when it starts
# and records in its config.yaml; the planned config still holds the defaults.
DERIVED_FROM_EPOCHS = {("train", "max_iters"), ("train", "lr_milestones")}


# --- what is shown --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainHooks:
    """What one training run reports: ``on_start(info)`` once set up (data, model, EQL's tail classes),
    ``progress`` (``start(total, completed)``, ``update(iteration, record)``, ``stop()``) while it trains
    and ``on_end(result)`` when it has finished."""

    on_start: Callable[[dict[str, Any]], None] | None = None
    progress: Any = None
    on_end: Callable[[Any], None] | None = None


class Display:
    """Where a workflow reports what it is doing. This base shows nothing; subclass what you want to see."""

    def message(self, text: str) -> None:
        """A line of news (a benchmark generated, a run reused)."""

    @contextlib.contextmanager
    def count(self, label: str, total: int) -> Iterator[Count | None]:
        """A counted task (images analysed or evaluated): yields ``count(done, total)`` or None."""
        yield None

    def training(self, config: RunConfig) -> TrainHooks:
        """The hooks of one run trained in this process."""
        return TrainHooks()

    @contextlib.contextmanager
    def side_by_side(self, total: int, finished: int) -> Iterator[Callable[[str, Any, Any], None] | None]:
        """Runs trained in parallel processes: yields ``on_event(kind, job, payload)`` of
        :func:`libra_cli.engine.parallel.train_parallel`, or None. ``total`` runs planned, ``finished``
        of them done before."""
        yield None

    def next_run(self, done: int, total: int, name: str | None) -> None:
        """Runs trained one after the other: ``name`` is about to start (None: all done)."""

    def reused(self, name: str, metrics: dict[str, Any]) -> None:
        """A finished run reused instead of trained again."""


QUIET = Display()


# --- one run ---------------------------------------------------------------------------------------------


def config_differences(saved: RunConfig, planned: RunConfig) -> list[str]:
    """``section.field: old → new`` for every setting that changes what a run computes (with an epoch
    schedule, the iteration counts it derives are compared through the epochs they come from)."""
    old, new = saved.to_dict(), planned.to_dict()
    ignored = PLACEMENT_SETTINGS | (DERIVED_FROM_EPOCHS if planned.train.epochs is not None else set())
    return [
        f"{section}.{name}: {old[section].get(name)!r} → {value!r}"
        for section, fields in new.items()
        for name, value in fields.items()
        if (section, name) not in ignored and old[section].get(name) != value
    ]


def run_state(config: RunConfig) -> RunState:
    """Whether the run of ``config`` (in ``config.train.out``) is ``done`` (last checkpoint at ``max_iters``
    and evaluated, :func:`libra_cli.engine.run.run_is_finished`), can ``resume`` from a checkpoint, or is
    ``new``. The one finished-run check of `libra demo` and `libra ablate`.

    Raises:
        LibraError: the folder holds a run with other settings, which is never resumed or overwritten.
    """
    layout = RunLayout(config.train.out)
    max_iters = config.train.max_iters
    if layout.config.is_file():
        saved = layout.read_config()
        differences = config_differences(saved, config)
        if differences:
            raise LibraError(
                f"{layout.root}: holds a run with other settings ({'; '.join(differences[:3])}); "
                "remove it or choose another folder"
            )
        if config.train.epochs is not None:
            max_iters = saved.train.max_iters  # the iterations its epochs came to when it started
    if not layout.last.is_file():
        return "new"
    return "done" if run_is_finished(layout, max_iters) else "resume"


def train_run(
    config: RunConfig, *, resume: bool = False, extend: bool = False, hooks: TrainHooks = TrainHooks()
) -> Any:
    """Train one run into ``config.train.out`` and evaluate it; returns the ``TrainResult``. ``resume``
    continues it with its saved schedule, ``extend`` trains a finished one on (``engine.train.train``)."""
    from libra_cli.engine.train import train

    result = train(config, resume=resume, extend=extend, on_start=hooks.on_start, progress=hooks.progress)
    if hooks.on_end is not None:
        hooks.on_end(result)
    return result


@dataclass(frozen=True)
class RunJob:
    """A run to train: its name on screen (e.g. ``bfp/seed1``) and its config; ``resume`` from its checkpoint."""

    name: str
    config: RunConfig
    resume: bool = False


@dataclass(frozen=True)
class RunOutcome:
    """What became of a run: ``run`` is what was asked for (a :class:`RunJob`, or a grid's ``PlannedRun``:
    both have a ``name`` and a ``config``), ``metrics`` those of a run trained, ``error`` why one failed."""

    run: Any
    outcome: Outcome
    metrics: dict[str, Any] | None = None
    error: str | None = None

    @property
    def name(self) -> str:
        return self.run.name

    @property
    def config(self) -> RunConfig:
        return self.run.config


def train_runs(
    jobs: Sequence[RunJob],
    *,
    parallel: int = 1,
    threads: int | None = None,
    display: Display = QUIET,
    finished: int = 0,
) -> list[RunOutcome]:
    """Train ``jobs`` in order, ``parallel`` at a time (each in its own process when more than one); a run
    that fails with a LibraError is recorded and the others go on. One outcome per job, in order.
    ``finished``: runs of the same plan already done (for the display's count)."""
    if parallel < 1:
        raise LibraError(f"--jobs: must be at least 1, got {parallel}")
    total = finished + len(jobs)
    if parallel > 1 and len(jobs) > 1:
        from libra_cli.engine.parallel import TrainJob, threads_per_job, train_parallel

        parallel = min(parallel, len(jobs))
        threads = threads or threads_per_job(parallel)
        display.message(f"training {parallel} runs at a time ({parallel} processes × {threads} thread(s) each)")
        with display.side_by_side(total, finished) as on_event:
            results = train_parallel(
                [TrainJob(job.name, job.config, job.resume) for job in jobs],
                max_parallel=parallel,
                threads=threads,
                on_event=on_event,
            )
        by_name = {job.name: job for job in jobs}
        outcomes = []
        for result in results:
            job = by_name[result.job.name]
            if result.status == "done":
                outcomes.append(RunOutcome(job, "resumed" if job.resume else "trained", result.result.metrics))
            else:
                outcomes.append(RunOutcome(job, "failed", error=result.error or result.status))
        return outcomes
    outcomes = []
    for index, job in enumerate(jobs):
        display.next_run(finished + index, total, job.name)
        try:
            result = train_run(job.config, resume=job.resume, hooks=display.training(job.config))
        except LibraError as exc:
            display.message(f"{job.name} failed: {exc}")
            outcomes.append(RunOutcome(job, "failed", error=str(exc)))
        else:
            outcomes.append(RunOutcome(job, "resumed" if job.resume else "trained", result.metrics))
    display.next_run(total, total, None)
    return outcomes


def evaluate_run(
    run_dir: str | Path,
    *,
    ann: str | Path | None = None,
    images: str | Path | None = None,
    out: str | Path | None = None,
    checkpoint: str = "best",
    device: str | None = None,
    batch_size: int | None = None,
    evaluator: str | None = None,
    display: Display = QUIET,
) -> dict[str, Any]:
    """Evaluate a run's checkpoint on its val split into ``RUN_DIR/eval``, or on another set
    (``ann``/``images``) into ``out`` (default ``RUN_DIR/eval/<set>/``, see ``rundir.eval_set_name``): the run's own
    validation results, which reports and analyses read, are never replaced by another set's. Returns the
    metrics (with the checkpoint's path and iteration, the set evaluated and the folder written).
    ``evaluator``: who scores box AP (default: the run's ``train.evaluator``)."""
    from libra_cli.data.build import build_eval_dataset
    from libra_cli.engine.evaluate import evaluate_model
    from libra_cli.engine.run import load_trained_model
    from libra_cli.engine.step import amp_dtype
    from libra_cli.rundir import EvalFiles

    if (ann is None) != (images is None):
        raise LibraError("--ann and --images must be given together")
    config, model, info, meta = load_trained_model(run_dir, checkpoint, device)
    layout = RunLayout(run_dir)
    own = ann is None or Path(ann).resolve() == Path(info["val_ann"]).resolve()
    ann = ann if ann is not None else info["val_ann"]
    images = images if images is not None else info["val_images"]
    if out is not None:
        files = EvalFiles(Path(out))
        if files.folder.resolve() == layout.eval_dir.resolve() and not own:
            raise LibraError(f"--out {out}: holds the run's own validation results; choose another folder")
    else:
        files = layout.eval_files(None if own else eval_set_name(ann))
    dataset = build_eval_dataset(ann, images, info["category_ids"], config.data.on_bad_sample)
    dataset.verify_images()  # unreadable files and sizes other than the annotated ones, before inference
    target = next(model.parameters()).device
    set_name = "val" if own else eval_set_name(ann)
    with display.count("inference", len(dataset)) as count:
        return evaluate_model(
            model,
            dataset,
            files,
            device=target,
            batch_size=batch_size or config.data.batch_size,
            num_workers=config.data.num_workers,
            autocast_dtype=amp_dtype(config, target),
            extra={**meta, "eval_set": set_name, "eval_dir": str(files.folder)},
            progress=count,
            evaluator=evaluator or config.train.evaluator,
        )


def analyse_run(
    run_dir: str | Path,
    name: str,
    *,
    display: Display = QUIET,
    announce: Callable[[str], None] | None = None,
    **options: Any,
) -> tuple[dict[str, Any], dict[str, Path]]:
    """Run the analysis ``name`` (a key of :data:`libra_cli.analysis.ANALYSES`) on a run and write its
    JSON, CSV and figure into ``RUN_DIR/analysis``; returns (result, {kind: path written}).
    ``options`` are the analysis's own (num_images, split, checkpoint, device, seed, batch_size, …).
    Its inputs are read and checked before the progress count starts; ``announce`` gets the line naming
    them, where the analysis has one."""
    from libra_cli.analysis import ANALYSES

    if name not in ANALYSES:
        raise LibraError(f"analysis {name!r}: not one of {', '.join(ANALYSES)}")
    analysis = ANALYSES[name]
    runner = analysis.analyze
    inputs = runner.load(run_dir, **options)
    line = runner.describe(inputs)
    if announce is not None and line is not None:
        announce(line)
    with display.count(f"{Path(run_dir).name} · {name}", runner.total(inputs)) as count:
        result = runner.measure(inputs, count)
    return result, analysis.write(result)


ERRORS = "errors"  # the error decomposition of a run's evaluated detections (reads them; runs no model)


def decompose_errors(run_dirs: Sequence[str | Path], *, display: Display = QUIET) -> list[Path]:
    """The error decomposition (analysis ``errors``) of every run in ``run_dirs`` that holds evaluated
    detections and no decomposition yet, so that a report of the runs says which error kinds moved; returns
    the runs it analysed. A run without detections (never evaluated) is passed over."""
    analysed = []
    for run_dir in map(Path, run_dirs):
        layout = RunLayout(run_dir)
        if layout.detections.is_file() and not layout.has_analysis(ERRORS):
            analyse_run(run_dir, ERRORS, display=display)
            analysed.append(run_dir)
    return analysed


# --- any detector's results file ---------------------------------------------------------------------


def score_results(
    gt: str | Path,
    results: str | Path,
    *,
    iou_type: str = "bbox",
    out: str | Path | None = None,
    errors: bool = False,
    evaluator: str = "auto",
    display: Display = QUIET,
) -> dict[str, Any]:
    """Score a results file (COCO results records, from any detector) against COCO or LVIS ground truth
    with the evaluator ``libra eval`` uses, so other detectors are compared under the same protocol.

    Returns the metrics of :func:`libra_cli.engine.metrics.evaluate_detections` plus ``ann_file``,
    ``results_file``, ``num_images`` and ``num_detections``; with ``errors`` also ``errors``, the error
    decomposition of :func:`libra_cli.analysis.errors.errors_result` (box results only). With ``out`` the
    metrics go to ``OUT/metrics.json`` and the error decomposition to ``OUT/analysis/errors.{json,csv,png}``.

    Raises LibraError in one line naming the file: unreadable or malformed files, a results record whose
    image or category the ground truth does not have.
    """
    from libra_cli.engine.metrics import evaluate_detections, load_ground_truth
    from libra_cli.io import atomic_write_text, read_json

    if errors and iou_type != "bbox":
        raise LibraError("--errors: the error decomposition reads boxes; not with --iou-type segm")
    dataset = load_ground_truth(gt)
    detections = read_json(Path(results), "results file", list)
    try:
        metrics = evaluate_detections(dataset, detections, iou_type=iou_type, evaluator=evaluator)
    except LibraError as exc:
        raise LibraError(f"{results}: {exc}") from None
    metrics.update(
        {"ann_file": str(gt), "results_file": str(results), "num_images": len(dataset["images"]),
         "num_detections": len(detections)}
    )  # fmt: skip
    del detections
    if errors:
        from libra_cli.analysis import errors as error_analysis

        ground_truth = error_analysis.load_ground_truth(Path(gt))
        inputs = error_analysis.ErrorInputs(
            Path(out or "."), ground_truth, error_analysis.read_detections(Path(results), ground_truth)
        )
        with display.count("errors", len(ground_truth.category_ids)) as count:
            metrics["errors"] = error_analysis.errors_result(inputs, count)
        if out is not None:
            error_analysis.write_errors(metrics["errors"])
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        written = {key: value for key, value in metrics.items() if key != "errors"}  # errors: analysis/
        atomic_write_text(Path(out) / "metrics.json", json.dumps(written, indent=2) + "\n")
    return metrics


def report_runs(run_dirs: Sequence[str | Path], out: str | Path, *, detections: Any = None, **options: Any) -> Path:
    """``report.md`` (and with ``html=True`` ``report.html``) of the runs in ``out``; see
    :func:`libra_cli.report.build_report` for the options (baseline, title, html). ``detections`` (a
    :class:`libra_cli.report.detections.DetectionOptions`) sets the figure of drawn detections."""
    from libra_cli.report import build_report

    return build_report(list(run_dirs), out, drawing=detections, **options)


# --- several runs ---------------------------------------------------------------------------------------


def train_grid(
    planned: Sequence[Any],
    *,
    jobs: int = 1,
    threads: int | None = None,
    display: Display = QUIET,
    states: Sequence[RunState] | None = None,
) -> list[RunOutcome]:
    """Train every planned run of a grid (``libra_cli.engine.ablate.plan_runs``) that is not finished:
    finished runs are skipped, stopped ones resumed, ``jobs`` at a time. A failed run is recorded and the
    grid goes on; Ctrl-C stops it with each run's checkpoint kept. ``states`` are the runs'
    :func:`run_state` when the caller has them already (each reads a checkpoint)."""
    if states is None:
        states = [run_state(run.config) for run in planned]  # refuse foreign folders before training anything
    to_train = [
        RunJob(run.name, run.config, resume=state == "resume")
        for run, state in zip(planned, states, strict=True)
        if state != "done"
    ]
    finished = len(planned) - len(to_train)
    trained = {outcome.name: outcome for outcome in train_runs(
        to_train, parallel=jobs, threads=threads, display=display, finished=finished
    )}  # fmt: skip
    outcomes = []
    for run in planned:
        if run.name not in trained:
            outcomes.append(RunOutcome(run, "skipped"))
        else:
            done = trained[run.name]
            outcomes.append(RunOutcome(run, done.outcome, done.metrics, done.error))
    return outcomes


DEMO_RUNS = (("baseline", "baseline"), ("libra", "libra"))  # (run name, preset)
DEMO_ANALYSES = ("sampling", "features", "gradients")  # run the model on analysis_images images
DEMO_ANALYSIS_IMAGES = 50  # images per analysis: enough for stable shares, seconds per analysis on a CPU


@dataclass
class DemoResult:
    metrics: dict[str, dict[str, Any]]  # run name → its metrics
    runs: dict[str, Path]  # run name → run directory
    report: Path
    generated: bool  # the benchmark was generated (not found)
    minutes: float = 0.0
    outcomes: list[RunOutcome] = field(default_factory=list)


def demo(
    out: Path,
    synth_dir: Path,
    *,
    report_dir: Path = Path("reports/demo"),
    max_iters: int | None = None,
    device: str = "cpu",
    seed: int = 0,
    analysis_images: int = DEMO_ANALYSIS_IMAGES,
    with_libra: bool = True,
    jobs: int | None = None,
    display: Display = QUIET,
) -> DemoResult:
    """The demo: generate the benchmark if absent, train and evaluate the baseline and (``with_libra``)
    the full Libra run — reusing finished runs, resuming stopped ones — run the three Libra R-CNN
    analyses and the error analysis on each and write the report. ``jobs``: runs trained at once
    (default: two side by side on a multi-core CPU, one on a GPU)."""
    from libra_cli.data.build import default_synth_spec, ensure_benchmark
    from libra_cli.data.synth import benchmark_exists
    from libra_cli.engine.parallel import default_parallel_jobs

    if jobs is not None and jobs < 1:
        raise LibraError(f"--jobs: must be at least 1, got {jobs}")
    start = time.perf_counter()
    spec = default_synth_spec()
    generated = not benchmark_exists(synth_dir, spec)
    if generated:
        with display.count("benchmark", spec.num_train + spec.num_val) as count:
            ensure_benchmark(synth_dir, spec, count)
    display.message(f"benchmark: {'generated' if generated else 'found'} in {synth_dir}")
    runs = DEMO_RUNS if with_libra else DEMO_RUNS[:1]
    metrics: dict[str, dict[str, Any]] = {}
    to_train: list[RunJob] = []
    for name, preset in runs:
        train = {"out": str(out / name), "device": device, "seed": seed}
        if max_iters is not None:
            train["max_iters"] = max_iters
        config = load_config(preset, {"data": {"synth_dir": str(synth_dir)}, "train": train})
        state = run_state(config)
        if state == "done":
            metrics[name] = RunLayout(out / name).read_metrics()
            display.reused(name, metrics[name])
        else:
            to_train.append(RunJob(name, config, resume=state == "resume"))
    parallel = jobs if jobs is not None else default_parallel_jobs(device)
    outcomes = train_runs(to_train, parallel=parallel, display=display, finished=len(metrics))
    for outcome in outcomes:
        if outcome.outcome == "failed":
            raise LibraError(f"{outcome.name}: {outcome.error}")
        metrics[outcome.name] = outcome.metrics
    for name, _ in runs:
        for analysis in DEMO_ANALYSES:
            if not RunLayout(out / name).has_analysis(analysis):
                analyse_run(out / name, analysis, display=display, num_images=analysis_images, device=device, seed=seed)
    decompose_errors([out / name for name, _ in runs], display=display)
    report = report_runs([out / name for name, _ in runs], report_dir, title="libra demo")
    return DemoResult(
        metrics={name: metrics[name] for name, _ in runs},
        runs={name: out / name for name, _ in runs},
        report=report,
        generated=generated,
        minutes=(time.perf_counter() - start) / 60,
        outcomes=outcomes,
    )
