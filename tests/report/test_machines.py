"""Which machine each run trained on, in the report and in a Δ paired over seeds."""

from __future__ import annotations

from libra_cli.report import build_report
from libra_cli.report.collect import SEVERAL_MACHINES, describe_machine, group_runs, load_runs, machine_key
from libra_cli.report.significance import IntervalFinder, seeds_on_other_machines
from tests.report import coco_summary, default_log, make_run

AVX512 = {
    "device": "cpu",
    "cpu": "Example Xeon",
    "cpu_capability": "AVX512",
    "threads": 1,
    "torch": "2.14.1",
    "torchvision": "0.29.1",
    "python": "3.11.7",
}
AVX2 = {**AVX512, "cpu": "Example EPYC", "cpu_capability": "AVX2"}
H200 = {**AVX512, "device": "cuda", "threads": 16, "gpu": "NVIDIA H200", "cuda": "13.0"}


def log_on(*machines):
    """The default log with one start record per machine (the first start, then each resume)."""
    log = default_log(40)
    starts = [{"type": "start", "iter": 20 * index, "components": [], "machine": m} for index, m in enumerate(machines)]
    return starts + log[1:]


def run_on(tmp_path, name, seed, ap, *machines, libra=None):
    log = log_on(*machines) if machines else default_log(40)
    return make_run(tmp_path / name, f"seed{seed}", seed=seed, summary=coco_summary(ap), log=log, libra=libra)


def test_machine_key_is_the_arithmetic_of_every_start(tmp_path):
    python_only = {**AVX512, "python": "3.12.0"}  # another Python computes alike
    runs = load_runs(
        [
            run_on(tmp_path, "one", 0, 0.3, AVX512),
            run_on(tmp_path, "resumed_alike", 0, 0.3, AVX512, python_only),
            run_on(tmp_path, "moved", 0, 0.3, AVX512, AVX2),
            run_on(tmp_path, "old", 0, 0.3),
        ]
    )
    one, alike, moved, old = (machine_key(run) for run in runs)
    assert one == ("cpu", "Example Xeon", "AVX512", 1, "2.14.1", "0.29.1", None, None)
    assert alike == one
    assert moved == SEVERAL_MACHINES
    assert old is None  # a log from before machines were recorded
    assert runs[3].machines == [None]


def test_describe_machine_on_a_cpu_and_a_gpu():
    assert describe_machine(AVX512) == "Example Xeon (AVX512), 1 thread, torch 2.14.1, torchvision 0.29.1"
    two_threads = describe_machine({**AVX2, "threads": 2})
    assert two_threads == "Example EPYC (AVX2), 2 threads, torch 2.14.1, torchvision 0.29.1"
    assert describe_machine(H200) == "NVIDIA H200 (CUDA 13.0), torch 2.14.1, torchvision 0.29.1"


def test_a_paired_interval_names_the_seeds_paired_across_machines(tmp_path):
    # Baseline 0.30, 0.34, 0.29 and IoU sampling 0.33, 0.36, 0.33 (the paired example of test_significance:
    # [+0.005159, +0.054841]); the IoU row's seeds 1 and 2 trained on another processor than the baseline's.
    paths = [run_on(tmp_path, "plain", s, ap, AVX512) for s, ap in enumerate((0.30, 0.34, 0.29))]
    paths += [
        run_on(tmp_path, "iou", s, ap, machine, libra={"iou_sampling": True})
        for s, ap, machine in zip(range(3), (0.33, 0.36, 0.33), (AVX512, AVX2, H200), strict=True)
    ]
    baseline, iou = group_runs(load_runs(paths))
    assert seeds_on_other_machines(baseline, iou) == [1, 2]
    interval = IntervalFinder(baseline).interval(iou)
    assert abs(interval.low - 0.005159) < 1e-6 and abs(interval.high - 0.054841) < 1e-6  # the pairing is kept
    assert interval.detail == "paired over seeds 0, 1, 2; seeds 1, 2 on other machines"


def test_runs_on_one_machine_say_so_and_name_no_seed(tmp_path):
    paths = [run_on(tmp_path, "plain", s, ap, AVX512) for s, ap in enumerate((0.30, 0.34))]
    paths += [run_on(tmp_path, "iou", s, ap, AVX512, libra={"iou_sampling": True}) for s, ap in enumerate((0.33, 0.36))]
    baseline, iou = group_runs(load_runs(paths))
    assert seeds_on_other_machines(baseline, iou) == []
    assert IntervalFinder(baseline).interval(iou).detail == "paired over seeds 0, 1"
    markdown = build_report(paths, tmp_path / "report").read_text()
    assert "Trained on one machine: Example Xeon (AVX512), 1 thread, torch 2.14.1, torchvision 0.29.1." in markdown
    assert "several machines" not in markdown and "not recorded" not in markdown


def test_the_report_lists_the_machines_and_the_runs_that_record_none(tmp_path):
    paths = [
        run_on(tmp_path, "plain", 0, 0.30, AVX512),
        run_on(tmp_path, "plain", 1, 0.34, AVX2),
        run_on(tmp_path, "plain", 2, 0.29, AVX512, H200),
        run_on(tmp_path, "iou", 0, 0.33, libra={"iou_sampling": True}),
    ]
    markdown = build_report(paths, tmp_path / "report").read_text()
    assert "The runs that record their machine trained on several machines." in markdown
    assert "- Example Xeon (AVX512), 1 thread, torch 2.14.1, torchvision 0.29.1: plain/seed0\n" in markdown
    assert "- Example EPYC (AVX2), 1 thread, torch 2.14.1, torchvision 0.29.1: plain/seed1\n" in markdown
    assert "- resumed on another machine: plain/seed2\n" in markdown
    assert "Machine not recorded (trained before libra recorded it): iou/seed0." in markdown
