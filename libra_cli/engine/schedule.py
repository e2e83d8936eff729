"""The learning-rate schedule: epochs counted in iterations, the linear scaling rule, warm-up with step decay
or cosine, and the schedule a resumed run keeps.

The learning rate is a pure function of the iteration and these settings, so a checkpoint's iteration is the
whole schedule state; ``check_resumed_schedule`` makes sure a resumed run keeps the settings it started with.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from libra_cli.config import RunConfig, TrainConfig, flag_of
from libra_cli.errors import LibraError
from libra_cli.rundir import RunLayout


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
