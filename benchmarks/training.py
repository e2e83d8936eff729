"""1. Training step: seconds per step of every model, interleaved round-robin, and each model's peak memory.

The step is libra's own (``libra_cli.engine.step.training_step``): forward with losses, backward, the
optimizer step — what a training run executes, minus its bookkeeping.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch import nn

from benchmarks.profiling import (
    TimingSummary,
    log,
    process_max_rss_mb,
    rotated,
    summarize,
    synchronize,
    timed,
    top_operators,
)
from benchmarks.workload import BenchmarkData, Settings, prepare_model
from libra_cli.config import RunConfig
from libra_cli.engine.step import TrainStep, training_step

BENCH_SCRIPT = Path(__file__).with_name("bench.py")  # the memory probe runs it in a fresh process


def make_optimizer(model: nn.Module, config: RunConfig) -> torch.optim.Optimizer:
    """SGD as in training, at the first warm-up learning rate: untrained weights stay finite."""
    t = config.train
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=t.lr * t.warmup_factor, momentum=t.momentum, weight_decay=t.weight_decay)


def make_train_step(model: nn.Module, config: RunConfig, autocast: torch.dtype | None) -> TrainStep:
    """Training's step for ``model`` (already on its device): SGD, no loss scaling (float32 or bf16 autocast,
    as training for these dtypes) and no gradient clipping."""
    device_type = next(model.parameters()).device.type
    scaler = torch.amp.GradScaler(device_type, enabled=False)
    return TrainStep(model, make_optimizer(model, config), scaler, autocast)


def time_training(
    models: dict[str, nn.Module],
    config: RunConfig,
    data: BenchmarkData,
    settings: Settings,
    device: torch.device,
    autocast: torch.dtype | None,
) -> dict[str, TimingSummary]:
    """Seconds per training step of every model, interleaved round-robin over the iterations."""
    steps = {name: make_train_step(model, config, autocast) for name, model in models.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    total = settings.warmup + settings.iters
    for iteration in range(total):
        images, targets = data.batches[iteration % len(data.batches)]
        for name in rotated(list(models), iteration):
            models[name].train()
            # The same random draws (RPN anchors, RoI sampling) for every model at this iteration.
            torch.manual_seed(settings.seed + iteration)
            _, seconds = timed(partial(training_step, steps[name], images, targets), device)
            if iteration >= settings.warmup:
                times[name].append(seconds)
        log(f"training step: iteration {iteration + 1}/{total}")
    return {name: summarize(values) for name, values in times.items()}


def memory_steps(settings: Settings) -> int:
    """Training steps run for a peak-memory measurement: the warm-up and at most three more."""
    return settings.warmup + min(settings.iters, 3)


def cuda_peak_memory_mb(
    build: Callable[[], nn.Module],
    config: RunConfig,
    data: BenchmarkData,
    settings: Settings,
    device: torch.device,
    autocast: torch.dtype | None,
) -> float:
    """``torch.cuda.max_memory_allocated`` over a few training steps of the model ``build()`` returns,
    alone on the GPU (the model is moved there here)."""
    model = prepare_model(build(), device, settings.channels_last)
    step = make_train_step(model.train(), config, autocast)
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    for k in range(memory_steps(settings)):
        images, targets = data.batches[k % len(data.batches)]
        training_step(step, images, targets)
    synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) / 2**20
    del model, step
    gc.collect()
    torch.cuda.empty_cache()
    return peak


def cpu_peak_memory(name: str, settings: Settings) -> dict[str, float] | str:
    """Process max RSS of a fresh subprocess that trains ``name`` for a few steps (MiB), or why not."""
    payload = json.dumps({"model": name, "settings": dataclasses.asdict(settings)})
    command = [sys.executable, str(BENCH_SCRIPT), "--memory-probe", payload]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return f"not measured ({last[:120]})"
    return json.loads(lines[-1])


def probe_cpu_memory(model: nn.Module, config: RunConfig, data: BenchmarkData, settings: Settings) -> dict[str, float]:
    """The subprocess side of :func:`cpu_peak_memory`: {"before_mb", "peak_mb"} of this process.

    ``before_mb`` is the max RSS once torch, the model and the batches are loaded; ``peak_mb`` after
    the training steps, so their difference is what the steps themselves needed at most.
    """
    step = make_train_step(model.train(), config, None)
    before = process_max_rss_mb()
    for k in range(memory_steps(settings)):
        torch.manual_seed(settings.seed + k)
        images, targets = data.batches[k % len(data.batches)]
        training_step(step, images, targets)
    return {"before_mb": before, "peak_mb": process_max_rss_mb()}


def profile_steps(
    model: nn.Module,
    config: RunConfig,
    data: BenchmarkData,
    settings: Settings,
    device: torch.device,
    autocast: torch.dtype | None,
    *,
    steps: int,
    rows: int,
) -> str:
    """torch.profiler over ``steps`` training steps of ``model`` (on ``device``), after warm-up.

    Returns the ``rows`` operators with the most self CPU time first: where a step spends time that it
    need not.
    """
    step = make_train_step(model.train(), config, autocast)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    for k in range(settings.warmup + steps):
        if k == settings.warmup:
            profile = torch.profiler.profile(activities=activities)
            profile.start()
        images, targets = data.batches[k % len(data.batches)]
        training_step(step, images, targets)
    synchronize(device)
    profile.stop()
    return top_operators(profile, rows)
