"""Detections drawn: the ground truth and each run's detections on a few validation images, side by side.

The figure shows what the tables average away: which objects a detector misses, where its boxes sit
and which classes it confuses. Images are chosen so that the baseline's failures are always in view and
the rest is an unbiased sample:

- the ``num_worst`` (2) images where the reference run (the baseline, else the first run with
  detections) misses the most ground-truth objects at IoU 0.5 — ties go to the smaller image id;
- ``num_random`` (2) more images drawn without repeats from the remaining ones by ``random.Random(seed)``
  (over the image ids in increasing order), so the same seed always gives the same images.

An object is *missed* when no detection of its category with score ≥ the threshold is matched to it:
detections are taken in decreasing score order and each one is matched to the unmatched object of its
category it overlaps most, if that IoU is ≥ 0.5 (COCO's greedy matching at one IoU threshold).

Boxes are drawn with ``torchvision.utils.draw_bounding_boxes`` on the image tensor, one colour per
category in every column, labelled with the category name (and the score for detections); only
detections with score ≥ the threshold are drawn. The grid (one row per image, the ground truth first and
then one column per run) is laid out with matplotlib. Nothing is re-run: the detections are the runs'
``eval/detections.json`` and the ground truth their validation annotation file.
"""

from __future__ import annotations

import functools
import io
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from matplotlib import font_manager
from matplotlib.figure import Figure
from torchvision.ops import box_iou
from torchvision.transforms.functional import pil_to_tensor, to_pil_image
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from libra_cli.data.build import benchmark_paths
from libra_cli.data.coco import DetectionDataset
from libra_cli.errors import LibraError
from libra_cli.images import ImageReadError, open_rgb
from libra_cli.io import atomic_write_bytes, read_json
from libra_cli.report.collect import RunRecord
from libra_cli.report.plots import DPI, PALETTE, literal
from libra_cli.rundir import DETECTIONS, RunLayout

MATCH_IOU = 0.5  # an object is found when a detection of its class overlaps it at least this much
MIN_DRAWN_SIDE = 300  # smaller images are enlarged (whole-pixel factor) before drawing, so labels stay legible
IGNORED_COLOUR = "#ff00ff"  # boxes evaluation ignores (crowd regions, VOC difficult objects), apart from the palette
MASK_ALPHA = 0.45  # opacity of an instance mask drawn over its image


@dataclass(frozen=True)
class DetectionOptions:
    """What ``libra report`` draws: whether to draw at all, the score threshold and the image seed."""

    enabled: bool = True
    score_thr: float = 0.5
    seed: int = 0
    num_worst: int = 2
    num_random: int = 2

    def __post_init__(self) -> None:
        if not 0.0 <= self.score_thr <= 1.0:
            raise LibraError(f"--score-thr: must lie in [0, 1], got {self.score_thr}")
        if self.num_worst < 0 or self.num_random < 0:
            raise LibraError(f"num_worst, num_random: must not be negative, got {self.num_worst}, {self.num_random}")


@dataclass(frozen=True)
class Boxes:
    """Boxes on one image: xyxy pixels, the dataset's category ids and (for detections) scores."""

    xyxy: tuple[tuple[float, float, float, float], ...] = ()
    category_ids: tuple[int, ...] = ()
    scores: tuple[float, ...] | None = None  # None for ground truth

    def above(self, score_thr: float) -> Boxes:
        """Only the detections with score ≥ ``score_thr`` (ground truth is kept whole)."""
        if self.scores is None:
            return self
        keep = [i for i, score in enumerate(self.scores) if score >= score_thr]
        return Boxes(
            tuple(self.xyxy[i] for i in keep),
            tuple(self.category_ids[i] for i in keep),
            tuple(self.scores[i] for i in keep),
        )


@dataclass(frozen=True)
class ValidationImage:
    image_id: int
    path: Path
    width: int
    height: int
    truth: Boxes


@dataclass(frozen=True)
class ValidationSet:
    ann_file: Path
    images: dict[int, ValidationImage]  # by image id, in increasing id order
    names: dict[int, str]  # category id → name


@dataclass(frozen=True)
class ChosenImage:
    image_id: int
    missed: int  # objects the reference run misses on it
    reason: str  # "most missed" or "seed"


def load_validation(ann_file: str | Path, image_root: str | Path) -> ValidationSet:
    """The validation annotations (crowd regions excluded, degenerate boxes dropped) with each image's
    file resolved as training and evaluation resolve it."""
    dataset = DetectionDataset(ann_file, image_root, on_bad_sample="skip")
    images = {}
    for record in dataset.records:
        truth = Boxes(record.boxes, tuple(dataset.label_to_category_id(label) for label in record.labels))
        images[record.image_id] = ValidationImage(record.image_id, record.path, record.width, record.height, truth)
    names = dict(zip(dataset.category_ids, dataset.category_names(), strict=True))
    return ValidationSet(Path(ann_file), dict(sorted(images.items())), names)


def read_detections(path: str | Path) -> dict[int, Boxes]:
    """A run's ``eval/detections.json`` (COCO results: image_id, category_id, bbox [x, y, w, h], score)
    grouped by image id, boxes as xyxy."""
    path = Path(path)
    data = read_json(path, "detections file")
    if not isinstance(data, list):
        raise LibraError(f"{path}: expected a JSON list of detections")
    grouped: dict[int, list[tuple[tuple[float, float, float, float], int, float]]] = {}
    for index, item in enumerate(data):
        where = f"{path}: [{index}]"
        if not isinstance(item, dict):
            raise LibraError(f"{where}: expected an object")
        image_id, category_id = _integer(item, "image_id", where), _integer(item, "category_id", where)
        bbox, score = item.get("bbox"), item.get("score")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(value) for value in bbox):
            raise LibraError(f"{where}.bbox: expected [x, y, w, h] numbers, got {bbox!r}")
        if not _is_number(score):
            raise LibraError(f"{where}.score: expected a number, got {score!r}")
        x, y, w, h = (float(value) for value in bbox)
        if not w >= 0 or not h >= 0:
            raise LibraError(f"{where}.bbox: width and height must not be negative, got {bbox!r}")
        grouped.setdefault(image_id, []).append(((x, y, x + w, y + h), category_id, float(score)))
    return {
        image_id: Boxes(tuple(b for b, _, _ in items), tuple(c for _, c, _ in items), tuple(s for _, _, s in items))
        for image_id, items in grouped.items()
    }


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _integer(item: dict, key: str, where: str) -> int:
    value = item.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise LibraError(f"{where}.{key}: expected an integer, got {value!r}")
    return value


def missed_objects(truth: Boxes, detections: Boxes, score_thr: float, iou_thr: float = MATCH_IOU) -> int:
    """Ground-truth objects that no detection (score ≥ ``score_thr``, same category) matches at
    IoU ≥ ``iou_thr``; detections are matched greedily in decreasing score order, one object each."""
    kept = detections.above(score_thr)
    if not truth.xyxy:
        return 0
    if not kept.xyxy:
        return len(truth.xyxy)
    ious = box_iou(torch.tensor(kept.xyxy, dtype=torch.float64), torch.tensor(truth.xyxy, dtype=torch.float64))
    assert kept.scores is not None
    order = sorted(range(len(kept.scores)), key=lambda i: -kept.scores[i])  # stable: ties keep file order
    matched: set[int] = set()
    for det in order:
        best, best_iou = None, iou_thr
        for obj, category_id in enumerate(truth.category_ids):
            if obj in matched or category_id != kept.category_ids[det]:
                continue
            iou = float(ious[det, obj])
            if iou >= best_iou:
                best, best_iou = obj, iou
        if best is not None:
            matched.add(best)
    return len(truth.xyxy) - len(matched)


def choose_images(
    validation: ValidationSet, reference: dict[int, Boxes], options: DetectionOptions
) -> list[ChosenImage]:
    """The ``num_worst`` images where the reference run misses the most objects (ties: smaller id first),
    then ``num_random`` of the other images drawn by ``random.Random(seed)`` without repeats."""
    missed = {
        image_id: missed_objects(image.truth, reference.get(image_id, Boxes(scores=())), options.score_thr)
        for image_id, image in validation.images.items()
    }
    ranked = sorted(missed, key=lambda image_id: (-missed[image_id], image_id))
    worst = ranked[: options.num_worst]
    rest = sorted(set(missed) - set(worst))
    drawn = random.Random(options.seed).sample(rest, min(options.num_random, len(rest)))
    return [ChosenImage(i, missed[i], "most missed") for i in worst] + [
        ChosenImage(i, missed[i], "seed") for i in drawn
    ]


def read_image(path: Path, image_id: int, ann_file: Path | None = None) -> torch.Tensor:
    """The image upright as a uint8 RGB tensor [3, H, W]; a missing or unreadable file is a LibraError naming
    it, its image id and (if given) its annotation file."""
    source = f" of {ann_file}" if ann_file is not None else ""
    try:
        rgb = open_rgb(path)
    except ImageReadError as exc:
        raise LibraError(f"{path}: {exc.reason} (image id {image_id}{source})") from exc
    return pil_to_tensor(rgb)


def category_colours(category_ids: list[int]) -> dict[int, str]:
    """One palette colour per category id, in increasing id order (the same in every column)."""
    return {category_id: PALETTE[index % len(PALETTE)] for index, category_id in enumerate(sorted(category_ids))}


def draw_panel(
    image: torch.Tensor,
    boxes: Boxes,
    names: dict[int, str],
    colours: dict[int, str],
    score_thr: float,
    scale: tuple[float, float] = (1.0, 1.0),
    *,
    masks: torch.Tensor | None = None,
    ignored: Sequence[str | None] | None = None,
) -> torch.Tensor:
    """``image`` (uint8 [3, H, W]) with ``boxes`` drawn: ground truth whole, detections only with score ≥
    ``score_thr``; each box in its category's colour, labelled with the category name (and score).
    ``scale`` (x, y) maps annotation pixels onto the image file's pixels when the two sizes differ.

    ``masks`` (bool [N, H, W], one per box, in the image's pixels) are overlaid in the boxes' colours, under
    the boxes. ``ignored`` gives per box None or why evaluation ignores it ("crowd", "difficult"): such a
    box is drawn in :data:`IGNORED_COLOUR` with the reason after its name.
    """
    keep = (
        list(range(len(boxes.xyxy)))
        if boxes.scores is None
        else [i for i, score in enumerate(boxes.scores) if score >= score_thr]
    )
    if not keep:
        return image.clone()
    sx, sy = scale
    xyxy = torch.tensor([boxes.xyxy[i] for i in keep], dtype=torch.float32) * torch.tensor([sx, sy, sx, sy])
    category_ids = [boxes.category_ids[i] for i in keep]
    labels = [names.get(category_id, str(category_id)) for category_id in category_ids]
    if boxes.scores is not None:
        labels = [f"{label} {boxes.scores[i]:.2f}" for label, i in zip(labels, keep, strict=True)]
    colors = [colours.get(category_id, PALETTE[-1]) for category_id in category_ids]
    if ignored is not None:
        for position, i in enumerate(keep):
            if ignored[i]:
                labels[position] = f"{labels[position]} ({ignored[i]})"
                colors[position] = IGNORED_COLOUR
    if masks is not None and masks.shape[0]:
        image = draw_segmentation_masks(image, masks[keep].bool(), alpha=MASK_ALPHA, colors=colors)
    side = max(image.shape[-2:])
    return draw_bounding_boxes(
        image,
        xyxy,
        labels=labels,
        colors=colors,
        width=box_line_width(image),
        font=label_font(),
        font_size=max(10, side // 25),
    )


def box_line_width(image: torch.Tensor) -> int:
    """Pixels of a drawn box's outline on ``image`` [3, H, W]: 1 per 200 pixels of its longer side, at least 1."""
    return max(1, round(max(image.shape[-2:]) / 200))


@functools.cache
def label_font() -> str | None:
    """A TrueType font for the labels (matplotlib's DejaVu Sans), so their size follows the image; None
    falls back to PIL's small bitmap font."""
    try:
        return font_manager.findfont("DejaVu Sans", fallback_to_default=False)
    except ValueError:
        return None


def draw_detections(
    validation: ValidationSet,
    chosen: list[ChosenImage],
    columns: list[tuple[str, dict[int, Boxes]]],
    path: Path,
    score_thr: float,
) -> Path:
    """The grid figure at ``path``: one row per chosen image, the ground truth and then one column per
    (title, detections by image id) entry of ``columns``."""
    colours = category_colours(list(validation.names))
    ncols = 1 + len(columns)
    figure = Figure(figsize=(3.2 * ncols, 3.4 * max(1, len(chosen))), layout="constrained")
    axes = figure.subplots(max(1, len(chosen)), ncols, squeeze=False)
    for row, choice in enumerate(chosen):
        image = validation.images[choice.image_id]
        pixels = read_image(image.path, image.image_id, validation.ann_file)
        factor = max(1, math.ceil(MIN_DRAWN_SIDE / max(pixels.shape[-2:])))  # small images: labels stay legible
        pixels = pixels.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)
        scale = (pixels.shape[-1] / image.width, pixels.shape[-2] / image.height)
        why = f"{choice.missed} missed" + (", drawn by seed" if choice.reason == "seed" else "")
        panels = [(f"ground truth\nimage {image.image_id} ({why})", image.truth)]
        panels += [(title, detections.get(choice.image_id, Boxes(scores=()))) for title, detections in columns]
        for col, (title, boxes) in enumerate(panels):
            drawn = draw_panel(pixels, boxes, validation.names, colours, score_thr, scale)
            ax = axes[row][col]
            ax.imshow(drawn.permute(1, 2, 0).numpy())
            ax.set_title(literal(title), fontsize=8)
            ax.set_axis_off()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI, pil_kwargs={"compress_level": 3})
    return path


def check_out_dir(out: Path, force: bool) -> None:
    """Refuse an output folder that holds files (unless ``force``) or is a file: nothing there is lost."""
    if out.exists() and not out.is_dir():
        raise LibraError(f"--out {out}: is a file, not a folder")
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if held and not force:
        shown = ", ".join(held[:3]) + (", …" if len(held) > 3 else "")
        raise LibraError(f"--out {out}: holds files already ({shown}); choose another folder or give --force")


def drawn_name(path: Path, taken: set[str]) -> str:
    """``<stem>.png`` for the drawing of ``path``, ``<stem>_2.png``, … when an earlier input took the name."""
    name, number = f"{path.stem}.png", 1
    while name in taken:
        number += 1
        name = f"{path.stem}_{number}.png"
    taken.add(name)
    return name


def save_png(image: torch.Tensor, path: Path) -> None:
    """Write ``image`` (uint8 [3, H, W]) as a PNG file, atomically."""
    buffer = io.BytesIO()
    to_pil_image(image).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


@dataclass(frozen=True)
class DrawnDetections:
    """What :func:`detections_figure` drew: the chosen images, the reference run and the runs shown."""

    path: Path
    chosen: list[ChosenImage]
    reference: str  # label of the run whose misses chose the images
    shown: list[str]  # labels of the runs with a column
    skipped: list[str]  # "label: why" for runs without a column
    ann_file: Path
    blank: list[str] = field(default_factory=list)  # labels of columns with no detection ≥ the score threshold


def validation_files(run: RunRecord) -> tuple[Path, Path]:
    """The validation annotation file and image folder a run was evaluated on: those its ``dataset.json``
    records, else its config's ``data.val_ann`` / ``data.val_images``, else the synthetic benchmark's
    (which a report never generates)."""
    layout = RunLayout(run.path)
    if layout.dataset.is_file():
        try:
            info = json.loads(layout.dataset.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            info = None
        if isinstance(info, dict) and isinstance(info.get("val_ann"), str) and isinstance(info.get("val_images"), str):
            return Path(info["val_ann"]), Path(info["val_images"])
    data = run.config.data
    if data.val_ann is not None and data.val_images is not None:
        return Path(data.val_ann), Path(data.val_images)
    paths = benchmark_paths(data.synth_dir)
    return paths.val_ann, paths.val_images


def missing_validation(run: RunRecord) -> str | None:
    """Why a run's validation images cannot be drawn (a phrase naming the missing path), or None."""
    ann, images = validation_files(run)
    if not ann.is_file():
        return f"validation annotations {ann} not found"
    if not images.is_dir():
        return f"validation image folder {images} not found"
    return None


def detections_figure(
    runs: list[RunRecord], reference: RunRecord, path: Path, options: DetectionOptions
) -> DrawnDetections:
    """Draw the figure for ``runs`` (one column each, in order) on images chosen by ``reference``'s misses.

    Runs without ``eval/detections.json`` or evaluated on another validation file get no column; a
    missing image file raises LibraError naming it.
    """
    ann, images = validation_files(reference)
    validation = load_validation(ann, images)
    if not validation.images:
        raise LibraError(f"{ann}: no images to draw")
    detections = {reference.label: read_detections(RunLayout(reference.path).detections)}
    columns, skipped = [], []
    for run in runs:
        layout = RunLayout(run.path)
        if not layout.detections.is_file():
            skipped.append(f"{run.label}: no {DETECTIONS}")
            continue
        if validation_files(run)[0].resolve() != ann.resolve():
            skipped.append(f"{run.label}: evaluated on {validation_files(run)[0]}, not {ann}")
            continue
        if run.label not in detections:
            detections[run.label] = read_detections(layout.detections)
        columns.append((run.label, detections[run.label]))
    chosen = choose_images(validation, detections[reference.label], options)
    draw_detections(validation, chosen, columns, path, options.score_thr)
    blank = [
        title
        for title, found in columns
        if not any(found.get(choice.image_id, Boxes(scores=())).above(options.score_thr).xyxy for choice in chosen)
    ]
    return DrawnDetections(path, chosen, reference.label, [title for title, _ in columns], skipped, ann, blank)
