"""4. COCO evaluation: seconds per ``evaluate_detections`` call on the val split, 100 detections per image."""

from __future__ import annotations

import time

import numpy as np

from benchmarks.profiling import TimingSummary, log, summarize
from benchmarks.workload import Settings
from libra_cli.data.coco import DetectionDataset
from libra_cli.engine.metrics import evaluate_detections

DETECTIONS_PER_IMAGE = 100


def synthetic_detections(dataset: dict, per_image: int, seed: int) -> list[dict]:
    """``per_image`` COCO results records for every image of ``dataset``: a jittered copy of each GT box
    (likely true positives, high scores) and random boxes of random categories (low scores)."""
    rng = np.random.default_rng(seed)
    category_ids = [c["id"] for c in dataset["categories"]]
    gt_of: dict[int, list[dict]] = {image["id"]: [] for image in dataset["images"]}
    for ann in dataset["annotations"]:
        gt_of[ann["image_id"]].append(ann)
    detections = []
    for image in dataset["images"]:
        width, height = image["width"], image["height"]
        for ann in gt_of[image["id"]][:per_image]:
            x, y, w, h = ann["bbox"]
            jitter = rng.normal(0.0, 0.05, size=4) * np.array([w, h, w, h])
            box = [x + jitter[0], y + jitter[1], max(1.0, w + jitter[2]), max(1.0, h + jitter[3])]
            detections.append(_record(image["id"], ann["category_id"], box, rng.uniform(0.5, 1.0)))
        for _ in range(per_image - min(per_image, len(gt_of[image["id"]]))):
            w, h = rng.uniform(8, width / 2), rng.uniform(8, height / 2)
            box = [rng.uniform(0, width - w), rng.uniform(0, height - h), w, h]
            detections.append(_record(image["id"], int(rng.choice(category_ids)), box, rng.uniform(0.0, 0.5)))
    return detections


def _record(image_id: int, category_id: int, box: list[float], score: float) -> dict:
    return {
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [round(float(v), 2) for v in box],
        "score": round(float(score), 5),
    }


def time_coco_evaluation(val_set: DetectionDataset, settings: Settings) -> tuple[TimingSummary, int]:
    """Seconds per ``evaluate_detections`` call on the val split, and the number of detections."""
    detections = synthetic_detections(val_set.dataset, DETECTIONS_PER_IMAGE, settings.seed)
    times = []
    for repeat in range(1 + settings.eval_repeats):
        start = time.perf_counter()
        evaluate_detections(val_set.dataset, detections)
        if repeat > 0:  # the first call is a warm-up
            times.append(time.perf_counter() - start)
        log(f"COCO evaluation: {repeat + 1}/{1 + settings.eval_repeats}")
    return summarize(times), len(detections)
