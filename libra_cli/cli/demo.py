"""``libra demo`` — the whole story on the embedded synthetic benchmark: data → baseline and Libra runs →
the three imbalance analyses → a markdown report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer
from rich.panel import Panel

from libra_cli.cli.train import run_training
from libra_cli.cli.ui import (
    ParallelTrainProgress,
    console,
    count_progress,
    handle_errors,
    metrics_table,
    progress_callback,
)
from libra_cli.config import load_config
from libra_cli.data.build import default_synth_spec, ensure_benchmark
from libra_cli.data.synth import benchmark_exists
from libra_cli.engine.parallel import TrainJob, default_parallel_jobs, threads_per_job, train_parallel
from libra_cli.errors import LibraError
from libra_cli.rundir import ANALYSIS, RunLayout

BASELINE_RUN = ("baseline", "baseline")  # (run name, preset)
LIBRA_RUN = ("libra", "libra")
DEMO_ANALYSIS_IMAGES = 50  # images per analysis: enough for stable shares, seconds per analysis on a CPU


def run_analyses(run_dir: Path, *, num_images: int, device: str, seed: int) -> None:
    """The three diagnostics of `libra analyze` on one run (skipping those already written)."""
    from libra_cli.analysis.features import analyze_features, write_features
    from libra_cli.analysis.gradients import analyze_gradients, write_gradients
    from libra_cli.analysis.sampling import analyze_sampling, write_sampling

    steps = (
        ("sampling", analyze_sampling, write_sampling),
        ("features", analyze_features, write_features),
        ("gradients", analyze_gradients, write_gradients),
    )
    for name, analyze, write in steps:
        if RunLayout(run_dir).has_analysis(name):
            continue
        with count_progress(name) as progress:
            callback = progress_callback(progress, f"{run_dir.name} · {name}", num_images)
            result = analyze(run_dir, num_images=num_images, device=device, seed=seed, progress=callback)
        write(result)


def run_demo(
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
) -> dict[str, Any]:
    """Generate the benchmark if absent, train and evaluate the baseline and (``with_libra``) the full
    Libra run, resuming or reusing finished runs, analyse them, write the report, and return
    {run name: metrics}.

    ``jobs`` runs trained at once (default: two side by side on a multi-core CPU, one on a GPU)."""
    from libra_cli.report import build_report

    if jobs is not None and jobs < 1:
        raise LibraError(f"--jobs: must be at least 1, got {jobs}")
    start = time.perf_counter()
    spec = default_synth_spec()
    generated = not benchmark_exists(synth_dir, spec)
    if generated:
        with count_progress("synth") as progress:
            callback = progress_callback(progress, "benchmark", spec.num_train + spec.num_val)
            ensure_benchmark(synth_dir, spec, callback)
    console.print(f"benchmark: {'generated' if generated else 'found'} in {synth_dir}")
    demo_runs = (BASELINE_RUN, LIBRA_RUN) if with_libra else (BASELINE_RUN,)
    results: dict[str, Any] = {}
    to_train: list[TrainJob] = []
    for name, preset in demo_runs:
        overrides: dict[str, dict[str, Any]] = {
            "data": {"synth_dir": str(synth_dir)},
            "train": {"out": str(out / name), "device": device, "seed": seed},
        }
        if max_iters is not None:
            overrides["train"]["max_iters"] = max_iters
        config = load_config(preset, overrides)
        layout = RunLayout(out / name)
        if layout.is_finished(config.train.max_iters):
            console.print(f"{name}: already trained, reusing {layout.root}")
            results[name] = layout.read_metrics()
            console.print(metrics_table(results[name], title=name))
        else:
            to_train.append(TrainJob(name, config, resume=layout.last.is_file()))
    parallel = min(jobs if jobs is not None else default_parallel_jobs(device), len(to_train))
    if parallel > 1:
        threads = threads_per_job(parallel)
        console.print(
            f"training {' and '.join(job.name for job in to_train)} side by side "
            f"({parallel} processes × {threads} thread{'s' if threads > 1 else ''})"
        )
        with ParallelTrainProgress() as view:
            outcomes = train_parallel(to_train, max_parallel=parallel, threads=threads, on_event=view)
        for outcome in outcomes:
            if outcome.status != "done":
                raise LibraError(f"{outcome.job.name}: {outcome.error or outcome.status}")
            results[outcome.job.name] = outcome.result.metrics
    else:
        for job in to_train:
            results[job.name] = run_training(job.config, resume=job.resume).metrics
    results = {name: results[name] for name, _ in demo_runs}
    for name, _ in demo_runs:
        run_analyses(out / name, num_images=analysis_images, device=device, seed=seed)
    report = build_report([out / name for name, _ in demo_runs], report_dir, title="libra demo")
    minutes = (time.perf_counter() - start) / 60
    lines = [f"benchmark   {synth_dir} (annotations/, images/)"]
    for name, metrics in results.items():
        summary = metrics["summary"]
        lines.append(f"{name:<11} {out / name}  AP {summary['AP']:.3f}  AP50 {summary['AP50']:.3f}")
        lines.append(f"{'':<11} metrics: {RunLayout(out / name).metrics}")
    lines.append(f"analyses    {out}/<run>/{ANALYSIS}/ (sampling, features, gradients)")
    lines.append(f"report      {report}")
    lines.append(f"wall time   {minutes:.1f} min")
    lines.append("then        libra ablate experiments/ablation_table2.yaml --seeds 3")
    console.print(Panel("\n".join(lines), title="libra demo", expand=False))
    return results


@handle_errors
def demo_command(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Folder for the demo's runs."),
    synth_dir: Path = typer.Option(Path("data/synth"), "--synth-dir", help="Where the benchmark is generated."),
    report_dir: Path = typer.Option(Path("reports/demo"), "--report", help="Where the report is written."),
    max_iters: int = typer.Option(None, "--max-iters", help="Override the demo schedule's length."),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    analysis_images: int = typer.Option(DEMO_ANALYSIS_IMAGES, "--analysis-images", help="Images per analysis."),
    with_libra: bool = typer.Option(
        True, "--with-libra/--baseline-only", help="Train the full Libra R-CNN run beside the baseline."
    ),
    jobs: int = typer.Option(None, "--jobs", help="Runs trained at once (default: 2 on a multi-core CPU)."),
) -> None:
    """Benchmark → baseline and full Libra R-CNN runs → the three analyses → report."""
    run_demo(
        out,
        synth_dir,
        report_dir=report_dir,
        max_iters=max_iters,
        device=device,
        seed=seed,
        analysis_images=analysis_images,
        with_libra=with_libra,
        jobs=jobs,
    )
