"""What every section of the benchmark measures on: its settings, the demo configuration and the batches."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.profiling import log
from libra_cli.config import RunConfig, load_config
from libra_cli.data.build import (
    DataPaths,
    build_eval_dataset,
    build_train_dataset,
    default_synth_spec,
    ensure_benchmark,
)
from libra_cli.data.coco import DetectionDataset, collate
from libra_cli.data.synth import SynthSpec

REPOSITORY = Path(__file__).resolve().parent.parent
DEFAULT_SYNTH_DIR = REPOSITORY / "data" / "synth"  # where `libra demo` run from the repository puts it
# A tiny benchmark for --quick smoke tests: a few images of 96 px, generated into a temporary folder.
QUICK_SPEC = SynthSpec(num_train=8, num_val=4, image_size=96, min_objects=1, max_objects=3, seed=0)
QUICK_IMAGE_SIZE = 96
QUICK_BATCH_SIZE = 2


@dataclass
class Settings:
    """What one benchmark run measures; a JSON round trip of it configures a memory-probe subprocess."""

    device: str = "cpu"
    quick: bool = False
    iters: int = 20  # measured iterations per model (after warm-up)
    warmup: int = 3  # unmeasured iterations per model first
    image_size: int | None = None  # model.min_size; None: the config's
    max_size: int | None = None  # model.max_size; None: image_size (square inputs)
    batch_size: int | None = None  # data.batch_size; None: the config's
    backbone: str | None = None
    fpn_channels: int | None = None
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    channels_last: bool = False
    synth_dir: str = str(DEFAULT_SYNTH_DIR)
    sampler_images: int = 500  # images timed per RoI sampler
    eval_repeats: int = 5  # timed COCO evaluations
    analysis_images: int = 16  # images per analysis call
    seed: int = 0


Batch = tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]  # images [3, H, W], targets (xyxy boxes, labels)


@dataclass
class BenchmarkData:
    paths: DataPaths
    train_set: DetectionDataset
    val_set: DetectionDataset
    batches: list[Batch]  # on the device


def benchmark_config(settings: Settings) -> RunConfig:
    """The demo configuration (the config defaults), with the benchmark's size flags applied."""
    model: dict[str, Any] = {}
    if settings.backbone is not None:
        model["backbone"] = settings.backbone
    if settings.fpn_channels is not None:
        model["fpn_channels"] = settings.fpn_channels
    if settings.image_size is not None:
        model["min_size"] = settings.image_size
        model["max_size"] = settings.max_size or settings.image_size
    elif settings.max_size is not None:
        model["max_size"] = settings.max_size
    data: dict[str, Any] = {"synth_dir": settings.synth_dir}
    if settings.batch_size is not None:
        data["batch_size"] = settings.batch_size
    train = {"device": settings.device, "amp": settings.amp, "amp_dtype": "bf16", "seed": settings.seed}
    return load_config(None, {"model": model, "data": data, "train": train})


def prepare_model(model: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    """``model`` on ``device``, in channels-last memory format when asked."""
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def widen(image: torch.Tensor, target: dict[str, Any], aspect: float) -> tuple[torch.Tensor, dict[str, Any]]:
    """Stretch ``image`` [3, H, W] horizontally to width round(H·aspect), its xyxy boxes with it.

    The synthetic images are square; a min_size × max_size setting such as 800 × 1333 needs inputs of
    that aspect ratio, or the detector's resize would stop at min_size × min_size.
    """
    height, width = image.shape[-2:]
    new_width = round(height * aspect)
    image = nn.functional.interpolate(image[None], size=(height, new_width), mode="bilinear", align_corners=False)[0]
    scale = torch.tensor([new_width / width, 1.0, new_width / width, 1.0])
    return image, {**target, "boxes": target["boxes"] * scale}


def training_batches(
    dataset: DetectionDataset, batch_size: int, count: int, aspect: float, device: torch.device
) -> list[Batch]:
    """``count`` consecutive batches of the training split, augmented with fixed seeds, on ``device``."""
    batches = []
    for b in range(count):
        items = [dataset[(i % len(dataset), i)] for i in range(b * batch_size, (b + 1) * batch_size)]
        if aspect > 1:
            items = [widen(image, target, aspect) for image, target in items]
        images, targets = collate(items)
        batches.append(
            (
                [image.to(device) for image in images],
                [{"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in targets],
            )
        )
    return batches


def load_benchmark_data(settings: Settings, config: RunConfig, device: torch.device) -> BenchmarkData:
    spec = QUICK_SPEC if settings.quick else default_synth_spec()
    paths, generated = ensure_benchmark(settings.synth_dir, spec)
    if generated:
        log(f"generated the synthetic benchmark in {settings.synth_dir}")
    train_set = build_train_dataset(config.data, paths)
    val_set = build_eval_dataset(paths.val_ann, paths.val_images, train_set.category_ids)
    count = max(1, min(settings.warmup + settings.iters, 8))
    aspect = config.model.max_size / config.model.min_size
    batches = training_batches(train_set, config.data.batch_size, count, aspect, device)
    return BenchmarkData(paths, train_set, val_set, batches)
