"""Where a run's AP goes: the COCO error decomposition and TIDE's error kinds, read from its detections.

Unlike the other analyses this one never runs the model: it reads ``RUN_DIR/eval/detections.json`` (COCO
results records written by ``libra eval`` or training's final evaluation) and the ground truth they were
scored against, and asks which mistakes cost the AP.

1. The COCO error decomposition (Hoiem et al., "Diagnosing Error in Object Detectors", ECCV 2012, as the
   COCO analyze tool computes it). Seven precision-recall curves, each forgiving more, area "all",
   at most 100 detections per image and category; the area under each is an AP:

   - ``C75``, ``C50``: the plain PR curves at IoU 0.75 and 0.5;
   - ``Loc``: at IoU 0.1, so poorly localised boxes count as hits (a second box on an object already
     found stays a false positive, as in the COCO tool);
   - ``Sim``: as ``Loc``, but a detection on an object of another category of the same supercategory is
     neither a hit nor a false positive (those objects become ignored objects of the category under
     study); only when the categories carry ``supercategory`` with more than one distinct value (a
     category that names none is confused with no other here);
   - ``Oth``: the same with objects of every other category;
   - ``BG``: every remaining false positive removed: precision 1 up to the recall ``Oth`` reaches, 0 past it;
   - ``FN``: every remaining error removed as well: precision 1 at every recall.

   The curves are pycocotools' ``COCOeval`` precision arrays (interpolated, 101 recall points); ``Sim``
   and ``Oth`` come from a ``COCOeval`` whose ground truth of one category is extended by the
   confusable objects marked ignored (:class:`ConfusionEval`). Overall curves average the categories
   with ground truth, as COCO's AP does.

2. TIDE's error kinds (Bolya et al., ECCV 2020) at AP50: ``libra_cli.analysis.tide``.

LVIS ground truth is scored with the COCO protocol (not LVIS's federated one) on the categories that have
annotations; the result's ``note`` says so. :func:`analyze_errors` returns the ``errors.json`` dict and
:func:`write_errors` writes it with ``errors.csv`` (per category) and ``errors.png`` (the stacked PR areas).
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from libra_cli.analysis.common import Progress, csv_text, figure_png
from libra_cli.analysis.runner import Analysis, Files, Option, Runner
from libra_cli.analysis.tide import MAX_DETS, tide_errors
from libra_cli.data.coco import read_annotation_file
from libra_cli.engine.metrics import detect_annotation_format
from libra_cli.errors import LibraError
from libra_cli.io import read_json
from libra_cli.rundir import RunLayout, eval_set_name

COCO_KINDS = ("C75", "C50", "Loc", "Sim", "Oth", "BG", "FN")
RECALL_POINTS = np.linspace(0.0, 1.0, 101)  # COCO's recall thresholds 0:.01:1, as COCOeval spells them
LOC_IOU = 0.1  # the COCO tool's IoU of Loc, Sim and Oth
DETECTION_FIELDS = ("image_id", "category_id", "bbox", "score")


# --- inputs --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroundTruth:
    """The annotation file prepared for both analyses.

    Attributes:
        path: the file.
        format: "coco" or "lvis".
        dataset: a COCO dict whose annotations all have ``iscrowd`` and ``area`` and ids 1..N.
        category_ids: the categories analysed, in file order (for LVIS only the annotated ones).
        names: category id → name.
        supercategories: category id → supercategory, or None when they do not split the categories.
    """

    path: Path
    format: str
    dataset: dict[str, Any]
    category_ids: list[int]
    names: dict[int, str]
    supercategories: dict[int, Any] | None


def ground_truth_file(layout: RunLayout, ann: str | Path | None, images: str | Path | None) -> Path:
    """The annotation file the run's detections are scored against: ``ann`` when given, else the one
    ``eval/metrics.json`` names (what the last evaluation used), else the val split of ``dataset.json``.

    ``images`` is accepted so the flags of ``libra eval`` work here too; only its existence is checked,
    since boxes are all this analysis reads.
    """
    if images is not None:
        if ann is None:
            raise LibraError("--images: only together with --ann (the ground truth of those images)")
        if not Path(images).is_dir():
            raise LibraError(f"--images: {images} is not a folder")
    if ann is not None:
        return Path(ann)
    metrics = layout.read_metrics()
    if metrics is not None and isinstance(metrics.get("ann_file"), str):
        return Path(metrics["ann_file"])
    info = layout.read_dataset_info()
    if not isinstance(info.get("val_ann"), str):
        raise LibraError(f"{layout.dataset}: names no val annotation file ('val_ann'); pass --ann")
    return Path(info["val_ann"])


def load_ground_truth(path: Path) -> GroundTruth:
    """Read and check a COCO or LVIS annotation file; LibraError naming the annotation that is broken."""
    raw = read_annotation_file(path)
    annotation_format = detect_annotation_format(raw)
    image_ids = {image.get("id") for image in raw["images"]}
    names = {category.get("id"): str(category.get("name", category.get("id"))) for category in raw["categories"]}
    annotations = []
    for index, ann in enumerate(raw["annotations"]):
        where = f"{path}: annotations[{index}]"
        if not isinstance(ann, dict):
            raise LibraError(f"{where}: expected an object, got {type(ann).__name__}")
        if ann.get("image_id") not in image_ids:
            raise LibraError(f"{where}: image_id {ann.get('image_id')!r} is not an image of the file")
        if ann.get("category_id") not in names:
            raise LibraError(f"{where}: category_id {ann.get('category_id')!r} is not a category of the file")
        box = _box(ann.get("bbox"))
        if box is None:
            raise LibraError(
                f"{where}: bbox must be [x, y, w, h] with finite numbers and w, h >= 0, got {ann.get('bbox')!r}"
            )
        # Own ids 1..N: COCOeval marks "unmatched" with id 0, so a file that uses id 0 would lose a match.
        area = ann["area"] if isinstance(ann.get("area"), int | float) else box[2] * box[3]
        annotations.append(
            {
                "id": index + 1,
                "image_id": ann["image_id"],
                "category_id": ann["category_id"],
                "bbox": box,
                "area": float(area),
                "iscrowd": int(bool(ann.get("iscrowd", 0))),
            }
        )
    annotated = {ann["category_id"] for ann in annotations}
    categories = [category["id"] for category in raw["categories"]]
    if annotation_format == "lvis":
        categories = [category_id for category_id in categories if category_id in annotated]
    if not any(not ann["iscrowd"] for ann in annotations):
        raise LibraError(f"{path}: no (non-crowd) ground-truth boxes to analyse errors against")
    supercategories = {category["id"]: category.get("supercategory") for category in raw["categories"]}
    distinct = {supercategories[category_id] for category_id in categories} - {None}
    dataset = {
        "images": [{"id": image["id"]} for image in raw["images"]],
        "categories": [{"id": category_id, "name": names[category_id]} for category_id in categories],
        "annotations": [ann for ann in annotations if ann["category_id"] in set(categories)],
    }
    return GroundTruth(
        path=Path(path),
        format=annotation_format,
        dataset=dataset,
        category_ids=categories,
        names=names,
        supercategories=supercategories if len(distinct) > 1 else None,
    )


def read_detections(path: Path, ground_truth: GroundTruth) -> list[dict[str, Any]]:
    """The run's detections, checked against the ground truth: LibraError (one line, naming the file and
    the record) for a malformed record, an image id or a category id the ground truth does not have."""
    records = read_json(path, "detections file")
    if not isinstance(records, list):
        raise LibraError(f"{path}: expected a JSON list of detections, got {type(records).__name__}")
    image_ids = {image["id"] for image in ground_truth.dataset["images"]}
    detections = []
    for index, record in enumerate(records):
        where = f"{path}: detections[{index}]"
        if not isinstance(record, dict):
            raise LibraError(f"{where}: expected an object, got {type(record).__name__}")
        missing = [key for key in DETECTION_FIELDS if key not in record]
        if missing:
            raise LibraError(f"{where}: missing {', '.join(missing)}")
        if record["image_id"] not in image_ids:
            raise LibraError(f"{where}: image_id {record['image_id']!r} is not an image of {ground_truth.path}")
        if record["category_id"] not in ground_truth.names:
            raise LibraError(f"{where}: category_id {record['category_id']!r} is not a category of {ground_truth.path}")
        box = _box(record["bbox"])
        if box is None:
            raise LibraError(
                f"{where}: bbox must be [x, y, w, h] with finite numbers and w, h >= 0, got {record['bbox']!r}"
            )
        score = _finite(record["score"])
        if score is None:
            raise LibraError(f"{where}: score must be a finite number, got {record['score']!r}")
        detections.append(
            {"image_id": record["image_id"], "category_id": record["category_id"], "bbox": box, "score": score}
        )
    return detections


def _finite(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _box(value: Any) -> list[float] | None:
    """``value`` as [x, y, w, h] floats, or None when it is not four finite numbers with w, h >= 0."""
    if not isinstance(value, list | tuple) or len(value) != 4:
        return None
    box = [_finite(number) for number in value]
    if any(number is None for number in box) or box[2] < 0 or box[3] < 0:
        return None
    return box


# --- the COCO error decomposition ----------------------------------------------------------------------


class ConfusionEval(COCOeval):
    """``COCOeval`` of one category at IoU 0.1 in which the objects of the ``confusable`` categories join
    that category's ground truth as ignored objects: a detection matching one (and no object of its own
    category) is neither a hit nor a false positive. This is the COCO tool's Sim (confusable = the same
    supercategory) and Oth (confusable = every other category)."""

    def __init__(self, gt: COCO, dt: COCO, category_id: int, confusable: set[int]) -> None:
        super().__init__(gt, dt, iouType="bbox")
        self.category_id = category_id
        self.confusable = confusable
        params = self.params
        params.catIds = [category_id]
        params.iouThrs = np.array([LOC_IOU])
        params.maxDets = [MAX_DETS]
        params.areaRng, params.areaRngLbl = params.areaRng[:1], params.areaRngLbl[:1]  # "all"
        params.imgIds = sorted(set(gt.catToImgs[category_id]) | set(dt.catToImgs[category_id]))

    def _prepare(self) -> None:
        super()._prepare()
        for image_id in self.params.imgIds:
            if not self._dts[image_id, self.category_id]:
                continue  # ignored objects only matter where there are detections to forgive
            self._gts[image_id, self.category_id].extend(
                {**ann, "category_id": self.category_id, "ignore": 1}
                for ann in self.cocoGt.imgToAnns[image_id]
                if ann["category_id"] in self.confusable
            )

    def curve(self) -> np.ndarray:
        """The interpolated precision at the 101 recall points [101]."""
        with contextlib.redirect_stdout(io.StringIO()):
            self.evaluate()
            self.accumulate()
        return self.eval["precision"][0, :, 0, 0, 0]


def coco_indexes(ground_truth: GroundTruth, detections: Sequence[dict[str, Any]]) -> tuple[COCO, COCO]:
    """pycocotools indexes of the ground truth and of the detections (copies: the API edits them)."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = ground_truth.dataset
        gt.createIndex()
        if detections:
            dt = gt.loadRes([dict(detection) for detection in detections])
        else:
            # loadRes reads the first record to learn the result type, so it cannot take an empty list.
            dt = COCO()
            dt.dataset = {**ground_truth.dataset, "annotations": []}
            dt.createIndex()
    return gt, dt


def coco_decomposition(
    ground_truth: GroundTruth, detections: Sequence[dict[str, Any]], progress: Progress | None = None
) -> dict[str, Any]:
    """The seven curves and their areas, overall and per category (see the module docstring).

    Returns the ``coco`` object of ``errors.json``; ``progress(done, total)`` counts categories.
    """
    gt, dt = coco_indexes(ground_truth, detections)
    category_ids = ground_truth.category_ids
    curves = _category_curves(ground_truth, gt, dt, progress)
    overall_curves = {kind: _mean_curve(rows) for kind, rows in curves.items()}
    per_category = []
    for row, category_id in enumerate(category_ids):
        entry: dict[str, Any] = {"category_id": category_id, "name": ground_truth.names[category_id]}
        for kind in COCO_KINDS:
            rows = curves[kind]
            entry[kind] = None if rows is None or np.isnan(rows[row, 0]) else float(rows[row].mean())
        per_category.append(entry)
    return {
        "kinds": list(COCO_KINDS),
        "overall": {kind: None if curve is None else float(np.mean(curve)) for kind, curve in overall_curves.items()},
        "per_category": per_category,
        "recall": [round(float(value), 2) for value in RECALL_POINTS],
        "curves": {
            kind: None if curve is None else [float(value) for value in curve] for kind, curve in overall_curves.items()
        },
    }


def _category_curves(
    ground_truth: GroundTruth, gt: COCO, dt: COCO, progress: Progress | None
) -> dict[str, np.ndarray | None]:
    """Kind → per category (rows, ``category_ids`` order) the precision at the 101 recall points [K, 101];
    NaN rows for a category without ground truth, None for a kind not available (Sim)."""
    category_ids = ground_truth.category_ids
    # 1. C75, C50 and Loc: one COCOeval at the three IoU thresholds (it sorts the category ids).
    evaluator = COCOeval(gt, dt, iouType="bbox")
    evaluator.params.catIds = sorted(category_ids)
    evaluator.params.iouThrs = np.array([0.75, 0.5, LOC_IOU])
    evaluator.params.maxDets = [MAX_DETS]
    evaluator.params.areaRng, evaluator.params.areaRngLbl = evaluator.params.areaRng[:1], ["all"]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
    column = {category_id: index for index, category_id in enumerate(evaluator.params.catIds)}
    precision = evaluator.eval["precision"][:, :, [column[category_id] for category_id in category_ids], 0, 0]
    precision = np.where(precision < 0, np.nan, precision).transpose(0, 2, 1)  # [3, K, 101]
    by_kind: dict[str, np.ndarray | None] = {"C75": precision[0], "C50": precision[1], "Loc": precision[2]}

    # 2. Sim and Oth: per category, the confusable objects become ignored objects of it.
    supercategories = ground_truth.supercategories
    sim = np.full_like(precision[2], np.nan) if supercategories is not None else None
    oth = np.full_like(precision[2], np.nan)
    everything = set(category_ids)
    for row, category_id in enumerate(category_ids):
        if not np.isnan(precision[2, row, 0]):
            if sim is not None:
                sim[row] = ConfusionEval(gt, dt, category_id, _same_supercategory(category_id, supercategories)).curve()
            oth[row] = ConfusionEval(gt, dt, category_id, everything - {category_id}).curve()
        if progress is not None:
            progress(row + 1, len(category_ids))
    by_kind["Sim"], by_kind["Oth"] = sim, oth

    # 3. BG: precision 1 wherever Oth reached the recall; FN: 1 everywhere (NaN rows stay NaN).
    by_kind["BG"] = np.where(np.isnan(oth), np.nan, (oth > 0).astype(float))
    by_kind["FN"] = np.where(np.isnan(oth), np.nan, 1.0)
    return {kind: by_kind[kind] for kind in COCO_KINDS}


def _same_supercategory(category_id: int, supercategories: dict[int, Any]) -> set[int]:
    """The other categories of ``category_id``'s supercategory (none when it names no supercategory)."""
    family = supercategories[category_id]
    if family is None:
        return set()
    return {other for other, name in supercategories.items() if name == family and other != category_id}


def _mean_curve(rows: np.ndarray | None) -> np.ndarray | None:
    """The mean over the categories with ground truth (rows that are not NaN) [101]."""
    if rows is None:
        return None
    valid = rows[~np.isnan(rows[:, 0])]
    return valid.mean(axis=0) if len(valid) else np.full(rows.shape[1], np.nan)


# --- the analysis --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorInputs:
    """A run's detections and the ground truth they are scored against, read and checked."""

    run_dir: Path
    ground_truth: GroundTruth
    detections: list[dict[str, Any]]
    detections_file: Path | None = None  # where the detections were read


def load_error_inputs(
    run_dir: str | Path, *, ann: str | Path | None = None, images: str | Path | None = None
) -> ErrorInputs:
    """Read and check what :func:`analyze_errors` needs, so that bad input fails before any work.

    Raises:
        LibraError: no run folder or no ``eval/detections.json``, a malformed record, an image or
            category id the ground truth does not have, or ground truth without boxes.
    """
    layout = RunLayout(run_dir)
    if not layout.root.is_dir():
        raise LibraError(f"{run_dir}: not a run directory (folder not found)")
    files = layout.eval_files()
    if ann is not None and layout.eval_files(eval_set_name(ann)).detections.is_file():
        files = layout.eval_files(eval_set_name(ann))  # what `libra eval RUN --ann ANN` wrote on that set
    if not files.detections.is_file():
        raise LibraError(f"{files.detections}: not found; run `libra eval {run_dir}` first")
    ground_truth = load_ground_truth(ground_truth_file(layout, ann, images))
    detections = read_detections(files.detections, ground_truth)
    return ErrorInputs(layout.root, ground_truth, detections, files.detections)


def errors_result(inputs: ErrorInputs, progress: Progress | None = None) -> dict[str, Any]:
    """The ``errors.json`` dict of loaded inputs: {"analysis": "errors", "run", "ann", "detections" (the file
    read), "format",
    "num_images", "num_detections", "note", "coco": :func:`coco_decomposition`, "tide": :func:`tide_errors`}."""
    ground_truth = inputs.ground_truth
    analysed = set(ground_truth.category_ids)
    kept = [detection for detection in inputs.detections if detection["category_id"] in analysed]
    return {
        "analysis": "errors",
        "run": str(inputs.run_dir),
        "ann": str(ground_truth.path),
        "detections": str(inputs.detections_file) if inputs.detections_file is not None else None,
        "format": ground_truth.format,
        "num_images": len(ground_truth.dataset["images"]),
        "num_detections": len(inputs.detections),
        "note": _note(ground_truth, len(inputs.detections) - len(kept)),
        "coco": coco_decomposition(ground_truth, kept, progress),
        "tide": tide_errors(ground_truth.dataset, ground_truth.category_ids, kept),
    }


def _note(ground_truth: GroundTruth, dropped: int) -> str | None:
    notes = []
    if ground_truth.format == "lvis":
        notes.append(
            f"LVIS ground truth scored with the COCO protocol (not the federated LVIS one) on the "
            f"{len(ground_truth.category_ids)} annotated categories: every detection of an analysed category "
            f"that matches no box is a false positive, even where the category was not exhaustively annotated"
        )
        if dropped:
            notes.append(f"{dropped} detections of categories without annotations left out")
    if ground_truth.supercategories is None:
        notes.append("Sim not computed: the categories do not carry more than one supercategory")
    return "; ".join(notes) or None


def errors_csv(result: dict[str, Any]) -> str:
    """Per category: the area under each curve."""
    rows = [
        [entry["category_id"], entry["name"], *(_csv_number(entry[kind]) for kind in COCO_KINDS)]
        for entry in result["coco"]["per_category"]
    ]
    return csv_text(["category_id", "name", *COCO_KINDS], rows)


def _csv_number(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


# Light to dark as the curves forgive more, like the COCO tool's figure.
KIND_COLORS = {
    "C75": "#ffffff",
    "C50": "#3366cc",
    "Loc": "#33aacc",
    "Sim": "#66cc66",
    "Oth": "#ffcc33",
    "BG": "#ff6633",
    "FN": "#993399",
}


def error_figure(result: dict[str, Any]) -> Figure:
    """The overall PR curves drawn as stacked areas: each band is the AP one kind of error costs."""
    coco = result["coco"]
    recall = np.array(coco["recall"])
    figure = Figure(figsize=(6, 4.5))
    axes = figure.add_subplot(1, 1, 1)
    kinds = [kind for kind in COCO_KINDS if coco["curves"].get(kind) is not None]
    for kind in reversed(kinds):  # the most forgiving (largest) area first, the strictest on top
        curve = np.nan_to_num(np.array(coco["curves"][kind], dtype=float))
        area = coco["overall"][kind]
        label = f"[{area:.3f}] {kind}" if area is not None else kind
        axes.fill_between(recall, curve, 0, color=KIND_COLORS[kind], edgecolor="black", linewidth=0.5, label=label)
    handles, labels = axes.get_legend_handles_labels()
    axes.legend(handles[::-1], labels[::-1], loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
    axes.set(xlim=(0, 1), ylim=(0, 1), xlabel="recall", ylabel="precision")
    axes.set_title(f"{Path(result['run']).name}: overall, area all, at most {MAX_DETS} detections per image")
    return figure


# ---- the analysis ----------------------------------------------------------------------------------------

# analyze_errors(run_dir, ann=None, images=None, progress=None): the ``errors.json`` dict of a run evaluated by
# ``libra eval`` (or by training's final evaluation): ``ann`` the ground truth to score against (default: the
# file ``eval/metrics.json`` names, else the run's val annotations), ``images`` its images (only checked to
# exist, like ``libra eval``'s flag); ``progress(done, total)`` after each category. LibraError as
# :func:`load_error_inputs`.
analyze_errors = Runner(
    load_error_inputs,
    errors_result,
    total=lambda inputs: len(inputs.ground_truth.category_ids),
    describe=lambda inputs: f"detections {inputs.detections_file} scored against {inputs.ground_truth.path}",
    options=(
        Option(
            "ann",
            "--ann",
            None,
            "Ground truth to score against (default: the one `libra eval` used, else the val split).",
            Path,
        ),
        Option(
            "images",
            "--images",
            None,
            "The images of --ann, as given to `libra eval` (only checked; boxes are all it reads).",
            Path,
        ),
    ),
)

# errors.json, errors.csv (per category: the area under each curve) and errors.png (the overall stacked PR
# areas) in RUN_DIR/analysis.
write_errors = Files(
    "errors", {"errors.csv": errors_csv}, {"errors.png": lambda result: figure_png(error_figure(result))}
)

ANALYSIS = Analysis(
    "errors",
    "detection errors (COCO analyze, TIDE)",
    "Where the AP goes: the COCO error decomposition (C75 … FN) and TIDE's error kinds at IoU 0.5.\n\n"
    "Reads RUN_DIR/eval/detections.json (with --ann, RUN_DIR/eval/<set>/detections.json when `libra eval --ann`\n"
    "wrote it); does not run the model.",
    analyze_errors,
    write_errors,
    notes=lambda result: [f"note: {result['note']}"] if result["note"] else [],
)
