"""5. Analyses: seconds per call of each ``libra analyze`` analysis that can be imported, on full-Libra weights."""

from __future__ import annotations

import importlib
import inspect
import time
from pathlib import Path

from torch import nn

from benchmarks.profiling import TimingSummary, log, summarize
from benchmarks.workload import BenchmarkData, Settings
from libra_cli.config import RunConfig, apply_overrides
from libra_cli.engine.checkpoint import save_checkpoint
from libra_cli.engine.run import dataset_info
from libra_cli.rundir import RunLayout

ANALYSES = ("sampling", "features", "gradients")


def write_analysis_run(root: Path, config: RunConfig, model: nn.Module, data: BenchmarkData) -> Path:
    """A run directory holding ``model``'s weights, as the analyses read it (no training needed)."""
    layout = RunLayout(root)
    paths = data.paths
    run_config = apply_overrides(
        config,
        {
            "data": {
                "train_ann": str(paths.train_ann),
                "train_images": str(paths.train_images),
                "val_ann": str(paths.val_ann),
                "val_images": str(paths.val_images),
            },
            "train": {"out": str(root)},
        },
        "benchmark",
    )
    layout.root.mkdir(parents=True, exist_ok=True)
    layout.write_config(run_config)
    layout.write_dataset_info(dataset_info(paths, data.train_set))
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    save_checkpoint(layout.best, {"model": state, "iteration": 0})
    return root


def time_analyses(run_dir: Path, settings: Settings) -> dict[str, tuple[TimingSummary, int] | str]:
    """Seconds per call of each importable ``analyze_<name>(run_dir, num_images=N)``, or why not measured."""
    results: dict[str, tuple[TimingSummary, int] | str] = {}
    for name in ANALYSES:
        try:
            function = getattr(importlib.import_module(f"libra_cli.analysis.{name}"), f"analyze_{name}")
        except (ImportError, AttributeError):
            results[name] = f"not measured (libra_cli.analysis.{name}.analyze_{name} not available)"
            continue
        except Exception as exc:  # a module being written may fail to import for any reason
            results[name] = f"not measured (import failed: {type(exc).__name__}: {_first_line(exc)})"
            continue
        parameters = inspect.signature(function).parameters
        count = next((key for key in ("num_images", "images") if key in parameters), None)
        if count is None:
            results[name] = "not measured (its function takes no images count)"
            continue
        extra = {"device": settings.device} if "device" in parameters else {}
        repeats = 1 if settings.quick else 3
        times = []
        try:
            function(run_dir, **{count: 1}, **extra)  # warm-up
            for _ in range(repeats):
                start = time.perf_counter()
                function(run_dir, **{count: settings.analysis_images}, **extra)
                times.append(time.perf_counter() - start)
        except Exception as exc:
            results[name] = f"not measured ({type(exc).__name__}: {_first_line(exc)})"
            continue
        results[name] = (summarize(times), settings.analysis_images)
        log(f"analysis {name}: done")
    return results


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:160]
