"""Box AP of a detections list against COCO or LVIS ground truth (the COCO and LVIS evaluation protocols).

A detection is a COCO results record: ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` with
the dataset's own (possibly sparse) category ids and the box in absolute pixels, top-left corner plus
width and height (xywh, not xyxy).

COCO is scored with pycocotools' ``COCOeval`` and LVIS with the ``lvis`` package's ``LVISEval`` (federated:
a detection of a category neither annotated in nor listed as absent from an image is not counted, and
unmatched detections of a category in the image's ``not_exhaustive_category_ids`` are not false positives).

Conventions of the returned dicts (all JSON-safe, every number a plain Python ``float`` or ``int``):
- A metric with nothing to measure is ``None``: pycocotools and lvis write −1 when no category has
  ground truth in the selected area range or frequency group (e.g. ``APs`` on a dataset with no small
  boxes, ``APr`` with no rare categories), and a category with no ground truth has no AP. ``None`` (JSON
  null) keeps such entries out of averages and keeps the file strict JSON (NaN is not).
- An empty detections list scores 0 wherever there is ground truth to find, never a crash.
"""

import contextlib
import io
import logging
import math
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from libra_cli.compat import import_lvis
from libra_cli.data.coco import read_annotation_file
from libra_cli.errors import LibraError

COCO_SUMMARY_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
LVIS_FREQUENCIES = ("r", "c", "f")  # rare (< 10 training images), common (10-99), frequent (>= 100)
LVIS_MAX_DETS = 300  # the official LVIS limit on detections per image
COCO_PER_CATEGORY_MAX_DETS = 100  # per-category AP uses the same maxDets as the headline AP

AnnotationFormat = Literal["coco", "lvis"]


def detect_annotation_format(dataset: dict) -> AnnotationFormat:
    """``"lvis"`` when categories carry a ``frequency`` field or images carry ``neg_category_ids``
    (the two things only LVIS annotations have), otherwise ``"coco"``."""
    categories = dataset.get("categories") or []
    images = dataset.get("images") or []
    if any("frequency" in category for category in categories):
        return "lvis"
    if any("neg_category_ids" in image for image in images):
        return "lvis"
    return "coco"


def load_ground_truth(gt: str | Path | dict) -> dict:
    """The annotation dict from a JSON file path (or the dict itself), checked for its three lists."""
    if isinstance(gt, str | Path):
        return read_annotation_file(gt)
    source = "ground truth"
    if not isinstance(gt, dict):
        raise LibraError(f"{source}: expected a JSON object with images, annotations and categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(gt.get(key), list):
            raise LibraError(f"{source}: missing the '{key}' list")
    return gt


def evaluate_detections(gt: str | Path | dict, detections: Sequence[dict], **options: Any) -> dict:
    """Score detections with the COCO or LVIS protocol, whichever format the ground truth is in.

    ``options`` go to :func:`evaluate_coco` (``quiet``) or :func:`evaluate_lvis` (``max_dets``, ``quiet``).
    """
    dataset = load_ground_truth(gt)
    if detect_annotation_format(dataset) == "lvis":
        return evaluate_lvis(dataset, detections, **options)
    return evaluate_coco(dataset, detections, **options)


def evaluate_coco(gt: str | Path | dict, detections: Sequence[dict], *, quiet: bool = True) -> dict:
    """COCO box AP with pycocotools ``COCOeval``.

    Returns ``{"format": "coco", "summary": {name: value for name in COCO_SUMMARY_NAMES},
    "per_category": [{"category_id", "name", "AP", "AP50", "num_gt"}, ...]}``.

    Per-category ``AP`` is the mean of the precision array over the 10 IoU thresholds (0.50:0.95) and the
    101 recall points for that category, area "all", maxDets 100 — the same slice the headline AP averages
    over all categories; ``AP50`` is the same at IoU 0.5 only. ``num_gt`` counts the category's non-crowd
    boxes (crowd boxes are ignored: matching one is neither a hit nor a false positive). Ground truth
    without ``iscrowd`` is read as non-crowd and without ``area`` as box area ``w * h``. ``quiet``
    silences pycocotools' progress prints and summary table.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    dataset = _with_coco_defaults(load_ground_truth(gt))
    results = _checked_detections(detections, dataset)
    with _silenced(quiet):
        gt_api = COCO()
        gt_api.dataset = dataset
        gt_api.createIndex()
        if results:
            dt_api = gt_api.loadRes(results)
        else:
            # ``loadRes`` reads the first record to learn the result type, so it cannot take an empty
            # list; an index over no annotations is what it would have built.
            dt_api = COCO()
            dt_api.dataset = {**dataset, "annotations": []}
            dt_api.createIndex()
        evaluator = COCOeval(gt_api, dt_api, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()

    stats = zip(COCO_SUMMARY_NAMES, evaluator.stats, strict=True)
    summary = {name: _metric_or_none(value) for name, value in stats}
    params = evaluator.params
    # precision: [iou_thresholds, recall_points, categories, area_ranges, max_dets]
    precision = evaluator.eval["precision"][
        :, :, :, params.areaRngLbl.index("all"), params.maxDets.index(COCO_PER_CATEGORY_MAX_DETS)
    ]
    num_gt = Counter(ann["category_id"] for ann in dataset["annotations"] if not ann["iscrowd"])
    # COCOeval holds the ids as NumPy integers (not JSON-serialisable): report the dataset's own values.
    categories = {category["id"]: category for category in dataset["categories"]}
    per_category = [
        {
            "category_id": categories[category_id]["id"],
            "name": categories[category_id].get("name", str(category_id)),
            "AP": _mean_valid_precision(precision[:, :, index]),
            "AP50": _mean_valid_precision(precision[0, :, index]),
            "num_gt": num_gt[category_id],
        }
        for index, category_id in enumerate(params.catIds)
    ]
    return {"format": "coco", "summary": summary, "per_category": per_category}


def evaluate_lvis(
    gt: str | Path | dict, detections: Sequence[dict], *, max_dets: int = LVIS_MAX_DETS, quiet: bool = True
) -> dict:
    """LVIS box AP with the ``lvis`` package's ``LVISEval`` (federated evaluation).

    Keeps the ``max_dets`` highest-scoring detections of each image (300 in the official protocol).
    Returns ``{"format": "lvis", "summary": {"AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc",
    "APf", f"AR@{max_dets}", f"ARs@{max_dets}", f"ARm@{max_dets}", f"ARl@{max_dets}"},
    "per_category": [{"category_id", "name", "frequency", "AP", "AP50", "num_gt"}, ...]}``, where
    per-category AP averages the precision over IoU 0.50:0.95 and the 101 recall points, area "all".
    ``APr``/``APc``/``APf`` are ``None`` when the dataset has no category of that frequency.

    Images without ``neg_category_ids`` / ``not_exhaustive_category_ids`` are read as having empty lists
    (so detections of categories not annotated there are not counted); annotations without ``area`` get
    the box area. ``quiet`` silences lvis' log messages and result table.
    """
    if max_dets < 1:
        raise LibraError(f"max_dets must be at least 1, got {max_dets}")
    LVIS, LVISResults, LVISEval = import_lvis()
    dataset = _with_lvis_defaults(load_ground_truth(gt))
    if not dataset["images"]:
        raise LibraError("ground truth: LVIS evaluation needs at least one image")
    results = _top_scoring_per_image(_checked_detections(detections, dataset), max_dets)
    if not results:
        # ``LVISResults`` reads the first record to learn the result type, so it cannot take an empty
        # list. LVISEval only evaluates ground-truth categories, so one detection of an id outside them is
        # dropped before matching and the outcome is exactly that of no detections.
        unused_category_id = max((category["id"] for category in dataset["categories"]), default=0) + 1
        placeholder = {"image_id": dataset["images"][0]["id"], "category_id": unused_category_id}
        results = [{**placeholder, "bbox": [0.0, 0.0, 1.0, 1.0], "score": 0.0}]

    class InMemoryLVIS(LVIS):
        """The LVIS API over an already loaded dict (its constructor only reads files)."""

        def _load_json(self, path: str) -> dict:
            return dataset

    with _silenced(quiet):
        gt_api = InMemoryLVIS("<in memory>")
        # max_dets=-1 turns off LVISResults' own per-image limit, already applied above.
        evaluator = LVISEval(gt_api, LVISResults(gt_api, results, max_dets=-1), iou_type="bbox")
        evaluator.params.max_dets = max_dets  # only names the AR entries (AR@300 ...)
        evaluator.run()
        if not quiet:
            evaluator.print_results()

    summary = {name: _metric_or_none(value) for name, value in evaluator.get_results().items()}
    # precision: [iou_thresholds, recall_points, categories, area_ranges]
    precision = evaluator.eval["precision"][:, :, :, evaluator.params.area_rng_lbl.index("all")]
    num_gt = Counter(ann["category_id"] for ann in dataset["annotations"])
    categories = {category["id"]: category for category in dataset["categories"]}
    per_category = [
        {
            "category_id": categories[category_id]["id"],
            "name": categories[category_id].get("name", str(category_id)),
            "frequency": categories[category_id]["frequency"],
            "AP": _mean_valid_precision(precision[:, :, index]),
            "AP50": _mean_valid_precision(precision[0, :, index]),
            "num_gt": num_gt[category_id],
        }
        for index, category_id in enumerate(evaluator.params.cat_ids)
    ]
    return {"format": "lvis", "summary": summary, "per_category": per_category}


def _with_coco_defaults(dataset: dict) -> dict:
    """A copy whose annotations all have ``iscrowd`` (default 0) and ``area`` (default box area).

    The evaluators write flags into the annotation dicts, so they get copies, never the caller's.
    """
    annotations = [{"iscrowd": 0, **ann, "area": _area(ann, index)} for index, ann in enumerate(dataset["annotations"])]
    return {**dataset, "annotations": annotations}


def _with_lvis_defaults(dataset: dict) -> dict:
    """A copy with the federated image lists (default empty) and areas filled in, frequencies checked."""
    for index, category in enumerate(dataset["categories"]):
        if category.get("frequency") not in LVIS_FREQUENCIES:
            raise LibraError(
                f"categories[{index}] (id {category.get('id')!r}): LVIS evaluation needs a 'frequency' of "
                f"'r', 'c' or 'f', got {category.get('frequency')!r}"
            )
    images = [{"neg_category_ids": [], "not_exhaustive_category_ids": [], **image} for image in dataset["images"]]
    annotations = [{**ann, "area": _area(ann, index)} for index, ann in enumerate(dataset["annotations"])]
    return {**dataset, "images": images, "annotations": annotations}


def _area(ann: dict, index: int) -> float:
    """The annotation's ``area``, or its box area ``w * h`` when it has none."""
    if "area" in ann:
        return ann["area"]
    bbox = ann.get("bbox")
    if not isinstance(bbox, list | tuple) or len(bbox) != 4:
        raise LibraError(f"annotations[{index}]: needs a 'bbox' [x, y, w, h], got {bbox!r}")
    return float(bbox[2]) * float(bbox[3])


def _checked_detections(detections: Sequence[dict], dataset: dict) -> list[dict]:
    """Copies of the detections (the evaluators add fields to them) after checking each one.

    Raises LibraError naming the first detection whose image or category is not in the ground truth, or
    whose fields are missing or malformed.
    """
    image_ids = {image["id"] for image in dataset["images"]}
    category_ids = {category["id"] for category in dataset["categories"]}
    checked = []
    for index, detection in enumerate(detections):
        where = f"detections[{index}]"
        if not isinstance(detection, dict):
            raise LibraError(f"{where}: expected an object, got {type(detection).__name__}")
        missing = [key for key in ("image_id", "category_id", "bbox", "score") if key not in detection]
        if missing:
            raise LibraError(f"{where}: missing {', '.join(missing)}")
        if detection["image_id"] not in image_ids:
            raise LibraError(f"{where}: image_id {detection['image_id']!r} is not an image of the ground truth")
        if detection["category_id"] not in category_ids:
            raise LibraError(f"{where}: category_id {detection['category_id']!r} is not a category of the ground truth")
        bbox = detection["bbox"]
        if not isinstance(bbox, list | tuple) or len(bbox) != 4:
            raise LibraError(f"{where}: bbox must be [x, y, w, h], got {bbox!r}")
        box = [_finite_float(value) for value in bbox]
        if None in box or box[2] < 0 or box[3] < 0:
            raise LibraError(f"{where}: bbox [x, y, w, h] needs finite numbers and w, h >= 0, got {bbox!r}")
        score = _finite_float(detection["score"])
        if score is None:
            raise LibraError(f"{where}: score must be a finite number, got {detection['score']!r}")
        checked.append({**detection, "bbox": box, "score": score})
    return checked


def _finite_float(value: Any) -> float | None:
    """``value`` as a float, or None when it is not a finite number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _top_scoring_per_image(detections: list[dict], max_dets: int) -> list[dict]:
    """The ``max_dets`` highest-scoring detections of each image (ties keep input order)."""
    by_image: dict[Any, list[dict]] = {}
    for detection in detections:
        by_image.setdefault(detection["image_id"], []).append(detection)
    kept = []
    for image_detections in by_image.values():
        kept.extend(sorted(image_detections, key=lambda detection: -detection["score"])[:max_dets])
    return kept


def _mean_valid_precision(precision: np.ndarray) -> float | None:
    """Mean of the precision entries that are not the evaluators' −1 'no ground truth' mark."""
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else None


def _metric_or_none(value: float) -> float | None:
    """The evaluators' −1 'nothing to measure' (or NaN) as None, anything else as a plain float."""
    value = float(value)
    return None if value == -1 or math.isnan(value) else value


@contextlib.contextmanager
def _silenced(quiet: bool) -> Iterator[None]:
    """Swallow pycocotools' prints and lvis' log records (and its use of the deprecated ``Logger.warn``)
    while ``quiet``; the logger level is restored afterwards."""
    if not quiet:
        yield
        return
    lvis_logger = logging.getLogger("lvis")
    previous_level = lvis_logger.level
    lvis_logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"lvis\.")
            yield
    finally:
        lvis_logger.setLevel(previous_level)
