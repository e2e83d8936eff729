"""What a training run carries from its setup through the loop: its data, its step, its log and the counters
that change as it runs (a checkpoint is made of them, ``engine/resume.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from libra_cli.config import RunConfig
from libra_cli.data.coco import DetectionDataset
from libra_cli.engine.distributed import DistributedContext
from libra_cli.engine.step import TrainStep
from libra_cli.rundir import JsonlLog, RunLayout


class NoLog:
    """The log of ranks other than 0: they compute what rank 0 writes."""

    def write(self, record: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


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
    completed: int = field(init=False)  # optimizer steps taken, from start_iter on; what a checkpoint records
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

    def __post_init__(self) -> None:
        self.completed = self.start_iter
