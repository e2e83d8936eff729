"""The training loop: SGD with warm-up and a step or cosine schedule, AMP on CUDA, logs and checkpoints.

One readable loop. Everything a run produces goes to its run directory (see ``rundir.py``); a run
is resumed from ``checkpoints/last.pt`` and then continues exactly where it stopped: the batch sampler
is a function of the iteration, and RNG states travel in the checkpoint.

Under ``torchrun`` the same loop runs data-parallel (``engine/distributed.py``): the model is wrapped in
DistributedDataParallel, each rank takes its share of every global batch, and rank 0 alone writes the
run directory and reports progress.
"""

from __future__ import annotations

import contextlib
import math
import random
import resource
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from libra_cli.config import RunConfig, TrainConfig
from libra_cli.data.build import build_eval_dataset, build_train_dataset, resolve_data_paths
from libra_cli.data.coco import collate
from libra_cli.data.sampler import IterationBatchSampler
from libra_cli.engine.checkpoint import load_checkpoint, restore_rng_state, rng_state, save_checkpoint
from libra_cli.engine.distributed import all_gather_object, average_across_ranks, init_distributed
from libra_cli.engine.evaluate import evaluate_model
from libra_cli.engine.run import dataset_info, eql_frequency_denominator
from libra_cli.errors import LibraError
from libra_cli.io import remove_stale_temporaries
from libra_cli.models.build import build_detector
from libra_cli.rundir import JsonlLog, RunLayout


class NonFiniteLossError(LibraError):
    """Raised when a loss term becomes NaN or infinite; the last good checkpoint is kept."""


def learning_rate(train: TrainConfig, iteration: int) -> float:
    """Learning rate at ``iteration`` (0-based): linear warm-up, then step decay or cosine."""
    if iteration < train.warmup_iters:
        alpha = iteration / train.warmup_iters
        factor = train.warmup_factor * (1 - alpha) + alpha
    else:
        factor = 1.0
    if train.schedule == "step":
        drops = sum(iteration >= round(m * train.max_iters) for m in train.lr_milestones)
        return train.lr * factor * 0.1**drops
    progress = min(1.0, iteration / max(1, train.max_iters))
    return train.lr * factor * 0.5 * (1 + math.cos(math.pi * progress))


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


class NoLog:
    """The log of ranks other than 0: they compute what rank 0 writes."""

    def write(self, record: dict[str, Any]) -> None:
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


def train(
    config: RunConfig,
    *,
    resume: bool = False,
    on_start: Callable[[dict[str, Any]], None] | None = None,
    progress: Any | None = None,
) -> TrainResult:
    """Train the detector described by ``config`` into ``config.train.out``.

    ``on_start(info)`` receives a summary (dataset sizes, components, tail classes) before the first step;
    ``progress`` is an optional object with ``start(total, completed)``, ``update(iteration, fields)``
    and ``stop()`` (the CLI passes a rich progress bar).
    """
    start_wall = time.perf_counter()
    tcfg = config.train
    layout = RunLayout(tcfg.out)
    ctx = init_distributed(tcfg.device)
    device = ctx.device
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

    paths = resolve_data_paths(config.data)
    train_set = build_train_dataset(config.data, paths)
    val_set = build_eval_dataset(paths.val_ann, paths.val_images, train_set.category_ids, config.data.on_bad_sample)
    # Every image file is checked before any work starts; "skip" drops bad ones and counts them.
    train_set.verify_images()
    val_set.verify_images()
    for name, dataset in (("training", train_set), ("validation", val_set)):
        if len(dataset) == 0:
            raise LibraError(f"{dataset.ann_file}: the {name} set holds no usable images")
    images_per_class = train_set.images_per_class()
    run_dataset = dataset_info(paths, train_set)
    skipped = {
        "train_boxes": train_set.skipped_boxes,
        "train_images": train_set.skipped_images,
        "val_boxes": val_set.skipped_boxes,
        "val_images": val_set.skipped_images,
    }

    seed_everything(tcfg.seed)
    if tcfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    model = build_detector(
        config,
        train_set.num_classes,
        images_per_class=images_per_class,
        num_images=eql_frequency_denominator(run_dataset, config.libra.eql_freq),
    )
    model.to(device)
    if ctx.enabled:
        # Identical initial weights on every rank (DDP also broadcasts rank 0's), but each rank draws its
        # own anchor and RoI samples.
        torch.manual_seed(tcfg.seed + 1_000_003 * ctx.rank)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=tcfg.lr, momentum=tcfg.momentum, weight_decay=tcfg.weight_decay)
    dtype = amp_dtype(config, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    start_iter, best_ap = 0, -1.0
    window: list[dict[str, torch.Tensor]] = []  # loss terms of the steps since the last log record
    if checkpoint is not None:
        try:
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise LibraError(f"{layout.last}: does not match the configured detector ({first})") from exc
        if "scaler" in checkpoint:
            scaler.load_state_dict(checkpoint["scaler"])
        start_iter = int(checkpoint["iteration"])
        best_ap = float(checkpoint.get("best_ap", -1.0))
        per_rank = checkpoint.get("per_rank")
        own = per_rank[ctx.rank] if isinstance(per_rank, list) and len(per_rank) == ctx.world_size else checkpoint
        restore_rng_state(own.get("rng", {}))
        window = [{name: value.to(device) for name, value in step.items()} for step in own.get("log_window", [])]
    # The random state at the last step boundary, which is what a checkpoint of `completed` steps holds
    # even when Ctrl-C lands in the middle of the next step, after its samplers have drawn.
    step_rng = rng_state()
    # The training step runs through DDP, which averages gradients over the ranks; checkpoints and
    # evaluation use the module itself.
    forward_model = model
    if ctx.enabled:
        forward_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    log: JsonlLog | NoLog = NoLog()
    start_record: dict[str, Any] = {
        "type": "start",
        "iter": start_iter,
        "components": config.libra.enabled(),
        "world_size": ctx.world_size,
        "skipped": skipped,
    }
    if config.libra.eql:
        start_record["eql"] = eql_tail_info(config.libra.eql_lambda, run_dataset, config.libra.eql_freq)
    if ctx.is_main:
        layout.root.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(layout.checkpoints)
        layout.write_config(config)
        layout.write_dataset_info(run_dataset)
        log = layout.open_log(resume_from=start_iter if resume else None)
        log.write(start_record)
    if on_start is not None and ctx.is_main:
        on_start(
            {
                **run_dataset,
                **start_record,
                "device": str(device),
                "start_iter": start_iter,
                "model": model,
                "num_val_images": len(val_set),
            }
        )
    if not ctx.is_main:
        progress = None

    def rank_state() -> dict[str, Any]:
        """What differs between ranks: the random generators and the loss terms not yet logged."""
        log_window = [{name: value.cpu() for name, value in step.items()} for step in window]
        return {"rng": step_rng, "log_window": log_window}

    def checkpoint_state(iteration: int, per_rank: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            # The learning rate is a pure function of the iteration: this is the whole schedule state.
            "scheduler": {"type": tcfg.schedule, "iteration": iteration},
            # The batch sampler is a pure function of (seed, iteration): this is the data position.
            "data": {
                "seed": tcfg.seed,
                "global_batch_size": config.data.batch_size,
                "next_iteration": iteration,
            },
            "iteration": iteration,
            "best_ap": best_ap,
            "world_size": ctx.world_size,
            **rank_state(),  # this rank's (rank 0's)
        }
        if per_rank is not None:
            state["per_rank"] = per_rank
        return state

    def save_last(iteration: int) -> None:
        """Write ``last.pt``; every rank calls this at the same iterations (it gathers their states)."""
        per_rank = all_gather_object(rank_state()) if ctx.enabled else None
        if ctx.is_main:
            save_checkpoint(layout.last, checkpoint_state(iteration, per_rank))

    def run_evaluation(iteration: int) -> dict[str, Any]:
        nonlocal best_ap
        metrics = evaluate_model(
            model,
            val_set,
            layout,
            device=device,
            batch_size=config.data.batch_size,
            num_workers=config.data.num_workers,
            autocast_dtype=dtype,
            extra={"iteration": iteration, "checkpoint": "training"},
        )
        ap = metrics["summary"].get("AP")
        log.write({"type": "eval", "iter": iteration, **{k: v for k, v in metrics["summary"].items()}})
        if ap is not None and ap > best_ap:
            best_ap = ap
            if ctx.is_main:
                save_checkpoint(layout.best, checkpoint_state(iteration))
        return metrics

    sampler = IterationBatchSampler(
        len(train_set),
        config.data.batch_size,
        seed=tcfg.seed,
        start_iter=start_iter,
        max_iters=tcfg.max_iters,
        rank=ctx.rank,
        world_size=ctx.world_size,
    )
    loader = torch.utils.data.DataLoader(
        train_set,
        batch_sampler=sampler,
        num_workers=config.data.num_workers,
        collate_fn=collate,
        pin_memory=device.type == "cuda",
        # Its own generator: creating the loader's iterator must not draw from the global RNG, whose
        # state is restored on resume and drives the RPN/RoI samplers.
        generator=torch.Generator().manual_seed(tcfg.seed),
    )
    model.train()
    if progress is not None:
        progress.start(tcfg.max_iters, start_iter)
    window_start, data_wait = time.perf_counter(), 0.0
    completed = start_iter  # optimizer steps taken; what a checkpoint records
    fetch_start = time.perf_counter()
    interrupts = StepBoundaryInterrupts()
    interrupts.install()
    try:
        for iteration, (images, targets) in enumerate(loader, start=start_iter):
            data_wait += time.perf_counter() - fetch_start
            lr = learning_rate(tcfg, iteration)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images = [image.to(device, non_blocking=True) for image in images]
            targets = [
                {"boxes": t["boxes"].to(device, non_blocking=True), "labels": t["labels"].to(device, non_blocking=True)}
                for t in targets
            ]
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss_dict = forward_model(images, targets)
            loss = sum(loss_dict.values())
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if tcfg.grad_clip is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, tcfg.grad_clip)
            # The update, the step count, the loss window and the log change together or not at all.
            with interrupts.atomic():
                scaler.step(optimizer)
                scaler.update()
                completed = iteration + 1
                step_rng = rng_state()
                window.append({name: value.detach() for name, value in loss_dict.items()})
                done = completed
                # On CPU a sync is free: check every step. On CUDA only at log intervals and before a
                # checkpoint (no host sync otherwise). Ranks check the same averaged values: all stop together.
                if device.type == "cpu":
                    _check_finite(_mean_terms(window[-1:]), done, layout)
                if done % tcfg.log_interval == 0 or done == tcfg.max_iters:
                    terms = _mean_terms(window)
                    _check_finite(terms, done, layout)
                    elapsed = time.perf_counter() - window_start
                    record = {
                        "type": "train",
                        "iter": done,
                        "lr": lr,
                        "loss": sum(terms.values()),
                        **terms,
                        "time_per_iter": elapsed / len(window),
                        "data_time_per_iter": data_wait / len(window),
                        "memory_mb": round(peak_memory_mb(device), 1),
                    }
                    log.write(record)
                    window, window_start, data_wait = [], time.perf_counter(), 0.0
                    if progress is not None:
                        progress.update(done, record)
                elif progress is not None:
                    progress.update(done, None)
            before_end = done < tcfg.max_iters
            evaluate_now = bool(tcfg.eval_interval) and done % tcfg.eval_interval == 0 and before_end
            checkpoint_now = done % tcfg.checkpoint_interval == 0 and before_end
            if (evaluate_now or checkpoint_now) and window and device.type != "cpu":
                _check_finite(_mean_terms(window), done, layout)  # never evaluate or save diverged weights
            if evaluate_now:
                run_evaluation(done)
                model.train()
            if checkpoint_now:  # after the evaluation, so that the checkpoint carries its best AP
                save_last(done)
            fetch_start = time.perf_counter()
        save_last(completed)
    except KeyboardInterrupt:
        # Ctrl-C: keep what was learned so far; `--resume` continues from here. No collective call here:
        # the ranks may have been interrupted at different points.
        if ctx.is_main:
            save_checkpoint(layout.last, checkpoint_state(completed))
        raise
    finally:
        interrupts.restore()
        if progress is not None:
            progress.stop()
    metrics = run_evaluation(completed)
    if ctx.is_main and not layout.best.exists():
        save_checkpoint(layout.best, checkpoint_state(completed))
    return TrainResult(layout.root, completed, time.perf_counter() - start_wall, metrics)
