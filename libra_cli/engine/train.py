"""The training loop: SGD with warm-up and a step or cosine schedule, AMP on CUDA, logs and checkpoints.

One readable loop. Everything a run produces goes to its run directory (see ``engine/run.py``); a run
is resumed from ``checkpoints/last.pt`` and then continues exactly where it stopped: the batch sampler
is a function of the iteration, and RNG states travel in the checkpoint.
"""

from __future__ import annotations

import json
import math
import random
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from libra_cli.config import RunConfig, TrainConfig, save_config
from libra_cli.data.build import build_eval_dataset, build_train_dataset, resolve_data_paths
from libra_cli.data.coco import collate
from libra_cli.data.sampler import IterationBatchSampler
from libra_cli.engine.checkpoint import (
    atomic_write_text,
    load_checkpoint,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from libra_cli.engine.evaluate import evaluate_model
from libra_cli.engine.run import RunLayout, resolve_device, write_dataset_info
from libra_cli.errors import LibraError
from libra_cli.models.build import build_detector


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


class JsonlLog:
    """Append-only JSONL log; on resume, lines past the resumed iteration are dropped first."""

    def __init__(self, path: Path, resume_from: int | None) -> None:
        self.path = path
        if resume_from is not None and path.exists():
            kept = []
            for line in path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    break  # a torn last line from a crash
                if record.get("iter", 0) <= resume_from:
                    kept.append(line)
            atomic_write_text(path, "".join(f"{line}\n" for line in kept))
        elif resume_from is None:
            atomic_write_text(path, "")

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()


def eql_tail_info(lam: float, dataset_info: dict[str, Any]) -> dict[str, Any]:
    """The tail classes T_λ and the tail ratio TR(λ) of SPEC §5 for the training set."""
    from libra_cli.losses import image_frequency, tail_class_mask, tail_ratio

    freq = image_frequency(torch.tensor(dataset_info["images_per_class"]), dataset_info["num_images"])
    mask = tail_class_mask(freq, lam).tolist()
    names = [name for name, tail in zip(dataset_info["category_names"], mask, strict=True) if tail]
    ratio = tail_ratio(freq, torch.tensor(dataset_info["instances_per_class"]), lam)
    return {"eql_lambda": lam, "tail_classes": names, "tail_ratio": ratio}


def _check_finite(loss_terms: dict[str, float], iteration: int, layout: RunLayout) -> None:
    bad = {name: value for name, value in loss_terms.items() if not math.isfinite(value)}
    if bad:
        terms = ", ".join(f"{k}={v:.4g}" for k, v in loss_terms.items())
        raise NonFiniteLossError(
            f"non-finite loss at iteration {iteration} ({terms}); last good checkpoint kept at "
            f"{layout.last} — try a lower --lr, more warm-up or gradient clipping"
        )


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
    layout = RunLayout(Path(tcfg.out))
    device = resolve_device(tcfg.device)
    if layout.last.exists() and not resume:
        raise LibraError(f"{layout.root}: already holds a run; pass --resume to continue it or choose another --out")
    if resume and not layout.last.exists():
        raise LibraError(f"{layout.root}: nothing to resume (no {layout.last.relative_to(layout.root)})")
    checkpoint = load_checkpoint(layout.last) if resume else None

    paths = resolve_data_paths(config.data)
    train_set = build_train_dataset(config.data, paths)
    val_set = build_eval_dataset(paths.val_ann, paths.val_images, train_set.category_ids, config.data.on_bad_sample)
    images_per_class = train_set.images_per_class()
    dataset_info = {
        "train_ann": str(paths.train_ann),
        "train_images": str(paths.train_images),
        "val_ann": str(paths.val_ann),
        "val_images": str(paths.val_images),
        "format": train_set.format,
        "category_ids": train_set.category_ids,
        "category_names": train_set.category_names(),
        "images_per_class": images_per_class.tolist(),
        "instances_per_class": train_set.instances_per_class().tolist(),
        "num_images": len(train_set),
        "skipped_boxes": train_set.skipped_boxes,
    }

    seed_everything(tcfg.seed)
    if tcfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    model = build_detector(config, train_set.num_classes, images_per_class=images_per_class, num_images=len(train_set))
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=tcfg.lr, momentum=tcfg.momentum, weight_decay=tcfg.weight_decay)
    dtype = amp_dtype(config, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    start_iter, best_ap = 0, -1.0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if "scaler" in checkpoint:
            scaler.load_state_dict(checkpoint["scaler"])
        start_iter = int(checkpoint["iteration"])
        best_ap = float(checkpoint.get("best_ap", -1.0))
        restore_rng_state(checkpoint.get("rng", {}))

    layout.root.mkdir(parents=True, exist_ok=True)
    save_config(config, layout.config)
    write_dataset_info(layout, dataset_info)
    log = JsonlLog(layout.log, resume_from=start_iter if resume else None)
    start_record: dict[str, Any] = {"type": "start", "iter": start_iter, "components": config.libra.enabled()}
    if config.libra.eql:
        start_record["eql"] = eql_tail_info(config.libra.eql_lambda, dataset_info)
    log.write(start_record)
    if on_start is not None:
        on_start(
            {
                **dataset_info,
                **start_record,
                "device": str(device),
                "start_iter": start_iter,
                "model": model,
                "num_val_images": len(val_set),
            }
        )

    def checkpoint_state(iteration: int) -> dict[str, Any]:
        return {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "iteration": iteration,
            "best_ap": best_ap,
            "rng": rng_state(),
        }

    def run_evaluation(iteration: int) -> dict[str, Any]:
        nonlocal best_ap
        metrics = evaluate_model(
            model,
            val_set,
            layout.eval_dir,
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
            save_checkpoint(layout.best, checkpoint_state(iteration))
        return metrics

    sampler = IterationBatchSampler(
        len(train_set), config.data.batch_size, seed=tcfg.seed, start_iter=start_iter, max_iters=tcfg.max_iters
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
    window: list[dict[str, torch.Tensor]] = []
    window_start, data_wait = time.perf_counter(), 0.0
    completed = start_iter  # optimizer steps taken; what a checkpoint records
    fetch_start = time.perf_counter()
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
                loss_dict = model(images, targets)
            loss = sum(loss_dict.values())
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if tcfg.grad_clip is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, tcfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            completed = iteration + 1
            window.append({name: value.detach() for name, value in loss_dict.items()})
            done = completed
            # On CPU a sync is free: check every step. On CUDA only at log intervals (no host sync).
            if device.type == "cpu":
                _check_finite({k: float(v) for k, v in window[-1].items()}, iteration, layout)
            if done % tcfg.log_interval == 0 or done == tcfg.max_iters:
                terms = {name: float(torch.stack([w[name] for w in window]).mean()) for name in window[0]}
                _check_finite(terms, iteration, layout)
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
                if progress is not None:
                    progress.update(done, record)
                window, window_start, data_wait = [], time.perf_counter(), 0.0
            elif progress is not None:
                progress.update(done, None)
            if done % tcfg.checkpoint_interval == 0 and done < tcfg.max_iters:
                save_checkpoint(layout.last, checkpoint_state(done))
            if tcfg.eval_interval and done % tcfg.eval_interval == 0 and done < tcfg.max_iters:
                run_evaluation(done)
                model.train()
            fetch_start = time.perf_counter()
        save_checkpoint(layout.last, checkpoint_state(completed))
    except KeyboardInterrupt:
        # Ctrl-C: keep what was learned so far; `--resume` continues from here.
        save_checkpoint(layout.last, checkpoint_state(completed))
        raise
    finally:
        if progress is not None:
            progress.stop()
    metrics = run_evaluation(completed)
    if not layout.best.exists():
        save_checkpoint(layout.best, checkpoint_state(completed))
    return TrainResult(layout.root, completed, time.perf_counter() - start_wall, metrics)
