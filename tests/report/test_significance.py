"""Confidence intervals of a Δ: the Student-t quantile, Welch's interval, the fast COCO AP and the paired
bootstrap over validation images, and their place in the ablation table."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from libra_cli.config import apply_overrides, load_config
from libra_cli.engine.ablate import load_grid
from libra_cli.report.collect import find_baseline, group_runs, load_runs
from libra_cli.report.significance import (
    BETTER,
    BOOTSTRAP,
    NOISE_NOT_MEASURED,
    WITHIN_NOISE,
    WORSE,
    DeltaInterval,
    IntervalFinder,
    bootstrap_differences,
    bootstrap_interval,
    coco_match_table,
    paired_interval,
    student_t_cdf,
    student_t_quantile,
    verdict,
    weighted_ap,
    welch_interval,
    with_training_noise,
)
from libra_cli.report.tables import ablation_table, intervals_table
from libra_cli.report.training_noise import MEASURED_SEED_SPREADS, measured_seed_spread
from tests.report import coco_summary, make_run
from tests.report.test_tables import rows_of

# --- the Student-t quantile ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("df", "expected"),
    # Two-sided 95 % critical values from standard t tables.
    [(1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (10, 2.2281), (30, 2.0423), (120, 1.9799)],
)
def test_t_quantile_matches_tables(df, expected):
    assert student_t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)
    assert student_t_quantile(0.025, df) == pytest.approx(-expected, abs=1e-4)


@pytest.mark.parametrize("t", [-3.0, -0.4, 0.0, 0.7, 2.5, 40.0])
def test_t_cdf_matches_the_closed_forms_for_one_and_two_degrees_of_freedom(t):
    # df = 1 is the Cauchy distribution: F(t) = 1/2 + atan(t)/π; df = 2: F(t) = 1/2 + t / (2 √(2 + t²)).
    assert student_t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)
    assert student_t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-12)


def reference_t_quantile(p: float, df: float) -> float:
    """The quantile from the t density itself: Simpson's rule for ∫₀ᵗ f, then bisection."""

    def density(x: float) -> float:
        norm = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
        return norm * (1 + x * x / df) ** (-(df + 1) / 2)

    def cdf(t: float, steps: int = 4000) -> float:
        h = t / steps
        inner = sum((4 if k % 2 else 2) * density(k * h) for k in range(1, steps))
        return 0.5 + h / 3 * (density(0) + inner + density(t))

    low, high = 0.0, 20.0
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if cdf(middle) < p else (low, middle)
    return (low + high) / 2


def test_t_quantile_for_fractional_degrees_of_freedom():
    # Welch's ν is rarely an integer: 50/17 is the one of the [1, 2, 3] vs [2, 4, 6] example below.
    for df in (50 / 17, 7.3):
        assert student_t_quantile(0.975, df) == pytest.approx(reference_t_quantile(0.975, df), abs=1e-7)


# --- Welch's interval over seeds -------------------------------------------------------------------------


def test_welch_with_equal_spreads_has_integer_degrees_of_freedom():
    # Baseline [1, 2, 3] and run [3, 4, 5]: Δ = 4 − 2 = 2; s² = 1 on both sides, so the standard error is
    # √(1/3 + 1/3) = 0.816497 and ν = (2/3)² / ((1/3)²/2 + (1/3)²/2) = 4; t(0.975, 4) = 2.776445:
    # half-width 2.776445 · 0.816497 = 2.266958, interval [−0.266958, 4.266958], which holds 0.
    interval = welch_interval([1.0, 2.0, 3.0], [3.0, 4.0, 5.0])
    assert interval.delta == pytest.approx(2.0)
    assert (interval.low, interval.high) == pytest.approx((-0.266958, 4.266958), abs=1e-5)
    assert interval.verdict == WITHIN_NOISE
    assert "Welch over 3 vs 3 seeds" in interval.detail


def test_welch_with_unequal_spreads():
    # Baseline [1, 2, 3] (s² = 1), run [2, 4, 6] (s² = 4), n = 3 each: Δ = 4 − 2 = 2, standard error
    # √(1/3 + 4/3) = √(5/3) = 1.290994; ν = (5/3)² / ((1/3)²/2 + (4/3)²/2) = (25/9) / (17/18) = 50/17.
    interval = welch_interval([1.0, 2.0, 3.0], [2.0, 4.0, 6.0])
    half = reference_t_quantile(0.975, 50 / 17) * math.sqrt(5 / 3)
    assert (interval.low, interval.high) == pytest.approx((2 - half, 2 + half), abs=1e-6)
    assert "df 2.9" in interval.detail


def test_welch_verdicts_better_and_worse():
    # AP 0.30/0.31/0.32 vs 0.40/0.41/0.42: Δ = 0.1, s² = 0.0001 each, se = √(2 · 0.0001 / 3) = 0.0081650,
    # ν = 4: half-width 2.776445 · 0.0081650 = 0.022669 → [0.077331, 0.122669], above 0.
    better = welch_interval([0.30, 0.31, 0.32], [0.40, 0.41, 0.42])
    assert (better.low, better.high) == pytest.approx((0.077331, 0.122669), abs=1e-5)
    assert better.verdict == BETTER
    worse = welch_interval([0.40, 0.41, 0.42], [0.30, 0.31, 0.32])
    assert (worse.low, worse.high) == pytest.approx((-0.122669, -0.077331), abs=1e-5)
    assert worse.verdict == WORSE


def test_verdict_reads_the_interval():
    assert verdict(0.01, 0.2) == BETTER
    assert verdict(-0.2, -0.01) == WORSE
    assert verdict(-0.01, 0.2) == WITHIN_NOISE
    assert verdict(0.0, 0.2) == WITHIN_NOISE  # an interval that reaches 0 does not exclude it


# --- the fast COCO AP ------------------------------------------------------------------------------------


def random_dataset(seed: int, num_images: int = 12, num_categories: int = 3):
    """Ground truth with crowd regions, an image without objects, and noisy, partly wrong detections."""
    rng = np.random.default_rng(seed)
    images = [{"id": 10 + i, "width": 200, "height": 200, "file_name": f"{i}.png"} for i in range(num_images)]
    categories = [{"id": c + 1, "name": f"c{c}"} for c in range(num_categories)]
    annotations, detections = [], []
    for image in images[1:]:  # the first image has no ground truth
        for _ in range(rng.integers(1, 5)):
            x, y, w, h = rng.uniform(0, 120, 2).tolist() + rng.uniform(8, 70, 2).tolist()
            category = int(rng.integers(1, num_categories + 1))
            crowd = int(rng.random() < 0.1)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image["id"],
                    "category_id": category,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": crowd,
                }
            )
            for _ in range(rng.integers(0, 3)):  # hits of varying quality, some with the wrong class
                jitter = rng.normal(0, 0.15 * min(w, h), 4)
                detections.append(
                    {
                        "image_id": image["id"],
                        "category_id": category if rng.random() < 0.8 else int(rng.integers(1, num_categories + 1)),
                        "bbox": [x + jitter[0], y + jitter[1], max(w + jitter[2], 1.0), max(h + jitter[3], 1.0)],
                        "score": float(rng.random()),
                    }
                )
    for image in images:  # background detections
        for _ in range(rng.integers(0, 3)):
            x, y = rng.uniform(0, 150, 2).tolist()
            detections.append(
                {
                    "image_id": image["id"],
                    "category_id": int(rng.integers(1, num_categories + 1)),
                    "bbox": [x, y, 30.0, 30.0],
                    "score": float(rng.random()),
                }
            )
    return {"images": images, "annotations": annotations, "categories": categories}, detections


def cocoeval_stats(ground_truth: dict, detections: list[dict]) -> np.ndarray:
    gt = COCO()
    gt.dataset = json.loads(json.dumps(ground_truth))
    gt.createIndex()
    evaluator = COCOeval(gt, gt.loadRes(json.loads(json.dumps(detections))), iouType="bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return evaluator.stats


def cocoeval_ap(ground_truth: dict, detections: list[dict]) -> float:
    return float(cocoeval_stats(ground_truth, detections)[0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_metrics_equal_cocoeval_on_the_full_image_set(seed, capsys):
    """AP, AP50, AP75, APs, APm, APl: COCOeval.summarize's first six numbers."""
    ground_truth, detections = random_dataset(seed)
    table = coco_match_table(ground_truth, detections)
    stats = cocoeval_stats(ground_truth, detections)
    ones = np.ones(len(table.image_ids))
    for index, metric in enumerate(("AP", "AP50", "AP75", "APs", "APm", "APl")):
        expected = stats[index]
        fast = weighted_ap(table, ones, metric)
        if expected == -1:  # COCOeval: no ground truth in that area range
            assert math.isnan(fast), metric
        else:
            assert fast == pytest.approx(expected, abs=1e-9), metric


def test_a_weight_of_two_is_the_image_twice(capsys):
    # Scores are continuous (no ties), so COCOeval on a set with two images copied under new ids gives the
    # AP of the weighted set: weights 2 for those images, 0 for one left out.
    ground_truth, detections = random_dataset(4)
    table = coco_match_table(ground_truth, detections)
    weights = np.ones(len(table.image_ids))
    copied, dropped = (11, 13), 15
    weights[[table.image_ids.index(i) for i in copied]] = 2
    weights[table.image_ids.index(dropped)] = 0
    images = [image for image in ground_truth["images"] if image["id"] != dropped]
    annotations = [ann for ann in ground_truth["annotations"] if ann["image_id"] != dropped]
    kept = [det for det in detections if det["image_id"] != dropped]
    for original in copied:
        images.append({"id": 1000 + original, "width": 200, "height": 200, "file_name": "copy.png"})
        annotations += [
            {**ann, "id": 10_000 + ann["id"], "image_id": 1000 + original}
            for ann in ground_truth["annotations"]
            if ann["image_id"] == original
        ]
        kept += [{**det, "image_id": 1000 + original} for det in detections if det["image_id"] == original]
    expanded = {**ground_truth, "images": images, "annotations": annotations}
    assert weighted_ap(table, weights) == pytest.approx(cocoeval_ap(expanded, kept), abs=1e-9)


# --- the paired bootstrap --------------------------------------------------------------------------------


def two_image_dataset():
    """Images 1 and 2, one 20 × 20 box of category 1 each."""
    images = [{"id": i, "width": 64, "height": 64, "file_name": f"{i}.png"} for i in (1, 2)]
    annotations = [
        {"id": i, "image_id": i, "category_id": 1, "bbox": [10.0, 10.0, 20.0, 20.0], "area": 400.0, "iscrowd": 0}
        for i in (1, 2)
    ]
    return {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "box"}]}


def hit(image_id: int, score: float) -> dict:
    return {"image_id": image_id, "category_id": 1, "bbox": [10.0, 10.0, 20.0, 20.0], "score": score}


def miss(image_id: int, score: float) -> dict:
    return {"image_id": image_id, "category_id": 1, "bbox": [40.0, 40.0, 20.0, 20.0], "score": score}


def test_bootstrap_differences_are_the_enumerated_ones():
    # Run: both boxes found exactly, AP 1 on every resample. Baseline: finds image 1's box only.
    # A resample of 2 images draws (image 1, image 2) counts (2, 0), (1, 1) or (0, 2):
    #   (2, 0): the baseline finds every box in the resample: AP 1, difference 0;
    #   (1, 1): one hit of 2 boxes: recall 0.5 at precision 1, so recall points 0.00 … 0.50 (51 of 101)
    #           score 1 and the rest 0: AP 51/101, difference 50/101;
    #   (0, 2): no detection at all: AP 0, difference 1.
    ground_truth = two_image_dataset()
    run = coco_match_table(ground_truth, [hit(1, 0.9), hit(2, 0.8)])
    baseline = coco_match_table(ground_truth, [hit(1, 0.9)])
    differences, counts = bootstrap_differences(baseline, run, resamples=1000, seed=0)
    expected = {(2, 0): 0.0, (1, 1): 50 / 101, (0, 2): 1.0}
    assert counts.shape == (1000, 2)
    assert differences == pytest.approx([expected[tuple(row)] for row in counts.tolist()], abs=1e-12)
    # Each of (2, 0) and (0, 2) has probability 1/4, far above the 2.5 % in each tail: the interval
    # runs from the smallest difference, 0, to the largest, 1, and holds 0.
    assert {tuple(row) for row in counts.tolist()} == set(expected)
    interval = bootstrap_interval(baseline, run, resamples=1000, seed=0)
    assert (interval.low, interval.high) == (0.0, 1.0)
    assert interval.delta == pytest.approx(1 - 51 / 101)
    assert interval.verdict == WITHIN_NOISE
    assert interval.detail == "bootstrap over 2 images, 1000 resamples, seed 0"


def test_bootstrap_of_a_constant_difference_excludes_zero_but_gives_no_verdict_alone():
    # The baseline puts a false positive (score 0.9) before each hit (0.8): whatever the resample, its
    # detections sorted by score are all false positives, then all hits, so precision reaches 1/2 at
    # recall 1 and the interpolated precision is 1/2 at every recall point: AP 0.5, the run's 1 → Δ 0.5.
    ground_truth = two_image_dataset()
    run = coco_match_table(ground_truth, [hit(1, 0.9), hit(2, 0.8)])
    baseline = coco_match_table(ground_truth, [miss(1, 0.9), hit(1, 0.8), miss(2, 0.9), hit(2, 0.8)])
    interval = bootstrap_interval(baseline, run, resamples=200, seed=3)
    assert (interval.low, interval.high) == pytest.approx((0.5, 0.5), abs=1e-12)
    # The interval excludes 0 (verdict() of it is "better"), but it saw the images only: no training noise was
    # weighed, so the interval's own verdict is never "better" or "worse".
    assert verdict(interval.low, interval.high) == BETTER
    assert interval.verdict == NOISE_NOT_MEASURED


# --- in the ablation table -------------------------------------------------------------------------------


def write_evaluation(run_dir, ann_file, detections, ap: float) -> None:
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    metrics["ann_file"] = str(ann_file)
    metrics["summary"]["AP"] = ap
    (run_dir / "eval" / "metrics.json").write_text(json.dumps(metrics))
    (run_dir / "eval" / "detections.json").write_text(json.dumps(detections))


def test_ablation_table_shows_the_bootstrap_interval_of_a_single_pair(tmp_path):
    ann_file = tmp_path / "val.json"
    ann_file.write_text(json.dumps(two_image_dataset()))
    plain = make_run(tmp_path, "plain", summary=coco_summary(0.5))
    bfp = make_run(tmp_path, "bfp", libra={"bfp": True}, summary=coco_summary(0.5))
    # The baseline finds image 1's box (AP 51/101 on both images), the BFP run both (AP 1): the
    # differences of the enumerated test above, interval [0, 1].
    write_evaluation(plain, ann_file, [hit(1, 0.9)], 51 / 101)
    write_evaluation(bfp, ann_file, [hit(1, 0.9), hit(2, 0.8)], 1.0)
    groups = group_runs(load_runs([plain, bfp]))
    table, _ = ablation_table(groups, find_baseline(groups, None))
    rows = rows_of(table)
    assert [(row["run"], row["ΔAP"], row["95 % CI"], row["verdict"]) for row in rows] == [
        ("plain", "—", "—", "—"),
        ("bfp", "+0.495", "[+0.000, +1.000]", WITHIN_NOISE),  # 1 − 51/101 = 0.4950
    ]
    assert (
        "bootstrap over 2 images, 1000 resamples, seed 0; training noise not measured for this preset and "
        "schedule: bfp" in table.caption
    )


def test_every_delta_gets_its_interval_from_the_same_resamples(tmp_path):
    """The two-image pair above: the boxes are found exactly (IoU 1) and are 20 × 20 = 400 px² (COCO's
    "small"), so AP50, AP75 and APs resample exactly as AP does: Δ 50/101 with the interval [0, 1]. No object
    is medium or large: APm and APl have nothing to measure and get no interval."""
    ann_file = tmp_path / "val.json"
    ann_file.write_text(json.dumps(two_image_dataset()))
    empty = {"APm": None, "APl": None}
    plain = make_run(tmp_path, "plain", summary={**coco_summary(51 / 101, step=0), **empty})
    bfp = make_run(tmp_path, "bfp", libra={"bfp": True}, summary={**coco_summary(1.0, step=0), **empty})
    write_evaluation(plain, ann_file, [hit(1, 0.9)], 51 / 101)
    write_evaluation(bfp, ann_file, [hit(1, 0.9), hit(2, 0.8)], 1.0)
    groups = group_runs(load_runs([plain, bfp]))
    baseline = find_baseline(groups, None)
    table = intervals_table(groups, baseline, IntervalFinder(baseline))
    (row,) = rows_of(table)
    for name in ("AP", "AP50", "AP75", "APs"):
        assert row[f"Δ{name}"] == "+0.495 [+0.000, +1.000] within noise", name
    assert (row["ΔAPm"], row["ΔAPl"]) == ("—", "—")


def test_ablation_table_uses_welch_over_seeds_and_says_when_neither_applies(tmp_path):
    runs = [
        make_run(tmp_path / "plain", f"seed{s}", seed=s, summary=coco_summary(ap))
        for s, ap in enumerate((0.30, 0.31, 0.32))
    ]
    # Seeds 3, 4, 5 against the baseline's 0, 1, 2: nothing to pair, so Welch.
    runs += [
        make_run(tmp_path / "iou", f"seed{s}", seed=s, libra={"iou_sampling": True}, summary=coco_summary(ap))
        for s, ap in zip((3, 4, 5), (0.40, 0.41, 0.42), strict=True)
    ]
    runs.append(make_run(tmp_path, "bfp", libra={"bfp": True}, summary=coco_summary(0.5)))
    groups = group_runs(load_runs(runs))
    table, _ = ablation_table(groups, find_baseline(groups, None))
    rows = {row["run"]: row for row in rows_of(table)}
    # The Welch example above: [0.077331, 0.122669].
    assert (rows["iou"]["95 % CI"], rows["iou"]["verdict"]) == ("[+0.077, +0.123]", BETTER)
    # One run against three seeds: neither interval applies.
    assert (rows["bfp"]["95 % CI"], rows["bfp"]["verdict"]) == ("—", "—")
    assert "Welch over 3 vs 3 seeds (df 4.0): iou" in table.caption
    assert "none (1 vs 3 evaluated runs: neither Welch nor bootstrap): bfp" in table.caption
    # Every metric: coco_summary shifts each by the same step in both groups, so each Δ and its Welch
    # interval are AP's; the single BFP run gets Δs without intervals.
    baseline = find_baseline(groups, None)
    every = {row["run"]: row for row in rows_of(intervals_table(groups, baseline, IntervalFinder(baseline)))}
    assert {every["iou"][f"Δ{name}"] for name in ("AP", "AP50", "AP75", "APs", "APm", "APl")} == {
        "+0.100 [+0.077, +0.123] better"
    }
    assert every["bfp"]["ΔAP50"] == "+0.190"  # 0.51 − (0.31 + 0.32 + 0.33) / 3


def test_lvis_runs_are_resampled_under_the_coco_protocol(tmp_path):
    # LVIS annotations carry no iscrowd (read as non-crowd) and no area (box area); the caption says which
    # AP the interval is of. Same detections as above: Δ 1 − 51/101, interval [0, 1].
    dataset = two_image_dataset()
    dataset["annotations"] = [
        {k: v for k, v in ann.items() if k not in ("iscrowd", "area")} for ann in dataset["annotations"]
    ]
    dataset["categories"][0]["frequency"] = "f"
    ann_file = tmp_path / "lvis_val.json"
    ann_file.write_text(json.dumps(dataset))
    plain = make_run(tmp_path, "plain", summary=coco_summary(0.5), metrics_format="lvis")
    eql = make_run(tmp_path, "eql", libra={"eql": True}, summary=coco_summary(0.5), metrics_format="lvis")
    write_evaluation(plain, ann_file, [hit(1, 0.9)], 0.3)
    write_evaluation(eql, ann_file, [hit(1, 0.9), hit(2, 0.8)], 0.6)
    groups = group_runs(load_runs([plain, eql]))
    table, _ = ablation_table(groups, find_baseline(groups, None))
    row = rows_of(table)[1]
    assert (row["run"], row["95 % CI"], row["verdict"]) == ("eql", "[+0.000, +1.000]", WITHIN_NOISE)
    assert "bootstrap over 2 images, 1000 resamples, seed 0, COCO-protocol AP of the LVIS runs; " in table.caption


def test_runs_of_another_protocol_get_no_bootstrap(tmp_path):
    ann_file = tmp_path / "val.json"
    ann_file.write_text(json.dumps(two_image_dataset()))
    plain = make_run(tmp_path, "plain", summary=coco_summary(0.5), metrics_format="voc")
    bfp = make_run(tmp_path, "bfp", libra={"bfp": True}, summary=coco_summary(0.6), metrics_format="voc")
    write_evaluation(plain, ann_file, [hit(1, 0.9)], 0.5)
    write_evaluation(bfp, ann_file, [hit(1, 0.9), hit(2, 0.8)], 0.6)
    groups = group_runs(load_runs([plain, bfp]))
    table, _ = ablation_table(groups, find_baseline(groups, None))
    assert (rows_of(table)[1]["95 % CI"], rows_of(table)[1]["ΔAP"]) == ("—", "+0.100")
    assert "none (the bootstrap scores COCO / LVIS runs, not voc ones): bfp" in table.caption


# --- paired seeds and training noise ---------------------------------------------------------------------


def test_paired_interval_by_hand_is_narrower_than_welch():
    # Baseline 0.30, 0.34, 0.29 and run 0.33, 0.36, 0.33 on seeds 0, 1, 2: differences 0.03, 0.02, 0.04, mean
    # 0.03, sample std 0.01; t(0.975, 2) = 4.3027, half-width 4.3027 · 0.01 / √3 = 0.024841 → [0.005159,
    # 0.054841], "better". Welch on the same values ignores the pairing: std 0.02646 and 0.01732, se 0.018257,
    # df 3.45, t ≈ 3.0 → about ±0.055, which holds 0: "within noise".
    baseline, run = {0: 0.30, 1: 0.34, 2: 0.29}, {0: 0.33, 1: 0.36, 2: 0.33}
    paired = paired_interval(baseline, run)
    assert paired.delta == pytest.approx(0.03)
    assert (paired.low, paired.high) == pytest.approx((0.005159, 0.054841), abs=1e-6)
    assert paired.verdict == BETTER and paired.detail == "paired over seeds 0, 1, 2"
    welch = welch_interval(list(baseline.values()), list(run.values()))
    assert welch.low < 0 < welch.high and welch.verdict == WITHIN_NOISE


def test_ablation_table_pairs_runs_by_seed(tmp_path):
    runs = [
        make_run(tmp_path / "plain", f"seed{s}", seed=s, summary=coco_summary(ap))
        for s, ap in enumerate((0.30, 0.34, 0.29))
    ]
    runs += [
        make_run(tmp_path / "iou", f"seed{s}", seed=s, libra={"iou_sampling": True}, summary=coco_summary(ap))
        for s, ap in enumerate((0.33, 0.36, 0.33))
    ]
    groups = group_runs(load_runs(runs))
    table, _ = ablation_table(groups, find_baseline(groups, None))
    (row,) = [row for row in rows_of(table) if row["run"] == "iou"]
    # The paired interval of the test above.
    assert (row["95 % CI"], row["verdict"]) == ("[+0.005, +0.055]", BETTER)
    assert "paired over seeds 0, 1, 2: iou" in table.caption


def test_training_noise_widens_a_one_run_bootstrap_interval_by_hand():
    # Bootstrap Δ 0.05 in [0.03, 0.07]; both runs' spread std 0.016 over 3 seeds: σ² = 2 · 0.016² = 0.000512,
    # σ = 0.022627, df = σ⁴ / (2 · 0.016⁴ / 2) = 4, t(0.975, 4) = 2.7764, tσ = 0.062822; each side grows to
    # √(0.02² + 0.062822²) = 0.065929: [−0.015929, 0.115929], which holds 0.
    spread = MEASURED_SEED_SPREADS[0]
    assert spread.std["AP"] == 0.016 and spread.seeds == 3
    interval = DeltaInterval(0.05, 0.03, 0.07, BOOTSTRAP, "bootstrap")
    assert interval.verdict == NOISE_NOT_MEASURED  # excludes 0, images only
    widened = with_training_noise(interval, spread, spread)
    assert (widened.low, widened.high) == pytest.approx((-0.015929, 0.115929), abs=1e-5)
    assert widened.verdict == WITHIN_NOISE
    assert "reports/table2_3seeds/" in widened.training_noise
    unknown = with_training_noise(interval, spread, None)
    assert (unknown.low, unknown.high) == (0.03, 0.07) and unknown.verdict == NOISE_NOT_MEASURED
    assert "training noise not measured" in unknown.detail


def test_the_measured_spread_belongs_to_its_preset_and_schedule_only():
    # reports/table2_3seeds/'s baseline row: the `baseline` preset at 450 iterations, any seed or folder.
    baseline = load_config("baseline", {"train": {"out": "elsewhere", "seed": 7}, "data": {"synth_dir": "x"}})
    assert measured_seed_spread(baseline) is MEASURED_SEED_SPREADS[0]
    assert measured_seed_spread(load_config("baseline", {"train": {"max_iters": 1500}})) is None
    assert measured_seed_spread(load_config("libra")) is None
    assert measured_seed_spread(load_config("baseline", {"libra": {"bfp": True}})) is None


def test_the_12_epoch_spreads_belong_to_their_grid_rows():
    # reports/table2_1x_3seeds/: the baseline row is paper_baseline_1x with the RPN cap (5 negatives per
    # positive), 12 epochs = 1,500 iterations on the 500-image benchmark; the preset alone has no cap.
    baseline, libra = MEASURED_SEED_SPREADS[1], MEASURED_SEED_SPREADS[2]
    capped = load_config("paper_baseline_1x", {"model": {"rpn_neg_pos_ub": 5}, "train": {"max_iters": 1500}})
    assert measured_seed_spread(capped) is baseline
    assert measured_seed_spread(load_config("paper_baseline_1x", {"train": {"max_iters": 1500}})) is None
    assert measured_seed_spread(replace(capped, train=replace(capped.train, max_iters=450))) is None
    grid = load_grid("ablation_table2_1x")
    full = apply_overrides(grid.base, {**grid.runs["balanced_l1"], "train": {"max_iters": 1500, "seed": 2}}, "test")
    assert measured_seed_spread(full) is libra
    assert libra.describe("AP") == (
        "ablation_table2_1x's balanced_l1 row at 1500 iterations: std 0.013 over 3 seeds "
        "(reports/table2_1x_3seeds/, balanced_l1 row)"
    )
    # One run of each against the other: s₁ = 0.0011, s₂ = 0.0127, σ² = 0.00016250, σ = 0.012748;
    # df = σ⁴ / (s₁⁴/2 + s₂⁴/2) = 2.6406e-8 / 1.3008e-8 = 2.0300, t(0.975, 2.0300) = 4.2423 (the t density
    # integrated numerically), tσ = 0.054079; a bootstrap interval [0.01, 0.03] around 0.02 grows to
    # 0.02 ∓ √(0.01² + 0.054079²) = 0.02 ∓ 0.054995.
    widened = with_training_noise(DeltaInterval(0.02, 0.01, 0.03, BOOTSTRAP, "bootstrap"), baseline, libra)
    assert (widened.low, widened.high) == pytest.approx((-0.034995, 0.074995), abs=1e-5)
    assert widened.verdict == WITHIN_NOISE


def test_a_report_of_two_single_runs_never_says_better_or_worse_from_the_bootstrap_alone(tmp_path):
    # The constant difference above (the run finds both boxes, the baseline a false positive before each): the
    # bootstrap interval is [0.5, 0.5]. The BFP run's configuration has no measured seed-to-seed spread.
    ann_file = tmp_path / "val.json"
    ann_file.write_text(json.dumps(two_image_dataset()))
    plain = make_run(tmp_path, "plain", summary=coco_summary(0.5))
    bfp = make_run(tmp_path, "bfp", libra={"bfp": True}, summary=coco_summary(1.0))
    write_evaluation(plain, ann_file, [miss(1, 0.9), hit(1, 0.8), miss(2, 0.9), hit(2, 0.8)], 0.5)
    write_evaluation(bfp, ann_file, [hit(1, 0.9), hit(2, 0.8)], 1.0)
    groups = group_runs(load_runs([plain, bfp]))
    baseline = find_baseline(groups, None)
    table, _ = ablation_table(groups, baseline)
    (row,) = [row for row in rows_of(table) if row["run"] == "bfp"]
    assert (row["95 % CI"], row["verdict"]) == ("[+0.500, +0.500]", NOISE_NOT_MEASURED)
    every = rows_of(intervals_table(groups, baseline, IntervalFinder(baseline)))
    cells = " ".join(str(value) for row in every for value in row.values())
    assert "better" not in cells and "worse" not in cells


def test_the_second_machines_iou_sampling_and_bfp_spreads_belong_to_their_rows():
    # reports/table2_1x_3seeds/second_machine/: AP 0.6087, 0.6104, 0.5967 over seeds 0, 1, 2; mean 0.605267,
    # deviations +0.003433, +0.005133, −0.008567, Σd² = 1.11527e-4, s = √(Σd² / 2) = 0.007467 → 0.0075.
    (iou,) = [spread for spread in MEASURED_SEED_SPREADS if spread.row == "iou_sampling"]
    assert iou.std["AP"] == pytest.approx(0.007467, abs=5e-5)
    grid = load_grid("ablation_table2_1x")
    config = apply_overrides(grid.base, {**grid.runs["iou_sampling"], "train": {"max_iters": 1500, "seed": 1}}, "t")
    assert measured_seed_spread(config) is iou
    assert iou.describe("AP") == (
        "ablation_table2_1x's iou_sampling row at 1500 iterations: std 0.007 over 3 seeds "
        "(reports/table2_1x_3seeds/second_machine/, iou_sampling row)"
    )
    # The BFP row (IoU sampling + BFP) is another configuration with its own spread: AP 0.6066, 0.5929, 0.5881,
    # mean 0.595867, deviations +0.010733, −0.002967, −0.007767, Σd² = 1.84326e-4, s = 0.009600.
    (bfp,) = [spread for spread in MEASURED_SEED_SPREADS if spread.row == "bfp"]
    assert bfp.std["AP"] == pytest.approx(0.009600, abs=5e-5)
    bfp_config = apply_overrides(grid.base, {**grid.runs["bfp"], "train": {"max_iters": 1500}}, "t")
    assert measured_seed_spread(bfp_config) is bfp
