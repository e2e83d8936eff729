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
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib
import inspect
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler

from libra_cli.config import RunConfig, apply_overrides, load_config
from libra_cli.data.build import (
    DataPaths,
    build_eval_dataset,
    build_train_dataset,
    default_synth_spec,
    ensure_benchmark,
)
from libra_cli.data.coco import DetectionDataset, collate
from libra_cli.data.synth import SynthSpec
from libra_cli.engine.checkpoint import save_checkpoint
from libra_cli.engine.metrics import evaluate_detections
from libra_cli.engine.profiling import (
    TimingSummary,
    machine_description,
    markdown_table,
    process_max_rss_mb,
    summarize,
    synchronize,
    target_verdict,
    timed,
    top_operators,
    update_section_file,
)
from libra_cli.engine.run import dataset_info, resolve_device
from libra_cli.engine.train import amp_dtype
from libra_cli.errors import LibraError
from libra_cli.models.build import build_detector, iou_sampler_from_config
from libra_cli.models.reference import torchvision_faster_rcnn
from libra_cli.rundir import RunLayout

REPOSITORY = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS = REPOSITORY / "benchmarks" / "RESULTS.md"
DEFAULT_SYNTH_DIR = REPOSITORY / "data" / "synth"  # where `libra demo` run from the repository puts it
RESULTS_HEADER = (
    "# libra benchmarks\n\n"
    "Written by `python benchmarks/bench.py` (see `benchmarks/README.md`). A CPU run replaces only the\n"
    "CPU section and a GPU run only the GPU section. Times are medians after warm-up; IQR is the\n"
    "interquartile range (first to third quartile).\n"
)
NOT_MEASURED = "not yet measured"

# Benchmarked detectors: name → Libra switches on (None: built from torchvision's constructors alone).
SWITCHES = ("iou_sampling", "bfp", "balanced_l1", "eql")
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
ANALYSES = ("sampling", "features", "gradients")

# Targets, all of the form "measured ≤ limit".
LIBRA_OFF_STEP_RATIO_LIMIT = 1.03  # libra (switches off) / torchvision, training step time
FULL_LIBRA_STEP_RATIO_LIMIT = 1.15  # full Libra / baseline (libra, switches off), training step time
IOU_SAMPLER_MS_LIMIT = 2.0  # IoU-balanced sampler, ms per image at 2,000 proposals and 512 samples

SAMPLER_PROPOSALS = 2000
SAMPLER_SAMPLES = 512  # RoIs per image, as in the reference Libra R-CNN
SAMPLER_GT_BOXES = 5
DETECTIONS_PER_IMAGE = 100
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


@dataclass
class BenchmarkData:
    paths: DataPaths
    train_set: DetectionDataset
    val_set: DetectionDataset
    batches: list[tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]]  # on the device


@dataclass(frozen=True)
class TargetResult:
    name: str
    value: float
    limit: float

    @property
    def verdict(self) -> str:
        return target_verdict(self.value, self.limit)


# --- configuration and models ---------------------------------------------------------------------


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


def prepare_model(model: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def make_optimizer(model: nn.Module, config: RunConfig) -> torch.optim.Optimizer:
    """SGD as in training, at the first warm-up learning rate: untrained weights stay finite."""
    t = config.train
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=t.lr * t.warmup_factor, momentum=t.momentum, weight_decay=t.weight_decay)


# --- data -----------------------------------------------------------------------------------------


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
) -> list[tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]]:
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


# --- 1. training step -----------------------------------------------------------------------------


def training_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: list[torch.Tensor],
    targets: list[dict[str, torch.Tensor]],
    autocast: torch.dtype | None,
) -> None:
    """Forward with losses, backward, one SGD step."""
    with torch.autocast(images[0].device.type, dtype=autocast, enabled=autocast is not None):
        losses = model(images, targets)
    loss = sum(losses.values())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def rotated(names: list[str], shift: int) -> list[str]:
    """``names`` starting at position ``shift`` (mod len): each model takes every place in turn."""
    shift %= len(names)
    return names[shift:] + names[:shift]


def time_training(
    models: dict[str, nn.Module],
    config: RunConfig,
    data: BenchmarkData,
    settings: Settings,
    device: torch.device,
    autocast: torch.dtype | None,
) -> dict[str, TimingSummary]:
    """Seconds per training step of every model, interleaved round-robin over the iterations."""
    optimizers = {name: make_optimizer(model, config) for name, model in models.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    total = settings.warmup + settings.iters
    for iteration in range(total):
        images, targets = data.batches[iteration % len(data.batches)]
        for name in rotated(list(models), iteration):
            models[name].train()
            # The same random draws (RPN anchors, RoI sampling) for every model at this iteration.
            torch.manual_seed(settings.seed + iteration)
            step = partial(training_step, models[name], optimizers[name], images, targets, autocast)
            _, seconds = timed(step, device)
            if iteration >= settings.warmup:
                times[name].append(seconds)
        log(f"training step: iteration {iteration + 1}/{total}")
    return {name: summarize(values) for name, values in times.items()}


def cuda_peak_memory_mb(
    name: str, config: RunConfig, data: BenchmarkData, settings: Settings, device: torch.device, autocast
) -> float:
    """``torch.cuda.max_memory_allocated`` over a few training steps of ``name`` alone on the GPU."""
    model = prepare_model(build_model(name, config, data.train_set, settings.seed), device, settings.channels_last)
    optimizer = make_optimizer(model.train(), config)
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    for step in range(settings.warmup + min(settings.iters, 3)):
        images, targets = data.batches[step % len(data.batches)]
        training_step(model, optimizer, images, targets, autocast)
    synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) / 2**20
    del model, optimizer
    gc.collect()
    torch.cuda.empty_cache()
    return peak


def cpu_peak_memory(name: str, settings: Settings) -> dict[str, float] | str:
    """Process max RSS of a fresh subprocess that trains ``name`` for a few steps (MiB), or why not."""
    payload = json.dumps({"model": name, "settings": dataclasses.asdict(settings)})
    command = [sys.executable, str(Path(__file__).resolve()), "--memory-probe", payload]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return f"not measured ({last[:120]})"
    return json.loads(lines[-1])


def run_memory_probe(payload: str) -> None:
    """The subprocess side of :func:`cpu_peak_memory`: prints {"before_mb", "peak_mb"} as one JSON line.

    ``before_mb`` is the max RSS once torch, the model and the batches are loaded; ``peak_mb`` after
    the training steps, so their difference is what the steps themselves needed at most.
    """
    request = json.loads(payload)
    settings = Settings(**request["settings"])
    config = benchmark_config(settings)
    device = torch.device("cpu")
    data = load_benchmark_data(settings, config, device)
    model = build_model(request["model"], config, data.train_set, settings.seed).train()
    optimizer = make_optimizer(model, config)
    before = process_max_rss_mb()
    for step in range(settings.warmup + min(settings.iters, 3)):
        torch.manual_seed(settings.seed + step)
        images, targets = data.batches[step % len(data.batches)]
        training_step(model, optimizer, images, targets, None)
    print(json.dumps({"before_mb": before, "peak_mb": process_max_rss_mb()}))


# --- 2. inference ---------------------------------------------------------------------------------


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


# --- 3. RoI sampler -------------------------------------------------------------------------------


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


# --- 4. COCO evaluation ---------------------------------------------------------------------------


def synthetic_detections(dataset: dict, per_image: int, seed: int) -> list[dict]:
    """``per_image`` COCO results records for every image of ``dataset``: a jittered copy of each GT box
    (likely true positives, high scores) and random boxes of random categories (low scores)."""
    rng = np.random.default_rng(seed)
    category_ids = [c["id"] for c in dataset["categories"]]
    gt_of: dict[int, list[dict]] = {image["id"]: [] for image in dataset["images"]}
    for ann in dataset["annotations"]:
        gt_of[ann["image_id"]].append(ann)
    detections = []
    for image in dataset["images"]:
        width, height = image["width"], image["height"]
        for ann in gt_of[image["id"]][:per_image]:
            x, y, w, h = ann["bbox"]
            jitter = rng.normal(0.0, 0.05, size=4) * np.array([w, h, w, h])
            box = [x + jitter[0], y + jitter[1], max(1.0, w + jitter[2]), max(1.0, h + jitter[3])]
            detections.append(_record(image["id"], ann["category_id"], box, rng.uniform(0.5, 1.0)))
        for _ in range(per_image - min(per_image, len(gt_of[image["id"]]))):
            w, h = rng.uniform(8, width / 2), rng.uniform(8, height / 2)
            box = [rng.uniform(0, width - w), rng.uniform(0, height - h), w, h]
            detections.append(_record(image["id"], int(rng.choice(category_ids)), box, rng.uniform(0.0, 0.5)))
    return detections


def _record(image_id: int, category_id: int, box: list[float], score: float) -> dict:
    return {
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [round(float(v), 2) for v in box],
        "score": round(float(score), 5),
    }


def time_coco_evaluation(val_set: DetectionDataset, settings: Settings) -> tuple[TimingSummary, int]:
    """Seconds per ``evaluate_detections`` call on the val split, and the number of detections."""
    detections = synthetic_detections(val_set.dataset, DETECTIONS_PER_IMAGE, settings.seed)
    times = []
    for repeat in range(1 + settings.eval_repeats):
        start = time.perf_counter()
        evaluate_detections(val_set.dataset, detections)
        if repeat > 0:  # the first call is a warm-up
            times.append(time.perf_counter() - start)
        log(f"COCO evaluation: {repeat + 1}/{1 + settings.eval_repeats}")
    return summarize(times), len(detections)


# --- 5. analyses ----------------------------------------------------------------------------------


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


# --- targets and the results file -----------------------------------------------------------------


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


def write_results(path: Path, section: str, body: str) -> None:
    """Replace ``## section`` ("CPU" or "GPU") of the results file with ``body``; keep every other section.

    A missing file starts from the header; a CPU or GPU section never measured reads "not yet measured".
    """
    update_section_file(path, section, body, header=RESULTS_HEADER, required=("CPU", "GPU"), placeholder=NOT_MEASURED)


def _ms(summary: TimingSummary) -> tuple[str, str, str]:
    s = summary.scaled(1000)
    return f"{s.median:.1f}", f"{s.q1:.1f}–{s.q3:.1f}", f"{s.minimum:.1f}–{s.maximum:.1f}"


def _memory_cell(memory: Any) -> str:
    if isinstance(memory, str):
        return memory
    if isinstance(memory, dict):
        return f"{memory['peak_mb']:.0f} (+{memory['peak_mb'] - memory['before_mb']:.0f} in steps)"
    return f"{memory:.0f}"


def render_section(report: dict[str, Any]) -> str:
    """The Markdown body of a CPU or GPU section from the measurements in ``report``."""
    settings: Settings = report["settings"]
    config: RunConfig = report["config"]
    m = config.model
    parts = []
    if settings.quick:
        parts.append("_Quick smoke-test configuration (tiny images, a few iterations): not a measurement._")
    parts.append(
        f"Measured {report['date']}, {report['wall_s'] / 60:.1f} min, load average before/after "
        f"{report['load_before']:.2f} / {report['load_after']:.2f}."
    )
    parts.append("### Machine\n\n" + "\n".join(f"- {line}" for line in report["machine"]))
    parts.append(f"### Command\n\n```\n{report['command']}\n```")
    amp = "bf16 autocast" if report["autocast"] is not None else "off (float32)"
    parts.append(
        "### Settings\n\n"
        f"- Faster R-CNN {m.backbone}-FPN ({m.fpn_channels} channels, {m.norm} norm), inputs resized to "
        f"{m.min_size}×{m.max_size}, batch {config.data.batch_size}, {report['num_classes']} classes\n"
        f"- RPN top-n train {m.rpn_pre_nms_top_n_train}/{m.rpn_post_nms_top_n_train}, "
        f"RoIs per image {m.roi_batch_size_per_image}\n"
        f"- warm-up {settings.warmup}, measured iterations {settings.iters} per model, models interleaved "
        f"round-robin; AMP {amp}; channels-last {'on' if settings.channels_last else 'off'}\n"
        f"- data: {report['data']}"
    )
    target_rows = [
        (t.name, "—" if math.isnan(t.value) else f"{t.value:.3f}", f"≤ {t.limit:g}", t.verdict)
        for t in report["targets"]
    ]
    parts.append("### Targets\n\n" + markdown_table(("target", "measured", "limit", "verdict"), target_rows))

    training: dict[str, TimingSummary] = report["training"]
    reference = training["torchvision"].median
    memory_label = (
        "peak memory, MiB (CUDA max allocated)"
        if report["device"] == "cuda"
        else ("process max RSS, MiB (fresh process per model)")
    )
    rows = []
    for name, summary in training.items():
        switches = TRAINING_MODELS[name]
        components = "torchvision only" if switches is None else (", ".join(switches) or "none")
        if name in MODEL_SETTINGS:
            components += " (" + ", ".join(f"{key}: {value}" for key, value in MODEL_SETTINGS[name].items()) + ")"
        rows.append(
            (
                name,
                components,
                *_ms(summary),
                f"{summary.median / reference:.3f}",
                _memory_cell(report["memory"][name]),
            )
        )
    header = (
        "model",
        "Libra components",
        "median ms",
        "IQR ms",
        "min–max ms",
        "vs torchvision",
        memory_label,
    )
    parts.append("### 1. Training step (forward + backward + SGD step)\n\n" + markdown_table(header, rows))

    inference: dict[str, TimingSummary] = report["inference"]
    batch = config.data.batch_size
    reference = inference["torchvision"].median
    rows = [(name, *_ms(s), f"{batch / s.median:.1f}", f"{s.median / reference:.3f}") for name, s in inference.items()]
    header = ("model", "median ms / batch", "IQR ms", "min–max ms", "images/s", "time vs torchvision")
    parts.append(f"### 2. Inference (eval mode, batch {batch})\n\n" + markdown_table(header, rows))

    sampler: dict[str, TimingSummary] = report["sampler"]
    rows = [
        (name, f"{s.median:.3f}", f"{s.q1:.3f}–{s.q3:.3f}", f"{s.minimum:.3f}–{s.maximum:.3f}")
        for name, s in sampler.items()
    ]
    parts.append(
        f"### 3. RoI sampler per image ({SAMPLER_PROPOSALS:,} proposals, {SAMPLER_SAMPLES} samples, "
        f"{settings.sampler_images} images)\n\n"
        "IoU distribution: 55 % IoU 0, 30 % in (0, 0.3), 8 % in [0.3, 0.5), "
        "7 % positives (GT boxes included).\n\n"
        + markdown_table(("sampler", "median ms", "IQR ms", "min–max ms"), rows)
    )

    evaluation, num_detections = report["evaluation"]
    num_val = report["num_val_images"]
    parts.append(
        f"### 4. COCO evaluation (`evaluate_detections`, val split: {num_val} images, "
        f"{num_detections:,} detections)\n\n"
        + markdown_table(
            ("median s", "IQR s", "min–max s", "images/s"),
            [
                (
                    f"{evaluation.median:.3f}",
                    f"{evaluation.q1:.3f}–{evaluation.q3:.3f}",
                    f"{evaluation.minimum:.3f}–{evaluation.maximum:.3f}",
                    f"{num_val / evaluation.median:.1f}",
                )
            ],
        )
    )

    rows = []
    for name, result in report["analyses"].items():
        if isinstance(result, str):
            rows.append((name, "—", "—", result))
        else:
            summary, images = result
            rows.append((name, str(images), f"{summary.median:.2f}", f"{images / summary.median:.2f}"))
    parts.append(
        "### 5. Analyses (`libra analyze`, full-Libra weights, includes loading the checkpoint)\n\n"
        + markdown_table(("analysis", "images", "median s / call", "images/s"), rows)
    )
    return "\n\n".join(parts)


# --- profiling ------------------------------------------------------------------------------------


def profile_training(args: argparse.Namespace, settings: Settings, device: torch.device) -> str:
    """torch.profiler over ``--profile-steps`` training steps of the ``--profile`` model, after warm-up.

    Returns the operators with the most self CPU time first: where a step spends time that it need not.
    """
    config = benchmark_config(settings)
    autocast = amp_dtype(config, device)
    data = load_benchmark_data(settings, config, device)
    model = build_model(args.profile, config, data.train_set, settings.seed)
    model = prepare_model(model, device, settings.channels_last).train()
    optimizer = make_optimizer(model, config)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    for step in range(settings.warmup + args.profile_steps):
        if step == settings.warmup:
            profile = torch.profiler.profile(activities=activities)
            profile.start()
        images, targets = data.batches[step % len(data.batches)]
        training_step(model, optimizer, images, targets, autocast)
    synchronize(device)
    profile.stop()
    return top_operators(profile, args.profile_rows)


# --- entry point ----------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


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


def run_benchmark(settings: Settings, command: str, out: Path, workdir: Path) -> str:
    """Measure every section and write the device's section of ``out``; returns that section's body."""
    start, load_before = time.perf_counter(), os.getloadavg()[0]
    device = resolve_device(settings.device)
    config = benchmark_config(settings)
    autocast = amp_dtype(config, device)
    data = load_benchmark_data(settings, config, device)

    memory: dict[str, Any] = {}
    for name in TRAINING_MODELS:
        log(f"peak memory: {name}")
        if device.type == "cuda":
            memory[name] = cuda_peak_memory_mb(name, config, data, settings, device, autocast)
        else:
            memory[name] = cpu_peak_memory(name, settings)

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
