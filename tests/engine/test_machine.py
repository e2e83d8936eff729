"""The machine record of a training run: what its arithmetic depends on besides config and seed."""

from __future__ import annotations

import platform

import torch
import torchvision

from libra_cli.engine import machine
from libra_cli.engine.machine import ARITHMETIC_FIELDS, cpu_model_name, machine_record


def test_a_cpu_record_names_the_processor_its_instruction_set_threads_and_libraries():
    record = machine_record(torch.device("cpu"))
    assert record == {
        "device": "cpu",
        "cpu": cpu_model_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
    }
    # torch's own names for the CPU kernels it dispatches to.
    assert record["cpu_capability"] in {"DEFAULT", "NO AVX", "AVX2", "AVX512", "ZVECTOR", "SVE256", "SVE128"}
    # Python's version describes the machine; it does not change torch's arithmetic.
    assert "python" not in ARITHMETIC_FIELDS and "threads" in ARITHMETIC_FIELDS


def test_the_threads_recorded_are_torchs_at_the_time():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert machine_record(torch.device("cpu"))["threads"] == 1
    finally:
        torch.set_num_threads(before)


def test_the_cpu_model_comes_from_proc_cpuinfo(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Example CPU @ 2.00GHz\nflags\t: fpu\n")
    real_path = machine.Path
    monkeypatch.setattr(machine, "Path", lambda name: cpuinfo if name == "/proc/cpuinfo" else real_path(name))
    assert cpu_model_name() == "Example CPU @ 2.00GHz"
    cpuinfo.unlink()  # no /proc (macOS, Windows): what platform knows, else "unknown"
    monkeypatch.setattr(machine.platform, "processor", lambda: "")
    assert cpu_model_name() == "unknown"
