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
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np

from libra_cli.compat import import_lvis
from libra_cli.config import EVALUATORS
from libra_cli.data.coco import checked_annotation_lists, read_annotation_file
from libra_cli.data.voc import is_voc_dataset
from libra_cli.engine.results_table import ResultsTable, category_chunks, results_table
from libra_cli.engine.voc_eval import difficult_as_crowd, evaluate_voc
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
    return checked_annotation_lists(gt, "ground truth")


def evaluate_detections(
    gt: str | Path | dict, detections: Sequence[dict], *, evaluator: str = "auto", **options: Any
) -> dict:
    """Score detections with the COCO, LVIS or Pascal VOC protocol, whichever format the ground truth is in.

    ``options`` go to :func:`evaluate_coco` (``quiet``), :func:`evaluate_lvis` (``max_dets``, ``quiet``) or,
    for ground truth read from a VOCdevkit, to the COCO-style numbers that
    :func:`libra_cli.engine.voc_eval.evaluate_voc` completes with the VOC metrics.
    ``evaluator`` (one of :data:`EVALUATORS`) picks the COCO / LVIS implementation.
    """
    dataset = load_ground_truth(gt)
    if detect_annotation_format(dataset) == "lvis":
        return evaluate_lvis(dataset, detections, evaluator=evaluator, **options)
    if is_voc_dataset(dataset):
        dataset = difficult_as_crowd(dataset)
        coco = evaluate_coco(dataset, detections, evaluator=evaluator, **options)
        return evaluate_voc(dataset, detections, coco)
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
    table = results_table(detections, dataset, iou_type)
    faster = _use_faster(evaluator, iou_type, dataset, "coco")
    if faster:
        scorer = _scored_in_chunks(dataset, table, partial(_faster_coco_eval, lvis_max_dets=None), quiet=quiet)
    else:
        scorer = _scored_in_chunks(dataset, table, partial(_official_coco_eval, iou_type=iou_type), quiet=quiet)

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


def _official_coco_eval(dataset: dict, results: list[dict], *, iou_type: str) -> Any:
    """pycocotools' ``COCOeval`` after ``evaluate`` and ``accumulate``."""
    from pycocotools.cocoeval import COCOeval

    gt_api, dt_api = coco_apis(dataset, results)
    scorer = COCOeval(gt_api, dt_api, iouType=iou_type)
    scorer.evaluate()
    scorer.accumulate()
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
    table = results_table(detections, dataset, iou_type).top_scoring_per_image(max_dets)
    # The federated rule, applied before the evaluators apply it (the same outcome, fewer records to hold):
    # a detection counts only where its category is annotated in or listed as absent from its image.
    table = table.take(_federated_rows(dataset, table))
    faster = _use_faster(evaluator, iou_type, dataset, "lvis")
    if faster:
        # lvis matches a crowd annotation like any other box; faster-coco-eval would ignore it.
        annotations = [{**ann, "iscrowd": 0} for ann in dataset["annotations"]]
        scorer = _scored_in_chunks(
            {**dataset, "annotations": annotations}, table, partial(_faster_coco_eval, lvis_max_dets=max_dets),
            quiet=quiet,
        )  # fmt: skip
        summary = _faster_lvis_summary(scorer.all_stats, max_dets)
        # precision: [iou_thresholds, recall_points, categories, area_ranges, max_dets (only ``max_dets``)]
        precision = scorer.eval["precision"][:, :, :, scorer.params.areaRngLbl.index("all"), 0]
        category_ids = scorer.params.catIds
    else:
        score = partial(_official_lvis_eval, iou_type=iou_type, max_dets=max_dets)
        scorer = _scored_in_chunks(dataset, table, score, quiet=quiet)
        if not quiet:
            scorer.print_results()
        summary = {name: _metric_or_none(value) for name, value in scorer.get_results().items()}
        # precision: [iou_thresholds, recall_points, categories, area_ranges]
        precision = scorer.eval["precision"][:, :, :, scorer.params.area_rng_lbl.index("all")]
        category_ids = scorer.params.cat_ids
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


def _official_lvis_eval(dataset: dict, results: list[dict], *, iou_type: str, max_dets: int) -> Any:
    """The lvis package's ``LVISEval`` after ``evaluate`` and ``accumulate``."""
    LVIS, LVISResults, LVISEval = import_lvis()
    if not results:
        # ``LVISResults`` reads the first record to learn the result type, so it cannot take an empty
        # list. LVISEval only evaluates ground-truth categories, so one detection of an id outside them is
        # dropped before matching and the outcome is exactly that of no detections.
        unused_category_id = _unused_id(dataset["categories"])
        placeholder = {"image_id": dataset["images"][0]["id"], "category_id": unused_category_id}
        shape = {"bbox": [0.0, 0.0, 1.0, 1.0]} if iou_type == "bbox" else {"segmentation": dict(EMPTY_RLE)}
        results = [{**placeholder, **shape, "score": 0.0}]

    class InMemoryLVIS(LVIS):
        """The LVIS API over an already loaded dict (its constructor only reads files)."""

        def _load_json(self, path: str) -> dict:
            return dataset

    gt_api = InMemoryLVIS("<in memory>")
    # max_dets=-1 turns off LVISResults' own per-image limit, already applied above.
    scorer = LVISEval(gt_api, LVISResults(gt_api, results, max_dets=-1), iou_type=iou_type)
    scorer.params.max_dets = max_dets  # only names the AR entries (AR@300 ...)
    scorer.evaluate()
    scorer.accumulate()
    return scorer


def _unused_id(categories: list[dict]) -> Any:
    """A category id outside ``categories`` (the ids may be of any type the evaluators accept)."""
    integers = [category["id"] for category in categories if type(category["id"]) is int]
    return max(integers, default=0) + 1


def _federated_rows(dataset: dict, table: ResultsTable) -> np.ndarray:
    """bool [N]: the rows whose category is annotated in their image or in its ``neg_category_ids`` — the
    only detections LVIS' federated evaluation counts (``LVISEval._prepare`` drops the others)."""
    image_position = {image["id"]: index for index, image in enumerate(dataset["images"])}
    category_position = {category["id"]: index for index, category in enumerate(dataset["categories"])}
    num_categories = len(category_position)
    pairs = [
        image_position[ann["image_id"]] * num_categories + category_position[ann["category_id"]]
        for ann in dataset["annotations"]
        if ann["image_id"] in image_position and ann["category_id"] in category_position
    ]
    for image in dataset["images"]:
        base = image_position[image["id"]] * num_categories
        pairs.extend(base + category_position[c] for c in image["neg_category_ids"] if c in category_position)
    rows = table.image_index * num_categories + table.category_index
    return np.isin(rows, np.array(pairs, dtype=np.int64))


# The evaluators keep an entry for every (image, category) pair, empty or not (faster-coco-eval a Python
# list and a C++ match table each, about 8 µs and 1 KiB a pair): at LVIS val size, 19,809 × 1,203 = 24
# million pairs, that outweighs the detections. An evaluation of at most ONE_PASS_CELLS pairs and
# CHUNK_DETECTIONS detections is scored in one pass (COCO val: 5,000 × 80), as before. A larger one goes a
# chunk of categories at a time, each chunk over only the images that hold an annotation or a detection
# of its categories — an image without either adds nothing to a category's precision or recall in both
# protocols — with at most CHUNK_CELLS pairs and CHUNK_DETECTIONS detections (held as dicts) in a chunk.
# Small chunks leave out most empty pairs: on 990 LVIS-val-like images, chunks of 10,000 to 30,000 pairs
# take half the CPU time of one pass (benchmarks/RESULTS.md). Every category's AP is independent of the
# others', and the summary is the official ``summarize`` over the chunks' precision and recall tables put
# side by side, so the numbers are those of one pass (tests/engine/test_chunked_eval.py).
ONE_PASS_CELLS = 1_000_000
CHUNK_CELLS = 20_000
CHUNK_DETECTIONS = 1_000_000


def _scored_in_chunks(
    dataset: dict, table: ResultsTable, score: Callable[[dict, list[dict]], Any], *, quiet: bool
) -> Any:
    """The evaluator that ``score(dataset, records)`` builds (after ``evaluate`` and ``accumulate``), run
    once when the whole evaluation fits the limits above, else once per chunk of categories
    (:func:`libra_cli.engine.results_table.category_chunks`, consecutive in sorted id order), then
    summarised over all of them.

    A chunk sees its categories, their annotations and detections, and the images holding any of them
    (at least one image). The last chunk's evaluator carries the joined tables — ``precision``
    [T, R, K, A(, M)] and ``recall`` [T, K, A(, M)] along K, the category ids and, for LVIS, the frequency
    groups — into its own ``summarize``.
    """
    categories, images = dataset["categories"], dataset["images"]
    order = sorted(range(len(categories)), key=lambda position: categories[position]["id"])
    rows = np.bincount(table.category_index, minlength=len(categories))
    whole = len(table) <= CHUNK_DETECTIONS and len(images) * len(categories) <= ONE_PASS_CELLS
    chunks = [] if whole else category_chunks(_images_of(dataset, table), rows, order, CHUNK_DETECTIONS, CHUNK_CELLS)
    precision, recall = [], []
    with _silenced(quiet), warnings.catch_warnings():
        if quiet:  # e.g. faster-coco-eval's note that an annotation id 0 reads as 'unmatched'
            warnings.simplefilter("ignore")
        if whole:
            scorer = score(dataset, table.records(dataset))
        for chunk in chunks:
            ids = {categories[position]["id"] for position in chunk.categories}
            annotations = [ann for ann in dataset["annotations"] if ann["category_id"] in ids]
            part = {
                **dataset,
                "images": [images[i] for i in (chunk.images.tolist() or [0])],
                "categories": [categories[position] for position in chunk.categories],
                "annotations": annotations,
            }
            in_chunk = np.zeros(len(categories), dtype=bool)
            in_chunk[chunk.categories] = True
            records = table.take(in_chunk[table.category_index]).records(dataset)
            scorer = score(part, records)
            del records
            precision.append(scorer.eval["precision"])
            recall.append(scorer.eval["recall"])
        if chunks:
            _join_chunks(scorer, [categories[position] for position in order], precision, recall)
        scorer.summarize()
    return scorer


def _images_of(dataset: dict, table: ResultsTable) -> list[np.ndarray]:
    """Per category position: the ascending positions of the images where it is annotated or detected."""
    image_position = {image["id"]: index for index, image in enumerate(dataset["images"])}
    category_position = {category["id"]: index for index, category in enumerate(dataset["categories"])}
    num_images = max(1, len(image_position))
    annotated = [
        category_position[ann["category_id"]] * num_images + image_position[ann["image_id"]]
        for ann in dataset["annotations"]
        if ann["image_id"] in image_position and ann["category_id"] in category_position
    ]
    detected = table.category_index * num_images + table.image_index
    codes = np.unique(np.concatenate([np.array(annotated, dtype=np.int64), detected]))
    bounds = np.searchsorted(codes, np.arange(len(category_position) + 1) * num_images)
    return [codes[bounds[k] : bounds[k + 1]] - k * num_images for k in range(len(category_position))]


def _join_chunks(scorer: Any, categories: list[dict], precision: list, recall: list) -> None:
    """Give ``scorer`` (pycocotools', lvis' or faster-coco-eval's evaluator) the tables of every chunk,
    joined along the category axis, and the sorted ``categories`` they cover."""
    scorer.eval = {
        **scorer.eval,
        "precision": np.concatenate(precision, axis=2),
        "recall": np.concatenate(recall, axis=1),
    }
    ids = [category["id"] for category in categories]
    params = scorer.params
    if hasattr(params, "cat_ids") and not hasattr(params, "catIds"):  # the lvis package
        params.cat_ids = ids
        labels = params.img_count_lbl
    else:
        params.catIds = ids
        labels = getattr(params, "imgCountLbl", None)
    if hasattr(scorer, "freq_groups") and labels is not None:  # LVIS: APr, APc, APf by category position
        scorer.freq_groups = [
            [k for k, category in enumerate(categories) if category.get("frequency") == label] for label in labels
        ]


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


def _faster_coco_eval(dataset: dict, results: list[dict], *, lvis_max_dets: int | None) -> Any:
    """faster-coco-eval's ``COCOeval_faster`` on box results after ``evaluate`` and ``accumulate``: the
    COCO protocol, or LVIS' federated one with ``lvis_max_dets`` detections per image (``lvis_style``; the
    per-image limit itself is already applied to ``results``)."""
    from faster_coco_eval import COCO, COCOeval_faster

    gt_api = COCO(print_function=_discard)
    gt_api.dataset = dataset
    gt_api.createIndex()
    dt_api = gt_api.loadRes(results)
    lvis_style = lvis_max_dets is not None
    # Without separate_eval, evaluate() matches and accumulates in one C++ pass: about half the time
    # and less memory than keeping every per-image result for a separate accumulate().
    scorer = COCOeval_faster(gt_api, dt_api, iouType="bbox", print_function=_discard, lvis_style=lvis_style)
    if lvis_style:
        scorer.params.maxDets = [lvis_max_dets]
    scorer.evaluate()
    scorer.accumulate()
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
