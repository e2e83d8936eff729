"""Speed and memory of libra against plain torchvision, side by side, in one process.

    python benchmarks/bench.py [--device cpu|cuda] [--quick] [--out benchmarks/RESULTS.md]
                               [--iters N] [--warmup N] [--image-size S] [--max-size M] [--batch-size B]
                               [--backbone NAME] [--fpn-channels C] [--no-amp] [--channels-last]
                               [--profile MODEL]

Sections (each a median after warm-up, with its interquartile range):

1. training step (forward + backward + SGD step) and peak memory of plain torchvision Faster R-CNN,
   libra with every switch off, each Libra component alone, and full Libra — the same real batches of
   the demo's synthetic benchmark for every model, the models interleaved round-robin so that machine
   noise hits all of them alike;
2. inference images/s (eval mode) of torchvision, libra switched off and full Libra;
3. the RoI sampler per image (2,000 proposals, 512 samples): IoU-balanced vs torchvision's random one;
4. COCO evaluation (``evaluate_detections``) of the val split with 100 detections per image;
5. the images/s of each ``libra analyze`` analysis that can be imported.

The results go to one section (``## CPU`` or ``## GPU``) of the results file; the other section is
kept as it is. ``--profile MODEL`` instead prints the operators of a few training steps of one model,
most self CPU time first, and writes nothing.

This file is the entry point and the list of compared models; each section is measured by a module of
its own (``training.py``, which times libra's own ``training_step``; ``inference.py``, ``sampler.py``,
``evaluation.py``, ``analyses.py``), on the settings and batches of ``workload.py``; ``render.py`` writes
the results file and ``profiling.py`` holds the timing helpers.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

# Run as a script (python benchmarks/bench.py), only this folder is on the path: make the package importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.analyses import time_analyses, write_analysis_run
from benchmarks.evaluation import time_coco_evaluation
from benchmarks.inference import time_inference
from benchmarks.profiling import TimingSummary, log, machine_description, target_verdict
from benchmarks.render import render_section, write_results
from benchmarks.sampler import SAMPLER_PROPOSALS, SAMPLER_SAMPLES, time_samplers
from benchmarks.training import cpu_peak_memory, cuda_peak_memory_mb, probe_cpu_memory, profile_steps, time_training
from benchmarks.workload import (
    DEFAULT_SYNTH_DIR,
    QUICK_BATCH_SIZE,
    QUICK_IMAGE_SIZE,
    REPOSITORY,
    BenchmarkData,
    Settings,
    benchmark_config,
    load_benchmark_data,
    prepare_model,
)
from libra_cli import components
from libra_cli.config import RunConfig, apply_overrides
from libra_cli.data.coco import DetectionDataset
from libra_cli.engine.run import resolve_device
from libra_cli.engine.step import amp_dtype
from libra_cli.errors import LibraError
from libra_cli.models.build import build_detector
from libra_cli.models.reference import torchvision_faster_rcnn

DEFAULT_RESULTS = REPOSITORY / "benchmarks" / "RESULTS.md"

# Benchmarked detectors: name → Libra switches on (None: built from torchvision's constructors alone).
SWITCHES = components.SWITCHES
TRAINING_MODELS: dict[str, tuple[str, ...] | None] = {
    "torchvision": None,
    "libra-off-tv-roialign": (),
    "libra-off": (),
    "iou_sampling": ("iou_sampling",),
    "bfp": ("bfp",),
    "balanced_l1": ("balanced_l1",),
    "libra-full": ("iou_sampling", "bfp", "balanced_l1"),
}
INFERENCE_MODELS = ("torchvision", "libra-off", "libra-full")
# Model settings besides the switches. libra's default RoIAlign on the CPU is the grid_sample form
# (libra_cli/models/roi_align.py); this row keeps torchvision's kernel, so that it differs from the
# torchvision model only in libra's code around the same operators.
MODEL_SETTINGS: dict[str, dict[str, Any]] = {"libra-off-tv-roialign": {"roi_align": "torchvision"}}

# Targets, all of the form "measured ≤ limit".
LIBRA_OFF_STEP_RATIO_LIMIT = 1.03  # libra (switches off) / torchvision, training step time
FULL_LIBRA_STEP_RATIO_LIMIT = 1.15  # full Libra / baseline (libra, switches off), training step time
IOU_SAMPLER_MS_LIMIT = 2.0  # IoU-balanced sampler, ms per image at 2,000 proposals and 512 samples


@dataclass(frozen=True)
class TargetResult:
    name: str
    value: float
    limit: float

    @property
    def verdict(self) -> str:
        return target_verdict(self.value, self.limit)


# --- the compared models --------------------------------------------------------------------------


def with_switches(config: RunConfig, switches: tuple[str, ...]) -> RunConfig:
    """``config`` with exactly the named Libra switches on."""
    return apply_overrides(config, {"libra": {name: name in switches for name in SWITCHES}}, "benchmark")


def build_model(name: str, config: RunConfig, train_set: DetectionDataset, seed: int) -> nn.Module:
    """One of ``TRAINING_MODELS``; every model is initialised from the same seed.

    The torchvision model is given libra-off's initial weights (the two have the same parameters), so
    that the two compute the same thing and differ only in the code that runs.
    """
    num_classes = train_set.num_classes
    if TRAINING_MODELS[name] is None:
        model = torchvision_faster_rcnn(config, num_classes)
        model.load_state_dict(build_model("libra-off", config, train_set, seed).state_dict())
        return model
    torch.manual_seed(seed)
    if name in MODEL_SETTINGS:
        config = apply_overrides(config, {"model": MODEL_SETTINGS[name]}, "benchmark")
    return build_detector(
        with_switches(config, TRAINING_MODELS[name]),
        num_classes,
        images_per_class=train_set.images_per_class(),
        num_images=len(train_set),
    )


def components_label(name: str) -> str:
    """How the results table names a model's Libra components (and its other model settings)."""
    switches = TRAINING_MODELS[name]
    label = "torchvision only" if switches is None else (", ".join(switches) or "none")
    if name in MODEL_SETTINGS:
        label += " (" + ", ".join(f"{key}: {value}" for key, value in MODEL_SETTINGS[name].items()) + ")"
    return label


# --- targets --------------------------------------------------------------------------------------


def evaluate_targets(training: dict[str, TimingSummary], iou_sampler_ms: float) -> list[TargetResult]:
    """The three targets from median training-step times and the IoU-balanced sampler's ms per image."""

    def ratio(numerator: str, denominator: str) -> float:
        if numerator not in training or denominator not in training:
            return math.nan
        return training[numerator].median / training[denominator].median

    return [
        TargetResult(
            "libra (switches off) / torchvision, training step time",
            ratio("libra-off", "torchvision"),
            LIBRA_OFF_STEP_RATIO_LIMIT,
        ),
        TargetResult(
            "libra (switches off, torchvision's RoIAlign kernel) / torchvision, training step time",
            ratio("libra-off-tv-roialign", "torchvision"),
            LIBRA_OFF_STEP_RATIO_LIMIT,
        ),
        TargetResult(
            "full Libra / baseline (libra, switches off), training step time",
            ratio("libra-full", "libra-off"),
            FULL_LIBRA_STEP_RATIO_LIMIT,
        ),
        TargetResult(
            f"IoU-balanced sampler, ms per image ({SAMPLER_PROPOSALS:,} proposals, {SAMPLER_SAMPLES} samples)",
            iou_sampler_ms,
            IOU_SAMPLER_MS_LIMIT,
        ),
    ]


# --- the sections, measured one after the other -----------------------------------------------------


def measure_memory(
    config: RunConfig, data: BenchmarkData, settings: Settings, device: torch.device, autocast: torch.dtype | None
) -> dict[str, Any]:
    """Each model's peak memory: CUDA max allocated over its steps alone on the GPU, or on the CPU the
    max RSS of a fresh process (``--memory-probe``)."""
    memory: dict[str, Any] = {}
    for name in TRAINING_MODELS:
        log(f"peak memory: {name}")
        if device.type == "cuda":
            build = partial(build_model, name, config, data.train_set, settings.seed)
            memory[name] = cuda_peak_memory_mb(build, config, data, settings, device, autocast)
        else:
            memory[name] = cpu_peak_memory(name, settings)
    return memory


def run_memory_probe(payload: str) -> None:
    """The subprocess side of ``cpu_peak_memory``: prints {"before_mb", "peak_mb"} as one JSON line."""
    request = json.loads(payload)
    settings = Settings(**request["settings"])
    config = benchmark_config(settings)
    data = load_benchmark_data(settings, config, torch.device("cpu"))
    model = build_model(request["model"], config, data.train_set, settings.seed)
    print(json.dumps(probe_cpu_memory(model, config, data, settings)))


def profile_training(args: argparse.Namespace, settings: Settings, device: torch.device) -> str:
    """torch.profiler over ``--profile-steps`` training steps of the ``--profile`` model, after warm-up.

    Returns the operators with the most self CPU time first: where a step spends time that it need not.
    """
    config = benchmark_config(settings)
    autocast = amp_dtype(config, device)
    data = load_benchmark_data(settings, config, device)
    model = prepare_model(
        build_model(args.profile, config, data.train_set, settings.seed), device, settings.channels_last
    )
    return profile_steps(
        model, config, data, settings, device, autocast, steps=args.profile_steps, rows=args.profile_rows
    )


def run_benchmark(settings: Settings, command: str, out: Path, workdir: Path) -> str:
    """Measure every section and write the device's section of ``out``; returns that section's body."""
    start, load_before = time.perf_counter(), os.getloadavg()[0]
    device = resolve_device(settings.device)
    config = benchmark_config(settings)
    autocast = amp_dtype(config, device)
    data = load_benchmark_data(settings, config, device)

    memory = measure_memory(config, data, settings, device, autocast)
    models = {
        name: prepare_model(build_model(name, config, data.train_set, settings.seed), device, settings.channels_last)
        for name in TRAINING_MODELS
    }
    training = time_training(models, config, data, settings, device, autocast)
    inference = time_inference({name: models[name] for name in INFERENCE_MODELS}, data, settings, device, autocast)

    full_config = with_switches(config, TRAINING_MODELS["libra-full"] or ())
    sampler = time_samplers(full_config, settings, device)
    evaluation = time_coco_evaluation(data.val_set, settings)
    run_dir = write_analysis_run(workdir / "analysis-run", full_config, models["libra-full"], data)
    del models
    gc.collect()
    analyses = time_analyses(run_dir, settings)

    iou_ms = sampler["libra IoUBalancedSampler"].median
    report = {
        "settings": settings,
        "config": config,
        "device": device.type,
        "autocast": autocast,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "wall_s": time.perf_counter() - start,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "machine": machine_description(device),
        "command": command,
        "num_classes": data.train_set.num_classes,
        "num_val_images": len(data.val_set),
        "data": f"{data.paths.train_ann.parent.parent} ({len(data.train_set)} train / "
        f"{len(data.val_set)} val images, {len(data.batches)} distinct batches cycled)",
        "targets": evaluate_targets(training, iou_ms),
        "components": {name: components_label(name) for name in TRAINING_MODELS},
        "training": training,
        "memory": memory,
        "inference": inference,
        "sampler": sampler,
        "evaluation": evaluation,
        "analyses": analyses,
    }
    body = render_section(report)
    write_results(out, "GPU" if device.type == "cuda" else "CPU", body)
    return body


# --- entry point ----------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="benchmarks/bench.py")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny images, 2 iterations")
    parser.add_argument("--out", type=Path, default=DEFAULT_RESULTS, help="results file (one section replaced)")
    parser.add_argument("--iters", type=int, help="measured iterations per model (default 20; quick 2)")
    parser.add_argument("--warmup", type=int, help="warm-up iterations per model (default 3; quick 1)")
    parser.add_argument("--image-size", type=int, help="shorter input side (model.min_size)")
    parser.add_argument("--max-size", type=int, help="longer input side (model.max_size; default image size)")
    parser.add_argument("--batch-size", type=int, help="images per batch (data.batch_size)")
    parser.add_argument("--backbone", choices=("resnet18", "resnet34", "resnet50"))
    parser.add_argument("--fpn-channels", type=int)
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True, help="bf16 autocast (CUDA)")
    parser.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    parser.add_argument("--synth-dir", default=None, help="demo benchmark folder (default: data/synth)")
    parser.add_argument("--analysis-images", type=int, help="images per analysis call (default 16; quick 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", choices=tuple(TRAINING_MODELS), help="profile this model's training steps")
    parser.add_argument("--profile-steps", type=int, default=3)
    parser.add_argument("--profile-rows", type=int, default=25)
    parser.add_argument("--memory-probe", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def settings_from_args(args: argparse.Namespace, quick_dir: Path | None) -> Settings:
    quick = args.quick
    counts = (
        "iters",
        "image_size",
        "max_size",
        "batch_size",
        "fpn_channels",
        "analysis_images",
        "profile_steps",
    )
    for name in counts:
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise LibraError(f"--{name.replace('_', '-')}: must be at least 1, got {getattr(args, name)}")
    if args.warmup is not None and args.warmup < 0:
        raise LibraError(f"--warmup: must be at least 0, got {args.warmup}")
    return Settings(
        device=args.device,
        quick=quick,
        iters=args.iters if args.iters is not None else (2 if quick else 20),
        warmup=args.warmup if args.warmup is not None else (1 if quick else 3),
        image_size=args.image_size if args.image_size is not None else (QUICK_IMAGE_SIZE if quick else None),
        max_size=args.max_size,
        batch_size=args.batch_size if args.batch_size is not None else (QUICK_BATCH_SIZE if quick else None),
        backbone=args.backbone,
        fpn_channels=args.fpn_channels,
        amp=args.amp,
        channels_last=args.channels_last,
        synth_dir=str(quick_dir or args.synth_dir or DEFAULT_SYNTH_DIR),
        sampler_images=20 if quick else 500,
        eval_repeats=1 if quick else 5,
        analysis_images=args.analysis_images or (2 if quick else 16),
        seed=args.seed,
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.memory_probe:
        run_memory_probe(args.memory_probe)
        return 0
    command = shlex.join(["python", "benchmarks/bench.py", *argv])
    try:
        with tempfile.TemporaryDirectory(prefix="libra-bench-") as tmp:
            workdir = Path(tmp)
            settings = settings_from_args(args, workdir / "synth" if args.quick else None)
            device = resolve_device(settings.device)
            if args.profile:
                print(profile_training(args, settings, device))
                return 0
            body = run_benchmark(settings, command, args.out, workdir)
    except LibraError as exc:
        print(f"bench.py: error: {exc}", file=sys.stderr)
        return 2
    print(body)
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
