"""Is a Δ real? The 95 % confidence interval of a difference from the baseline and a plain verdict.

Three intervals, chosen by what the runs hold:

* **Paired over seeds** (both groups have the same ≥ 2 evaluated seeds, as ``libra ablate --seeds`` trains
  them): the t interval of the per-seed differences dᵢ = runᵢ − baselineᵢ, ``d̄ ± t(0.975, n − 1) · s_d / √n``.
  A seed fixes the initial weights, the data order and the samplers of both runs alike, so what the two share
  cancels in dᵢ.
* **Over seeds** (both groups have ≥ 2 evaluated seeds, not the same ones): Welch's t interval for a
  difference of means with unequal variances, ``Δ ± t(0.975, ν) · √(s₁²/n₁ + s₂²/n₂)``, where ν is the
  Welch–Satterthwaite degrees of freedom ``(s₁²/n₁ + s₂²/n₂)² / ((s₁²/n₁)²/(n₁ − 1) + (s₂²/n₂)²/(n₂ − 1))``.
  The Student-t quantile is computed here (bisection on the t CDF, written with the regularized incomplete
  beta function), so the report needs no statistics library.
* **One run against one run**: a paired bootstrap over validation images. Image ids are drawn with
  replacement (a fixed seed), both runs' AP is recomputed on every resample and the interval is the
  2.5 / 97.5 percentiles of the difference. pycocotools' ``COCOeval.evaluate()`` runs once per run;
  its per-image match tables then give AP, AP50, AP75, APs, APm and APl of any resample — an image drawn k
  times weighs k — with COCO's accumulation (101 recall points, interpolated precision, 100 detections,
  mean over the categories with ground truth) done in NumPy. On the full image set these are COCOeval's.
  LVIS runs are resampled under the COCO protocol (every category exhaustively labelled in every image),
  not LVIS's federated one.

The bootstrap sees the choice of images, not the training: two runs that differ only by seed differ by
about as much as a component's Δ at this scale. A one-run comparison is therefore widened by the seed-to-seed
spread measured for both runs' preset and schedule (``training_noise.py``, which names the report each
spread comes from): with the bootstrap's half-widths h and the spreads s₁, s₂ (n₁, n₂ seeds) the interval
becomes Δ − √(h_low² + (t·σ)²) … Δ + √(h_high² + (t·σ)²), σ² = s₁² + s₂², t at the Welch–Satterthwaite
degrees of freedom σ⁴ / (s₁⁴/(n₁ − 1) + s₂⁴/(n₂ − 1)). Where no spread was measured the interval stays the
bootstrap's and the verdict says that training noise was not measured instead of "better" or "worse".

The verdict reads the interval: "better" or "worse" when it excludes 0 on that side (a higher AP is
better), "within noise" otherwise.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from libra_cli.errors import LibraError
from libra_cli.report.collect import SEVERAL_MACHINES, RunGroup, RunRecord, machine_key
from libra_cli.report.training_noise import SeedSpread, measured_seed_spread
from libra_cli.rundir import RunLayout

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
BETTER, WORSE, WITHIN_NOISE = "better", "worse", "within noise"
# A one-run comparison whose bootstrap interval excludes 0 but whose training noise was not measured.
NOISE_NOT_MEASURED = "no verdict: training noise not measured"
WELCH, PAIRED, BOOTSTRAP = "welch", "paired", "bootstrap"
# Evaluation protocols whose annotation file the bootstrap can rescore (LVIS under the COCO protocol).
BOOTSTRAP_FORMATS = ("coco", "lvis")

# --- the Student-t quantile ------------------------------------------------------------------------------


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b) for a, b > 0 and 0 ≤ x ≤ 1, by its continued fraction (modified Lentz's method).

    The fraction converges fast for x < (a + 1) / (a + b + 2); above that the symmetry
    I_x(a, b) = 1 − I_{1−x}(b, a) is used.
    """
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must be in [0, 1], got {x}")
    if x in (0.0, 1.0):
        return x
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - regularized_incomplete_beta(b, a, 1.0 - x)
    log_front = a * math.log(x) + b * math.log1p(-x) - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
    return math.exp(log_front) / a * _beta_continued_fraction(a, b, x)


def _beta_continued_fraction(a: float, b: float, x: float, max_terms: int = 500) -> float:
    """1 / (1 + d₁ / (1 + d₂ / (1 + …))) with d₂ₘ₊₁ = −(a + m)(a + b + m)x / ((a + 2m)(a + 2m + 1)) and
    d₂ₘ = m(b − m)x / ((a + 2m − 1)(a + 2m))."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    value = d
    for m in range(1, max_terms + 1):
        for coefficient in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + coefficient * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + coefficient / c
            c = c if abs(c) > tiny else tiny
            value *= c * d
        if abs(c * d - 1.0) < eps:
            break
    return value


def student_t_cdf(t: float, df: float) -> float:
    """P(T ≤ t) for Student's t with ``df`` > 0 degrees of freedom: the two tails hold
    I_{df/(df + t²)}(df/2, 1/2) together."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    tail = 0.5 * regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def student_t_quantile(p: float, df: float) -> float:
    """The t with P(T ≤ t) = p, by bisection on :func:`student_t_cdf` (to ~1e-12 relative)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -student_t_quantile(1.0 - p, df)
    if p == 0.5:
        return 0.0
    low, high = 0.0, 1.0
    while student_t_cdf(high, df) < p:
        low, high = high, 2.0 * high
    for _ in range(200):
        middle = 0.5 * (low + high)
        if student_t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
        if high - low <= 1e-13 * max(1.0, high):
            break
    return 0.5 * (low + high)


# --- intervals -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeltaInterval:
    """A Δ (run − baseline) with its confidence interval; ``low``/``high`` are None when no interval
    applies, and ``method`` then says why."""

    delta: float | None
    low: float | None
    high: float | None
    method: str  # WELCH, PAIRED, BOOTSTRAP or "" (none)
    detail: str  # how it was computed ("Welch over 3 vs 3 seeds") or why there is none
    # BOOTSTRAP only: the seed-to-seed spreads the interval was widened by; "" = the images' noise alone
    training_noise: str = ""

    @property
    def verdict(self) -> str | None:
        """The interval's verdict; a bootstrap interval that weighed no training noise never says "better"
        or "worse" (it says :data:`NOISE_NOT_MEASURED` instead)."""
        if self.low is None or self.high is None:
            return None
        reading = verdict(self.low, self.high)
        if self.method == BOOTSTRAP and not self.training_noise and reading != WITHIN_NOISE:
            return NOISE_NOT_MEASURED
        return reading


def verdict(low: float, high: float) -> str:
    """The verdict on an interval of Δ: "better" above 0, "worse" below 0, "within noise" when it holds 0."""
    if low > 0:
        return BETTER
    if high < 0:
        return WORSE
    return WITHIN_NOISE


def welch_interval(baseline: Sequence[float], values: Sequence[float], confidence: float = CONFIDENCE) -> DeltaInterval:
    """Welch's t interval for mean(values) − mean(baseline); each side needs ≥ 2 values.

    With no spread on either side the interval is the point Δ itself.
    """
    if len(baseline) < 2 or len(values) < 2:
        raise ValueError("Welch's interval needs at least 2 values per group")
    n1, n2 = len(baseline), len(values)
    mean1, mean2 = sum(baseline) / n1, sum(values) / n2
    var1 = sum((value - mean1) ** 2 for value in baseline) / (n1 - 1)
    var2 = sum((value - mean2) ** 2 for value in values) / (n2 - 1)
    se1, se2 = var1 / n1, var2 / n2
    delta, spread = mean2 - mean1, math.sqrt(se1 + se2)
    detail = f"Welch over {n2} vs {n1} seeds"
    if spread == 0:
        return DeltaInterval(delta, delta, delta, WELCH, f"{detail} (no spread)")
    df = (se1 + se2) ** 2 / (se1**2 / (n1 - 1) + se2**2 / (n2 - 1))
    half = student_t_quantile(0.5 + confidence / 2, df) * spread
    return DeltaInterval(delta, delta - half, delta + half, WELCH, f"{detail} (df {df:.1f})")


def paired_interval(
    baseline: dict[int, float], values: dict[int, float], confidence: float = CONFIDENCE
) -> DeltaInterval:
    """The t interval of the per-seed differences values[s] − baseline[s] over the seeds both hold (≥ 2).

    With n seeds, mean difference d̄ and their sample std s_d: d̄ ± t((1 + c)/2, n − 1) · s_d / √n; with no
    spread the point d̄ itself.
    """
    seeds = sorted(baseline.keys() & values.keys())
    if len(seeds) < 2:
        raise ValueError("a paired interval needs at least 2 seeds held by both groups")
    differences = [values[seed] - baseline[seed] for seed in seeds]
    n = len(differences)
    mean = sum(differences) / n
    spread = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1))
    detail = f"paired over seeds {', '.join(map(str, seeds))}"
    if spread == 0:
        return DeltaInterval(mean, mean, mean, PAIRED, f"{detail} (no spread)")
    half = student_t_quantile(0.5 + confidence / 2, n - 1) * spread / math.sqrt(n)
    return DeltaInterval(mean, mean - half, mean + half, PAIRED, detail)


def with_training_noise(
    interval: DeltaInterval,
    baseline_spread: SeedSpread | None,
    run_spread: SeedSpread | None,
    metric: str = "AP",
    confidence: float = CONFIDENCE,
) -> DeltaInterval:
    """A one-run bootstrap ``interval`` widened by both runs' measured seed-to-seed spreads of ``metric``.

    σ² = s₁² + s₂² (a single run of each), t at the Welch–Satterthwaite degrees of freedom
    σ⁴ / (s₁⁴/(n₁ − 1) + s₂⁴/(n₂ − 1)), and each side of the interval grows from its bootstrap half-width h
    to √(h² + (t·σ)²). When either spread is unknown the interval is returned as it is, its detail saying
    that training noise was not measured (so that its verdict is never "better" or "worse").
    """
    if interval.low is None or interval.high is None or interval.delta is None:
        return interval
    if baseline_spread is None or run_spread is None:
        return DeltaInterval(
            interval.delta,
            interval.low,
            interval.high,
            interval.method,
            f"{interval.detail}; training noise not measured for this preset and schedule",
        )
    s1, s2 = baseline_spread.std[metric], run_spread.std[metric]
    variance = s1**2 + s2**2
    noise = ", ".join(dict.fromkeys(spread.describe(metric) for spread in (baseline_spread, run_spread)))
    if variance == 0:
        return DeltaInterval(interval.delta, interval.low, interval.high, interval.method, interval.detail, noise)
    df = variance**2 / (s1**4 / (baseline_spread.seeds - 1) + s2**4 / (run_spread.seeds - 1))
    width = student_t_quantile(0.5 + confidence / 2, df) * math.sqrt(variance)
    low = interval.delta - math.hypot(interval.delta - interval.low, width)
    high = interval.delta + math.hypot(interval.high - interval.delta, width)
    detail = f"{interval.detail}, widened by the seed-to-seed spread ({noise})"
    return DeltaInterval(interval.delta, low, high, interval.method, detail, noise)


# --- per-image match tables and the AP of a weighted image set --------------------------------------------


@dataclass(frozen=True)
class CategoryMatches:
    """One category's detections over the whole image set, in COCOeval's accumulation order.

    ``image`` [D]: the image index of each detection; ``tp``/``fp`` [T, D]: matched / unmatched at each
    IoU threshold (detections matched to a crowd region are neither); ``num_gt`` [I]: non-crowd ground
    truth per image.
    """

    image: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    num_gt: np.ndarray


# The summary metrics the bootstrap recomputes: (COCOeval area range label, IoU threshold or None for the
# mean over 0.50:0.95), as COCOeval.summarize reads them (100 detections per image).
METRIC_SLICES = {
    "AP": ("all", None),
    "AP50": ("all", 0.5),
    "AP75": ("all", 0.75),
    "APs": ("small", None),
    "APm": ("medium", None),
    "APl": ("large", None),
}


@dataclass(frozen=True)
class MatchTable:
    """What COCOeval's accumulation needs from one run's evaluation, per area range and category."""

    image_ids: tuple
    areas: dict[str, tuple[CategoryMatches, ...]]  # COCOeval's area range label → per category
    recall_thresholds: np.ndarray  # COCO's 101 points 0, 0.01, …, 1
    iou_thresholds: np.ndarray  # COCO's 0.50, 0.55, …, 0.95

    @property
    def categories(self) -> tuple[CategoryMatches, ...]:
        """Area "all", the slice of the headline AP."""
        return self.areas["all"]


def coco_match_table(ground_truth: dict, detections: list[dict]) -> MatchTable:
    """Run ``COCOeval.evaluate()`` once (boxes, 100 detections per image) and keep its matches for every area
    range (all, small, medium, large).

    ``ground_truth`` is a COCO-style dict (LVIS files too: annotations without ``iscrowd`` are non-crowd,
    without ``area`` have the box area); ``detections`` COCO results.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    annotations = [
        {"iscrowd": 0, **ann, "area": ann.get("area", float(ann["bbox"][2]) * float(ann["bbox"][3]))}
        for ann in ground_truth["annotations"]
    ]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt_api = COCO()
        gt_api.dataset = {**ground_truth, "annotations": annotations}
        gt_api.createIndex()
        if detections:
            dt_api = gt_api.loadRes([dict(detection) for detection in detections])
        else:  # loadRes cannot take an empty list
            dt_api = COCO()
            dt_api.dataset = {**gt_api.dataset, "annotations": []}
            dt_api.createIndex()
        evaluator = COCOeval(gt_api, dt_api, iouType="bbox")
        evaluator.evaluate()
    params = evaluator.params
    areas = {label: _category_matches(evaluator, area_index) for area_index, label in enumerate(params.areaRngLbl)}
    return MatchTable(
        tuple(params.imgIds),
        areas,
        np.asarray(params.recThrs, dtype=float),
        np.asarray(params.iouThrs, dtype=float),
    )


def _category_matches(evaluator, area_index: int) -> tuple[CategoryMatches, ...]:
    """Per category, the detections of one area range in COCOeval's accumulation order (``evalImgs`` is
    ordered category, area range, image; COCOeval marks objects and unmatched detections outside the range
    ignored)."""
    params = evaluator.params
    max_det = params.maxDets[-1]
    num_images, num_areas = len(params.imgIds), len(params.areaRng)
    num_thresholds = len(params.iouThrs)
    categories = []
    for k in range(len(params.catIds)):
        start = k * num_areas * num_images + area_index * num_images
        scores, images, matched, ignored = [], [], [], []
        num_gt = np.zeros(num_images, dtype=np.int64)
        for i, result in enumerate(evaluator.evalImgs[start : start + num_images]):
            if result is None:  # no ground truth and no detection of this category in the image
                continue
            scores.append(np.asarray(result["dtScores"][:max_det], dtype=float))
            images.append(np.full(len(scores[-1]), i, dtype=np.int64))
            matched.append(np.asarray(result["dtMatches"][:, :max_det]) > 0)
            ignored.append(np.asarray(result["dtIgnore"][:, :max_det], dtype=bool))
            num_gt[i] = int(np.count_nonzero(np.asarray(result["gtIgnore"]) == 0))
        if scores:
            order = np.argsort(-np.concatenate(scores), kind="mergesort")  # COCOeval's tie order
            match, ignore = np.concatenate(matched, axis=1)[:, order], np.concatenate(ignored, axis=1)[:, order]
            image = np.concatenate(images)[order]
        else:
            match = ignore = np.zeros((num_thresholds, 0), dtype=bool)
            image = np.zeros(0, dtype=np.int64)
        categories.append(CategoryMatches(image, match & ~ignore, ~match & ~ignore, num_gt))
    return tuple(categories)


def weighted_ap(table: MatchTable, weights: np.ndarray, metric: str = "AP") -> float:
    """COCO ``metric`` (one of :data:`METRIC_SLICES`) of the image set in which image i appears
    ``weights[i]`` times (all ones: COCOeval's number).

    Per category and IoU threshold: cumulative true / false positives over the detections sorted by
    score (each counted ``weight`` times), precision made monotone from the right, read at the 101
    recall points (0 beyond the last recall reached); categories without ground truth in the set are
    left out. NaN when no category has any.
    """
    area, iou = METRIC_SLICES[metric]
    thresholds = slice(None) if iou is None else [int(np.argmin(np.abs(table.iou_thresholds - iou)))]
    weights = np.asarray(weights, dtype=float)
    curves = []
    for all_thresholds in table.areas[area]:
        category = CategoryMatches(
            all_thresholds.image, all_thresholds.tp[thresholds], all_thresholds.fp[thresholds], all_thresholds.num_gt
        )
        num_gt = float(weights @ category.num_gt)
        if num_gt == 0:
            continue
        det_weights = weights[category.image]
        present = det_weights > 0
        tp = np.cumsum(category.tp[:, present] * det_weights[present], axis=1)
        fp = np.cumsum(category.fp[:, present] * det_weights[present], axis=1)
        precision = np.zeros((tp.shape[0], len(table.recall_thresholds)))
        if tp.shape[1]:
            recall = tp / num_gt
            interpolated = np.maximum.accumulate((tp / (fp + tp + np.spacing(1)))[:, ::-1], axis=1)[:, ::-1]
            for t in range(tp.shape[0]):
                index = np.searchsorted(recall[t], table.recall_thresholds, side="left")
                reached = index < tp.shape[1]
                precision[t, reached] = interpolated[t, index[reached]]
        curves.append(precision)
    return float(np.mean(curves)) if curves else math.nan


def bootstrap_differences(
    baseline: MatchTable,
    run: MatchTable,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    metric: str = "AP",
) -> tuple[np.ndarray, np.ndarray]:
    """``metric``(run) − ``metric``(baseline) on ``resamples`` paired resamples of the image set (the same
    resamples for every metric: they depend on the seed and the number of images only).

    Returns the differences [B] and the resamples as image counts [B, I] (row b: how often each image
    was drawn). Both tables must cover the same images.
    """
    if baseline.image_ids != run.image_ids:
        raise ValueError("the runs were evaluated on different image sets")
    rng = np.random.default_rng(seed)
    num_images = len(baseline.image_ids)
    counts = np.stack(
        [np.bincount(rng.integers(0, num_images, num_images), minlength=num_images) for _ in range(resamples)]
    )
    differences = np.array([weighted_ap(run, row, metric) - weighted_ap(baseline, row, metric) for row in counts])
    return differences, counts


def bootstrap_interval(
    baseline: MatchTable,
    run: MatchTable,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
    metric: str = "AP",
) -> DeltaInterval:
    """The paired-bootstrap interval of ``metric``: percentiles (1 − c)/2 and (1 + c)/2 of the resampled
    differences."""
    differences, _ = bootstrap_differences(baseline, run, resamples, seed, metric)
    finite = differences[np.isfinite(differences)]
    ones = np.ones(len(run.image_ids))
    delta = weighted_ap(run, ones, metric) - weighted_ap(baseline, ones, metric)
    detail = f"bootstrap over {len(run.image_ids)} images, {resamples} resamples, seed {seed}"
    if not finite.size:
        return DeltaInterval(delta, None, None, "", f"{detail}: no resample has ground truth")
    low, high = np.percentile(finite, [50 * (1 - confidence), 50 * (1 + confidence)])
    return DeltaInterval(delta, float(low), float(high), BOOTSTRAP, detail)


# --- groups of runs --------------------------------------------------------------------------------------


def run_match_table(run: RunRecord) -> tuple[MatchTable | None, str]:
    """The run's match table from ``eval/detections.json`` and the annotation file it was scored on
    (``ann_file`` of metrics.json, else the run's val split), or None and why not."""
    layout = RunLayout(run.path)
    if not layout.detections.is_file():
        return None, f"{run.label} has no {layout.detections.relative_to(layout.root)}"
    ann_file = (run.metrics or {}).get("ann_file")
    if not ann_file:
        try:
            ann_file = layout.read_dataset_info().get("val_ann")
        except LibraError:
            ann_file = None
    if not ann_file or not Path(ann_file).is_file():
        return None, f"{run.label}'s annotation file {ann_file or '(unknown)'} is not there"
    try:
        ground_truth = json.loads(Path(ann_file).read_text(encoding="utf-8"))
        detections = json.loads(layout.detections.read_text(encoding="utf-8"))
        return coco_match_table(ground_truth, detections), str(Path(ann_file).resolve())
    except (OSError, ValueError, KeyError, TypeError, IndexError, AssertionError) as exc:  # pycocotools asserts
        return None, f"{run.label}'s detections could not be scored ({type(exc).__name__}: {exc})"


class IntervalFinder:
    """Δ intervals of groups against one baseline; each run's match table is computed once."""

    def __init__(self, baseline: RunGroup, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> None:
        self.baseline, self.resamples, self.seed = baseline, resamples, seed
        self._tables: dict[Path, tuple[MatchTable | None, str]] = {}
        self._intervals: dict[tuple[int, str], DeltaInterval] = {}

    def _table(self, run: RunRecord) -> tuple[MatchTable | None, str]:
        if run.path not in self._tables:
            self._tables[run.path] = run_match_table(run)
        return self._tables[run.path]

    def interval(self, group: RunGroup, metric: str = "AP") -> DeltaInterval:
        """The interval of ``group``'s Δ``metric`` (computed once per group and metric; see :meth:`_interval`)."""
        key = (id(group), metric)
        if key not in self._intervals:
            self._intervals[key] = self._interval(group, metric)
        return self._intervals[key]

    def _interval(self, group: RunGroup, metric: str) -> DeltaInterval:
        """Paired over seeds when both groups hold the same ≥ 2 seeds, Welch when they hold ≥ 2 values of
        ``metric`` otherwise; the paired bootstrap (the metrics of :data:`METRIC_SLICES`), widened by the
        measured training noise, when each is one evaluated run; otherwise no interval, with the reason."""
        base_values = _present(self.baseline.summary_values(metric))
        values = _present(group.summary_values(metric))
        base_by_seed, by_seed = _by_seed(self.baseline, metric), _by_seed(group, metric)
        if len(base_by_seed) >= 2 and base_by_seed.keys() == by_seed.keys():
            return with_machines_named(paired_interval(base_by_seed, by_seed), self.baseline, group)
        if len(base_values) >= 2 and len(values) >= 2:
            return welch_interval(base_values, values)
        delta = sum(values) / len(values) - sum(base_values) / len(base_values) if values and base_values else None
        if len(base_values) != 1 or len(values) != 1:
            return DeltaInterval(
                delta,
                None,
                None,
                "",
                f"{len(values)} vs {len(base_values)} evaluated runs: neither Welch nor bootstrap",
            )
        if metric not in METRIC_SLICES:
            return DeltaInterval(delta, None, None, "", f"the bootstrap does not recompute {metric}")
        base_run, run = _evaluated_run(self.baseline, metric), _evaluated_run(group, metric)
        other = next((r for r in (run, base_run) if metric_format(r) not in BOOTSTRAP_FORMATS), None)
        if other is not None:
            return DeltaInterval(
                delta, None, None, "", f"the bootstrap scores COCO / LVIS runs, not {metric_format(other)} ones"
            )
        base_table, base_where = self._table(base_run)
        table, where = self._table(run)
        if base_table is None or table is None:
            return DeltaInterval(delta, None, None, "", base_where if base_table is None else where)
        if where != base_where or table.image_ids != base_table.image_ids:
            return DeltaInterval(delta, None, None, "", f"{run.label} and {base_run.label} were scored on other images")
        result = bootstrap_interval(base_table, table, self.resamples, self.seed, metric=metric)
        if "lvis" in (metric_format(run), metric_format(base_run)):
            detail = f"{result.detail}, COCO-protocol AP of the LVIS runs"
            result = DeltaInterval(result.delta, result.low, result.high, result.method, detail)
        spreads = (measured_seed_spread(base_run.config, metric), measured_seed_spread(run.config, metric))
        return with_training_noise(result, *spreads, metric=metric)


def with_machines_named(interval: DeltaInterval, baseline: RunGroup, group: RunGroup) -> DeltaInterval:
    """A paired interval whose detail names the seeds paired across machines (:func:`seeds_on_other_machines`)."""
    apart = seeds_on_other_machines(baseline, group)
    if not apart:
        return interval
    seeds = f"seed{'s' if len(apart) > 1 else ''} {', '.join(map(str, apart))}"
    return replace(interval, detail=f"{interval.detail}; {seeds} on other machines")


def seeds_on_other_machines(baseline: RunGroup, group: RunGroup) -> list[int]:
    """The seeds whose run in ``group`` and run in ``baseline`` trained on machines of different arithmetic
    (``report.collect.machine_key``): paired by seed, such runs still differ in their rounding. Runs that do
    not record their machine are not counted."""
    base = {run.seed: machine_key(run) for run in baseline.runs}
    apart = []
    for run in group.runs:
        mine, theirs = machine_key(run), base.get(run.seed)
        if mine is None or theirs is None:
            continue
        if mine != theirs or SEVERAL_MACHINES in (mine, theirs):
            apart.append(run.seed)
    return sorted(set(apart))


def _evaluated_run(group: RunGroup, metric: str) -> RunRecord:
    """The group's run that has a value of ``metric``."""
    return next(run for run, value in zip(group.runs, group.summary_values(metric), strict=True) if value is not None)


def metric_format(run: RunRecord) -> str:
    """The protocol the run's metrics.json was scored with ("coco" when it does not say)."""
    return str((run.metrics or {}).get("format", "coco"))


def _by_seed(group: RunGroup, metric: str) -> dict[int, float]:
    """The group's evaluated values of ``metric`` by seed; empty when a seed occurs twice (nothing to pair)."""
    pairs = [
        (run.seed, float(value))
        for run, value in zip(group.runs, group.summary_values(metric), strict=True)
        if value is not None and not math.isnan(float(value))
    ]
    by_seed = dict(pairs)
    return by_seed if len(by_seed) == len(pairs) else {}


def _present(values: list[float | None]) -> list[float]:
    return [float(value) for value in values if value is not None and not math.isnan(float(value))]
