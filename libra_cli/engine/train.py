"""The training loop: SGD with warm-up and a step or cosine schedule, AMP on CUDA, logs and checkpoints.

Three parts, called from one short loop in ``train``: the setup (``engine/setup.py``: data, model,
optimizer, resume state, gathered in a ``TrainingRun``, ``engine/training_run.py``), the step
(``engine/step.py``: ``forward_backward`` and ``apply_update``, together ``training_step``, which the
benchmark times) at the learning rate of ``engine/schedule.py``, and the hooks of this file (log,
evaluation, checkpoints; what a checkpoint holds and how a run resumes from it is ``engine/resume.py``).
Ctrl-C and SIGTERM wait for the end of a step's bookkeeping (``engine/interrupts.py``).

Everything a run produces goes to its run directory (see ``rundir.py``); a run
is resumed from ``checkpoints/last.pt`` and then continues exactly where it stopped: the batch sampler
is a function of the iteration, and RNG states travel in the checkpoint.

Under ``torchrun`` the same loop runs data-parallel (``engine/distributed.py``): the model is wrapped in
DistributedDataParallel, each rank takes its share of every global batch, and rank 0 alone writes the
run directory and reports progress.
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from libra_cli.config import RunConfig
from libra_cli.engine.checkpoint import rng_state, save_checkpoint, weights_state
from libra_cli.engine.distributed import average_across_ranks
from libra_cli.engine.evaluate import evaluate_model
from libra_cli.engine.interrupts import StepBoundaryInterrupts
from libra_cli.engine.resume import RunFinished, save_last, save_on_interrupt
from libra_cli.engine.schedule import learning_rate, peak_lr
from libra_cli.engine.setup import setup_training
from libra_cli.engine.step import apply_update, batch_to_device, forward_backward
from libra_cli.engine.training_run import TrainingRun
from libra_cli.errors import LibraError
from libra_cli.rundir import RunLayout


class NonFiniteLossError(LibraError):
    """Raised when a loss term becomes NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    run_dir: Path
    iterations: int
    wall_s: float
    metrics: dict[str, Any] | None
    # --resume of a run already trained to max_iters and evaluated: nothing ran, ``metrics`` are its saved ones
    finished_before: bool = False


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


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


def _mean_terms(window: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Each loss term averaged over the logged steps and over the ranks (the global batch's loss)."""
    means = {name: torch.stack([step[name] for step in window]).mean() for name in window[0]}
    return {name: float(value) for name, value in average_across_ranks(means).items()}


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
