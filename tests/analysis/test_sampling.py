"""Sampling diagnostic: IoU histograms of negatives picked by random, hard and IoU-balanced sampling."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from libra_cli.analysis.sampling import (
    METHODS,
    analyze_sampling,
    background_classification_loss,
    iou_balanced_sampler_for,
    iou_bin_edges,
    iou_histogram,
    negatives_three_ways,
    share_above,
    summarize_negatives,
)
from libra_cli.cli import app
from libra_cli.config import load_config
from libra_cli.errors import LibraError
from libra_cli.sampling import IoUBalancedSampler, RandomSampler

runner = CliRunner()

EXPECTED_EDGES = [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5]


def test_bin_edges_are_the_decimal_multiples_of_0_05():
    # 3 × 0.05 is 0.15000000000000002 in floating point; the edges must be the decimals themselves.
    assert iou_bin_edges() == EXPECTED_EDGES


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_histogram_counts_with_half_open_bins(dtype):
    # Bins are [lo, hi): 0.05 and 0.15 and 0.35 sit on inner edges and count in the bin above them.
    # 0.0 → 0, 0.01 → 0, 0.0499 → 0, 0.05 → 1, 0.1 → 2, 0.15 → 3, 0.2 → 4, 0.35 → 7, 0.49 → 9.
    ious = torch.tensor([0.0, 0.01, 0.0499, 0.05, 0.1, 0.15, 0.2, 0.35, 0.49], dtype=dtype)
    assert iou_histogram(ious, EXPECTED_EDGES) == [3, 1, 1, 1, 1, 0, 0, 1, 0, 1]


def test_histogram_ignores_values_outside_the_range():
    # 0.5 is the closed end of the range (not a negative) and −0.1 is below it: neither is counted.
    assert iou_histogram(torch.tensor([-0.1, 0.5, 0.2]), EXPECTED_EDGES) == [0, 0, 0, 0, 1, 0, 0, 0, 0, 0]


def test_share_above_is_strict():
    # 0.05 itself is not "above 0.05": of [0, 0.05, 0.051, 0.3] two are above → 0.5.
    assert share_above(torch.tensor([0.0, 0.05, 0.051, 0.3]), 0.05) == 0.5
    assert share_above(torch.zeros(0), 0.05) == 0.0


def test_summary_of_a_known_list():
    ious = torch.tensor([0.0, 0.01, 0.0499, 0.05, 0.1, 0.15, 0.2, 0.35, 0.49])
    summary = summarize_negatives(ious, EXPECTED_EDGES)
    assert summary["counts"] == [3, 1, 1, 1, 1, 0, 0, 1, 0, 1]
    assert summary["fractions"] == pytest.approx([3 / 9, 1 / 9, 1 / 9, 1 / 9, 1 / 9, 0, 0, 1 / 9, 0, 1 / 9])
    assert summary["num_negatives"] == 9
    # Above 0.05: 0.1, 0.15, 0.2, 0.35, 0.49 → 5 of 9.
    assert summary["share_above_0.05"] == pytest.approx(5 / 9)
    assert summary["mean_iou"] == pytest.approx((0.01 + 0.0499 + 0.05 + 0.1 + 0.15 + 0.2 + 0.35 + 0.49) / 9)


def test_summary_of_no_negatives():
    summary = summarize_negatives(torch.zeros(0), EXPECTED_EDGES)
    assert summary["counts"] == [0] * 10 and summary["fractions"] == [0.0] * 10
    assert summary["num_negatives"] == 0 and summary["share_above_0.05"] == 0.0 and summary["mean_iou"] is None


def test_background_loss_softmax_and_sigmoid():
    # Softmax: equal logits over 3 classes → −log(1/3) = ln 3.
    assert background_classification_loss(torch.zeros(1, 3), sigmoid=False)[0] == pytest.approx(math.log(3))
    # Softmax: background logit 2, others 0 → −log(e² / (e² + 2)).
    logits = torch.tensor([[2.0, 0.0, 0.0]])
    expected = -math.log(math.exp(2) / (math.exp(2) + 2))
    assert background_classification_loss(logits, sigmoid=False)[0] == pytest.approx(expected)
    # Sigmoid (EQL): Σ −log(1 − σ(z)) = softplus(0) + softplus(ln 3) = ln 2 + ln 4 = ln 8.
    logits = torch.tensor([[0.0, math.log(3)]])
    assert background_classification_loss(logits, sigmoid=True)[0] == pytest.approx(math.log(8))


def constructed_image():
    """3 positives and 14 negatives: ten at IoU 0, then 0.2, 0.3, 0.4, 0.45."""
    positive_ious = [0.6, 0.7, 1.0]
    negative_ious = [0.0] * 10 + [0.2, 0.3, 0.4, 0.45]
    max_iou = torch.tensor(positive_ious + negative_ious)
    labels = torch.tensor([1, 1, 1] + [0] * 14)
    matched_gt = torch.zeros(17, dtype=torch.long)
    # Loss increasing with IoU; the index breaks the ties between the IoU-0 negatives.
    loss = max_iou + 0.001 * torch.arange(17)
    return labels, max_iou, matched_gt, loss


def test_three_methods_on_a_constructed_image():
    labels, max_iou, matched_gt, loss = constructed_image()
    # 8 RoIs per image, 25 % positive → 2 positives taken of 3 → 8 − 2 = 6 negatives per method.
    random_sampler = RandomSampler(batch_size_per_image=8, positive_fraction=0.25)
    # "neg-thr" K = 3 splits [0, 0.5] into [0, 1/6), [1/6, 1/3), [1/3, 0.5] with quota int(6/3) = 2 each:
    # two of the IoU-0 negatives, both of {0.2, 0.3}, both of {0.4, 0.45}; no shortfall.
    iou_sampler = IoUBalancedSampler(8, 0.25, num_bins=3, bins_upper="neg-thr")
    chosen = negatives_three_ways(
        labels,
        max_iou,
        matched_gt,
        loss,
        random_sampler=random_sampler,
        iou_sampler=iou_sampler,
        generator=torch.Generator().manual_seed(0),
    )
    assert list(chosen) == list(METHODS)
    assert all(indices.numel() == 6 for indices in chosen.values())
    assert all(bool((labels[indices] == 0).all()) for indices in chosen.values())
    # Hard = the 6 largest losses: IoU 0.45, 0.4, 0.3, 0.2 and the two IoU-0 negatives with the largest
    # index (12 and 11) → 4 of 6 above 0.05.
    assert sorted(chosen["hard"].tolist()) == [11, 12, 13, 14, 15, 16]
    assert share_above(max_iou[chosen["hard"]]) == pytest.approx(4 / 6)
    balanced = sorted(max_iou[chosen["iou_balanced"]].tolist())
    assert balanced == pytest.approx([0.0, 0.0, 0.2, 0.3, 0.4, 0.45])
    assert share_above(max_iou[chosen["iou_balanced"]]) == pytest.approx(4 / 6)
    assert len(set(chosen["random"].tolist())) == 6


def test_all_methods_agree_when_every_negative_is_taken():
    # 3 negatives and room for 6: every method takes all three (IoU 0, 0.1, 0.3 → 2 of 3 above 0.05).
    max_iou = torch.tensor([0.9, 0.0, 0.1, 0.3])
    labels = torch.tensor([2, 0, 0, 0])
    chosen = negatives_three_ways(
        labels,
        max_iou,
        torch.zeros(4, dtype=torch.long),
        max_iou.clone(),
        random_sampler=RandomSampler(8, 0.25),
        iou_sampler=IoUBalancedSampler(8, 0.25),
    )
    for indices in chosen.values():
        assert sorted(indices.tolist()) == [1, 2, 3]
        assert share_above(max_iou[indices]) == pytest.approx(2 / 3)


def test_iou_sampler_takes_the_runs_libra_settings():
    config = load_config(
        None,
        {
            "libra": {"iou_bins": 5, "iou_bins_upper": "neg-thr", "iou_floor_thr": 0.0, "pos_balance": False},
            "model": {"roi_batch_size_per_image": 256, "roi_positive_fraction": 0.5},
        },
    )
    sampler = iou_balanced_sampler_for(config)
    assert (sampler.num_bins, sampler.bins_upper, sampler.floor_thr, sampler.pos_balance) == (
        5,
        "neg-thr",
        0.0,
        False,
    )
    assert (sampler.batch_size_per_image, sampler.positive_fraction) == (256, 0.5)
    # A named reading replaces the floor and the bins' upper end only.
    paper = iou_balanced_sampler_for(config, "paper")
    assert (paper.floor_thr, paper.bins_upper, paper.num_bins, paper.reading) == (-1.0, "neg-thr", 5, "paper")
    reference = iou_balanced_sampler_for(config, "reference")
    assert (reference.floor_thr, reference.bins_upper, reference.reading) == (0.0, "max-iou", "reference")
    assert sampler.reading == "floor 0, bins to neg-thr"


# ---- end to end --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sampling_command_on_a_trained_run(tiny_run):
    result = runner.invoke(app, ["analyze", "sampling", str(tiny_run), "--images", "2", "--checkpoint", "last"])
    assert result.exit_code == 0, result.output
    assert "IoU > 0.05" in result.output
    folder = tiny_run / "analysis"
    payload = json.loads((folder / "sampling.json").read_text())
    assert {"analysis", "run", "images", "split", "bin_edges", "methods", "settings"} <= set(payload)
    assert payload["analysis"] == "sampling" and payload["images"] == 2 and payload["split"] == "train"
    assert payload["bin_edges"] == EXPECTED_EDGES
    counts = {payload["methods"][m]["num_negatives"] for m in METHODS}
    assert len(counts) == 1 and counts.pop() > 0  # the same number of negatives for every method
    for method in METHODS:
        summary = payload["methods"][method]
        assert sum(summary["fractions"]) == pytest.approx(1.0)
        assert sum(summary["counts"]) == summary["num_negatives"]
        assert 0.0 <= summary["share_above_0.05"] <= 1.0
    # The tiny config samples 64 RoIs per image: at most 2 × 64 negatives in all.
    assert payload["methods"]["random"]["num_negatives"] <= 2 * 64
    assert (
        payload["settings"]["batch_size_per_image"] == 64
        and payload["settings"]["hard_negative_loss"] == "cross_entropy"
    )
    assert payload["settings"]["reading"] == "reference"  # the config default, floor 0 and bins to max-iou
    assert "IoU-balanced: reference reading" in result.output
    csv_lines = (folder / "sampling.csv").read_text().splitlines()
    assert len(csv_lines) == 11 and csv_lines[0].startswith("iou_lo,iou_hi,random_count")
    assert (folder / "sampling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_sampling_with_the_paper_reading_names_it_and_bad_names_are_refused(tiny_run):
    payload = analyze_sampling(tiny_run, num_images=1, checkpoint="last", reading="paper")
    assert (payload["settings"]["reading"], payload["settings"]["floor_thr"]) == ("paper", -1.0)
    result = runner.invoke(app, ["analyze", "sampling", str(tiny_run), "--reading", "text"])
    assert result.exit_code == 2
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        "error: --reading: 'text' is not one of reference, paper"
    ]


@pytest.mark.slow
def test_sampling_is_deterministic_for_a_seed(tiny_run):
    first = analyze_sampling(tiny_run, num_images=1, checkpoint="last", seed=3)
    second = analyze_sampling(tiny_run, num_images=1, checkpoint="last", seed=3)
    assert first["methods"] == second["methods"]


@pytest.mark.slow
def test_sampling_on_a_fresh_eql_run(fresh_libra_run):
    # An untrained model with a sigmoid (EQL) classifier: hard negatives are ranked by the all-zero BCE.
    result = analyze_sampling(fresh_libra_run, num_images=2, checkpoint="last")
    assert result["checkpoint"]["iteration"] == 0
    assert result["settings"]["hard_negative_loss"] == "sigmoid_bce"
    assert result["settings"]["run_uses_iou_sampling"] is True
    assert len({result["methods"][m]["num_negatives"] for m in METHODS}) == 1
    for method in METHODS:
        assert sum(result["methods"][method]["fractions"]) == pytest.approx(1.0)


def test_sampling_refuses_retinanet(fresh_retinanet_run):
    result = runner.invoke(app, ["analyze", "sampling", str(fresh_retinanet_run), "--images", "1"])
    assert result.exit_code == 2
    assert "needs a Faster R-CNN run" in result.output


def test_bad_split_is_a_libra_error(tiny_run):
    with pytest.raises(LibraError, match="--split"):
        analyze_sampling(tiny_run, num_images=1, split="test")
