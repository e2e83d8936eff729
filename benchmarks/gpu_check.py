"""Everything to run once on a GPU machine, in one command, within a time budget.

    python benchmarks/gpu_check.py --out gpu_check [--device cuda|cpu] [--smoke] [--budget-s 480]

Stages, in this order (a stage that no longer fits the remaining budget is skipped, with the reason):

a. ``cuda_tests``: ``pytest -m cuda`` in a subprocess (``tests/cuda/``: training steps in fp32, bf16 and
   fp16 autocast, CUDA against CPU losses, RoIAlign, samplers and evaluation on CUDA);
b. ``benchmark``: the papers' scale — Faster R-CNN ResNet-50-FPN (256 channels, frozen BN, random
   weights) at 1333 × 800, batch 8: training images/s and peak memory of plain torchvision fp32, libra
   switches-off fp32, switches-off bf16 autocast (and channels-last), full Libra bf16; inference images/s
   at batch 1 and 8; the IoU-balanced sampler per image at 2,000 proposals (``--smoke``: tiny sizes);
c. ``training``: ``libra train`` on the synthetic benchmark (400 iterations at 512 px, AMP on CUDA;
   ``--smoke``: a few iterations of a tiny detector): first and last loss, AP50, wall time;
d. ``torchrun``: ``torchrun --nproc_per_node 1`` with NCCL for a few iterations (skipped on the CPU).

Writes ``OUT/gpu_check.json`` (every stage: ``status`` ok / failed / skipped, ``reason``, ``seconds``
and its results) and ``OUT/gpu_check.md``, a section ready for ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.profiling import log, summarize, timed  # noqa: E402
from benchmarks.sampler import time_samplers  # noqa: E402
from benchmarks.training import make_train_step  # noqa: E402
from benchmarks.workload import QUICK_SPEC, REPOSITORY, Settings, prepare_model, training_batches  # noqa: E402
from libra_cli.config import RunConfig, apply_overrides, load_config  # noqa: E402
from libra_cli.data.build import benchmark_paths, build_train_dataset, ensure_benchmark  # noqa: E402
from libra_cli.engine.step import training_step  # noqa: E402
from libra_cli.models.build import build_detector  # noqa: E402
from libra_cli.models.reference import torchvision_faster_rcnn  # noqa: E402

DEFAULT_BUDGET_S = 480.0
# Least seconds a stage needs to be started (full run, smoke run); a stage is skipped below it.
STAGE_MIN_S = {
    "cuda_tests": (120.0, 5.0),
    "benchmark": (150.0, 10.0),
    "training": (120.0, 10.0),
    "torchrun": (45.0, 5.0),
}
LIBRA_FULL = ("iou_sampling", "bfp", "balanced_l1")
SWITCHES = ("iou_sampling", "bfp", "balanced_l1", "eql", "ohem")


class Budget:
    """Wall-clock budget of the whole check, measured from its start."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = time.perf_counter()

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)


# --- stage a: the CUDA tests --------------------------------------------------------------------------


def stage_cuda_tests(device: torch.device, smoke: bool, out: Path, budget: Budget) -> dict[str, Any]:
    if device.type != "cuda":
        return {"status": "skipped", "reason": "needs a CUDA device (--device cuda)"}
    command = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "tests/cuda", "-p", "no:cacheprovider"]
    timeout = max(10.0, budget.left() - 5)
    try:
        result = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "reason": f"pytest did not finish within {timeout:.0f} s"}
    (out / "cuda_tests.log").write_text(result.stdout + result.stderr, encoding="utf-8")
    last = (result.stdout.strip().splitlines() or ["no output"])[-1]
    return {
        "status": "ok" if result.returncode == 0 else "failed",
        "command": shlex.join(command),
        "returncode": result.returncode,
        "summary": last,
        "log": "cuda_tests.log",
    }


# --- stage b: the benchmark at the papers' scale ---------------------------------------------------


def paper_scale_config(synth_dir: Path, device: torch.device, smoke: bool) -> RunConfig:
    """The COCO recipe's model (experiments/coco_faster_rcnn_r50_fpn_1x.yaml) with random weights."""
    recipe = REPOSITORY / "experiments" / "coco_faster_rcnn_r50_fpn_1x.yaml"
    paths = benchmark_paths(synth_dir)
    data = {
        "train_ann": str(paths.train_ann),
        "train_images": str(paths.train_images),
        "val_ann": str(paths.val_ann),
        "val_images": str(paths.val_images),
        "batch_size": 2 if smoke else 8,
        "num_workers": 0,
    }
    model: dict[str, Any] = {"backbone_weights": None, "weights": None}
    if smoke:
        model.update(
            backbone="resnet18", fpn_channels=32, min_size=96, max_size=128, box_head_dim=64,
            rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=100,
            rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50, roi_batch_size_per_image=64,
        )  # fmt: skip
    train = {"device": device.type, "out": "unused", "epochs": None, "lr_milestones_epochs": None, "max_iters": 10}
    return load_config(str(recipe), {"data": data, "model": model, "train": train})


def with_switches(config: RunConfig, switches: tuple[str, ...]) -> RunConfig:
    return apply_overrides(config, {"libra": {name: name in switches for name in SWITCHES}}, "gpu_check")


def measure_training(
    build: Callable[[], torch.nn.Module],
    config: RunConfig,
    batches: list,
    device: torch.device,
    autocast: torch.dtype | None,
    channels_last: bool,
    warmup: int,
    iters: int,
) -> dict[str, Any]:
    """Images/s (median step) and peak memory of training steps of a freshly built model."""
    model = prepare_model(build(), device, channels_last).train()
    step = make_train_step(model, config, autocast)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    seconds = []
    for k in range(warmup + iters):
        images, targets = batches[k % len(batches)]
        torch.manual_seed(k)
        _, elapsed = timed(partial(training_step, step, images, targets), device)
        if k >= warmup:
            seconds.append(elapsed)
    median = summarize(seconds).median
    result = {"median_step_s": median, "images_per_s": len(batches[0][0]) / median, "steps": iters}
    if device.type == "cuda":
        result["peak_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    del model, step
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def measure_inference(model: torch.nn.Module, images: list, device, autocast, warmup: int, iters: int) -> dict:
    model.eval()
    seconds = []
    with torch.no_grad(), torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
        for k in range(warmup + iters):
            _, elapsed = timed(partial(model, images), device)
            if k >= warmup:
                seconds.append(elapsed)
    median = summarize(seconds).median
    return {"median_batch_s": median, "images_per_s": len(images) / median}


def stage_benchmark(device: torch.device, smoke: bool, out: Path, budget: Budget) -> dict[str, Any]:
    synth_dir = out / "synth"
    ensure_benchmark(synth_dir, QUICK_SPEC)
    config = paper_scale_config(synth_dir, device, smoke)
    paths = benchmark_paths(synth_dir)
    train_set = build_train_dataset(config.data, paths)
    aspect = config.model.max_size / config.model.min_size
    batches = training_batches(train_set, config.data.batch_size, 2, aspect, device)
    warmup, iters = (1, 2) if smoke else (3, 10)
    num_classes = train_set.num_classes
    bf16 = torch.bfloat16

    def libra(switches: tuple[str, ...]) -> torch.nn.Module:
        torch.manual_seed(0)
        return build_detector(with_switches(config, switches), num_classes)

    def torchvision_model() -> torch.nn.Module:
        model = torchvision_faster_rcnn(config, num_classes)
        model.load_state_dict(libra(()).state_dict())
        return model

    variants: list[tuple[str, Callable[[], torch.nn.Module], torch.dtype | None, bool]] = [
        ("torchvision fp32", torchvision_model, None, False),
        ("libra-off fp32", partial(libra, ()), None, False),
        ("libra-off bf16", partial(libra, ()), bf16, False),
        ("libra-off bf16 channels-last", partial(libra, ()), bf16, True),
        ("libra-full bf16", partial(libra, LIBRA_FULL), bf16, False),
    ]
    training: dict[str, Any] = {}
    for name, build, autocast, channels_last in variants:
        if autocast is not None and device.type != "cuda":
            training[name] = {"status": "skipped", "reason": "bf16 autocast variants are measured on CUDA only"}
            continue
        if budget.left() < (5 if smoke else 60):
            training[name] = {"status": "skipped", "reason": f"budget: {budget.left():.0f} s left"}
            continue
        log(f"benchmark: training {name}")
        training[name] = {"status": "ok", **measure_training(
            build, config, batches, device, autocast, channels_last, warmup, iters
        )}  # fmt: skip

    inference: dict[str, Any] = {}
    autocast = bf16 if device.type == "cuda" else None
    model = prepare_model(libra(()), device, False)
    for batch_size in (1, config.data.batch_size):
        images = [image for batch in batches for image in batch[0]][:batch_size]
        log(f"benchmark: inference batch {batch_size}")
        inference[f"libra-off batch {batch_size}"] = measure_inference(model, images, device, autocast, warmup, iters)
    del model

    sampler_settings = Settings(device=device.type, warmup=warmup, sampler_images=20 if smoke else 500)
    sampler = time_samplers(with_switches(config, LIBRA_FULL), sampler_settings, device)
    return {
        "status": "ok",
        "settings": {
            "backbone": config.model.backbone,
            "fpn_channels": config.model.fpn_channels,
            "norm": config.model.norm,
            "input": f"{config.model.max_size}x{config.model.min_size}",
            "batch_size": config.data.batch_size,
            "warmup": warmup,
            "iters": iters,
        },
        "training": training,
        "inference": inference,
        "sampler_ms_per_image": {name: summary.median for name, summary in sampler.items()},
    }


def subprocess_env(smoke: bool) -> dict[str, str]:
    """The environment of a ``libra train`` subprocess: never downloads; a smoke run takes one thread."""
    env = {**os.environ, "LIBRA_OFFLINE": "1"}
    if smoke:
        env["OMP_NUM_THREADS"] = "1"
    return env


# --- stage c: a short training run ---------------------------------------------------------------------


def run_logged(
    command: list[str], log: Path, budget: Budget, smoke: bool
) -> tuple[subprocess.CompletedProcess | None, float]:
    """Run ``command`` in the repository within the time the budget has left, its output written to ``log``.

    Returns (the finished process, wall seconds), or (None, the timeout) when it did not finish in time."""
    timeout = max(10.0, budget.left() - 5)
    start = time.perf_counter()
    try:
        result = subprocess.run(
            command, cwd=REPOSITORY, capture_output=True, text=True, timeout=timeout, check=False,
            env=subprocess_env(smoke),
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return None, timeout
    log.write_text(result.stdout + result.stderr, encoding="utf-8")
    return result, time.perf_counter() - start


def stage_training(device: torch.device, smoke: bool, out: Path, budget: Budget) -> dict[str, Any]:
    run_dir = out / "training-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    if smoke:
        synth_dir = out / "synth"
        ensure_benchmark(synth_dir, QUICK_SPEC)
        paths = benchmark_paths(synth_dir)
        data = ["--train-ann", paths.train_ann, "--train-images", paths.train_images,
                "--val-ann", paths.val_ann, "--val-images", paths.val_images]  # fmt: skip
        sizes = ["--image-size", "64", "--max-iters", "3", "--batch-size", "2", "--warmup-iters", "1",
                 "--backbone", "resnet18",
                 "--set", "model.fpn_channels=32", "--set", "model.box_head_dim=64",
                 "--set", "model.rpn_post_nms_top_n_train=100",
                 "--set", "model.roi_batch_size_per_image=64"]  # fmt: skip
    else:
        data = ["--synth-dir", out / "synth-demo"]
        sizes = ["--image-size", "512", "--max-iters", "400"]
    amp = ["--amp"] if device.type == "cuda" else ["--no-amp"]
    command = [sys.executable, "-m", "libra_cli", "train", *map(str, data), *sizes, *amp,
               "--device", device.type, "--workers", "0", "--log-interval", "1" if smoke else "20",
               "--out", str(run_dir)]  # fmt: skip
    result, wall = run_logged(command, out / "training.log", budget, smoke)
    if result is None:
        return {"status": "failed", "reason": f"libra train did not finish within {wall:.0f} s"}
    records = []
    log_file = run_dir / "log.jsonl"
    if log_file.is_file():
        records = [json.loads(line) for line in log_file.read_text().splitlines() if line.strip()]
    losses = [r["loss"] for r in records if r.get("type") == "train"]
    metrics_file = run_dir / "eval" / "metrics.json"
    ap50 = None
    if metrics_file.is_file():
        ap50 = json.loads(metrics_file.read_text()).get("summary", {}).get("AP50")
    ok = result.returncode == 0 and bool(losses) and all(math.isfinite(x) for x in losses)
    return {
        "status": "ok" if ok else "failed",
        "command": shlex.join(command),
        "returncode": result.returncode,
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "ap50": ap50,
        "wall_s": wall,
        "log": "training.log",
    }


# --- stage d: torchrun with NCCL ---------------------------------------------------------------------


def stage_torchrun(device: torch.device, smoke: bool, out: Path, budget: Budget) -> dict[str, Any]:
    if device.type != "cuda":
        return {"status": "skipped", "reason": "NCCL needs a CUDA device (--device cuda)"}
    synth_dir = out / "synth"
    ensure_benchmark(synth_dir, QUICK_SPEC)
    paths = benchmark_paths(synth_dir)
    run_dir = out / "torchrun-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "-m", "libra_cli", "train",
               "--train-ann", str(paths.train_ann), "--train-images", str(paths.train_images),
               "--val-ann", str(paths.val_ann), "--val-images", str(paths.val_images),
               "--image-size", "96", "--max-iters", "5", "--batch-size", "2", "--workers", "0",
               "--device", "cuda", "--amp", "--out", str(run_dir)]  # fmt: skip
    result, wall = run_logged(command, out / "torchrun.log", budget, smoke)
    if result is None:
        return {"status": "failed", "reason": f"torchrun did not finish within {wall:.0f} s"}
    return {
        "status": "ok" if result.returncode == 0 else "failed",
        "backend": "nccl",
        "command": shlex.join(command),
        "returncode": result.returncode,
        "wall_s": wall,
        "log": "torchrun.log",
    }


STAGES: dict[str, Callable[[torch.device, bool, Path, Budget], dict[str, Any]]] = {
    "cuda_tests": stage_cuda_tests,
    "benchmark": stage_benchmark,
    "training": stage_training,
    "torchrun": stage_torchrun,
}


# --- report --------------------------------------------------------------------------------------


def machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpu_cores": os.cpu_count(),
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        try:
            driver = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20, check=False,
            ).stdout.strip()  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            driver = ""
        info["driver"] = driver or "unknown"
    return info


def _fmt(value: Any, digits: int = 2) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return "—" if value is None else str(value)


def render_markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"## GPU check ({report['device']})",
        "",
        f"Measured {report['date']}, {report['wall_s']:.0f} s of a {report['budget_s']:.0f} s budget"
        + (" (smoke run: tiny sizes, not a measurement)" if report["smoke"] else "")
        + ".",
        "",
        f"- device: {m.get('gpu', 'CPU')}; driver {m.get('driver', '—')}",
        f"- torch {m['torch']}, CUDA {m['cuda']}, Python {m['python']}, {m['cpu_cores']} CPU cores",
        "",
        "```",
        report["command"],
        "```",
        "",
        "| stage | status | notes |",
        "|---|---|---|",
    ]
    for name, stage in report["stages"].items():
        note = stage.get("reason") or stage.get("summary") or ""
        if name == "training" and stage["status"] != "skipped":
            note = (f"loss {_fmt(stage.get('loss_first'), 3)} → {_fmt(stage.get('loss_last'), 3)}, "
                    f"AP50 {_fmt(stage.get('ap50'), 3)}, {_fmt(stage.get('wall_s'), 0)} s")  # fmt: skip
        lines.append(f"| {name} | {stage['status']} | {note} |")
    bench = report["stages"].get("benchmark", {})
    if bench.get("status") == "ok":
        s = bench["settings"]
        lines += [
            "",
            f"Benchmark: Faster R-CNN {s['backbone']}-FPN ({s['fpn_channels']} channels, {s['norm']}), "
            f"{s['input']} inputs, batch {s['batch_size']}, median of {s['iters']} steps after {s['warmup']}.",
            "",
            "| training | images/s | peak memory MiB |",
            "|---|---|---|",
        ]
        for name, row in bench["training"].items():
            if row.get("status") == "ok":
                lines.append(f"| {name} | {_fmt(row['images_per_s'])} | {_fmt(row.get('peak_memory_mib'), 0)} |")
            else:
                lines.append(f"| {name} | skipped: {row['reason']} | |")
        lines += ["", "| inference | images/s |", "|---|---|"]
        lines += [f"| {name} | {_fmt(row['images_per_s'])} |" for name, row in bench["inference"].items()]
        lines += ["", "| RoI sampler, 2,000 proposals | ms per image |", "|---|---|"]
        lines += [f"| {name} | {_fmt(ms, 3)} |" for name, ms in bench["sampler_ms_per_image"].items()]
    return "\n".join(lines) + "\n"


def run_check(args: argparse.Namespace, command: str) -> dict[str, Any]:
    budget = Budget(args.budget_s)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check.py: error: --device cuda but torch.cuda.is_available() is false")
    if args.smoke and device.type == "cpu":
        torch.set_num_threads(1)  # tiny tensors: one thread, no waiting on a busy machine's other cores
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    stages: dict[str, dict[str, Any]] = {}
    for name, stage in STAGES.items():
        needed = STAGE_MIN_S[name][1 if args.smoke else 0]
        if budget.left() < needed:
            stages[name] = {"status": "skipped", "reason": f"budget: {budget.left():.0f} s left, needs {needed:.0f} s"}
            log(f"{name}: skipped ({stages[name]['reason']})")
            continue
        log(f"{name}: start ({budget.left():.0f} s of budget left)")
        start = time.perf_counter()
        try:
            result = stage(device, args.smoke, out, budget)
        except Exception as exc:  # a failing stage is reported; the others still run
            result = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
        result["seconds"] = time.perf_counter() - start
        stages[name] = result
        log(f"{name}: {result['status']} {result.get('reason', '')}")
    return {
        "command": command,
        "device": device.type,
        "smoke": args.smoke,
        "budget_s": args.budget_s,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "wall_s": time.perf_counter() - budget.start,
        "machine": machine(device),
        "stages": stages,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="benchmarks/gpu_check.py")
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and a few iterations")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S, help="wall-clock budget in seconds")
    args = parser.parse_args(argv)
    report = run_check(args, shlex.join(["python", "benchmarks/gpu_check.py", *argv]))
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    markdown = render_markdown(report)
    (args.out / "gpu_check.md").write_text(markdown, encoding="utf-8")
    print(markdown)
    failed = [name for name, stage in report["stages"].items() if stage["status"] == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
