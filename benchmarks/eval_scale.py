"""Box evaluation at the datasets' scale: the official evaluators against ``faster-coco-eval``.

Generates deterministic synthetic ground truth and detections of a COCO-val size (5,000 images, 80 sparse
category ids, about 7 boxes per image, 100 detections per image) and an LVIS-val size (20,000 images,
1,203 categories with rare / common / frequent groups, ``neg_category_ids`` and
``not_exhaustive_category_ids``, 300 detections per image), then scores them with the evaluators libra
uses (pycocotools ``COCOeval`` and the ``lvis`` package's ``LVISEval``, driven exactly as
``libra_cli.engine.metrics`` drives them) and with ``faster-coco-eval``'s C++ ``COCOeval_faster`` (its
``lvis_style`` mode for LVIS). Detections are jittered copies of ground-truth boxes (some of the wrong
category, some duplicates) plus background false positives, so matching, duplicates, crowd regions,
area ranges and the federated LVIS rules are all exercised.

Each evaluator runs in a fresh subprocess so that its peak RSS (``ru_maxrss``) is its own: the figure
includes the ground truth and detections read from JSON (reading them is not timed). The stages timed:
``prepare`` (libra's checks and defaults, shared by both), ``load`` (the ground-truth index and the results
object), ``evaluate`` (IoUs and per-image matching; faster-coco-eval, as libra runs it, also builds the
precision / recall tables in the same C++ pass), ``accumulate`` (the precision / recall tables of the
official evaluators, and the summary). The report says whether the two evaluators agree: the largest
absolute difference over the summary numbers and over the per-category AP / AP50.

``--smoke`` runs both formats at tiny sizes in a few seconds; ``--lvis-fraction`` scores a stated
fraction of the LVIS images when the official ``lvis`` package cannot run the full size on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

REPOSITORY = Path(__file__).resolve().parents[1]
if str(REPOSITORY) not in sys.path:
    sys.path.insert(0, str(REPOSITORY))

from libra_cli.io import atomic_write_text  # noqa: E402

STAGES = ("prepare", "load", "evaluate", "accumulate")
EVALUATORS = ("official", "faster")
COCO_SUMMARY = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
LVIS_MAX_DETS = 300
# COCO's 80 category ids: 1..90 with ten gaps, so the ids are sparse as in the real annotation file.
COCO_CATEGORY_IDS = tuple(i for i in range(1, 91) if i not in {12, 26, 29, 30, 45, 66, 68, 69, 71, 83})
# LVIS v1: 1,203 categories, 337 rare, 461 common, 405 frequent.
LVIS_FREQUENCY_COUNTS = (("r", 337), ("c", 461), ("f", 405))


# ------------------------------------------------------------------------------------------- data


def _box_annotation(annotation_id: int, image_id: int, category_id: Any, box: np.ndarray) -> dict[str, Any]:
    """A ground-truth record of an xywh box, its area the box's."""
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": int(category_id),
        "bbox": box.tolist(),
        "area": round(float(box[2] * box[3]), 2),
    }


def _image_sizes(rng: np.random.Generator, count: int) -> list[tuple[int, int]]:
    """(width, height) pairs around COCO's typical 640 × 480."""
    widths = rng.integers(480, 641, size=count)
    heights = rng.integers(360, 481, size=count)
    return list(zip(widths.tolist(), heights.tolist(), strict=True))


def _random_boxes(rng: np.random.Generator, count: int, width: int, height: int) -> np.ndarray:
    """``count`` xywh boxes inside the image, side lengths log-uniform in [6, 300] px so that small
    (< 32²), medium and large (> 96²) boxes all occur."""
    w = np.minimum(np.exp(rng.uniform(np.log(6), np.log(300), size=count)), width - 1)
    h = np.minimum(w * np.exp(rng.normal(0.0, 0.35, size=count)), height - 1)
    h = np.maximum(h, 2.0)
    x = rng.uniform(0, width - w)
    y = rng.uniform(0, height - h)
    return np.round(np.stack([x, y, w, h], axis=1), 2)


def _jittered(rng: np.random.Generator, box: np.ndarray, scale: float) -> list[float]:
    """A copy of the xywh ``box`` with each coordinate moved by a normal ``scale`` × its side."""
    x, y, w, h = box
    dx, dy, dw, dh = rng.normal(0.0, scale, size=4) * np.array([w, h, w, h])
    return [round(float(v), 2) for v in (x + dx, y + dy, max(1.0, w + dw), max(1.0, h + dh))]


def coco_ground_truth(
    num_images: int, boxes_per_image: float, seed: int, *, counts: Sequence[int] | None = None
) -> dict:
    """A COCO-style annotation dict: Poisson(``boxes_per_image``) boxes per image (or ``counts[i]`` on image
    ``i + 1``) over the 80 sparse ids, about 1 % of them crowd regions."""
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for image_id, (width, height) in enumerate(_image_sizes(rng, num_images), start=1):
        images.append({"id": image_id, "width": width, "height": height, "file_name": f"{image_id:012d}.jpg"})
        count = int(rng.poisson(boxes_per_image)) if counts is None else int(counts[image_id - 1])
        categories = rng.choice(COCO_CATEGORY_IDS, size=count)
        for box, category_id in zip(_random_boxes(rng, count, width, height), categories, strict=True):
            crowd = int(rng.uniform() < 0.01)
            annotations.append({**_box_annotation(len(annotations) + 1, image_id, category_id, box), "iscrowd": crowd})
    categories = [{"id": i, "name": f"class_{i}", "supercategory": "thing"} for i in COCO_CATEGORY_IDS]
    return {"images": images, "annotations": annotations, "categories": categories}


# How much likelier a category of each frequency group is to be present in an image.
LVIS_FREQUENCY_WEIGHTS = {"r": 1.0, "c": 8.0, "f": 60.0}


def lvis_ground_truth(
    num_images: int,
    boxes_per_image: float,
    seed: int,
    *,
    counts: Sequence[int] | None = None,
    frequency_weights: dict[str, float] = LVIS_FREQUENCY_WEIGHTS,
) -> dict:
    """An LVIS-style annotation dict: 1,203 categories (r / c / f), a few categories per image with a few
    instances each (frequent categories more likely, by ``frequency_weights``), negative and not-exhaustive
    category lists. Poisson(``boxes_per_image``) boxes per image, or ``counts[i]`` on image ``i + 1``."""
    rng = np.random.default_rng(seed)
    frequencies = [label for label, count in LVIS_FREQUENCY_COUNTS for _ in range(count)]
    order = rng.permutation(len(frequencies))  # frequencies interleaved over the ids, as in LVIS
    categories = [
        {"id": i + 1, "name": f"class_{i + 1}", "frequency": frequencies[order[i]]} for i in range(len(frequencies))
    ]
    weight = np.array([frequency_weights[c["frequency"]] for c in categories])
    weight /= weight.sum()
    category_ids = np.arange(1, len(categories) + 1)
    images, annotations = [], []
    for image_id, (width, height) in enumerate(_image_sizes(rng, num_images), start=1):
        count = int(rng.poisson(boxes_per_image)) if counts is None else int(counts[image_id - 1])
        present = rng.choice(category_ids, size=max(1, count // 3), replace=False, p=weight)
        labels = rng.choice(present, size=count) if count else np.array([], dtype=int)
        annotated = np.unique(labels)
        absent = np.setdiff1d(rng.choice(category_ids, size=8, replace=False), annotated)
        not_exhaustive = [int(c) for c in annotated if rng.uniform() < 0.1]
        images.append(
            {
                "id": image_id,
                "width": width,
                "height": height,
                "neg_category_ids": absent.tolist(),
                "not_exhaustive_category_ids": not_exhaustive,
            }
        )
        for box, category_id in zip(_random_boxes(rng, count, width, height), labels, strict=True):
            annotations.append(_box_annotation(len(annotations) + 1, image_id, category_id, box))
    return {"images": images, "annotations": annotations, "categories": categories}


def synthetic_detections(
    dataset: dict, per_image: int, seed: int, *, negatives: bool = False, quality: float | None = None
) -> list[dict]:
    """``per_image`` results records per image: for each GT box a jittered hit (10 % with a wrong
    category) and, half the time, a looser duplicate; the rest background boxes. With ``negatives`` a
    share of the background is of the image's negative categories (counted as false positives by LVIS)
    and the rest of random categories (mostly outside the image's federated sets, hence not counted).
    Scores have three decimals, as detectors' results files often do, so ties occur.

    ``quality`` in [0, 1] sets how good the detector is instead of the defaults above: a GT box is missed
    with probability (1 − quality) / 2, its hit is jittered by 0.02 + 0.25 (1 − quality) of its sides and
    has a wrong category with probability 0.3 (1 − quality). Higher quality, higher AP."""
    if quality is not None and not 0 <= quality <= 1:
        raise ValueError(f"quality must be in [0, 1], got {quality}")
    jitter, wrong, missed = (0.06, 0.1, 0.0) if quality is None else (
        0.02 + 0.25 * (1 - quality), 0.3 * (1 - quality), (1 - quality) / 2
    )  # fmt: skip
    rng = np.random.default_rng(seed)
    category_ids = np.array([c["id"] for c in dataset["categories"]])
    boxes_of: dict[int, list[dict]] = {image["id"]: [] for image in dataset["images"]}
    for ann in dataset["annotations"]:
        boxes_of[ann["image_id"]].append(ann)
    detections: list[dict] = []
    for image in dataset["images"]:
        records = []
        for ann in boxes_of[image["id"]]:
            if missed and rng.uniform() < missed:
                continue
            box = np.asarray(ann["bbox"], dtype=float)
            category_id = ann["category_id"] if rng.uniform() > wrong else int(rng.choice(category_ids))
            records.append((category_id, _jittered(rng, box, jitter), rng.uniform(0.3, 1.0)))
            if rng.uniform() < 0.5:
                records.append((ann["category_id"], _jittered(rng, box, 0.2), rng.uniform(0.05, 0.8)))
        records = records[:per_image]
        background = per_image - len(records)
        boxes = _random_boxes(rng, background, image["width"], image["height"])
        negative_ids = image.get("neg_category_ids") or []
        for box in boxes:
            if negatives and negative_ids and rng.uniform() < 0.3:
                category_id = int(rng.choice(negative_ids))
            else:
                category_id = int(rng.choice(category_ids))
            records.append((category_id, box.tolist(), rng.uniform(0.0, 0.6)))
        for category_id, box, score in records:
            detections.append(
                {"image_id": image["id"], "category_id": int(category_id), "bbox": box, "score": round(float(score), 3)}
            )
    return detections


# ------------------------------------------------------------------------------------------- evaluators


class StageTimer:
    """Wall seconds of consecutive named stages."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._start = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = now - self._start
        self._start = now


def _quiet_print(*_args: Any, **_kwargs: Any) -> None:
    """Swallows faster-coco-eval's progress messages."""


def _mean_valid(array: np.ndarray) -> float | None:
    valid = array[array > -1]
    return float(valid.mean()) if valid.size else None


def _per_category(precision: np.ndarray, category_ids: list) -> dict[str, dict[str, float | None]]:
    """Per-category AP (IoU 0.50:0.95) and AP50 from a [T, R, K] precision slice, keyed by the id."""
    return {
        str(int(category_id)): {
            "AP": _mean_valid(precision[:, :, index]),
            "AP50": _mean_valid(precision[0, :, index]),
        }
        for index, category_id in enumerate(category_ids)
    }


def _none_if_missing(value: float) -> float | None:
    value = float(value)
    return None if value == -1 or value != value else value


def run_coco(evaluator: str, dataset: dict, detections: list[dict]) -> dict:
    """Score with pycocotools (``official``) or faster-coco-eval (``faster``), stage by stage, the way
    ``libra_cli.engine.metrics.evaluate_coco`` drives pycocotools."""
    from libra_cli.engine.metrics import _silenced, _with_coco_defaults, coco_apis
    from libra_cli.engine.results_table import results_table

    timer = StageTimer()
    dataset = _with_coco_defaults(dataset)
    results = results_table(detections, dataset).records(dataset)
    timer.lap("prepare")
    if evaluator == "official":
        from pycocotools.cocoeval import COCOeval

        with _silenced(True):
            gt_api, dt_api = coco_apis(dataset, results)
            timer.lap("load")
            scorer = COCOeval(gt_api, dt_api, iouType="bbox")
            scorer.evaluate()
            timer.lap("evaluate")
            scorer.accumulate()
            scorer.summarize()
            timer.lap("accumulate")
    else:
        from faster_coco_eval import COCO, COCOeval_faster

        gt_api = COCO(print_function=_quiet_print)
        gt_api.dataset = dataset
        gt_api.createIndex()
        dt_api = gt_api.loadRes(results)
        timer.lap("load")
        scorer = COCOeval_faster(gt_api, dt_api, iouType="bbox", print_function=_quiet_print)
        scorer.evaluate()
        timer.lap("evaluate")
        scorer.accumulate()
        scorer.summarize()
        timer.lap("accumulate")
    summary = {name: _none_if_missing(value) for name, value in zip(COCO_SUMMARY, scorer.stats[:12], strict=True)}
    params = scorer.params
    precision = scorer.eval["precision"][:, :, :, params.areaRngLbl.index("all"), params.maxDets.index(100)]
    return {"seconds": timer.seconds, "summary": summary, "per_category": _per_category(precision, params.catIds)}


def run_lvis(evaluator: str, dataset: dict, detections: list[dict], max_dets: int = LVIS_MAX_DETS) -> dict:
    """Score with the lvis package (``official``) or faster-coco-eval's ``lvis_style`` (``faster``), stage
    by stage, the way ``libra_cli.engine.metrics.evaluate_lvis`` drives lvis: the ``max_dets``
    highest-scoring detections of each image are kept before either evaluator sees them."""
    from libra_cli.engine.metrics import _silenced, _with_lvis_defaults
    from libra_cli.engine.results_table import results_table

    timer = StageTimer()
    dataset = _with_lvis_defaults(dataset)
    results = results_table(detections, dataset).top_scoring_per_image(max_dets).records(dataset)
    timer.lap("prepare")
    if evaluator == "official":
        from libra_cli.compat import import_lvis

        LVIS, LVISResults, LVISEval = import_lvis()
        if not results:
            unused = max(category["id"] for category in dataset["categories"]) + 1
            results = [
                {"image_id": dataset["images"][0]["id"], "category_id": unused, "bbox": [0, 0, 1, 1], "score": 0}
            ]

        class InMemoryLVIS(LVIS):
            def _load_json(self, path: str) -> dict:
                return dataset

        with _silenced(True):
            gt_api = InMemoryLVIS("<in memory>")
            dt_api = LVISResults(gt_api, results, max_dets=-1)
            timer.lap("load")
            scorer = LVISEval(gt_api, dt_api, iou_type="bbox")
            scorer.params.max_dets = max_dets
            scorer.evaluate()
            timer.lap("evaluate")
            scorer.accumulate()
            scorer.summarize()
            timer.lap("accumulate")
        summary = {name: _none_if_missing(value) for name, value in scorer.get_results().items()}
        precision = scorer.eval["precision"][:, :, :, scorer.params.area_rng_lbl.index("all")]
        category_ids = scorer.params.cat_ids
    else:
        from faster_coco_eval import COCO, COCOeval_faster

        gt_api = COCO(print_function=_quiet_print)
        # lvis reads no crowd flag; libra clears it before faster-coco-eval sees the annotations.
        gt_api.dataset = {**dataset, "annotations": [{**ann, "iscrowd": 0} for ann in dataset["annotations"]]}
        gt_api.createIndex()
        dt_api = gt_api.loadRes(results)
        timer.lap("load")
        scorer = COCOeval_faster(gt_api, dt_api, iouType="bbox", print_function=_quiet_print, lvis_style=True)
        scorer.params.maxDets = [max_dets]
        scorer.evaluate()
        timer.lap("evaluate")
        scorer.accumulate()
        scorer.summarize()
        timer.lap("accumulate")
        summary = _faster_lvis_summary(scorer, max_dets)
        precision = scorer.eval["precision"][:, :, :, scorer.params.areaRngLbl.index("all"), 0]
        category_ids = scorer.params.catIds
    return {"seconds": timer.seconds, "summary": summary, "per_category": _per_category(precision, category_ids)}


def _faster_lvis_summary(scorer: Any, max_dets: int) -> dict[str, float | None]:
    """faster-coco-eval's LVIS-style ``all_stats`` under the names ``LVISEval.get_results`` uses. With one
    maxDets value the layout is AP, AP50, AP75, APs, APm, APl, AR, two unused slots, ARs, ARm, ARl, AR50,
    AR75, APr, APc, APf."""
    positions = {
        "AP": 0, "AP50": 1, "AP75": 2, "APs": 3, "APm": 4, "APl": 5, "APr": 14, "APc": 15, "APf": 16,
        f"AR@{max_dets}": 6, f"ARs@{max_dets}": 9, f"ARm@{max_dets}": 10, f"ARl@{max_dets}": 11,
    }  # fmt: skip
    return {name: _none_if_missing(scorer.all_stats[index]) for name, index in positions.items()}


def max_abs_difference(first: dict, second: dict) -> dict[str, Any]:
    """The largest |difference| over the summary numbers and over per-category AP / AP50, with where it
    is; a number present in one result and missing (None) in the other counts as infinite."""
    worst: dict[str, Any] = {"summary": 0.0, "summary_at": None, "per_category": 0.0, "per_category_at": None}

    def compare(key: str, where: str, a: float | None, b: float | None) -> None:
        if a is None and b is None:
            return
        difference = float("inf") if a is None or b is None else abs(a - b)
        if difference > worst[key]:
            worst[key], worst[f"{key}_at"] = difference, where

    if set(first["summary"]) != set(second["summary"]):
        raise ValueError(f"summaries differ in names: {sorted(first['summary'])} vs {sorted(second['summary'])}")
    for name in first["summary"]:
        compare("summary", name, first["summary"][name], second["summary"][name])
    for category_id, numbers in first["per_category"].items():
        other = second["per_category"].get(category_id, {"AP": None, "AP50": None})
        for name in ("AP", "AP50"):
            compare("per_category", f"{name} of category {category_id}", numbers[name], other[name])
    return worst


# ------------------------------------------------------------------------------------------- driver


def _worker(arguments: list[str]) -> None:
    """``--worker FORMAT EVALUATOR GT DETECTIONS OUT``: one evaluation in this fresh process."""
    annotation_format, evaluator, gt_path, detections_path, out_path = arguments
    Path(out_path).write_text(
        json.dumps(_evaluate_files(annotation_format, evaluator, Path(gt_path), Path(detections_path)))
    )


def _evaluate_files(annotation_format: str, evaluator: str, gt_path: Path, detections_path: Path) -> dict:
    """Read the two JSON files, score them, add the total and this process's peak RSS."""
    dataset = json.loads(gt_path.read_text())
    detections = json.loads(detections_path.read_text())
    run = run_lvis if annotation_format == "lvis" else run_coco
    result = run(evaluator, dataset, detections)
    result["seconds"]["total"] = sum(result["seconds"][stage] for stage in STAGES)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def _run_in_subprocess(annotation_format: str, evaluator: str, gt: Path, detections: Path, timeout: float) -> dict:
    """One evaluation in a fresh Python process, so that its peak RSS is its own."""
    out = gt.parent / f"{annotation_format}-{evaluator}.json"
    command = [sys.executable, __file__, "--worker", annotation_format, evaluator, str(gt), str(detections), str(out)]
    process = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if process.returncode != 0:
        raise RuntimeError(f"{annotation_format}/{evaluator} failed:\n{process.stderr[-3000:]}")
    return json.loads(out.read_text())


def benchmark_format(
    annotation_format: str, num_images: int, detections_per_image: int, boxes_per_image: float, seed: int,
    workdir: Path, timeout: float, in_process: bool = False, evaluators: tuple[str, ...] = EVALUATORS,
) -> dict:  # fmt: skip
    """Generate one format's data, score it with ``evaluators`` and, with both, compare. ``in_process`` runs
    the evaluators in this process (no per-evaluator peak RSS: the figure is this process's high-water mark)."""
    start = time.perf_counter()
    if annotation_format == "lvis":
        dataset = lvis_ground_truth(num_images, boxes_per_image, seed)
        detections = synthetic_detections(dataset, detections_per_image, seed + 1, negatives=True)
    else:
        dataset = coco_ground_truth(num_images, boxes_per_image, seed)
        detections = synthetic_detections(dataset, detections_per_image, seed + 1)
    gt_path, detections_path = workdir / f"{annotation_format}_gt.json", workdir / f"{annotation_format}_dt.json"
    gt_path.write_text(json.dumps(dataset))
    detections_path.write_text(json.dumps(detections))
    sizes = {
        "images": len(dataset["images"]),
        "annotations": len(dataset["annotations"]),
        "categories": len(dataset["categories"]),
        "detections": len(detections),
        "generate_s": time.perf_counter() - start,
    }
    del dataset, detections
    results = {}
    for evaluator in evaluators:
        print(f"[eval_scale] {annotation_format}: {evaluator} on {sizes['images']} images ...", file=sys.stderr)
        if in_process:
            results[evaluator] = _evaluate_files(annotation_format, evaluator, gt_path, detections_path)
        else:
            results[evaluator] = _run_in_subprocess(annotation_format, evaluator, gt_path, detections_path, timeout)
        print(f"[eval_scale]   total {results[evaluator]['seconds']['total']:.1f} s", file=sys.stderr)
    both = all(evaluator in results for evaluator in EVALUATORS)
    agreement = max_abs_difference(results["official"], results["faster"]) if both else None
    return {"sizes": sizes, "results": results, "agreement": agreement}


def render_markdown(report: dict) -> str:
    """The RESULTS.md section body: machine, versions, command, one table per format, agreement."""
    lines = [
        f"Command: `{report['command']}`",
        "",
        f"Machine: {report['machine']}; Python {report['python']}; "
        + ", ".join(f"{name} {value}" for name, value in report["versions"].items()),
        "",
    ]
    if report["smoke"]:
        lines += ["Smoke run: tiny sizes, evaluators in one process (peak RSS is that process's).", ""]
    for annotation_format, entry in report["formats"].items():
        sizes = entry["sizes"]
        lines += [
            f"**{annotation_format.upper()}**: {sizes['images']:,} images, {sizes['annotations']:,} GT boxes, "
            f"{sizes['categories']:,} categories, {sizes['detections']:,} detections"
            + (f" ({entry['note']})" if entry.get("note") else ""),
            "",
            "| evaluator | prepare s | load s | evaluate s | accumulate s | total s | peak RSS MiB |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for evaluator, result in entry["results"].items():
            seconds = result["seconds"]
            cells = [f"{seconds[stage]:.2f}" for stage in (*STAGES, "total")]
            lines.append(f"| {evaluator} | " + " | ".join(cells) + f" | {result['peak_rss_mib']:,.0f} |")
        results, agreement = entry["results"], entry["agreement"]
        if agreement is not None:
            speedup = results["official"]["seconds"]["total"] / max(results["faster"]["seconds"]["total"], 1e-9)
            lines += [
                "",
                f"Speed-up of the total: {speedup:.1f}×. Largest |official − faster|: summary "
                f"{agreement['summary']:.2e} ({agreement['summary_at']}), per-category AP/AP50 "
                f"{agreement['per_category']:.2e} ({agreement['per_category_at']}).",
            ]
        lines += ["", "| metric | " + " | ".join(results) + " |", "|---|" + "---:|" * len(results)]
        for name in next(iter(results.values()))["summary"]:
            cells = [_format(result["summary"][name]) for result in results.values()]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _format(value: float | None) -> str:
    return "—" if value is None else f"{value:.6f}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="write the markdown report here")
    parser.add_argument("--json", type=Path, help="write the full report (times, summaries, agreement) here")
    parser.add_argument("--formats", nargs="+", choices=("coco", "lvis"), default=["coco", "lvis"])
    parser.add_argument("--coco-images", type=int, default=5000)
    parser.add_argument("--coco-detections", type=int, default=100, help="detections per image")
    parser.add_argument("--coco-boxes", type=float, default=7.3, help="mean GT boxes per image")
    parser.add_argument("--lvis-images", type=int, default=20000)
    parser.add_argument("--lvis-detections", type=int, default=300, help="detections per image")
    parser.add_argument("--lvis-boxes", type=float, default=12.3, help="mean GT boxes per image")
    parser.add_argument(
        "--lvis-fraction", type=float, default=1.0, help="score this fraction of --lvis-images (stated in the report)"
    )
    parser.add_argument("--evaluators", nargs="+", choices=EVALUATORS, default=list(EVALUATORS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout-s", type=float, default=1800, help="limit for each evaluator run")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes, evaluators in this process: both formats in a few seconds"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.coco_images, args.coco_detections, args.lvis_images, args.lvis_detections = 20, 20, 10, 30
        args.lvis_fraction = 1.0
    if not 0 < args.lvis_fraction <= 1:
        parser.error(f"--lvis-fraction must be in (0, 1], got {args.lvis_fraction}")
    return args


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        _worker(argv[1:])
        return {}
    args = parse_args(argv)
    report: dict[str, Any] = {
        "command": "python benchmarks/eval_scale.py " + " ".join(argv),
        "machine": f"{os.cpu_count()} CPU cores ({platform.machine()}), {platform.system()}",
        "python": platform.python_version(),
        "versions": {name: version(name) for name in ("pycocotools", "lvis", "faster-coco-eval", "numpy")},
        "smoke": args.smoke,
        "formats": {},
    }
    with tempfile.TemporaryDirectory(prefix="eval_scale_") as tmp:
        workdir = Path(tmp)
        if "coco" in args.formats:
            report["formats"]["coco"] = benchmark_format(
                "coco",
                args.coco_images,
                args.coco_detections,
                args.coco_boxes,
                args.seed,
                workdir,
                args.timeout_s,
                in_process=args.smoke,
                evaluators=tuple(args.evaluators),
            )
        if "lvis" in args.formats:
            images = max(1, round(args.lvis_images * args.lvis_fraction))
            entry = benchmark_format(
                "lvis",
                images,
                args.lvis_detections,
                args.lvis_boxes,
                args.seed,
                workdir,
                args.timeout_s,
                in_process=args.smoke,
                evaluators=tuple(args.evaluators),
            )
            if images != args.lvis_images:
                entry["note"] = f"{args.lvis_fraction:g} of the {args.lvis_images:,}-image size"
            report["formats"]["lvis"] = entry
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
    if args.out:
        atomic_write_text(args.out, render_markdown(report))
    return report


if __name__ == "__main__":
    main()
