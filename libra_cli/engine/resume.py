"""A run's training state in ``checkpoints/last.pt``: what it holds, the checks before a run resumes from it,
and restoring it, so that a resumed run continues exactly where it stopped.

The file format, the atomic write and the safe load are ``engine/checkpoint.py``'s; the schedule a resumed
run keeps is ``engine/schedule.py``'s.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from libra_cli.config import RunConfig
from libra_cli.engine.checkpoint import load_checkpoint, restore_rng_state, save_checkpoint
from libra_cli.engine.distributed import DistributedContext, all_gather_object
from libra_cli.engine.step import TrainStep
from libra_cli.engine.training_run import TrainingRun
from libra_cli.errors import LibraError
from libra_cli.rundir import RunLayout


class RunFinished(Exception):
    """Raised by :func:`setup_training` for ``--resume`` of a run already trained and evaluated."""

    def __init__(self, iteration: int, metrics: dict[str, Any]) -> None:
        super().__init__(f"finished at iteration {iteration}")
        self.iteration = iteration
        self.metrics = metrics


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
