"""Pascal VOC detection metrics: per-class AP at IoU 0.5, the VOC2007 11-point and the VOC2010+ area metric.

The devkit's protocol, class by class:

1. the class's detections over all images are sorted by descending score (ties keep their input order);
2. each detection is matched, greedily in that order, to the ground-truth box of its class in its image with
   the largest IoU; with IoU > 0.5 (strictly) it is a true positive if that box is not yet taken (and takes
   it), a false positive if it is (a duplicate); if the box is ``difficult`` the detection is neither;
   with IoU <= 0.5, or no box of the class in the image, it is a false positive;
3. recall = TP / (non-difficult boxes), precision = TP / (TP + FP), cumulated along the sorted list;
4. AP07 (VOC2007, 11-point) = mean over t = 0, 0.1, …, 1 of the largest precision at recall >= t (0 when the
   recall never reaches t); AP (VOC2010+, area) = area under the precision envelope, where the envelope at
   recall r is the largest precision at any recall >= r.

Boxes are compared in continuous 0-based pixel coordinates without the devkit's ``+ 1``: the VOC reader turns
a 1-based inclusive box into ``[xmin - 1, xmax]`` (see :mod:`libra_cli.data.voc`), whose length is the
devkit's pixel count ``xmax - xmin + 1``, so the IoU is the devkit's. A class without any non-difficult box has
no AP (None) and is left out of the mean, where the devkit would divide by zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

VOC_IOU_THRESHOLD = 0.5
ELEVEN_RECALL_POINTS = tuple(k / 10 for k in range(11))  # 0, 0.1, …, 1 as exact tenths


def box_iou_xyxy(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box [4] with boxes [N, 4], all (x1, y1, x2, y2) in continuous pixel coordinates -> [N]."""
    width = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0.0, None)
    height = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0.0, None)
    intersection = width * height
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return intersection / np.maximum(area + areas - intersection, np.finfo(np.float64).eps)


def match_detections(
    detections: Sequence[tuple[Any, float, Sequence[float]]],
    ground_truth: dict[Any, tuple[np.ndarray, np.ndarray]],
    iou_threshold: float = VOC_IOU_THRESHOLD,
) -> tuple[np.ndarray, np.ndarray]:
    """The devkit's greedy matching of one class's detections.

    Args:
        detections: ``(image_id, score, (x1, y1, x2, y2))`` of every detection of the class.
        ground_truth: image id → (boxes float [N, 4] xyxy, difficult bool [N]) of the class's boxes.
    Returns:
        ``(tp, fp)``, 0/1 float arrays over the detections in descending-score order, without the detections
        that matched a difficult box (they count for neither, so they are left out).
    """
    order = sorted(range(len(detections)), key=lambda index: -detections[index][1])
    taken = {image_id: np.zeros(len(boxes), dtype=bool) for image_id, (boxes, _) in ground_truth.items()}
    tp, fp = [], []
    for index in order:
        image_id, _, box = detections[index]
        boxes, difficult = ground_truth.get(image_id, (np.zeros((0, 4)), np.zeros(0, dtype=bool)))
        if len(boxes):
            overlaps = box_iou_xyxy(np.asarray(box, dtype=np.float64), boxes)
            best = int(np.argmax(overlaps))
            if overlaps[best] > iou_threshold:
                if difficult[best]:
                    continue  # neither a hit nor a miss
                if not taken[image_id][best]:
                    taken[image_id][best] = True
                    tp.append(1.0)
                    fp.append(0.0)
                    continue
        tp.append(0.0)  # a duplicate of a taken box, a poor overlap, or no box of the class here
        fp.append(1.0)
    return np.array(tp), np.array(fp)


def precision_recall(tp: np.ndarray, fp: np.ndarray, num_positives: int) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative (recall, precision) along the sorted detections; ``num_positives`` > 0 non-difficult boxes."""
    true_positives, false_positives = np.cumsum(tp), np.cumsum(fp)
    recall = true_positives / num_positives
    precision = true_positives / np.maximum(true_positives + false_positives, np.finfo(np.float64).eps)
    return recall, precision


def ap_11_point(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC2007: mean over t in {0, 0.1, …, 1} of max(precision[recall >= t]), 0 where recall never reaches t."""
    total = 0.0
    for threshold in ELEVEN_RECALL_POINTS:
        reached = recall >= threshold
        total += float(precision[reached].max()) if reached.any() else 0.0
    return total / len(ELEVEN_RECALL_POINTS)


def ap_area(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC2010+: area under the precision envelope, summed over the recall steps."""
    recall_points = np.concatenate([[0.0], recall, [1.0]])
    envelope = np.concatenate([[0.0], precision, [0.0]])
    envelope = np.maximum.accumulate(envelope[::-1])[::-1]  # best precision at this recall or beyond
    steps = np.flatnonzero(recall_points[1:] != recall_points[:-1])
    return float(np.sum((recall_points[steps + 1] - recall_points[steps]) * envelope[steps + 1]))


def class_ap(
    detections: Sequence[tuple[Any, float, Sequence[float]]], ground_truth: dict[Any, tuple[np.ndarray, np.ndarray]]
) -> tuple[float | None, float | None]:
    """(area AP, 11-point AP) of one class; (None, None) when it has no non-difficult box."""
    num_positives = int(sum(int((~difficult).sum()) for _, difficult in ground_truth.values()))
    if num_positives == 0:
        return None, None
    tp, fp = match_detections(detections, ground_truth)
    recall, precision = precision_recall(tp, fp, num_positives)
    return ap_area(recall, precision), ap_11_point(recall, precision)


def difficult_as_crowd(dataset: dict) -> dict:
    """A VOC-read annotation dict with its difficult boxes marked ``iscrowd``, so that the COCO evaluation
    ignores them as the devkit does."""
    annotations = [{**ann, "iscrowd": int(bool(ann.get("difficult", 0)))} for ann in dataset["annotations"]]
    return {**dataset, "annotations": annotations}


def evaluate_voc(dataset: dict, detections: Sequence[dict], coco: dict) -> dict:
    """VOC mAP of COCO-format detections against a VOC-read annotation dict, plus the COCO-style numbers.

    ``dataset`` is :func:`difficult_as_crowd` of the ground truth and ``coco`` the COCO evaluation of
    ``detections`` against it (:func:`libra_cli.engine.metrics.evaluate_detections` passes both), which has
    checked the detections (image and category ids, boxes, scores). Returns ``{"format": "voc", "summary":
    {the 12 COCO numbers ("AP" stays the headline), "mAP" (area, VOC2010+), "mAP_07" (11-point)},
    "per_category": [{"category_id", "name", "AP", "AP50", "num_gt", "AP_voc", "AP_voc07", "num_difficult"},
    ...]}``. The COCO numbers come from pycocotools with difficult boxes passed as ``iscrowd`` regions, so that
    they too are ignored; ``num_gt`` counts non-difficult boxes.
    """
    annotations = dataset["annotations"]
    per_class_gt: dict[Any, dict[Any, tuple[list, list]]] = {}
    for ann in annotations:
        x, y, w, h = (float(v) for v in ann["bbox"])
        boxes, difficult = per_class_gt.setdefault(ann["category_id"], {}).setdefault(ann["image_id"], ([], []))
        boxes.append((x, y, x + w, y + h))
        difficult.append(bool(ann["iscrowd"]))
    per_class_dets: dict[Any, list[tuple[Any, float, tuple[float, ...]]]] = {}
    for detection in detections:
        x, y, w, h = (float(v) for v in detection["bbox"])
        per_class_dets.setdefault(detection["category_id"], []).append(
            (detection["image_id"], float(detection["score"]), (x, y, x + w, y + h))
        )

    rows = []
    for row in coco["per_category"]:
        category_id = row["category_id"]
        ground_truth = {
            image_id: (np.array(boxes, dtype=np.float64).reshape(-1, 4), np.array(difficult, dtype=bool))
            for image_id, (boxes, difficult) in per_class_gt.get(category_id, {}).items()
        }
        area, eleven = class_ap(per_class_dets.get(category_id, []), ground_truth)
        num_difficult = int(sum(int(flags.sum()) for _, flags in ground_truth.values()))
        rows.append({**row, "AP_voc": area, "AP_voc07": eleven, "num_difficult": num_difficult})
    summary = {
        **coco["summary"],
        "mAP": _mean(row["AP_voc"] for row in rows),
        "mAP_07": _mean(row["AP_voc07"] for row in rows),
    }
    return {"format": "voc", "summary": summary, "per_category": rows}


def _mean(values: Any) -> float | None:
    present = [value for value in values if value is not None]
    return float(np.mean(present)) if present else None
