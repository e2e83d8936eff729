"""benchmarks/: timing summaries, targets, the results file's sections, the torchvision reference."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch
from torchvision.models.detection.roi_heads import RoIHeads

from benchmarks.profiling import (
    TimingSummary,
    meets_target,
    replace_section,
    rotated,
    summarize,
    target_verdict,
)
from benchmarks.sampler import realistic_roi_assignment
from benchmarks.workload import widen
from libra_cli.config import load_config
from libra_cli.models.build import build_detector

BENCH_FILE = Path(__file__).resolve().parents[2] / "benchmarks" / "bench.py"


@pytest.fixture(scope="module")
def bench():
    """benchmarks/bench.py is a script, not a package module: load it from its path."""
    spec = importlib.util.spec_from_file_location("libra_benchmark_script", BENCH_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def summary(median: float) -> TimingSummary:
    return TimingSummary(median, median, median, median, median, 1)


# --- median / IQR ------------------------------------------------------------------------------------


def test_summary_of_an_even_list():
    # sorted 1..8: median (4 + 5) / 2; Q1 at rank (8 − 1)·0.25 = 1.75 → 2 + 0.75 = 2.75;
    # Q3 at rank 5.25 → 6 + 0.25 = 6.25; IQR 3.5.
    result = summarize([7, 1, 3, 5, 2, 8, 4, 6])
    assert (result.median, result.q1, result.q3) == (4.5, 2.75, 6.25)
    assert result.iqr == 3.5
    assert (result.minimum, result.maximum, result.count) == (1.0, 8.0, 8)


def test_summary_of_an_odd_list_with_an_outlier():
    # sorted 10, 11, 12, 13, 500: median 12; Q1 at rank 1 → 11; Q3 at rank 3 → 13. The outlier moves
    # only the maximum, which is why the benchmark reports medians.
    result = summarize([12, 500, 10, 13, 11])
    assert (result.median, result.q1, result.q3, result.maximum) == (12.0, 11.0, 13.0, 500.0)


def test_summary_scaled_to_milliseconds():
    result = summarize([0.001, 0.003]).scaled(1000)
    assert result.median == pytest.approx(2.0)
    assert result.q1 == pytest.approx(1.5)  # rank 0.25 between 1 and 3
    assert result.q3 == pytest.approx(2.5)


def test_summary_of_nothing_is_an_error():
    with pytest.raises(ValueError):
        summarize([])


# --- targets -------------------------------------------------------------------------------------------


def test_target_verdicts():
    assert meets_target(1.02, 1.03) and target_verdict(1.02, 1.03) == "met"
    assert not meets_target(1.2, 1.15) and target_verdict(1.2, 1.15) == "not met"
    assert meets_target(1.15, 1.15)  # the limit itself is allowed (≤)
    assert target_verdict(float("nan"), 1.15) == "not measured"


def test_targets_from_medians(bench):
    # libra-off 102 ms / torchvision 100 ms = 1.02 ≤ 1.03; full Libra 120 / libra-off 102 = 1.176 > 1.15;
    # the sampler's 1.5 ms ≤ 2 ms.
    # The like-for-like row (torchvision's RoIAlign kernel) at 104 ms: 1.04 > 1.03.
    training = {
        "torchvision": summary(0.100),
        "libra-off-tv-roialign": summary(0.104),
        "libra-off": summary(0.102),
        "libra-full": summary(0.120),
    }
    off, off_same_kernel, full, sampler = bench.evaluate_targets(training, 1.5)
    assert off.value == pytest.approx(1.02) and off.limit == 1.03 and off.verdict == "met"
    assert off_same_kernel.value == pytest.approx(1.04) and off_same_kernel.verdict == "not met"
    assert full.value == pytest.approx(120 / 102) and full.limit == 1.15 and full.verdict == "not met"
    assert sampler.value == 1.5 and sampler.limit == 2.0 and sampler.verdict == "met"


def test_a_target_without_its_measurement_is_not_measured(bench):
    off, same_kernel, full, _ = bench.evaluate_targets({"torchvision": summary(0.1), "libra-off": summary(0.1)}, 3.0)
    assert off.verdict == "met"  # 1.0 ≤ 1.03
    assert math.isnan(same_kernel.value) and same_kernel.verdict == "not measured"
    assert math.isnan(full.value) and full.verdict == "not measured"


# --- the results file -------------------------------------------------------------------------------------

DOCUMENT = "# Title\n\nintro\n\n## CPU\n\nold cpu table\n\n## GPU\n\ngpu table\n### GPU detail\n"


def test_replacing_a_section_keeps_the_others():
    cpu_replaced = replace_section(DOCUMENT, "CPU", "new cpu table")
    assert cpu_replaced == "# Title\n\nintro\n\n## CPU\n\nnew cpu table\n\n## GPU\n\ngpu table\n### GPU detail\n"
    gpu_replaced = replace_section(DOCUMENT, "GPU", "new gpu")
    assert gpu_replaced == "# Title\n\nintro\n\n## CPU\n\nold cpu table\n\n## GPU\n\nnew gpu\n"


def test_a_missing_section_is_appended():
    assert replace_section("# Title\n", "GPU", "x") == "# Title\n\n## GPU\n\nx\n"
    # "## CPU extra" is another section, not "## CPU".
    assert replace_section("## CPU extra\n\na\n", "CPU", "b") == "## CPU extra\n\na\n\n## CPU\n\nb\n"


def test_results_file_cpu_then_gpu_run(bench, tmp_path):
    path = tmp_path / "RESULTS.md"
    bench.write_results(path, "CPU", "### 1. Training step\n\ncpu numbers")
    first = path.read_text()
    assert first.startswith("# libra benchmarks\n")
    assert "## CPU\n\n### 1. Training step\n\ncpu numbers\n\n## GPU\n\nnot yet measured\n" in first

    bench.write_results(path, "GPU", "gpu numbers")
    second = path.read_text()
    assert "## CPU\n\n### 1. Training step\n\ncpu numbers\n" in second  # the CPU run is kept
    assert second.endswith("## GPU\n\ngpu numbers\n") and "not yet measured" not in second

    bench.write_results(path, "CPU", "newer cpu numbers")
    third = path.read_text()
    assert "cpu numbers" not in third.replace("newer cpu numbers", "")
    assert third.endswith("## GPU\n\ngpu numbers\n")  # the GPU run is kept
    assert third.count("## CPU") == 1 and third.count("## GPU") == 1


# --- the torchvision reference model ---------------------------------------------------------------------


def test_plain_torchvision_model_matches_libra_all_off(bench):
    config = load_config(None)  # the demo configuration: the config defaults, every switch off
    num_classes = 8  # the demo benchmark's classes
    ours = build_detector(config, num_classes)
    reference = bench.torchvision_faster_rcnn(config, num_classes)
    ours_shapes = {key: tuple(value.shape) for key, value in ours.state_dict().items()}
    reference_shapes = {key: tuple(value.shape) for key, value in reference.state_dict().items()}
    assert reference_shapes == ours_shapes
    assert type(reference.roi_heads) is RoIHeads
    # The settings that change what a step computes without changing any weight shape.
    heads, m = reference.roi_heads, config.model
    assert heads.fg_bg_sampler.batch_size_per_image == m.roi_batch_size_per_image
    assert heads.fg_bg_sampler.positive_fraction == m.roi_positive_fraction
    assert heads.detections_per_img == m.detections_per_image
    assert reference.rpn.fg_bg_sampler.batch_size_per_image == m.rpn_batch_size_per_image
    assert reference.rpn._post_nms_top_n == {
        "training": m.rpn_post_nms_top_n_train,
        "testing": m.rpn_post_nms_top_n_test,
    }
    assert heads.box_roi_pool.sampling_ratio == m.roi_sampling_ratio


def test_the_rotation_gives_every_model_every_place():
    names = ["a", "b", "c"]
    orders = [rotated(names, i) for i in range(3)]
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    assert [order.index("a") for order in orders] == [0, 2, 1]


def test_realistic_roi_assignment_shares():
    labels, max_iou, matched_gt = realistic_roi_assignment(torch.Generator().manual_seed(0))
    # 2,000 proposals: 1,100 at IoU 0, 600 + 160 negatives above 0, 140 positives of which 5 GT (IoU 1).
    assert labels.shape == max_iou.shape == matched_gt.shape == (2000,)
    assert int((max_iou == 0).sum()) == 1100
    assert int((max_iou >= 0.5).sum()) == 140 == int((labels > 0).sum())
    assert int((max_iou == 1).sum()) == 5  # uniform draws in [0.5, 1) never reach 1
    assert int(((max_iou >= 0.3) & (max_iou < 0.5)).sum()) == 160


def test_widen_stretches_image_and_boxes():
    image = torch.rand(3, 10, 10)
    target = {"boxes": torch.tensor([[1.0, 2.0, 5.0, 8.0]]), "labels": torch.tensor([1])}
    wide, wide_target = widen(image, target, 1.5)
    # 10 × 10 → 10 × 15: x coordinates × 1.5, y unchanged.
    assert wide.shape == (3, 10, 15)
    assert wide_target["boxes"].tolist() == [[1.5, 2.0, 7.5, 8.0]]


def test_cuda_without_a_gpu_is_a_one_line_error(bench, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same answer on any machine
    assert bench.main(["--device", "cuda", "--quick", "--out", "/nonexistent/never-written.md"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["bench.py: error: --device cuda: CUDA is not available on this machine (use --device cpu)"]
