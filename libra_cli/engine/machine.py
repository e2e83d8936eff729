"""What a run's arithmetic depends on besides its config and seed: the processor, the libraries, the threads.

A seed fixes a run's initial weights, data order and samples. It does not fix the rounding of its floating
point: torch picks its CPU kernels by the processor's instruction set (AVX2, AVX-512, …), sums in an order
that depends on the thread count, and changes kernels between releases; a GPU has kernels of its own. Two
runs of one config and seed agree to the last bit only where all of these agree. Elsewhere they part after
the first rounding difference and end as far apart as two seeds can. Every start of a training run (the
first and each resume) records :func:`machine_record` in the run's log, so that a report can say which runs
shared a machine (``report/collect.py``).
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import torch
import torchvision

# The fields of a machine record that decide the arithmetic; the rest (Python's version) describe only.
ARITHMETIC_FIELDS = ("device", "cpu", "cpu_capability", "threads", "torch", "torchvision", "gpu", "cuda")


def cpu_model_name() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` knows, else "unknown"."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_record(device: torch.device) -> dict[str, Any]:
    """The machine a run trains on, as JSON: the device type, CPU model and the instruction set torch uses
    on it, torch's intra-op threads, the library versions, and on CUDA the GPU's name and CUDA version."""
    record: dict[str, Any] = {
        "device": device.type,
        "cpu": cpu_model_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
    }
    if device.type == "cuda":
        record["gpu"] = torch.cuda.get_device_name(device)
        record["cuda"] = torch.version.cuda
    return record
