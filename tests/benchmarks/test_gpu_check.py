"""``benchmarks/gpu_check.py --device cpu --smoke`` runs end to end and writes its report."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
STAGES = ("cuda_tests", "benchmark", "training", "torchrun")


@pytest.mark.slow
def test_cpu_smoke_run_writes_every_stage(tmp_path) -> None:
    out = tmp_path / "check"
    command = [sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--smoke", "--out", str(out)]
    result = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-2000:]

    report = json.loads((out / "gpu_check.json").read_text())
    assert report["device"] == "cpu" and report["smoke"] is True
    assert report["command"].startswith("python benchmarks/gpu_check.py --device cpu --smoke")
    assert report["budget_s"] == 480
    assert tuple(report["stages"]) == STAGES
    for name in ("cuda_tests", "torchrun"):
        stage = report["stages"][name]
        assert stage["status"] == "skipped"
        assert "CUDA" in stage["reason"]

    bench = report["stages"]["benchmark"]
    assert bench["status"] == "ok"
    for name in ("torchvision fp32", "libra-off fp32"):
        assert bench["training"][name]["status"] == "ok"
        assert bench["training"][name]["images_per_s"] > 0
    for name in ("libra-off bf16", "libra-off bf16 channels-last", "libra-full bf16"):
        assert bench["training"][name]["status"] == "skipped" and bench["training"][name]["reason"]
    assert set(bench["inference"]) == {"libra-off batch 1", "libra-off batch 2"}
    assert all(ms > 0 for ms in bench["sampler_ms_per_image"].values())

    training = report["stages"]["training"]
    assert training["status"] == "ok"
    assert math.isfinite(training["loss_first"]) and math.isfinite(training["loss_last"])
    assert training["ap50"] is not None and 0.0 <= training["ap50"] <= 1.0
    assert training["wall_s"] > 0

    markdown = (out / "gpu_check.md").read_text()
    assert markdown.startswith("## GPU check (cpu)")
    assert report["command"] in markdown
    assert "torch " in markdown and "CUDA " in markdown


def test_a_budget_too_small_skips_every_stage_with_the_reason(tmp_path) -> None:
    out = tmp_path / "check"
    command = [sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--smoke", "--budget-s", "1",
               "--out", str(out)]  # fmt: skip
    result = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((out / "gpu_check.json").read_text())
    for name in STAGES:
        stage = report["stages"][name]
        assert stage["status"] == "skipped"
    assert "budget" in report["stages"]["benchmark"]["reason"]
    assert "budget" in (out / "gpu_check.md").read_text()
