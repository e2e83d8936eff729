"""Helpers for speed and memory measurements: robust timing summaries, targets, results-file sections.

Used by the benchmark scripts only (``bench.py`` and its sections, ``side_by_side.py``).

Timings on a shared machine have outliers (another process takes the core for a moment), so a
measurement is summarised by its median and interquartile range rather than its mean. Quantiles use
linear interpolation between the closest ranks: for sorted values x_0 ≤ … ≤ x_{n−1} the p-quantile
is x_⌊h⌋ + (h − ⌊h⌋)·(x_⌊h⌋+1 − x_⌊h⌋) with h = (n − 1)·p (NumPy's default "linear" method).
"""

from __future__ import annotations

import math
import os
import platform
import re
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision

from libra_cli.engine.machine import cpu_model_name


@dataclass(frozen=True)
class TimingSummary:
    """Median, quartiles and range of repeated measurements (same unit as the inputs)."""

    median: float
    q1: float
    q3: float
    minimum: float
    maximum: float
    count: int

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    def scaled(self, factor: float) -> TimingSummary:
        """The same summary in another unit, e.g. ``scaled(1000)`` for seconds → milliseconds."""
        return TimingSummary(
            self.median * factor,
            self.q1 * factor,
            self.q3 * factor,
            self.minimum * factor,
            self.maximum * factor,
            self.count,
        )


def quantile(sorted_values: Sequence[float], p: float) -> float:
    """The p-quantile (0 ≤ p ≤ 1) of already sorted values, by linear interpolation (see module doc)."""
    if not sorted_values:
        raise ValueError("quantile of an empty sequence")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must lie in [0, 1], got {p}")
    h = (len(sorted_values) - 1) * p
    lower = math.floor(h)
    upper = min(lower + 1, len(sorted_values) - 1)
    return sorted_values[lower] + (h - lower) * (sorted_values[upper] - sorted_values[lower])


def summarize(values: Sequence[float]) -> TimingSummary:
    """Median, first and third quartile, min and max of ``values`` (any order)."""
    ordered = sorted(float(v) for v in values)
    if not ordered:
        raise ValueError("cannot summarise an empty list of measurements")
    return TimingSummary(
        median=quantile(ordered, 0.5),
        q1=quantile(ordered, 0.25),
        q3=quantile(ordered, 0.75),
        minimum=ordered[0],
        maximum=ordered[-1],
        count=len(ordered),
    )


def meets_target(value: float, limit: float) -> bool:
    """A target of the form ``value ≤ limit`` (a ratio or a time); NaN (not measured) never meets it."""
    return not math.isnan(value) and value <= limit


def target_verdict(value: float, limit: float) -> str:
    if math.isnan(value):
        return "not measured"
    return "met" if meets_target(value, limit) else "not met"


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a wall-clock interval covers the kernels it launched."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    """Run ``function()`` and return (its result, wall seconds), synchronising CUDA on both sides."""
    synchronize(device)
    start = time.perf_counter()
    result = function()
    synchronize(device)
    return result, time.perf_counter() - start


def process_max_rss_mb() -> float:
    """The high-water mark of this process's resident memory, in MiB (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table; every cell is rendered with ``str``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _section_heading(title: str) -> re.Pattern[str]:
    return re.compile(rf"^## {re.escape(title)}[ \t]*$", re.MULTILINE)


def replace_section(document: str, title: str, body: str) -> str:
    """``document`` with the level-2 section ``## title`` holding ``body``; every other section is kept.

    A section runs from its heading to the next level-2 heading (``## ``) or the end of the document.
    A section not yet in the document is appended at its end.
    """
    section = f"## {title}\n\n{body.strip()}\n"
    match = _section_heading(title).search(document)
    if match is None:
        prefix = document.rstrip("\n")
        return f"{prefix}\n\n{section}" if prefix else section
    following = re.compile(r"^## ", re.MULTILINE).search(document, match.end())
    end = following.start() if following else len(document)
    rest = document[end:]
    return document[: match.start()] + section + ("\n" + rest if rest else "")


def has_section(document: str, title: str) -> bool:
    return _section_heading(title).search(document) is not None


def update_section_file(
    path: Path, title: str, body: str, *, header: str, required: Sequence[str] = (), placeholder: str = ""
) -> None:
    """Write ``body`` as the section ``## title`` of the Markdown file ``path``, keeping its other sections.

    A missing file starts as ``header``; each section in ``required`` that the file lacks is added, in
    that order, holding ``placeholder``, so that the file always shows every section it should have.
    """
    path = Path(path)
    document = path.read_text(encoding="utf-8") if path.is_file() else header
    for name in required:
        if not has_section(document, name):
            document = replace_section(document, name, placeholder)
    document = replace_section(document, title, body)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(document.rstrip("\n") + "\n", encoding="utf-8")


def machine_description(device: torch.device) -> list[str]:
    """One line each: CPU and cores, library versions, OS, and the GPU when ``device`` is CUDA."""
    lines = [
        f"CPU: {cpu_model_name()}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}",
        f"Python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}",
        f"OS: {platform.platform()}",
    ]
    if device.type == "cuda":
        lines.append(f"GPU: {torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}")
    return lines


def top_operators(profile: torch.profiler.profile, row_limit: int = 25) -> str:
    """The operators of a finished ``torch.profiler`` run, most self CPU time first, as a text table."""
    return profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=row_limit)


def log(message: str) -> None:
    """A progress line on stderr (stdout carries the results)."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def rotated(names: list[str], shift: int) -> list[str]:
    """``names`` starting at position ``shift`` (mod len): each model takes every place in turn."""
    shift %= len(names)
    return names[shift:] + names[:shift]
