"""One training step: forward with losses, backward, gradient clipping and the optimizer's update.

``training_step`` is the step a run takes and ``benchmarks/`` times; the training loop calls its two halves
(``forward_backward`` and ``apply_update``) itself, so that an interrupt never lands between the update and
its bookkeeping. Here too: the autocast dtype a config asks for, a batch moved to the device, and the seeding
of the random draws (anchor and RoI samples, multi-scale sizes) the step makes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from libra_cli.config import RunConfig


def seed_everything(seed: int) -> None:
    """Seed Python's ``random`` and torch's global generator, from which the initial weights and the step's
    random draws come."""
    random.seed(seed)
    torch.manual_seed(seed)


def amp_dtype(config: RunConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``train.amp`` / ``train.amp_dtype`` on ``device``; None (float32) off CUDA."""
    if device.type != "cuda" or not config.train.amp:
        return None
    return torch.bfloat16 if config.train.amp_dtype == "bf16" else torch.float16


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
