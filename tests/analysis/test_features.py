"""Feature diagnostic: per-level statistics of the pyramid, BFP's residual, and RoI pooling levels."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from libra_cli.analysis.features import (
    analyze_features,
    image_regions,
    level_statistics,
    pooled_level_range,
    pyramid_sums,
    roi_level_histogram,
)
from libra_cli.cli import app

runner = CliRunner()


def test_statistics_of_a_hand_made_pyramid():
    # Level A holds 1, −1, 3, −3: mean 0, E[x²] = 5 → std √5, mean |x| = 2, Σx² = 20.
    # Level B holds 2, 2:           mean 2, std 0,           mean |x| = 2, Σx² = 8.
    level_a = torch.tensor([1.0, -1.0, 3.0, -3.0]).reshape(1, 1, 2, 2)
    level_b = torch.tensor([2.0, 2.0]).reshape(1, 1, 1, 2)
    sums = pyramid_sums([level_a, level_b], image_sizes=[(8, 8)], padded_size=(8, 8))
    assert sums.tolist() == [[4.0, 0.0, 20.0, 8.0], [2.0, 4.0, 8.0, 4.0]]
    stats = level_statistics(sums)
    assert stats[0] == pytest.approx({"mean": 0.0, "std": math.sqrt(5), "mean_abs": 2.0, "energy_share": 20 / 28})
    assert stats[1] == pytest.approx({"mean": 2.0, "std": 0.0, "mean_abs": 2.0, "energy_share": 8 / 28})
    assert sum(s["energy_share"] for s in stats) == pytest.approx(1.0)


def test_sums_add_up_over_batches():
    # Two batches of one value each at one level: 1 then 3 → mean 2, std 1, energy share 1.
    first = pyramid_sums([torch.ones(1, 1, 1, 1)], [(4, 4)], (4, 4))
    second = pyramid_sums([torch.full((1, 1, 1, 1), 3.0)], [(4, 4)], (4, 4))
    stats = level_statistics(first + second)
    assert stats == [pytest.approx({"mean": 2.0, "std": 1.0, "mean_abs": 2.0, "energy_share": 1.0})]


def test_padding_is_left_out():
    # A batch padded to 64 × 64; the second image is 32 × 48. At stride 4 (16 × 16 map) its own region is
    # the first 8 rows and 12 columns. The map holds 1 inside the images and 100 in the padding.
    level = torch.full((2, 1, 16, 16), 100.0)
    level[0] = 1.0
    level[1, :, :8, :12] = 1.0
    regions = image_regions(level, [(64, 64), (32, 48)], (64, 64))
    assert [tuple(r.shape) for r in regions] == [(1, 16, 16), (1, 8, 12)]
    stats = level_statistics(pyramid_sums([level], [(64, 64), (32, 48)], (64, 64)))
    assert stats[0]["mean"] == 1.0 and stats[0]["std"] == 0.0


def test_odd_sizes_round_up():
    # A 30 × 50 image in a 32 × 64 batch: at stride 8 (a 4 × 8 map) it covers ⌈30/8⌉ = 4 rows and
    # ⌈50/8⌉ = 7 columns.
    regions = image_regions(torch.zeros(1, 3, 4, 8), [(30, 50)], (32, 64))
    assert tuple(regions[0].shape) == (3, 4, 7)


def test_roi_levels_follow_the_fpn_rule():
    # k = ⌊4 + log2(√area / 224)⌋ clamped to [2, 5]: 224² → P4, 112² → P3, 448² → P5, 56² → P2,
    # 20² (k = 0.5) → clamped to P2, 1000² (k = 6.2) → clamped to P5; a 224 × 56 box has √area = 112 → P3.
    boxes = torch.tensor(
        [
            [0, 0, 224, 224],
            [10, 10, 122, 122],
            [0, 0, 448, 448],
            [0, 0, 56, 56],
            [0, 0, 20, 20],
            [0, 0, 1000, 1000],
            [0, 0, 224, 56],
        ],
        dtype=torch.float32,
    )
    assert roi_level_histogram(boxes, 2, 5) == {"P2": 2, "P3": 2, "P4": 1, "P5": 2}
    assert roi_level_histogram(torch.zeros(0, 4), 2, 5) == {"P2": 0, "P3": 0, "P4": 0, "P5": 0}


def test_pooled_level_range_from_map_sizes():
    # 256-pixel images, maps of 64, 32, 16, 8 rows → strides 4..32 → P2..P5.
    features = {name: torch.zeros(1, 1, size, size) for name, size in zip("0123", (64, 32, 16, 8), strict=True)}
    assert pooled_level_range(features, list("0123"), [(256, 256)]) == (2, 5)


# ---- end to end --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_features_command_on_a_trained_run(tiny_run):
    result = runner.invoke(
        app, ["analyze", "features", str(tiny_run), "--images", "2", "--checkpoint", "last", "--split", "val"]
    )
    assert result.exit_code == 0, result.output
    folder = tiny_run / "analysis"
    payload = json.loads((folder / "features.json").read_text())
    assert {"analysis", "run", "images", "levels", "bfp", "roi_levels"} <= set(payload)
    assert payload["bfp"] is False and payload["split"] == "val"
    assert [row["level"] for row in payload["levels"]] == ["P2", "P3", "P4", "P5", "P6"]
    assert sum(row["energy_share"] for row in payload["levels"]) == pytest.approx(1.0)
    assert all(row["std"] >= 0 and row["mean_abs"] >= abs(row["mean"]) for row in payload["levels"])
    assert list(payload["roi_levels"]) == ["P2", "P3", "P4", "P5"]
    # The run's sampler takes at most 64 RoIs per image (the tiny config), and at least the GT boxes.
    assert 0 < sum(payload["roi_levels"].values()) <= 2 * 64
    assert (folder / "features.csv").read_text().splitlines()[0].startswith("level,mean,std,mean_abs,energy_share")
    assert (folder / "features.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_features_with_bfp(fresh_libra_run):
    result = analyze_features(fresh_libra_run, num_images=2, checkpoint="last")
    assert result["bfp"] is True
    for prefix in ("", "bfp_"):
        assert sum(row[f"{prefix}energy_share"] for row in result["levels"]) == pytest.approx(1.0)
    # BFP adds a non-zero residual to every level (the balanced feature, even with an identity refine step).
    assert all(row["bfp_residual_ratio"] > 0 for row in result["levels"])


@pytest.mark.slow
def test_features_of_retinanet_skip_the_roi_histogram(fresh_retinanet_run):
    result = analyze_features(fresh_retinanet_run, num_images=1, checkpoint="last")
    assert [row["level"] for row in result["levels"]] == ["P3", "P4", "P5", "P6", "P7"]
    assert result["roi_levels"] is None and "RetinaNet" in result["roi_levels_note"]


def test_bad_thread_count_is_refused_before_any_work(tmp_path):
    result = runner.invoke(app, ["analyze", "features", str(tmp_path / "no_run"), "--threads", "0"])
    assert result.exit_code == 2 and "--threads" in result.output
