"""TIDE's error kinds (Bolya et al., "TIDE: A General Toolbox for Identifying Object Detection Errors",
ECCV 2020), at TIDE's default setting: AP50 (foreground IoU t_f = 0.5, background IoU t_b = 0.1,
up to 100 detections per image). After matching detections to objects greedily by score at IoU 0.5,
each false positive gets the first kind that fits, in TIDE's order:

- ``loc``: IoU with an object of its own class in [t_b, t_f];
- ``cls``: IoU ≥ t_f with an object of another class;
- ``dupe``: IoU ≥ t_f with an object of its own class that a higher-scoring detection already took;
- ``bkg``: IoU ≤ t_b with every object (or the image has none);
- ``both``: everything else (wrong class and poorly localised);

and ``miss`` counts the objects no detection found that no ``cls``/``loc`` error points at. ΔAP of a
kind is AP50 after its oracle minus AP50, never below 0: ``cls`` and ``loc`` errors become hits (of
the object's class for ``cls``), only the highest-scoring one per object that no hit took, the others
are removed; ``dupe``, ``bkg`` and ``both`` errors are removed; ``miss`` removes the missed objects
from the count of objects to find. Each oracle is applied alone to the original detections.

The kinds are computed here from the paper and the ``tidecv`` 1.0.1 source rather than by ``tidecv``
itself: that package imports OpenCV and needs a ``segmentation`` and a ``file_name`` on every
annotation even for boxes. Where this module differs, on purpose: AP50 averages the categories with
ground truth (as COCO does; tidecv also averages in categories that only have false positives, at 0),
a category whose every object the ``miss`` oracle removes scores 1 when no detection of it is left
(tidecv drops it from the average), and detections ignored by a crowd region are not counted as errors.

:func:`tide_errors` gives the ``tide`` object of ``errors.json`` (``libra_cli.analysis.errors``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

TIDE_KINDS = ("cls", "loc", "both", "dupe", "bkg", "miss")
MAX_DETS = 100  # COCO's limit on detections per image (per category in COCOeval, per image in TIDE)
# The 101 recall points 0:.01:1 as exact quotients i / 100. COCOeval's np.linspace(0, 1, 101) differs in the last
# bit: a recall of exactly 7/20 reaches TIDE's 0.35 but not COCOeval's 0.35000000000000003.
TIDE_RECALL_POINTS = np.arange(101) / 100
TIDE_FG_IOU = 0.5  # t_f: a hit at or above it
TIDE_BG_IOU = 0.1  # t_b: background at or below it


# --- TIDE ----------------------------------------------------------------------------------------------


@dataclass
class _FalsePositive:
    """A detection that is not a hit, with its TIDE kind and, for cls/loc, the object it points at."""

    kind: str
    category_id: int
    score: float
    target: int | None = None  # for cls and loc: the object's index among the image's non-crowd objects
    target_category: int | None = None
    fixable: bool = False  # the best cls/loc error of an object no hit took: the oracle turns it into a hit


@dataclass
class _TideData:
    """Everything the oracles need: hits, false positives, missed objects and object counts per category."""

    hits: list[tuple[int, float]] = field(default_factory=list)  # (category, score)
    false_positives: list[_FalsePositive] = field(default_factory=list)
    missed: Counter = field(default_factory=Counter)  # category → missed objects
    num_objects: Counter = field(default_factory=Counter)  # category → non-crowd objects


def box_iou(boxes: np.ndarray, others: np.ndarray, crowd: np.ndarray | None = None) -> np.ndarray:
    """IoU of xywh boxes [N, 4] with xywh boxes [M, 4] → [N, M]; where ``crowd`` [M] is true, the
    intersection is divided by the first box's area instead (COCO's crowd rule)."""
    if len(boxes) == 0 or len(others) == 0:
        return np.zeros((len(boxes), len(others)))
    x1 = np.maximum(boxes[:, None, 0], others[None, :, 0])
    y1 = np.maximum(boxes[:, None, 1], others[None, :, 1])
    x2 = np.minimum(boxes[:, None, 0] + boxes[:, None, 2], others[None, :, 0] + others[None, :, 2])
    y2 = np.minimum(boxes[:, None, 1] + boxes[:, None, 3], others[None, :, 1] + others[None, :, 3])
    intersection = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = boxes[:, 2] * boxes[:, 3]
    union = area[:, None] + (others[:, 2] * others[:, 3])[None, :] - intersection
    if crowd is not None:
        union = np.where(crowd[None, :], area[:, None], union)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, intersection / union, 0.0)


def tide_errors(dataset: dict, category_ids: Sequence[int], detections: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """TIDE's AP50, ΔAP per error kind and count per kind (see the module docstring); the ``tide``
    object of ``errors.json``. ``dataset``: COCO-format ground truth (crowd flags set); ``category_ids``: the
    categories analysed (detections of others are left out)."""
    data = _tide_data(dataset, category_ids, detections)
    categories = [category_id for category_id in category_ids if data.num_objects[category_id] > 0]
    ap50 = _mean_ap(data, categories, fixed=None)
    counts = Counter(error.kind for error in data.false_positives)
    counts["miss"] = sum(data.missed.values())
    return {
        "ap50": ap50,
        "delta_ap": {kind: max(_mean_ap(data, categories, fixed=kind) - ap50, 0.0) for kind in TIDE_KINDS},
        "counts": {kind: int(counts[kind]) for kind in TIDE_KINDS},
    }


def _tide_data(dataset: dict, category_ids: Sequence[int], detections: Sequence[dict[str, Any]]) -> _TideData:
    analysed = set(category_ids)
    objects: dict[Any, list[dict]] = defaultdict(list)
    for ann in dataset["annotations"]:
        objects[ann["image_id"]].append(ann)
    found: dict[Any, list[dict]] = defaultdict(list)
    for detection in detections:
        if detection["category_id"] in analysed:
            found[detection["image_id"]].append(detection)
    data = _TideData()
    for image in dataset["images"]:
        _tide_image(objects[image["id"]], found[image["id"]], data)
    return data


def _tide_image(anns: list[dict], detections: list[dict], data: _TideData) -> None:
    """Match one image's detections, classify its false positives and find its missed objects."""
    gts = [ann for ann in anns if not ann["iscrowd"]]
    crowds = [ann for ann in anns if ann["iscrowd"]]
    data.num_objects.update(ann["category_id"] for ann in gts)
    detections = sorted(detections, key=lambda detection: -detection["score"])[:MAX_DETS]
    boxes = np.array([detection["bbox"] for detection in detections], dtype=float).reshape(-1, 4)
    classes = np.array([detection["category_id"] for detection in detections])
    gt_classes = np.array([ann["category_id"] for ann in gts])
    iou = box_iou(boxes, np.array([ann["bbox"] for ann in gts], dtype=float).reshape(-1, 4))
    same_class = classes[:, None] == gt_classes[None, :]

    # 1. Greedy matching in score order: each detection takes the free object of its class it overlaps most.
    hit = np.zeros(len(detections), dtype=bool)
    used = np.zeros(len(gts), dtype=bool)
    for index in range(len(detections)):
        candidates = np.where(same_class[index] & ~used, iou[index], 0.0)
        if len(gts) and candidates.max() >= TIDE_FG_IOU:
            hit[index], used[candidates.argmax()] = True, True
            data.hits.append((int(classes[index]), detections[index]["score"]))

    # 2. False positives inside a crowd region of their class are ignored.
    crowd_iou = box_iou(
        boxes, np.array([ann["bbox"] for ann in crowds], dtype=float).reshape(-1, 4), np.ones(len(crowds), bool)
    )
    crowd_classes = np.array([ann["category_id"] for ann in crowds])
    ignored = ((crowd_iou > TIDE_FG_IOU) & (classes[:, None] == crowd_classes[None, :])).any(axis=1)

    # 3. Each remaining false positive gets the first kind that fits, in TIDE's order.
    errors = [
        _classify(detections[index], iou[index], same_class[index], used, gt_classes)
        for index in np.flatnonzero(~hit & ~ignored)
    ]
    data.false_positives.extend(errors)
    # Of the cls/loc errors pointing at an object no hit took, the oracle fixes the highest-scoring one
    # (the first on a tie; errors come in score order).
    best: dict[int, _FalsePositive] = {}
    for error in errors:
        if error.target is not None and not used[error.target] and error.target not in best:
            best[error.target] = error
    for error in best.values():
        error.fixable = True

    # 4. Missed: objects no detection took and no cls/loc error points at.
    pointed = {error.target for error in errors if error.target is not None}
    data.missed.update(int(gt_classes[index]) for index in range(len(gts)) if not used[index] and index not in pointed)


def _classify(
    detection: dict, iou: np.ndarray, same_class: np.ndarray, used: np.ndarray, gt_classes: np.ndarray
) -> _FalsePositive:
    """TIDE's kind of one false positive given its IoU with the image's objects [G]."""
    category_id, score = int(detection["category_id"]), detection["score"]
    if len(iou) == 0:
        return _FalsePositive("bkg", category_id, score)
    own = np.where(same_class, iou, 0.0)
    if TIDE_BG_IOU <= own.max() <= TIDE_FG_IOU:
        return _FalsePositive("loc", category_id, score, int(own.argmax()), category_id)
    other = np.where(same_class, 0.0, iou)
    if other.max() >= TIDE_FG_IOU:
        target = int(other.argmax())
        return _FalsePositive("cls", category_id, score, target, int(gt_classes[target]))
    if np.where(used, own, 0.0).max() >= TIDE_FG_IOU:
        return _FalsePositive("dupe", category_id, score)
    if iou.max() <= TIDE_BG_IOU:
        return _FalsePositive("bkg", category_id, score)
    return _FalsePositive("both", category_id, score)


def _mean_ap(data: _TideData, categories: list[int], fixed: str | None) -> float:
    """AP50 averaged over ``categories`` with the oracle of the kind ``fixed`` applied (None: as is)."""
    points: dict[int, list[tuple[float, bool]]] = defaultdict(list)
    for category_id, score in data.hits:
        points[category_id].append((score, True))
    for error in data.false_positives:
        if error.kind != fixed:
            points[error.category_id].append((error.score, False))
        elif error.fixable:  # a fixed cls/loc error: a hit of the object's category
            points[error.target_category].append((error.score, True))
    counts = Counter(data.num_objects)
    if fixed == "miss":
        counts.subtract(data.missed)
    return float(np.mean([average_precision(points[category_id], counts[category_id]) for category_id in categories]))


def average_precision(points: Iterable[tuple[float, bool]], num_objects: int) -> float:
    """TIDE's COCO-style AP of (score, is hit) points against ``num_objects``: the precision made monotone
    (the best precision at any higher recall), read at the 101 recall points i / 100 and averaged.

    With no objects to find the AP is 1 when there is no detection either and 0 otherwise.
    """
    ordered = sorted(points, key=lambda point: -point[0])
    if num_objects <= 0:
        return 0.0 if ordered else 1.0
    hits = np.cumsum([is_hit for _, is_hit in ordered])
    precision = hits / np.arange(1, len(ordered) + 1)
    recall = hits / num_objects
    envelope = np.append(np.maximum.accumulate(precision[::-1])[::-1], 0.0)  # 0 past the last recall
    return float(envelope[np.searchsorted(recall, TIDE_RECALL_POINTS, side="left")].mean())
