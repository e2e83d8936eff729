"""2. Inference: seconds per batch of eval-mode inference of each model, interleaved round-robin."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from benchmarks.profiling import TimingSummary, log, rotated, summarize, timed
from benchmarks.workload import BenchmarkData, Settings


def time_inference(
    models: dict[str, nn.Module],
    data: BenchmarkData,
    settings: Settings,
    device: torch.device,
    autocast: torch.dtype | None,
) -> dict[str, TimingSummary]:
    """Seconds per batch of eval-mode inference, round-robin over the models."""
    for model in models.values():
        model.eval()
    times: dict[str, list[float]] = {name: [] for name in models}
    total = settings.warmup + settings.iters
    with torch.no_grad(), torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
        for iteration in range(total):
            images, _ = data.batches[iteration % len(data.batches)]
            for name in rotated(list(models), iteration):
                _, seconds = timed(partial(models[name], images), device)
                if iteration >= settings.warmup:
                    times[name].append(seconds)
            log(f"inference: iteration {iteration + 1}/{total}")
    return {name: summarize(values) for name, values in times.items()}
