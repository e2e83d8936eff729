"""The results file: one Markdown section (``## CPU`` or ``## GPU``) rendered from a run's measurements."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from benchmarks.profiling import TimingSummary, markdown_table, update_section_file
from benchmarks.sampler import SAMPLER_PROPOSALS, SAMPLER_SAMPLES
from benchmarks.workload import Settings
from libra_cli.config import RunConfig

RESULTS_HEADER = (
    "# libra benchmarks\n\n"
    "Written by `python benchmarks/bench.py` (see `benchmarks/README.md`). A CPU run replaces only the\n"
    "CPU section and a GPU run only the GPU section. Times are medians after warm-up; IQR is the\n"
    "interquartile range (first to third quartile).\n"
)
NOT_MEASURED = "not yet measured"


def write_results(path: Path, section: str, body: str) -> None:
    """Replace ``## section`` ("CPU" or "GPU") of the results file with ``body``; keep every other section.

    A missing file starts from the header; a CPU or GPU section never measured reads "not yet measured".
    """
    update_section_file(path, section, body, header=RESULTS_HEADER, required=("CPU", "GPU"), placeholder=NOT_MEASURED)


def render_section(report: dict[str, Any]) -> str:
    """The Markdown body of a CPU or GPU section from the measurements in ``report`` (see ``run_benchmark``)."""
    parts = [
        *run_description(report),
        targets_table(report),
        training_table(report),
        inference_table(report),
        sampler_table(report),
        evaluation_table(report),
        analyses_table(report),
    ]
    return "\n\n".join(parts)


def _ms(summary: TimingSummary) -> tuple[str, str, str]:
    s = summary.scaled(1000)
    return f"{s.median:.1f}", f"{s.q1:.1f}–{s.q3:.1f}", f"{s.minimum:.1f}–{s.maximum:.1f}"


def _memory_cell(memory: Any) -> str:
    if isinstance(memory, str):
        return memory
    if isinstance(memory, dict):
        return f"{memory['peak_mb']:.0f} (+{memory['peak_mb'] - memory['before_mb']:.0f} in steps)"
    return f"{memory:.0f}"


def run_description(report: dict[str, Any]) -> list[str]:
    """When and where it was measured, the command and the settings."""
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
    return parts


def targets_table(report: dict[str, Any]) -> str:
    target_rows = [
        (t.name, "—" if math.isnan(t.value) else f"{t.value:.3f}", f"≤ {t.limit:g}", t.verdict)
        for t in report["targets"]
    ]
    return "### Targets\n\n" + markdown_table(("target", "measured", "limit", "verdict"), target_rows)


def training_table(report: dict[str, Any]) -> str:
    """Section 1: each model's step time, its ratio to torchvision and its peak memory."""
    training: dict[str, TimingSummary] = report["training"]
    reference = training["torchvision"].median
    memory_label = (
        "peak memory, MiB (CUDA max allocated)"
        if report["device"] == "cuda"
        else ("process max RSS, MiB (fresh process per model)")
    )
    rows = []
    for name, summary in training.items():
        rows.append(
            (
                name,
                report["components"][name],
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
    return "### 1. Training step (forward + backward + SGD step)\n\n" + markdown_table(header, rows)


def inference_table(report: dict[str, Any]) -> str:
    inference: dict[str, TimingSummary] = report["inference"]
    batch = report["config"].data.batch_size
    reference = inference["torchvision"].median
    rows = [(name, *_ms(s), f"{batch / s.median:.1f}", f"{s.median / reference:.3f}") for name, s in inference.items()]
    header = ("model", "median ms / batch", "IQR ms", "min–max ms", "images/s", "time vs torchvision")
    return f"### 2. Inference (eval mode, batch {batch})\n\n" + markdown_table(header, rows)


def sampler_table(report: dict[str, Any]) -> str:
    sampler: dict[str, TimingSummary] = report["sampler"]
    rows = [
        (name, f"{s.median:.3f}", f"{s.q1:.3f}–{s.q3:.3f}", f"{s.minimum:.3f}–{s.maximum:.3f}")
        for name, s in sampler.items()
    ]
    return (
        f"### 3. RoI sampler per image ({SAMPLER_PROPOSALS:,} proposals, {SAMPLER_SAMPLES} samples, "
        f"{report['settings'].sampler_images} images)\n\n"
        "IoU distribution: 55 % IoU 0, 30 % in (0, 0.3), 8 % in [0.3, 0.5), "
        "7 % positives (GT boxes included).\n\n"
        + markdown_table(("sampler", "median ms", "IQR ms", "min–max ms"), rows)
    )


def evaluation_table(report: dict[str, Any]) -> str:
    evaluation, num_detections = report["evaluation"]
    num_val = report["num_val_images"]
    return (
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


def analyses_table(report: dict[str, Any]) -> str:
    rows = []
    for name, result in report["analyses"].items():
        if isinstance(result, str):
            rows.append((name, "—", "—", result))
        else:
            summary, images = result
            rows.append((name, str(images), f"{summary.median:.2f}", f"{images / summary.median:.2f}"))
    return (
        "### 5. Analyses (`libra analyze`, full-Libra weights, includes loading the checkpoint)\n\n"
        + markdown_table(("analysis", "images", "median s / call", "images/s"), rows)
    )
