"""``libra predict``: a trained detector on new image files — the detections as JSON and drawn on each image.

Inputs are image files, folders (their image files, by name, not descending into subfolders) and glob
patterns; every file is read by ``libra_cli.images`` (EXIF orientation applied; grayscale, RGBA and 16-bit
converted), exactly as training and ``libra eval`` read theirs, and run through the same inference code
(``engine.evaluate.detect`` and ``result_records``), so a validation image gets ``libra eval``'s detections
(when batched alike: a batch is padded to its largest image).

``OUT/predictions.json`` holds one record per detection in the COCO results format — ``image_id`` (the
input's position, from 1), ``category_id`` (the dataset's own id), ``bbox`` [x, y, w, h] and ``score`` —
plus ``file_name`` and ``category_name``, and for Mask R-CNN the mask as a compressed RLE
(``segmentation``); boxes are in the image file's pixels, upright. Unless told not to, ``OUT/<stem>.png``
is each image with its detections drawn (boxes, names, scores and masks, the colours of ``libra report``).
A file that cannot be read is reported in one line, skipped and counted; an output folder that already
holds files is refused unless ``force``.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from libra_cli.api import Detector
from libra_cli.engine.evaluate import binary_masks, has_mask_branch, result_records
from libra_cli.errors import LibraError
from libra_cli.images import IMAGE_SUFFIXES, ImageReadError, image_tensor, open_rgb
from libra_cli.io import atomic_write_text
from libra_cli.report.detections import Boxes, category_colours, check_out_dir, draw_panel, drawn_name, save_png
from libra_cli.workflow import QUIET, Display

PREDICTIONS = "predictions.json"
GLOB_CHARACTERS = set("*?[")


@dataclass
class PredictSummary:
    """What :func:`predict_files` did."""

    out: Path
    processed: int = 0  # images run through the detector
    detections: int = 0  # records written
    skipped: list[str] = field(default_factory=list)  # "path: why" of each file that could not be used
    drawn: list[Path] = field(default_factory=list)


def find_images(inputs: Sequence[str | Path]) -> tuple[list[Path], list[str]]:
    """The image files ``inputs`` name, in order and without repeats, and a "input: why" line for each input
    that names none. A file is taken whatever its suffix (reading it tells whether it is an image); a folder
    gives its files with an image suffix (:data:`IMAGE_SUFFIXES`, any case), a glob the matches that are."""
    found: dict[Path, None] = {}
    problems = []
    for item in map(str, inputs):
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            why = "folder holds no image file"
        elif GLOB_CHARACTERS & set(item) and not path.exists():
            files = sorted(Path(p) for p in glob.glob(item) if Path(p).suffix.lower() in IMAGE_SUFFIXES)
            why = "matches no image file"
        elif path.is_file():
            files, why = [path], ""
        else:
            files, why = [], "file not found"
        if not files:
            problems.append(f"{item}: {why}")
        found.update(dict.fromkeys(files))
    return list(found), problems


def predict_files(
    detector: Detector,
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    batch_size: int = 4,
    score_thr: float = 0.3,
    amp: bool | None = None,
    draw: bool = True,
    force: bool = False,
    display: Display = QUIET,
) -> PredictSummary:
    """Detect objects on the images ``inputs`` name and write ``OUT/predictions.json`` (and, with ``draw``,
    one drawn PNG per image); detections with score < ``score_thr`` are left out of both.

    Raises LibraError before any work when no input names an image file or ``out`` holds files (without
    ``force``), and after reading when no image could be read; nothing is written then.
    """
    if not 0.0 <= score_thr <= 1.0:
        raise LibraError(f"--score-thr: must lie in [0, 1], got {score_thr}")
    if batch_size < 1:
        raise LibraError(f"--batch-size: must be at least 1, got {batch_size}")
    out = Path(out)
    files, problems = find_images(inputs)
    if not files:
        raise LibraError(f"no image file found: {'; '.join(problems)}")
    check_out_dir(out, force)
    summary = PredictSummary(out, skipped=problems)
    for problem in problems:
        display.message(f"skipped {problem}")
    with_masks = has_mask_branch(detector.model)
    names = dict(zip(detector.category_ids, detector.category_names, strict=True))
    colours = category_colours(detector.category_ids)
    records: list[dict] = []
    taken: set[str] = set()
    with display.count("predict", len(files)) as count:
        for start in range(0, len(files), batch_size):
            images, kept = [], []
            for image_id, path in enumerate(files[start : start + batch_size], start=start + 1):
                try:
                    images.append(open_rgb(path))
                    kept.append((image_id, path))
                except ImageReadError as exc:
                    summary.skipped.append(f"{path}: {exc.reason}")
                    display.message(f"skipped {path}: {exc.reason}")
            tensors = [image_tensor(image) for image in images]
            outputs = detector.detect(tensors, amp) if tensors else []
            for (image_id, path), image, output in zip(kept, images, outputs, strict=True):
                output = _above(output, score_thr)
                found = _records(detector, output, image_id, path, with_masks)
                records += found
                summary.processed += 1
                if draw:
                    target = out / drawn_name(path, taken)
                    _write_drawing(image, output, found, names, colours, target)
                    summary.drawn.append(target)
            if count is not None:
                count(min(start + batch_size, len(files)), len(files))
    if summary.processed == 0:
        raise LibraError(f"no image could be read ({len(summary.skipped)} skipped; first: {summary.skipped[0]})")
    summary.detections = len(records)
    atomic_write_text(out / PREDICTIONS, json.dumps(records))
    return summary


def _above(output: dict[str, torch.Tensor], score_thr: float) -> dict[str, torch.Tensor]:
    keep = output["scores"] >= score_thr
    return {key: value[keep] for key, value in output.items()}


def _records(detector: Detector, output: dict, image_id: int, path: Path, with_masks: bool) -> list[dict]:
    """The image's COCO results records, as ``libra eval`` writes them, plus file and category names (and,
    for Mask R-CNN, each detection's RLE in the same record)."""
    detections, segmentations = result_records(output, image_id, detector.category_id_of, with_masks)
    names = dict(zip(detector.category_ids, detector.category_names, strict=True))
    records = []
    for index, record in enumerate(detections):
        extra = {"segmentation": segmentations[index]["segmentation"]} if with_masks else {}
        records.append(
            {
                "image_id": image_id,
                "file_name": str(path),
                "category_id": record["category_id"],
                "category_name": names[record["category_id"]],
                "bbox": record["bbox"],
                "score": record["score"],
                **extra,
            }
        )
    return records


def _write_drawing(
    image: Image.Image,
    output: dict[str, torch.Tensor],
    records: list[dict],
    names: dict[int, str],
    colours: dict[int, str],
    path: Path,
) -> None:
    """The image with its detections drawn — the boxes of the JSON records, in the image's pixels, in their
    order (so the last record's box is on top) — as a PNG at ``path``."""
    boxes = Boxes(
        tuple((x, y, x + w, y + h) for x, y, w, h in (record["bbox"] for record in records)),
        tuple(record["category_id"] for record in records),
        tuple(record["score"] for record in records),
    )
    masks = binary_masks(output["masks"]) if "masks" in output else None
    drawn = draw_panel(pil_to_tensor(image), boxes, names, colours, 0.0, masks=masks)
    save_png(drawn, path)
