"""Box or mask AP of a detections list against COCO or LVIS ground truth (the COCO and LVIS evaluation
protocols; ``iou_type`` "bbox" or "segm").

A detection is a COCO results record: ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` with
the dataset's own (possibly sparse) category ids and the box in absolute pixels, top-left corner plus
width and height (xywh, not xyxy).

COCO is scored with pycocotools' ``COCOeval`` and LVIS with the ``lvis`` package's ``LVISEval`` (federated:
a detection of a category neither annotated in nor listed as absent from an image is not counted, and
unmatched detections of a category in the image's ``not_exhaustive_category_ids`` are not false positives).
Box AP is computed by default with faster-coco-eval's C++ port of the same two protocols, which gives the
official numbers (to 1e-6, ``tests/engine/test_evaluators.py``) about four times faster at the datasets'
scale (``benchmarks/RESULTS.md``); ``evaluator`` (:data:`EVALUATORS`) chooses.

Conventions of the returned dicts (all JSON-safe, every number a plain Python ``float`` or ``int``):
- A metric with nothing to measure is ``None``: pycocotools and lvis write −1 when no category has
  ground truth in the selected area range or frequency group (e.g. ``APs`` on a dataset with no small
  boxes, ``APr`` with no rare categories), and a category with no ground truth has no AP. ``None`` (JSON
  null) keeps such entries out of averages and keeps the file strict JSON (NaN is not).
- An empty detections list scores 0 wherever there is ground truth to find, never a crash.
"""

import contextlib
import importlib.util
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
from libra_cli.data.voc import is_voc_dataset
from libra_cli.errors import LibraError

COCO_SUMMARY_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
LVIS_FREQUENCIES = ("r", "c", "f")  # rare (< 10 training images), common (10-99), frequent (>= 100)
LVIS_MAX_DETS = 300  # the official LVIS limit on detections per image
COCO_PER_CATEGORY_MAX_DETS = 100  # per-category AP uses the same maxDets as the headline AP

AnnotationFormat = Literal["coco", "lvis"]
# What a detection is matched by: its box (results with "bbox" [x, y, w, h]) or its mask (results with
# "segmentation", a compressed RLE {"size": [h, w], "counts": str} as pycocotools' ``mask.encode`` writes it).
IoUType = Literal["bbox", "segm"]
IOU_TYPES = ("bbox", "segm")
EMPTY_RLE = {"size": [1, 1], "counts": "1"}  # a 1×1 mask with no pixel set
# Who computes the numbers: "official" (pycocotools, lvis), "faster" (faster-coco-eval's C++ COCOeval_faster,
# checked to give the official box AP to 1e-6, tests/engine/test_evaluators.py) or "auto" (faster wherever
# it reproduces the official numbers: box AP with integer ids and, for LVIS, no 'ignore' flags; else official).
EVALUATORS = ("auto", "official", "faster")


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


def evaluate_detections(
    gt: str | Path | dict, detections: Sequence[dict], *, evaluator: str = "auto", **options: Any
) -> dict:
    """Score detections with the COCO, LVIS or Pascal VOC protocol, whichever format the ground truth is in.

    ``options`` go to :func:`evaluate_coco` (``quiet``), :func:`evaluate_lvis` (``max_dets``, ``quiet``) or,
    for ground truth read from a VOCdevkit, :func:`libra_cli.engine.voc_eval.evaluate_voc` (which passes them
    and ``evaluator`` on to its COCO-style numbers).
    ``evaluator`` (one of :data:`EVALUATORS`) picks the COCO / LVIS implementation.
    """
    dataset = load_ground_truth(gt)
    if detect_annotation_format(dataset) == "lvis":
        return evaluate_lvis(dataset, detections, evaluator=evaluator, **options)
    if is_voc_dataset(dataset):
        from libra_cli.engine.voc_eval import evaluate_voc  # it builds on evaluate_coco below

        return evaluate_voc(dataset, detections, evaluator=evaluator, **options)
    return evaluate_coco(dataset, detections, evaluator=evaluator, **options)


def evaluate_coco(
    gt: str | Path | dict,
    detections: Sequence[dict],
    *,
    iou_type: IoUType = "bbox",
    quiet: bool = True,
    evaluator: str = "auto",
) -> dict:
    """COCO box AP (``iou_type="bbox"``) or mask AP (``"segm"``) with pycocotools ``COCOeval``.

    Mask AP takes segmentation results (see :data:`IoUType`) and needs every ground-truth annotation's
    ``segmentation`` (polygons or RLE); matching is by mask IoU and the area ranges use the mask areas.

    Returns ``{"format": "coco", "summary": {name: value for name in COCO_SUMMARY_NAMES},
    "per_category": [{"category_id", "name", "AP", "AP50", "num_gt"}, ...]}``.

    Per-category ``AP`` is the mean of the precision array over the 10 IoU thresholds (0.50:0.95) and the
    101 recall points for that category, area "all", maxDets 100 — the same slice the headline AP averages
    over all categories; ``AP50`` is the same at IoU 0.5 only. ``num_gt`` counts the category's non-crowd
    boxes (crowd boxes are ignored: matching one is neither a hit nor a false positive). Ground truth
    without ``iscrowd`` is read as non-crowd and without ``area`` as box area ``w * h``. ``quiet``
    silences pycocotools' progress prints and summary table. ``evaluator``: see :data:`EVALUATORS`.
    """
    dataset = _with_coco_defaults(_checked_ground_truth(load_ground_truth(gt), iou_type))
    results = _checked_detections(detections, dataset, iou_type)
    faster = _use_faster(evaluator, iou_type, dataset, "coco")
    if faster:
        scorer = _faster_coco_eval(dataset, results, lvis_max_dets=None, quiet=quiet)
    else:
        scorer = _official_coco_eval(dataset, results, iou_type, quiet=quiet)

    stats = zip(COCO_SUMMARY_NAMES, scorer.stats, strict=True)
    summary = {name: _metric_or_none(value) for name, value in stats}
    params = scorer.params
    # precision: [iou_thresholds, recall_points, categories, area_ranges, max_dets]
    precision = scorer.eval["precision"][
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
    scored_by = "faster-coco-eval" if faster else "pycocotools"
    return {"format": "coco", "summary": summary, "per_category": per_category, "evaluator": scored_by}


def coco_apis(dataset: dict, results: list[dict]) -> tuple[Any, Any]:
    """pycocotools' ``COCO`` indexes of the ground truth and of the (checked) results."""
    from pycocotools.coco import COCO

    gt_api = COCO()
    gt_api.dataset = dataset
    gt_api.createIndex()
    if results:
        return gt_api, gt_api.loadRes(results)
    # ``loadRes`` reads the first record to learn the result type, so it cannot take an empty list; an
    # index over no annotations is what it would have built.
    dt_api = COCO()
    dt_api.dataset = {**dataset, "annotations": []}
    dt_api.createIndex()
    return gt_api, dt_api


def _official_coco_eval(dataset: dict, results: list[dict], iou_type: str, *, quiet: bool) -> Any:
    """pycocotools' ``COCOeval`` after ``evaluate``, ``accumulate`` and ``summarize``."""
    from pycocotools.cocoeval import COCOeval

    with _silenced(quiet):
        gt_api, dt_api = coco_apis(dataset, results)
        scorer = COCOeval(gt_api, dt_api, iouType=iou_type)
        scorer.evaluate()
        scorer.accumulate()
        scorer.summarize()
    return scorer


def evaluate_lvis(
    gt: str | Path | dict,
    detections: Sequence[dict],
    *,
    iou_type: IoUType = "bbox",
    max_dets: int = LVIS_MAX_DETS,
    quiet: bool = True,
    evaluator: str = "auto",
) -> dict:
    """LVIS box AP (``iou_type="bbox"``) or mask AP (``"segm"``, segmentation results, see
    :func:`evaluate_coco`) with the ``lvis`` package's ``LVISEval`` (federated evaluation).

    Keeps the ``max_dets`` highest-scoring detections of each image (300 in the official protocol).
    Returns ``{"format": "lvis", "summary": {"AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc",
    "APf", f"AR@{max_dets}", f"ARs@{max_dets}", f"ARm@{max_dets}", f"ARl@{max_dets}"},
    "per_category": [{"category_id", "name", "frequency", "AP", "AP50", "num_gt"}, ...]}``, where
    per-category AP averages the precision over IoU 0.50:0.95 and the 101 recall points, area "all".
    ``APr``/``APc``/``APf`` are ``None`` when the dataset has no category of that frequency.

    Images without ``neg_category_ids`` / ``not_exhaustive_category_ids`` are read as having empty lists
    (so detections of categories not annotated there are not counted); annotations without ``area`` get
    the box area. ``quiet`` silences lvis' log messages and result table. ``evaluator``: see
    :data:`EVALUATORS`.
    """
    if max_dets < 1:
        raise LibraError(f"max_dets must be at least 1, got {max_dets}")
    dataset = _with_lvis_defaults(_checked_ground_truth(load_ground_truth(gt), iou_type))
    if not dataset["images"]:
        raise LibraError("ground truth: LVIS evaluation needs at least one image")
    results = _top_scoring_per_image(_checked_detections(detections, dataset, iou_type), max_dets)
    faster = _use_faster(evaluator, iou_type, dataset, "lvis")
    if faster:
        # lvis matches a crowd annotation like any other box; faster-coco-eval would ignore it.
        annotations = [{**ann, "iscrowd": 0} for ann in dataset["annotations"]]
        scorer = _faster_coco_eval(
            {**dataset, "annotations": annotations}, results, lvis_max_dets=max_dets, quiet=quiet
        )
        summary = _faster_lvis_summary(scorer.all_stats, max_dets)
        # precision: [iou_thresholds, recall_points, categories, area_ranges, max_dets (only ``max_dets``)]
        precision = scorer.eval["precision"][:, :, :, scorer.params.areaRngLbl.index("all"), 0]
        category_ids = scorer.params.catIds
    else:
        summary, precision, category_ids = _official_lvis_eval(dataset, results, iou_type, max_dets, quiet=quiet)
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
        for index, category_id in enumerate(category_ids)
    ]
    scored_by = "faster-coco-eval" if faster else "lvis"
    return {"format": "lvis", "summary": summary, "per_category": per_category, "evaluator": scored_by}


def _official_lvis_eval(
    dataset: dict, results: list[dict], iou_type: str, max_dets: int, *, quiet: bool
) -> tuple[dict, np.ndarray, list]:
    """The lvis package's summary, its precision array at area "all" ([iou_thresholds, recall_points,
    categories]) and the category ids of its third axis."""
    LVIS, LVISResults, LVISEval = import_lvis()
    if not results:
        # ``LVISResults`` reads the first record to learn the result type, so it cannot take an empty
        # list. LVISEval only evaluates ground-truth categories, so one detection of an id outside them is
        # dropped before matching and the outcome is exactly that of no detections.
        unused_category_id = max((category["id"] for category in dataset["categories"]), default=0) + 1
        placeholder = {"image_id": dataset["images"][0]["id"], "category_id": unused_category_id}
        shape = {"bbox": [0.0, 0.0, 1.0, 1.0]} if iou_type == "bbox" else {"segmentation": dict(EMPTY_RLE)}
        results = [{**placeholder, **shape, "score": 0.0}]

    class InMemoryLVIS(LVIS):
        """The LVIS API over an already loaded dict (its constructor only reads files)."""

        def _load_json(self, path: str) -> dict:
            return dataset

    with _silenced(quiet):
        gt_api = InMemoryLVIS("<in memory>")
        # max_dets=-1 turns off LVISResults' own per-image limit, already applied above.
        scorer = LVISEval(gt_api, LVISResults(gt_api, results, max_dets=-1), iou_type=iou_type)
        scorer.params.max_dets = max_dets  # only names the AR entries (AR@300 ...)
        scorer.run()
        if not quiet:
            scorer.print_results()

    summary = {name: _metric_or_none(value) for name, value in scorer.get_results().items()}
    # precision: [iou_thresholds, recall_points, categories, area_ranges]
    precision = scorer.eval["precision"][:, :, :, scorer.params.area_rng_lbl.index("all")]
    return summary, precision, scorer.params.cat_ids


def _use_faster(evaluator: str, iou_type: str, dataset: dict, annotation_format: AnnotationFormat) -> bool:
    """Whether faster-coco-eval scores this evaluation (see :data:`EVALUATORS`).

    Raises LibraError for an unknown ``evaluator``, and for "faster" on an input where it would not give
    the official numbers (``auto`` then uses the official evaluator).
    """
    if evaluator not in EVALUATORS:
        raise LibraError(f"evaluator: {evaluator!r} is not one of {', '.join(EVALUATORS)}")
    if evaluator == "official":
        return False
    reason = _faster_mismatch(iou_type, dataset, annotation_format)
    if reason is not None and evaluator == "faster":
        raise LibraError(f"evaluator 'faster': {reason}; use 'official' or 'auto'")
    return reason is None


def _faster_mismatch(iou_type: str, dataset: dict, annotation_format: AnnotationFormat) -> str | None:
    """Why faster-coco-eval would not reproduce the official numbers on this input, or None."""
    if importlib.util.find_spec("faster_coco_eval") is None:
        return "the faster-coco-eval package is not installed"
    if iou_type != "bbox":
        return f"only box AP is checked against the official evaluators, not iou_type {iou_type!r}"
    for key in ("images", "categories", "annotations"):
        for index, record in enumerate(dataset[key]):
            if type(record.get("id")) is not int:  # it turns ids into int, the official ones keep them
                return f"ground truth {key}[{index}] has the non-integer id {record.get('id')!r}"
    if annotation_format == "lvis":
        for index, ann in enumerate(dataset["annotations"]):
            if ann.get("ignore"):  # lvis ignores such a box but matches it by plain IoU, as no crowd box is
                return f"ground truth annotations[{index}] has 'ignore', which only the lvis package reads"
    return None


def _faster_coco_eval(dataset: dict, results: list[dict], *, lvis_max_dets: int | None, quiet: bool) -> Any:
    """faster-coco-eval's ``COCOeval_faster`` on box results after ``evaluate``, ``accumulate`` and
    ``summarize``: the COCO protocol, or LVIS' federated one with ``lvis_max_dets`` detections per image
    (``lvis_style``; the per-image limit itself is already applied to ``results``)."""
    from faster_coco_eval import COCO, COCOeval_faster

    report = _discard if quiet else print
    with warnings.catch_warnings():
        if quiet:  # e.g. its note that an annotation id 0 reads as 'unmatched', as in pycocotools
            warnings.simplefilter("ignore")
        gt_api = COCO(print_function=report)
        gt_api.dataset = dataset
        gt_api.createIndex()
        dt_api = gt_api.loadRes(results)
        lvis_style = lvis_max_dets is not None
        # Without separate_eval, evaluate() matches and accumulates in one C++ pass: about half the time
        # and less memory than keeping every per-image result for a separate accumulate().
        scorer = COCOeval_faster(gt_api, dt_api, iouType="bbox", print_function=report, lvis_style=lvis_style)
        if lvis_style:
            scorer.params.maxDets = [lvis_max_dets]
        scorer.evaluate()
        scorer.accumulate()
        scorer.summarize()
    return scorer


def _faster_lvis_summary(all_stats: Sequence[float], max_dets: int) -> dict[str, float | None]:
    """faster-coco-eval's LVIS-style ``all_stats`` under the names of ``LVISEval.get_results``.

    With three area ranges and one maxDets value the layout is AP, AP50, AP75, APs, APm, APl, AR, two
    unused AR slots, ARs, ARm, ARl, AR50, AR75, then APr, APc, APf.
    """
    positions = {"AP": 0, "AP50": 1, "AP75": 2, "APs": 3, "APm": 4, "APl": 5, "APr": 14, "APc": 15, "APf": 16}
    positions.update({f"AR@{max_dets}": 6, f"ARs@{max_dets}": 9, f"ARm@{max_dets}": 10, f"ARl@{max_dets}": 11})
    return {name: _metric_or_none(all_stats[index]) for name, index in positions.items()}


def _discard(*_args: Any, **_kwargs: Any) -> None:
    """A print function that prints nothing."""


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


def _checked_ground_truth(dataset: dict, iou_type: str) -> dict:
    """``dataset``, after checking ``iou_type`` and, for mask AP, that every annotation has a segmentation."""
    if iou_type not in IOU_TYPES:
        raise LibraError(f"iou_type: {iou_type!r} is not one of {', '.join(IOU_TYPES)}")
    if iou_type == "segm":
        for index, ann in enumerate(dataset["annotations"]):
            if not isinstance(ann, dict) or not isinstance(ann.get("segmentation"), list | dict):
                found = ann.get("segmentation") if isinstance(ann, dict) else ann
                raise LibraError(
                    f"ground truth: annotations[{index}]: mask AP needs a 'segmentation' (polygons or RLE), "
                    f"got {found!r}"
                )
    return dataset


def _checked_detections(detections: Sequence[dict], dataset: dict, iou_type: str = "bbox") -> list[dict]:
    """Copies of the detections (the evaluators add fields to them) after checking each one.

    Box results need a ``bbox``; mask results (``iou_type="segm"``) a compressed-RLE ``segmentation``, and
    a ``bbox`` of theirs is dropped: the evaluators would take its area for the detection's area.

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
        if iou_type == "segm":
            checked.append(_checked_segmentation(detection, where, image_ids, category_ids))
            continue
        _check_fields_and_ids(detection, where, "bbox", image_ids, category_ids)
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


def _check_fields_and_ids(detection: dict, where: str, shape: str, image_ids: set, category_ids: set) -> None:
    """One result record has its fields (``shape``: "bbox" or "segmentation") and ids of the ground truth."""
    missing = [key for key in ("image_id", "category_id", shape, "score") if key not in detection]
    if missing:
        raise LibraError(f"{where}: missing {', '.join(missing)}")
    if detection["image_id"] not in image_ids:
        raise LibraError(f"{where}: image_id {detection['image_id']!r} is not an image of the ground truth")
    if detection["category_id"] not in category_ids:
        raise LibraError(f"{where}: category_id {detection['category_id']!r} is not a category of the ground truth")


def _checked_segmentation(detection: dict, where: str, image_ids: set, category_ids: set) -> dict:
    """A copy of one mask result (without any ``bbox``) after checking its ids, score and compressed RLE."""
    _check_fields_and_ids(detection, where, "segmentation", image_ids, category_ids)
    rle = detection["segmentation"]
    size = rle.get("size") if isinstance(rle, dict) else None
    if (
        not isinstance(size, list | tuple)
        or len(size) != 2
        or not all(isinstance(side, int) and side >= 0 for side in size)
        or not isinstance(rle.get("counts"), str | bytes)
    ):
        raise LibraError(f"{where}: segmentation must be a compressed RLE {{'size': [h, w], 'counts': str}}")
    score = _finite_float(detection["score"])
    if score is None:
        raise LibraError(f"{where}: score must be a finite number, got {detection['score']!r}")
    copy = {key: value for key, value in detection.items() if key != "bbox"}
    return {**copy, "segmentation": {"size": list(size), "counts": rle["counts"]}, "score": score}


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
