"""The training loop: SGD with warm-up and a step or cosine schedule, AMP on CUDA, logs and checkpoints.

Three parts: the setup (``setup_training``: data, model, optimizer, resume state, gathered in a
``TrainingRun``), the step (``forward_backward`` and ``apply_update``, together ``training_step``, which
the benchmark times) and the hooks (log, evaluation, checkpoints), called from one short loop in ``train``.

Everything a run produces goes to its run directory (see ``rundir.py``); a run
is resumed from ``checkpoints/last.pt`` and then continues exactly where it stopped: the batch sampler
is a function of the iteration, and RNG states travel in the checkpoint.

Under ``torchrun`` the same loop runs data-parallel (``engine/distributed.py``): the model is wrapped in
DistributedDataParallel, each rank takes its share of every global batch, and rank 0 alone writes the
run directory and reports progress.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import resource
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from libra_cli.config import RunConfig, TrainConfig, flag_of
from libra_cli.data.build import absolute_paths, build_eval_dataset, build_train_dataset, resolve_data_paths
from libra_cli.data.coco import DetectionDataset, collate
from libra_cli.data.sampler import IterationBatchSampler, aspect_ratio_groups, repeat_factors
from libra_cli.engine.checkpoint import load_checkpoint, restore_rng_state, rng_state, save_checkpoint, weights_state
from libra_cli.engine.distributed import (
    DistributedContext,
    all_gather_object,
    average_across_ranks,
    init_distributed,
)
from libra_cli.engine.evaluate import evaluate_model
from libra_cli.engine.run import dataset_info, eql_frequency_denominator
from libra_cli.errors import LibraError
from libra_cli.io import remove_stale_temporaries
from libra_cli.models.build import build_detector, check_backbone_weights
from libra_cli.rundir import JsonlLog, RunLayout


class NonFiniteLossError(LibraError):
    """Raised when a loss term becomes NaN or infinite; the last good checkpoint is kept."""


def iterations_per_epoch(num_images: int, global_batch: int) -> int:
    """Steps in one pass over the training set: ⌈num_images / global_batch⌉ (the last batch may be short of
    new images; the sampler fills it), e.g. COCO train2017's 118 287 images at 16 → 7393."""
    if num_images <= 0 or global_batch <= 0:
        raise LibraError(f"train.epochs: cannot count epochs of {num_images} images in batches of {global_batch}")
    return math.ceil(num_images / global_batch)


def epoch_schedule(
    epochs: int, milestone_epochs: tuple[int, ...], num_images: int, global_batch: int
) -> tuple[int, tuple[int, ...]]:
    """(max_iters, milestone iterations) of an epoch schedule: max_iters = epochs × iterations_per_epoch, and
    milestone e (×0.1 after epoch e, mmdetection's ``step=[8, 11]``) at e × iterations_per_epoch.

    COCO train2017 (118 287 images), batch 16, 12 epochs, milestones (8, 11) → (88716, (59144, 81323)).
    """
    per_epoch = iterations_per_epoch(num_images, global_batch)
    return epochs * per_epoch, tuple(e * per_epoch for e in milestone_epochs)


def scaled_lr(lr: float, global_batch: int, reference_batch: int) -> float:
    """The linear scaling rule (Goyal et al., 2017): lr × global_batch / reference_batch, e.g. the reference
    configs' 0.02 for 16 images → 0.01 for 8."""
    return lr * global_batch / reference_batch


def peak_lr(config: RunConfig) -> float:
    """The peak learning rate the run trains with: ``train.lr``, linearly scaled when ``train.scale_lr``."""
    tcfg = config.train
    return scaled_lr(tcfg.lr, config.data.batch_size, tcfg.reference_batch) if tcfg.scale_lr else tcfg.lr


def resolve_schedule(config: RunConfig, num_train_images: int) -> RunConfig:
    """``config`` with an epoch schedule made explicit in iterations (unchanged when ``train.epochs`` is None):
    ``train.max_iters`` = :func:`epoch_schedule`'s, and ``train.lr_milestones`` the milestone iterations as
    fractions of it (``round(fraction × max_iters)`` gives each back exactly). The run directory's config.yaml
    records these, so that the schedule a run resumes with is the one it started with."""
    tcfg = config.train
    if tcfg.epochs is None:
        return config
    milestones = tcfg.lr_milestones_epochs or ()
    max_iters, milestone_iters = epoch_schedule(tcfg.epochs, milestones, num_train_images, config.data.batch_size)
    train_cfg = dataclasses.replace(tcfg, max_iters=max_iters)
    if tcfg.lr_milestones_epochs is not None:
        train_cfg.lr_milestones = tuple(it / max_iters for it in milestone_iters)
    return dataclasses.replace(config, train=train_cfg)


def schedule_summary(config: RunConfig, num_train_images: int) -> dict[str, Any]:
    """What the start record and the start-up table say about the schedule (``config`` resolved)."""
    tcfg = config.train
    summary: dict[str, Any] = {
        "max_iters": tcfg.max_iters,
        "milestone_iters": [round(m * tcfg.max_iters) for m in tcfg.lr_milestones] if tcfg.schedule == "step" else [],
        "global_batch": config.data.batch_size,
        "lr": peak_lr(config),
        "scale_lr": tcfg.scale_lr,
    }
    if tcfg.epochs is not None:
        summary["epochs"] = tcfg.epochs
        summary["iters_per_epoch"] = iterations_per_epoch(num_train_images, config.data.batch_size)
    return summary


def learning_rate(train: TrainConfig, iteration: int, base_lr: float | None = None) -> float:
    """Learning rate at ``iteration`` (0-based): linear warm-up from base × warmup_factor, then step decay or
    cosine. ``base_lr`` is the peak rate (:func:`peak_lr`); None: ``train.lr``."""
    base = train.lr if base_lr is None else base_lr
    if iteration < train.warmup_iters:
        alpha = iteration / train.warmup_iters
        factor = train.warmup_factor * (1 - alpha) + alpha
    else:
        factor = 1.0
    if train.schedule == "step":
        drops = sum(iteration >= round(m * train.max_iters) for m in train.lr_milestones)
        return base * factor * 0.1**drops
    progress = min(1.0, iteration / max(1, train.max_iters))
    return base * factor * 0.5 * (1 + math.cos(math.pi * progress))


class TrainTestMinSize:
    """Forward pre-hook of a detector's ``GeneralizedRCNNTransform`` for multi-scale training.

    In training the transform's ``min_size`` is the tuple ``train_sizes`` and torchvision resizes each image
    to a shorter side drawn from it (``torch_choice``: one uniform draw per image from torch's global
    generator, which the transform makes whether or not there is a choice); in evaluation it is
    ``(test_size,)`` (torchvision would otherwise use the tuple's last entry). The global generator's state
    is saved in every checkpoint at a step boundary and each rank seeds its own, so the drawn sizes, like the
    RPN/RoI samples, repeat exactly on resume.
    """

    def __init__(self, train_sizes: tuple[int, ...], test_size: int) -> None:
        self.train_sizes = tuple(train_sizes)
        self.test_size = test_size

    def __call__(self, module: nn.Module, args: Any) -> None:
        module.min_size = self.train_sizes if module.training else (self.test_size,)


def apply_train_min_sizes(model: nn.Module, config: RunConfig) -> nn.Module:
    """Turn on ``model.train_min_sizes`` (multi-scale training) on a built detector; a no-op when unset."""
    sizes = config.model.train_min_sizes
    if sizes is None:
        return model
    transform = getattr(model, "transform", None)
    if transform is None or not hasattr(transform, "min_size"):
        raise LibraError("model.train_min_sizes (--train-min-sizes): this detector has no resizing transform")
    transform.min_size = tuple(sizes) if model.training else (config.model.min_size,)
    transform.register_forward_pre_hook(TrainTestMinSize(tuple(sizes), config.model.min_size))
    return model


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def amp_dtype(config: RunConfig, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or not config.train.amp:
        return None
    return torch.bfloat16 if config.train.amp_dtype == "bf16" else torch.float16


@dataclass
class TrainResult:
    run_dir: Path
    iterations: int
    wall_s: float
    metrics: dict[str, Any] | None
    # --resume of a run already trained to max_iters and evaluated: nothing ran, ``metrics`` are its saved ones
    finished_before: bool = False


# The settings that make up the learning-rate schedule: a resumed run must keep them (or --extend max_iters).
SCHEDULE_FIELDS = (
    "max_iters",
    "epochs",
    "lr",
    "scale_lr",
    "reference_batch",
    "warmup_iters",
    "warmup_factor",
    "schedule",
    "lr_milestones",
    "lr_milestones_epochs",
)


class RunFinished(Exception):
    """Raised by :func:`setup_training` for ``--resume`` of a run already trained and evaluated."""

    def __init__(self, iteration: int, metrics: dict[str, Any]) -> None:
        super().__init__(f"finished at iteration {iteration}")
        self.iteration = iteration
        self.metrics = metrics


def extended_schedule(saved: RunConfig, planned: RunConfig) -> RunConfig:
    """``planned`` (a longer ``train.max_iters`` than ``saved``'s) as the continuation of the saved run
    (``--resume --extend``): every other schedule setting is the saved one and the step schedule's milestones
    stay at the iterations where the run dropped its learning rate, so the added iterations train on at the
    rate the run ended with (the fractions of max_iters are rescaled: 0.75 of 20 → 0.5 of 30, iteration 15).
    A cosine schedule ends at 0 and an epoch schedule is sized by the data, so neither can be extended."""
    old, new = saved.train, planned.train
    if new.max_iters <= old.max_iters:
        raise LibraError(
            f"train.max_iters (--max-iters): --extend needs more iterations than the run's {old.max_iters}; "
            f"got {new.max_iters}"
        )
    if old.schedule != "step" or old.epochs is not None or new.epochs is not None:
        raise LibraError(
            "--extend: only a step schedule in iterations can be extended (a cosine schedule ends at lr 0, an "
            "epoch schedule is sized by the data); train a new run instead"
        )
    milestones = tuple(round(m * old.max_iters) / new.max_iters for m in old.lr_milestones)
    kept = {name: getattr(old, name) for name in SCHEDULE_FIELDS if name != "max_iters"}
    train_cfg = dataclasses.replace(new, **{**kept, "lr_milestones": milestones})
    return dataclasses.replace(planned, train=train_cfg)


def check_resumed_schedule(config: RunConfig, layout: RunLayout, iteration: int, *, extend: bool) -> RunConfig:
    """The config a resumed run continues with: ``config`` itself when its schedule is the saved one
    (config.yaml); with ``extend`` the :func:`extended_schedule` to its larger max_iters. Any other change is
    one line naming each changed field and its saved value: a new schedule would change the learning rate
    mid-run, and config.yaml would no longer describe what the checkpoint was trained with."""
    saved = layout.read_config()
    changed = [
        f"train.{name} ({flag_of(name)}) saved {_shown(getattr(saved.train, name))}, "
        f"got {_shown(getattr(config.train, name))}"
        for name in SCHEDULE_FIELDS
        if getattr(saved.train, name) != getattr(config.train, name) and not (extend and name == "max_iters")
    ]
    if changed:
        raise LibraError(
            f"{layout.root}: --resume keeps the run's schedule; changed: {'; '.join(changed)} (give the saved "
            "values, or --extend with a larger --max-iters to train a finished step schedule on)"
        )
    if extend:
        config = extended_schedule(saved, config)
    if iteration > config.train.max_iters:
        raise LibraError(
            f"{layout.last}: is at iteration {iteration}, past train.max_iters {config.train.max_iters} of "
            f"{layout.config}"
        )
    return config


def _shown(value: Any) -> str:
    return repr(list(value) if isinstance(value, tuple) else value)


class NoLog:
    """The log of ranks other than 0: they compute what rank 0 writes."""

    def write(self, record: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


# The EQL paper's λ = 1.76e-3 gives a tail ratio of 9.08 % on LVIS v0.5 (EQL paper §4). A λ whose TR is
# under a third or over twice that is far from what the paper tuned: the user is warned at start.
PAPER_TAIL_RATIO = 0.0908
TAIL_RATIO_BAND = (PAPER_TAIL_RATIO / 3, 2 * PAPER_TAIL_RATIO)


def tail_ratio_warning(ratio: float, lam: float) -> str | None:
    """A one-line warning when TR(λ) lies outside ``TAIL_RATIO_BAND``, else None.

    λ = 0 is no warning: it is the sigmoid baseline on purpose (no class is a tail class).
    """
    low, high = TAIL_RATIO_BAND
    if lam == 0 or low <= ratio <= high:
        return None
    side = "below" if ratio < low else "above"
    return (
        f"EQL: λ = {lam:g} gives TR(λ) = {100 * ratio:.2f}%, {side} {100 * low:.0f}–{100 * high:.0f}% "
        f"(the paper's λ gives 9.08% on LVIS); choose λ for your dataset from the tail ratio"
    )


def eql_tail_info(lam: float, dataset_info: dict[str, Any], freq_mode: str = "annotated") -> dict[str, Any]:
    """The tail classes T_λ and the tail ratio TR(λ) (Tan et al., CVPR 2020, Sec. 3) of the training set,
    and a warning when TR(λ) is far from the paper's (:func:`tail_ratio_warning`).

    ``freq_mode`` chooses the frequencies' denominator (``libra.eql_freq``, see ``eql_frequency_denominator``).
    """
    from libra_cli.losses import image_frequency, tail_class_mask, tail_ratio

    denominator = eql_frequency_denominator(dataset_info, freq_mode)
    freq = image_frequency(torch.tensor(dataset_info["images_per_class"]), denominator)
    mask = tail_class_mask(freq, lam).tolist()
    names = [name for name, tail in zip(dataset_info["category_names"], mask, strict=True) if tail]
    ratio = tail_ratio(freq, torch.tensor(dataset_info["instances_per_class"]), lam)
    return {
        "eql_lambda": lam,
        "tail_classes": names,
        "tail_ratio": ratio,
        "freq_mode": freq_mode,
        "freq_denominator": denominator,
        "warning": tail_ratio_warning(ratio, lam),
    }


def _check_finite(loss_terms: dict[str, float], iteration: int, layout: RunLayout) -> None:
    """Stop the run if a loss term is NaN or infinite; ``iteration`` counts steps from 1, as the log does."""
    bad = {name: value for name, value in loss_terms.items() if not math.isfinite(value)}
    if bad:
        terms = ", ".join(f"{k}={v:.4g}" for k, v in loss_terms.items())
        kept = "no checkpoint written yet"
        if layout.last.exists():
            kept = f"last good checkpoint kept at {layout.last}"
        raise NonFiniteLossError(
            f"non-finite loss at iteration {iteration} ({terms}); {kept} — try a lower --lr, more warm-up "
            "or gradient clipping"
        )


class StepBoundaryInterrupts:
    """Ctrl-C (SIGINT) and SIGTERM raise KeyboardInterrupt, but never in the middle of a step's bookkeeping.

    Inside ``with interrupts.atomic():`` a signal is only noted and raised when the block ends, so the
    checkpoint written on the way out holds whole steps: its iteration k comes with all of step k's
    update, loss terms and log record, never half of them. Outside the block (data loading, forward,
    backward, evaluation) a signal interrupts at once. SIGTERM is what schedulers and torchrun send before
    they kill a job. ``install`` replaces the handlers in the main thread only (where Python runs them).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.in_update = False
        self.pending = False
        self.previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.in_update:
            self.pending = True
        else:
            raise KeyboardInterrupt

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self.previous = {signum: signal.signal(signum, self._handle) for signum in self.SIGNALS}

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        self.in_update = True
        try:
            yield
        finally:
            self.in_update = False
        if self.pending:
            raise KeyboardInterrupt


def _mean_terms(window: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Each loss term averaged over the logged steps and over the ranks (the global batch's loss)."""
    means = {name: torch.stack([step[name] for step in window]).mean() for name in window[0]}
    return {name: float(value) for name, value in average_across_ranks(means).items()}


# --- the training step -------------------------------------------------------------------------------


@dataclass
class TrainStep:
    """What one optimizer step runs; :func:`training_step` runs it, and ``benchmarks/`` times it."""

    model: nn.Module  # what the forward pass runs: the detector, or its DDP wrapper under torchrun
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler  # loss scaling for float16 autocast; passes values through otherwise
    autocast: torch.dtype | None  # the autocast dtype (CUDA only); None: float32
    grad_clip: float | None = None  # the largest gradient norm over all trained parameters; None: no clipping
    params: list[nn.Parameter] = field(init=False)  # the optimizer's parameters, clipped together

    def __post_init__(self) -> None:
        self.params = [p for group in self.optimizer.param_groups for p in group["params"]]


def forward_backward(
    step: TrainStep, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """A training step up to its update: forward with losses, backward, gradient clipping.

    ``images`` are float tensors [3, H, W] and ``targets`` dicts with "boxes" [N, 4] (xyxy, pixels) and
    "labels" [N], all on the model's device. Returns the loss terms, scalars still in the graph.
    """
    with torch.autocast(images[0].device.type, dtype=step.autocast, enabled=step.autocast is not None):
        loss_dict = step.model(images, targets)
    loss = sum(loss_dict.values())
    step.optimizer.zero_grad(set_to_none=True)
    step.scaler.scale(loss).backward()
    if step.grad_clip is not None:
        step.scaler.unscale_(step.optimizer)
        torch.nn.utils.clip_grad_norm_(step.params, step.grad_clip)
    return loss_dict


def apply_update(step: TrainStep) -> None:
    """The optimizer step (skipped by the scaler when float16 gradients overflowed) and the scale update."""
    step.scaler.step(step.optimizer)
    step.scaler.update()


def training_step(
    step: TrainStep, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """One whole step: :func:`forward_backward` then :func:`apply_update`. Returns the loss terms.

    The training loop calls the two halves itself, so that the update and its bookkeeping happen
    together or not at all (:class:`StepBoundaryInterrupts`).
    """
    loss_dict = forward_backward(step, images, targets)
    apply_update(step)
    return loss_dict


def batch_to_device(
    images: list[torch.Tensor], targets: list[dict[str, Any]], device: torch.device
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """The images and the targets' boxes and labels (and instance masks, for Mask R-CNN) on ``device``."""
    images = [image.to(device, non_blocking=True) for image in images]
    targets = [
        {key: t[key].to(device, non_blocking=True) for key in ("boxes", "labels", "masks") if key in t} for t in targets
    ]
    return images, targets


# --- setup -------------------------------------------------------------------------------------------


@dataclass
class TrainingData:
    """The datasets of a run and what the run directory records about them."""

    train_set: DetectionDataset
    val_set: DetectionDataset
    info: dict[str, Any]  # dataset_info(): files, classes, per-class counts
    skipped: dict[str, int]  # boxes and images dropped as unusable, per split


@dataclass
class TrainingRun:
    """Everything the loop needs, built by :func:`setup_training`. The fields from ``completed`` on change
    as it runs; a checkpoint is made of them (:func:`checkpoint_state`)."""

    config: RunConfig
    ctx: DistributedContext  # this process's rank, the number of processes and the device
    layout: RunLayout  # the run directory
    model: nn.Module  # the detector itself: checkpoints and evaluation use it, never its DDP wrapper
    step: TrainStep
    loader: torch.utils.data.DataLoader  # this rank's share of the batches from start_iter to max_iters
    val_set: DetectionDataset
    log: JsonlLog | NoLog
    start_iter: int  # the first iteration this process runs: 0, or the resumed checkpoint's
    completed: int  # optimizer steps taken; what a checkpoint records
    best_ap: float  # the best validation AP so far; −1 before the first evaluation
    window: list[dict[str, torch.Tensor]]  # loss terms of the steps since the last log record
    # The random state at the last step boundary, which is what a checkpoint of `completed` steps holds
    # even when Ctrl-C lands in the middle of the next step, after its samplers have drawn.
    step_rng: dict[str, Any]
    window_start: float = 0.0  # perf_counter() when the current log window began
    data_wait: float = 0.0  # seconds spent waiting for batches in the current log window

    @property
    def device(self) -> torch.device:
        return self.ctx.device


def open_checkpoint(config: RunConfig, layout: RunLayout, ctx: DistributedContext, resume: bool) -> dict | None:
    """The checkpoint to resume from (None for a new run), after checking that the run can start at all."""
    if config.data.batch_size % ctx.world_size:
        raise LibraError(
            f"data.batch_size: the global batch of {config.data.batch_size} images does not split evenly "
            f"over {ctx.world_size} processes"
        )
    if layout.last.exists() and not resume:
        raise LibraError(f"{layout.root}: already holds a run; pass --resume to continue it or choose another --out")
    if resume and not layout.last.exists():
        raise LibraError(f"{layout.root}: nothing to resume (no {layout.last.relative_to(layout.root)})")
    checkpoint = load_checkpoint(layout.last) if resume else None
    if checkpoint is not None:
        trained_batch = checkpoint.get("data", {}).get("global_batch_size", config.data.batch_size)
        if trained_batch != config.data.batch_size:
            raise LibraError(
                f"{layout.last}: was trained with a global batch of {trained_batch} images; resume with "
                f"--batch-size {trained_batch} (the data order depends on it)"
            )
        # The sampling options shape the data order too (checkpoints from before them had neither).
        for name, flag, default in (
            ("repeat_factor_thr", "--repeat-factor-thr", None),
            ("aspect_ratio_grouping", "--aspect-ratio-grouping", False),
        ):
            trained = checkpoint.get("data", {}).get(name, default)
            if trained != getattr(config.data, name):
                raise LibraError(
                    f"{layout.last}: was trained with data.{name} = {trained}; resume with the same setting "
                    f"({flag}; the data order depends on it)"
                )
    return checkpoint


def load_training_data(config: RunConfig) -> TrainingData:
    given = resolve_data_paths(config.data)
    # Absolute from here on: the run's files (dataset.json, metrics.json's ann_file) must not depend on the
    # folder training ran in.
    paths = absolute_paths(given)
    train_set = build_train_dataset(config.data, paths, with_masks=config.model.arch == "mask_rcnn")
    val_set = build_eval_dataset(paths.val_ann, paths.val_images, train_set.category_ids, config.data.on_bad_sample)
    # Every image file is checked before any work starts; "skip" drops bad ones and counts them.
    train_set.verify_images()
    val_set.verify_images()
    for name, dataset in (("training", train_set), ("validation", val_set)):
        if len(dataset) == 0:
            raise LibraError(f"{dataset.ann_file}: the {name} set holds no usable images")
    skipped = {
        "train_boxes": train_set.skipped_boxes,
        "train_images": train_set.skipped_images,
        "val_boxes": val_set.skipped_boxes,
        "val_images": val_set.skipped_images,
    }
    return TrainingData(train_set, val_set, dataset_info(paths, train_set, given), skipped)


def build_model_and_step(config: RunConfig, data: TrainingData, ctx: DistributedContext) -> tuple[nn.Module, TrainStep]:
    """The detector on the device, seeded, and its SGD step (optimizer, scaler, autocast, clipping)."""
    tcfg = config.train
    seed_everything(tcfg.seed)
    if tcfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    model = build_detector(
        config,
        data.train_set.num_classes,
        images_per_class=data.train_set.images_per_class(),
        num_images=eql_frequency_denominator(data.info, config.libra.eql_freq),
    )
    apply_train_min_sizes(model, config)
    model.to(ctx.device)
    if ctx.enabled:
        # Identical initial weights on every rank (DDP also broadcasts rank 0's), but each rank draws its
        # own anchor and RoI samples.
        torch.manual_seed(tcfg.seed + 1_000_003 * ctx.rank)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=peak_lr(config), momentum=tcfg.momentum, weight_decay=tcfg.weight_decay)
    dtype = amp_dtype(config, ctx.device)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=dtype == torch.float16)
    return model, TrainStep(model, optimizer, scaler, dtype, tcfg.grad_clip)


def restore_checkpoint(
    checkpoint: dict[str, Any], model: nn.Module, step: TrainStep, ctx: DistributedContext, layout: RunLayout
) -> tuple[int, float, list[dict[str, torch.Tensor]]]:
    """Load weights, optimizer, scaler and this rank's RNG state; returns (iteration, best AP, log window)."""
    try:
        model.load_state_dict(checkpoint["model"])
        step.optimizer.load_state_dict(checkpoint["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LibraError(f"{layout.last}: does not match the configured detector ({first})") from exc
    if "scaler" in checkpoint:
        step.scaler.load_state_dict(checkpoint["scaler"])
    per_rank = checkpoint.get("per_rank")
    own = per_rank[ctx.rank] if isinstance(per_rank, list) and len(per_rank) == ctx.world_size else checkpoint
    restore_rng_state(own.get("rng", {}))
    window = [{name: value.to(ctx.device) for name, value in terms.items()} for terms in own.get("log_window", [])]
    return int(checkpoint["iteration"]), float(checkpoint.get("best_ap", -1.0)), window


def start_run_directory(
    config: RunConfig,
    layout: RunLayout,
    ctx: DistributedContext,
    data: TrainingData,
    model: nn.Module,
    *,
    start_iter: int,
    resume: bool,
    on_start: Callable[[dict[str, Any]], None] | None,
) -> JsonlLog | NoLog:
    """Write the config, dataset info and the log's start record (rank 0); call ``on_start``. Returns the log."""
    log: JsonlLog | NoLog = NoLog()
    start_record: dict[str, Any] = {
        "type": "start",
        "iter": start_iter,
        "components": config.libra.enabled(),
        "world_size": ctx.world_size,
        "skipped": data.skipped,
        "schedule": schedule_summary(config, len(data.train_set)),
    }
    if config.libra.eql:
        start_record["eql"] = eql_tail_info(config.libra.eql_lambda, data.info, config.libra.eql_freq)
    if ctx.is_main:
        layout.root.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(layout.checkpoints)
        layout.write_config(config)
        layout.write_dataset_info(data.info)
        log = layout.open_log(resume_from=start_iter if resume else None)
        log.write(start_record)
    if on_start is not None and ctx.is_main:
        on_start(
            {
                **data.info,
                **start_record,
                "device": str(ctx.device),
                "start_iter": start_iter,
                "model": model,
                "num_val_images": len(data.val_set),
            }
        )
    return log


def training_loader(
    config: RunConfig, train_set: DetectionDataset, start_iter: int, ctx: DistributedContext
) -> torch.utils.data.DataLoader:
    """This rank's batches of iterations ``start_iter`` … ``max_iters − 1``: a pure function of the seed.

    ``data.repeat_factor_thr`` turns on repeat-factor sampling (factors from the training set's labels) and
    ``data.aspect_ratio_grouping`` batches of one orientation (from the annotated image sizes); see
    ``libra_cli.data.sampler``.
    """
    tcfg, dcfg = config.train, config.data
    factors = None
    if dcfg.repeat_factor_thr is not None:
        factors = repeat_factors([record.labels for record in train_set.records], dcfg.repeat_factor_thr)
    groups = None
    if dcfg.aspect_ratio_grouping:
        groups = aspect_ratio_groups([(record.width, record.height) for record in train_set.records])
    sampler = IterationBatchSampler(
        len(train_set),
        dcfg.batch_size,
        seed=tcfg.seed,
        start_iter=start_iter,
        max_iters=tcfg.max_iters,
        rank=ctx.rank,
        world_size=ctx.world_size,
        repeat_factors=factors,
        group_ids=groups,
    )
    return torch.utils.data.DataLoader(
        train_set,
        batch_sampler=sampler,
        num_workers=config.data.num_workers,
        collate_fn=collate,
        pin_memory=ctx.device.type == "cuda",
        # Its own generator: creating the loader's iterator must not draw from the global RNG, whose
        # state is restored on resume and drives the RPN/RoI samplers.
        generator=torch.Generator().manual_seed(tcfg.seed),
    )


def setup_training(
    config: RunConfig,
    *,
    resume: bool,
    on_start: Callable[[dict[str, Any]], None] | None,
    extend: bool = False,
) -> TrainingRun:
    """Check the run directory, load the data, build the model and its step, restore a checkpoint when
    resuming and start the run directory: everything before the first step, in that order (the RNG
    draws depend on it). A resumed run keeps its saved schedule (``extend``: see :func:`extended_schedule`);
    one already trained and evaluated raises :class:`RunFinished`."""
    layout = RunLayout(config.train.out)
    ctx = init_distributed(config.train.device)
    if extend and not resume:
        raise LibraError("--extend: continues a run; use it with --resume")
    checkpoint = open_checkpoint(config, layout, ctx, resume)
    check_backbone_weights(config)  # a missing ImageNet file stops the run before the data is read
    data = load_training_data(config)
    # An epoch schedule becomes iterations here, from the training set's size; the run uses and saves that.
    config = resolve_schedule(config, len(data.train_set))
    if checkpoint is not None:
        iteration = int(checkpoint["iteration"])
        config = check_resumed_schedule(config, layout, iteration, extend=extend)
        metrics = layout.read_metrics()
        if iteration >= config.train.max_iters and metrics is not None:
            raise RunFinished(iteration, metrics)
    model, step = build_model_and_step(config, data, ctx)
    start_iter, best_ap, window = 0, -1.0, []
    if checkpoint is not None:
        start_iter, best_ap, window = restore_checkpoint(checkpoint, model, step, ctx, layout)
    step_rng = rng_state()
    if ctx.enabled:
        # The step runs through DDP, which averages gradients over the ranks; checkpoints and evaluation
        # use the module itself.
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        step.model = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    log = start_run_directory(config, layout, ctx, data, model, start_iter=start_iter, resume=resume, on_start=on_start)
    return TrainingRun(
        config=config,
        ctx=ctx,
        layout=layout,
        model=model,
        step=step,
        loader=training_loader(config, data.train_set, start_iter, ctx),
        val_set=data.val_set,
        log=log,
        start_iter=start_iter,
        completed=start_iter,
        best_ap=best_ap,
        window=window,
        step_rng=step_rng,
    )


# --- hooks: bookkeeping, log, evaluation, checkpoints ------------------------------------------------


def record_step(run: TrainingRun, iteration: int, loss_dict: dict[str, torch.Tensor]) -> None:
    """Count step ``iteration`` as done: the step count, the RNG state at its end and its loss terms."""
    run.completed = iteration + 1
    run.step_rng = rng_state()
    run.window.append({name: value.detach() for name, value in loss_dict.items()})


def log_step(run: TrainingRun, lr: float, progress: Any | None) -> None:
    """Stop on a non-finite loss; at log intervals write a "train" record of the window and start a new one."""
    tcfg, done = run.config.train, run.completed
    # On CPU a sync is free: check every step. On CUDA only at log intervals and before a checkpoint (no
    # host sync otherwise). Ranks check the same averaged values: all stop together.
    if run.device.type == "cpu":
        _check_finite(_mean_terms(run.window[-1:]), done, run.layout)
    if done % tcfg.log_interval == 0 or done == tcfg.max_iters:
        terms = _mean_terms(run.window)
        _check_finite(terms, done, run.layout)
        elapsed = time.perf_counter() - run.window_start
        record = {
            "type": "train",
            "iter": done,
            "lr": lr,
            "loss": sum(terms.values()),
            **terms,
            "time_per_iter": elapsed / len(run.window),
            "data_time_per_iter": run.data_wait / len(run.window),
            "memory_mb": round(peak_memory_mb(run.device), 1),
        }
        run.log.write(record)
        run.window, run.window_start, run.data_wait = [], time.perf_counter(), 0.0
        if progress is not None:
            progress.update(done, record)
    elif progress is not None:
        progress.update(done, None)


def rank_state(run: TrainingRun) -> dict[str, Any]:
    """What differs between ranks: the random generators and the loss terms not yet logged."""
    log_window = [{name: value.cpu() for name, value in step.items()} for step in run.window]
    return {"rng": run.step_rng, "log_window": log_window}


def checkpoint_state(run: TrainingRun, iteration: int, per_rank: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    tcfg = run.config.train
    state = {
        "model": run.model.state_dict(),
        "optimizer": run.step.optimizer.state_dict(),
        "scaler": run.step.scaler.state_dict(),
        # The learning rate is a pure function of the iteration: this is the whole schedule state.
        "scheduler": {"type": tcfg.schedule, "iteration": iteration},
        # The batch sampler is a pure function of (seed, iteration): this is the data position.
        "data": {
            "seed": tcfg.seed,
            "global_batch_size": run.config.data.batch_size,
            "repeat_factor_thr": run.config.data.repeat_factor_thr,
            "aspect_ratio_grouping": run.config.data.aspect_ratio_grouping,
            "next_iteration": iteration,
        },
        "iteration": iteration,
        "best_ap": run.best_ap,
        "world_size": run.ctx.world_size,
        **rank_state(run),  # this rank's (rank 0's)
    }
    if per_rank is not None:
        state["per_rank"] = per_rank
    return state


def save_last(run: TrainingRun, iteration: int) -> None:
    """Write ``last.pt``; every rank calls this at the same iterations (it gathers their states)."""
    per_rank = all_gather_object(rank_state(run)) if run.ctx.enabled else None
    if run.ctx.is_main:
        save_checkpoint(run.layout.last, checkpoint_state(run, iteration, per_rank))


def save_on_interrupt(run: TrainingRun) -> None:
    """Ctrl-C: keep what was learned so far; ``--resume`` continues from here. No collective call: the
    ranks may have been interrupted at different points."""
    if run.ctx.is_main:
        save_checkpoint(run.layout.last, checkpoint_state(run, run.completed))


def run_evaluation(run: TrainingRun, iteration: int) -> dict[str, Any]:
    """Evaluate on the validation set, log an "eval" record and keep ``best.pt`` when the AP improved."""
    metrics = evaluate_model(
        run.model,
        run.val_set,
        run.layout,
        device=run.device,
        batch_size=run.config.data.batch_size,
        num_workers=run.config.data.num_workers,
        autocast_dtype=run.step.autocast,
        extra={"iteration": iteration, "checkpoint": "training"},
        evaluator=run.config.train.evaluator,
    )
    ap = metrics["summary"].get("AP")
    run.log.write({"type": "eval", "iter": iteration, **{k: v for k, v in metrics["summary"].items()}})
    if ap is not None and ap > run.best_ap:
        run.best_ap = ap
        if run.ctx.is_main:
            save_checkpoint(run.layout.best, weights_state(run.model, iteration, best_ap=ap))
    return metrics


def evaluate_and_checkpoint(run: TrainingRun) -> None:
    """At their intervals before the last step: evaluate, then write ``last.pt`` (carrying the new best AP)."""
    tcfg, done = run.config.train, run.completed
    before_end = done < tcfg.max_iters
    evaluate_now = bool(tcfg.eval_interval) and done % tcfg.eval_interval == 0 and before_end
    checkpoint_now = done % tcfg.checkpoint_interval == 0 and before_end
    if (evaluate_now or checkpoint_now) and run.window and run.device.type != "cpu":
        _check_finite(_mean_terms(run.window), done, run.layout)  # never evaluate or save diverged weights
    if evaluate_now:
        run_evaluation(run, done)
        run.model.train()
    if checkpoint_now:
        save_last(run, done)


def finish(run: TrainingRun) -> dict[str, Any]:
    """The final evaluation; ``best.pt`` is the last weights when no evaluation improved on −1."""
    metrics = run_evaluation(run, run.completed)
    if run.ctx.is_main and not run.layout.best.exists():
        save_checkpoint(run.layout.best, weights_state(run.model, run.completed, best_ap=run.best_ap))
    return metrics


# --- the loop ----------------------------------------------------------------------------------------


def train(
    config: RunConfig,
    *,
    resume: bool = False,
    extend: bool = False,
    on_start: Callable[[dict[str, Any]], None] | None = None,
    progress: Any | None = None,
) -> TrainResult:
    """Train the detector described by ``config`` into ``config.train.out``.

    ``resume`` continues from ``checkpoints/last.pt`` with the saved schedule; ``extend`` (with ``resume``)
    trains a finished step schedule on to a larger ``train.max_iters`` (:func:`extended_schedule`). A
    resumed run already trained and evaluated is left as it is: the result has ``finished_before`` and its
    saved metrics (``libra eval`` evaluates it again).

    ``on_start(info)`` receives a summary (dataset sizes, components, tail classes) before the first step;
    ``progress`` is an optional object with ``start(total, completed)``, ``update(iteration, fields)``
    and ``stop()`` (the CLI passes a rich progress bar).
    """
    start_wall = time.perf_counter()
    try:
        run = setup_training(config, resume=resume, on_start=on_start, extend=extend)
    except RunFinished as finished:
        wall = time.perf_counter() - start_wall
        return TrainResult(Path(config.train.out), finished.iteration, wall, finished.metrics, finished_before=True)
    tcfg = run.config.train  # with an epoch schedule resolved into iterations
    base_lr = peak_lr(run.config)
    if not run.ctx.is_main:
        progress = None  # rank 0 alone reports
    run.model.train()
    if progress is not None:
        progress.start(tcfg.max_iters, run.start_iter)
    run.window_start = fetch_start = time.perf_counter()
    interrupts = StepBoundaryInterrupts()
    interrupts.install()
    try:
        for iteration, (images, targets) in enumerate(run.loader, start=run.start_iter):
            run.data_wait += time.perf_counter() - fetch_start
            lr = learning_rate(tcfg, iteration, base_lr)
            for group in run.step.optimizer.param_groups:
                group["lr"] = lr
            images, targets = batch_to_device(images, targets, run.device)
            loss_dict = forward_backward(run.step, images, targets)
            # The update, the step count, the loss window and the log change together or not at all.
            with interrupts.atomic():
                apply_update(run.step)
                record_step(run, iteration, loss_dict)
                log_step(run, lr, progress)
            evaluate_and_checkpoint(run)
            fetch_start = time.perf_counter()
        save_last(run, run.completed)
    except KeyboardInterrupt:
        save_on_interrupt(run)
        run.log.close()
        raise
    except BaseException:
        run.log.close()  # the TensorBoard writer's file and thread; every record is flushed already
        raise
    finally:
        interrupts.restore()
        if progress is not None:
            progress.stop()
    try:
        metrics = finish(run)
    finally:
        run.log.close()
    return TrainResult(run.layout.root, run.completed, time.perf_counter() - start_wall, metrics)
