"""3. RoI sampler: milliseconds per image of torchvision's random sampler and libra's IoU-balanced one."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler

from benchmarks.profiling import TimingSummary, rotated, summarize, timed
from benchmarks.workload import Settings
from libra_cli.config import RunConfig, apply_overrides
from libra_cli.models.parts import iou_sampler_from_config

SAMPLER_PROPOSALS = 2000
SAMPLER_SAMPLES = 512  # RoIs per image, as in the reference Libra R-CNN
SAMPLER_GT_BOXES = 5


def realistic_roi_assignment(
    generator: torch.Generator,
    num_proposals: int = SAMPLER_PROPOSALS,
    num_gt: int = SAMPLER_GT_BOXES,
    num_classes: int = 8,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image's matched proposals, as the RoI head sees them in training (GT boxes included).

    IoU distribution: 55 % of proposals miss every object (IoU 0), 30 % graze one (IoU in (0, 0.3),
    skewed low), 8 % are near misses (0.3–0.5) and 7 % are positives (≥ 0.5, the GT boxes at 1.0) —
    more positives than the 128 a 512-sample batch takes, so the per-instance positive sampling runs.

    Returns:
        labels LongTensor[N] (class > 0 for IoU ≥ 0.5, else 0), max_iou Tensor[N], matched_gt LongTensor[N].
    """
    counts = [round(num_proposals * share) for share in (0.55, 0.30, 0.08)]
    positives = num_proposals - sum(counts)

    def uniform(n: int) -> torch.Tensor:
        return torch.rand(n, generator=generator)

    max_iou = torch.cat(
        [
            torch.zeros(counts[0]),
            0.3 * uniform(counts[1]) ** 2,
            0.3 + 0.2 * uniform(counts[2]),
            0.5 + 0.5 * uniform(positives - num_gt),
            torch.ones(num_gt),
        ]
    )
    max_iou = max_iou[torch.randperm(num_proposals, generator=generator)]
    classes = torch.randint(1, num_classes + 1, (num_proposals,), generator=generator)
    labels = torch.where(max_iou >= 0.5, classes, 0)
    matched_gt = torch.randint(0, num_gt, (num_proposals,), generator=generator)
    return labels, max_iou, matched_gt


def time_samplers(full_config: RunConfig, settings: Settings, device) -> dict[str, TimingSummary]:
    """Milliseconds per image of torchvision's random sampler and the IoU-balanced sampler, interleaved.

    Both take ``SAMPLER_SAMPLES`` RoIs per image; the IoU-balanced one has every other setting of the
    sampler full Libra trains with (``full_config``).
    """
    generator = torch.Generator().manual_seed(settings.seed)
    images = [tuple(t.to(device) for t in realistic_roi_assignment(generator)) for _ in range(32)]
    sized = apply_overrides(full_config, {"model": {"roi_batch_size_per_image": SAMPLER_SAMPLES}}, "benchmark")
    iou_sampler = iou_sampler_from_config(sized)
    torchvision_sampler = BalancedPositiveNegativeSampler(SAMPLER_SAMPLES, iou_sampler.positive_fraction)
    samplers: dict[str, Callable[[tuple[torch.Tensor, ...]], Any]] = {
        "torchvision BalancedPositiveNegativeSampler": lambda image: torchvision_sampler([image[0]]),
        "libra IoUBalancedSampler": lambda image: iou_sampler([image[0]], [image[1]], [image[2]]),
    }
    times: dict[str, list[float]] = {name: [] for name in samplers}
    warmup = max(settings.warmup, 5)
    torch.manual_seed(settings.seed)
    for k in range(warmup + settings.sampler_images):
        image = images[k % len(images)]
        for name in rotated(list(samplers), k):
            _, seconds = timed(partial(samplers[name], image), device)
            if k >= warmup:
                times[name].append(seconds * 1000)
    return {name: summarize(values) for name, values in times.items()}
