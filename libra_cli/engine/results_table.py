"""Detections as columns: a results list checked once and held at a fraction of its memory.

A COCO results record is ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` (or, for mask AP,
a compressed-RLE ``"segmentation"`` instead of the box). An LVIS-val-sized results file holds 19,809 × 300
of them: about 6 million Python dicts, over 2.5 GiB before an evaluator copies them. :class:`ResultsTable`
keeps what the evaluators need as arrays — the position of each record's image and category in the
ground truth's lists, its score and its box — and hands the evaluators plain records again, a chunk of
categories at a time (:func:`category_chunks`), so that only one chunk is ever held as dicts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from libra_cli.errors import LibraError


@dataclass(frozen=True)
class ResultsTable:
    """Checked detections, one row each, in the order they were given.

    ``image_index`` [N] and ``category_index`` [N] (int64) are positions in the ground truth's ``images``
    and ``categories`` lists; ``score`` [N] float64; ``bbox`` [N, 4] float64 absolute xywh pixels for box
    results, else None; ``segmentation`` the N compressed RLEs ``{"size": [h, w], "counts"}`` of mask
    results, else None.
    """

    image_index: np.ndarray
    category_index: np.ndarray
    score: np.ndarray
    bbox: np.ndarray | None = None
    segmentation: list[dict] | None = None

    def __len__(self) -> int:
        return len(self.score)

    def take(self, rows: np.ndarray) -> ResultsTable:
        """The rows ``rows`` (int positions or a boolean mask), in that order."""
        rows = np.flatnonzero(rows) if rows.dtype == bool else rows
        segmentation = None if self.segmentation is None else [self.segmentation[row] for row in rows.tolist()]
        bbox = None if self.bbox is None else self.bbox[rows]
        return ResultsTable(self.image_index[rows], self.category_index[rows], self.score[rows], bbox, segmentation)

    def records(self, dataset: dict) -> list[dict]:
        """The rows as results records with ``dataset``'s own image and category ids (fresh dicts, which the
        evaluators may extend)."""
        image_ids = [image["id"] for image in dataset["images"]]
        category_ids = [category["id"] for category in dataset["categories"]]
        images = [image_ids[i] for i in self.image_index.tolist()]
        categories = [category_ids[i] for i in self.category_index.tolist()]
        shapes = self.bbox.tolist() if self.bbox is not None else self.segmentation
        key = "bbox" if self.bbox is not None else "segmentation"
        return [
            {"image_id": image_id, "category_id": category_id, key: shape, "score": score}
            for image_id, category_id, shape, score in zip(images, categories, shapes, self.score.tolist(), strict=True)
        ]

    def top_scoring_per_image(self, max_dets: int) -> ResultsTable:
        """The ``max_dets`` highest-scoring rows of each image (ties keep the given order), grouped by image
        in the order each image first appears, highest score first within an image."""
        if not len(self):
            return self
        _, first_row, inverse = np.unique(self.image_index, return_index=True, return_inverse=True)
        order = np.lexsort((np.arange(len(self)), -self.score, first_row[inverse]))
        group = first_row[inverse][order]
        starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
        rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
        return self.take(order[rank < max_dets])


def results_table(detections: Sequence[dict] | ResultsTable, dataset: dict, iou_type: str = "bbox") -> ResultsTable:
    """The detections checked against ``dataset`` (its ``images`` and ``categories``) as a ResultsTable.

    Box results need a ``bbox`` [x, y, w, h] of finite numbers with w, h >= 0; mask results
    (``iou_type="segm"``) a compressed-RLE ``segmentation`` (a ``bbox`` of theirs is not kept: the
    evaluators would take its area for the detection's). Every record needs an ``image_id`` and a
    ``category_id`` of the ground truth and a finite ``score``.

    Raises LibraError naming the first record (``detections[i]``) that breaks one of these.
    """
    if isinstance(detections, ResultsTable):
        return detections
    image_position = {image["id"]: index for index, image in enumerate(dataset["images"])}
    category_position = {category["id"]: index for index, category in enumerate(dataset["categories"])}
    if iou_type == "bbox":
        table = _box_columns(detections, image_position, category_position)
        if table is not None:
            return table
    # Mask results, or box results the fast path could not read: record by record, with the first problem.
    images, categories, scores, shapes = [], [], [], []
    for index, detection in enumerate(detections):
        where = f"detections[{index}]"
        if not isinstance(detection, dict):
            raise LibraError(f"{where}: expected an object, got {type(detection).__name__}")
        shape = "bbox" if iou_type == "bbox" else "segmentation"
        missing = [key for key in ("image_id", "category_id", shape, "score") if key not in detection]
        if missing:
            raise LibraError(f"{where}: missing {', '.join(missing)}")
        images.append(_position(image_position, detection, "image_id", where, "an image"))
        categories.append(_position(category_position, detection, "category_id", where, "a category"))
        shapes.append(_checked_box(detection, where) if iou_type == "bbox" else _checked_rle(detection, where))
        score = _finite_float(detection["score"])
        if score is None:
            raise LibraError(f"{where}: score must be a finite number, got {detection['score']!r}")
        scores.append(score)
    columns = (np.array(images, dtype=np.int64), np.array(categories, dtype=np.int64), np.array(scores, dtype=float))
    if iou_type == "bbox":
        return ResultsTable(*columns, bbox=np.array(shapes, dtype=float).reshape(-1, 4))
    return ResultsTable(*columns, segmentation=shapes)


def _box_columns(detections: Sequence[dict], image_position: dict, category_position: dict) -> ResultsTable | None:
    """Box results read column by column (fast); None when any record is not plainly valid, for the record
    by record reading to name the problem."""
    count = len(detections)
    try:
        images = np.fromiter((image_position.get(d["image_id"], -1) for d in detections), np.int64, count)
        categories = np.fromiter((category_position.get(d["category_id"], -1) for d in detections), np.int64, count)
        scores = np.fromiter((d["score"] for d in detections), float, count)
        boxes = np.array([d["bbox"] for d in detections], dtype=float).reshape(count, 4)
    except (TypeError, KeyError, ValueError):
        return None
    valid = (
        (images >= 0).all()
        and (categories >= 0).all()
        and np.isfinite(scores).all()
        and np.isfinite(boxes).all()
        and (boxes[:, 2:] >= 0).all()
    )
    return ResultsTable(images, categories, scores, bbox=boxes) if valid else None


def _position(positions: dict, detection: dict, key: str, where: str, what: str) -> int:
    try:
        return positions[detection[key]]
    except (KeyError, TypeError):
        raise LibraError(f"{where}: {key} {detection[key]!r} is not {what} of the ground truth") from None


def _checked_box(detection: dict, where: str) -> list[float]:
    bbox = detection["bbox"]
    if not isinstance(bbox, list | tuple) or len(bbox) != 4:
        raise LibraError(f"{where}: bbox must be [x, y, w, h], got {bbox!r}")
    box = [_finite_float(value) for value in bbox]
    if None in box or box[2] < 0 or box[3] < 0:
        raise LibraError(f"{where}: bbox [x, y, w, h] needs finite numbers and w, h >= 0, got {bbox!r}")
    return box


def _checked_rle(detection: dict, where: str) -> dict:
    rle = detection["segmentation"]
    size = rle.get("size") if isinstance(rle, dict) else None
    if (
        not isinstance(size, list | tuple)
        or len(size) != 2
        or not all(isinstance(side, int) and side >= 0 for side in size)
        or not isinstance(rle.get("counts"), str | bytes)
    ):
        raise LibraError(f"{where}: segmentation must be a compressed RLE {{'size': [h, w], 'counts': str}}")
    return {"size": list(size), "counts": rle["counts"]}


def _finite_float(value: Any) -> float | None:
    """``value`` as a float, or None when it is not a finite number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@dataclass(frozen=True)
class Chunk:
    """Categories scored together (positions in the ground truth's ``categories``) and the images that
    hold an annotation or a detection of one of them (positions in ``images``, ascending)."""

    categories: list[int]
    images: np.ndarray


def category_chunks(
    images_of: list[np.ndarray], rows_per_category: np.ndarray, order: Sequence[int], max_rows: int, max_cells: int
) -> list[Chunk]:
    """The category positions in ``order`` cut into consecutive chunks, each holding at most ``max_rows``
    rows (``rows_per_category[position]`` each) and at most ``max_cells`` (image, category) pairs counted
    over the images that concern the chunk (``images_of[position]``: the image positions where the
    category is annotated or detected). A category over either limit is a chunk by itself."""
    num_images = 1 + max((int(images.max()) for images in images_of if images.size), default=0)
    chunks: list[Chunk] = []
    members: list[int] = []
    touched = np.zeros(num_images, dtype=bool)
    held = count = 0

    def close() -> None:
        chunks.append(Chunk(list(members), np.flatnonzero(touched)))

    for position in order:
        images = images_of[position]
        new_images = int((~touched[images]).sum()) if images.size else 0
        rows = int(rows_per_category[position])
        too_many = held + rows > max_rows or (count + new_images) * (len(members) + 1) > max_cells
        if members and too_many:
            close()
            members, held, count = [], 0, 0
            touched[:] = False
            new_images = int(images.size)
        members.append(position)
        touched[images] = True
        held += rows
        count += new_images
    close()
    return chunks
