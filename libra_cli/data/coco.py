"""COCO / LVIS detection datasets yielding torchvision-style targets.

Both formats are read from their JSON directly (one pass, no global state): LVIS is COCO's schema plus
category frequency fields and per-image federated lists, and its v1 images name their file through
``coco_url`` instead of ``file_name``. Each item is ``(image, target)`` with

- ``image``: float tensor [3, H, W] in [0, 1], RGB;
- ``target["boxes"]``: float tensor [N, 4], absolute (x1, y1, x2, y2) pixels;
- ``target["labels"]``: int64 [N], contiguous 1..C in the order of sorted category ids (0 = background);
- ``target["image_id"]``: the dataset's own image id;
- ``target["masks"]`` (only with ``with_masks=True``): uint8 [N, H, W] of 0/1, row i the instance mask of
  ``boxes[i]`` at the image's size.

Masks are read from each annotation's ``segmentation`` as COCO and LVIS store it (polygons, uncompressed or
compressed RLE) with pycocotools' ``mask`` module. The file is checked when it is loaded (polygon shapes,
RLE sizes and count totals) so that a bad annotation stops a run before training starts; the bitmaps are
decoded per item, since a COCO-sized file holds far too many to keep decoded.

Crowd annotations (``iscrowd = 1``) never become training targets; images without boxes are kept (they
contribute negatives only) unless ``drop_unannotated`` asks for the reference's filter.
``label_to_category_id`` maps labels back to the dataset's own ids.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils

from libra_cli.data.transforms import TrainAugmentation, resize_masks
from libra_cli.data.voc import VOC_FORMAT, is_voc_dataset, read_voc_spec
from libra_cli.errors import LibraError
from libra_cli.images import ImageReadError, check_image_file, image_tensor, open_rgb, size_mismatch
from libra_cli.voc_sources import is_voc_source, voc_path_problem

# The reference's training set leaves out images under this many pixels on a side (``_filter_imgs(min_size=32)``).
MIN_IMAGE_SIDE = 32


@dataclass(frozen=True)
class ImageRecord:
    image_id: int
    path: Path
    width: int
    height: int
    boxes: tuple[tuple[float, float, float, float], ...]  # xyxy, crowd excluded
    labels: tuple[int, ...]  # contiguous 1..C
    tried: tuple[Path, ...] = ()  # every path looked at when the file was found nowhere (else empty)
    # with_masks only: (annotation index, segmentation as read from the file) for each box, in box order
    segmentations: tuple[tuple[int, Any], ...] = ()


def read_annotation_file(path: str | Path, *, voc_use_difficult: bool = False) -> dict[str, Any]:
    """Load a COCO/LVIS JSON file, with one-line errors for unreadable or malformed files.

    A Pascal VOC source (a year folder, an ``ImageSets/Main/<split>.txt`` list, or a ``+``-joined union of
    them; a bare year folder reads its ``test`` split) is read by :func:`libra_cli.data.voc.read_voc_spec`
    into the same COCO-format dict; ``voc_use_difficult`` makes its difficult objects ordinary annotations.
    """
    if is_voc_source(path):
        return read_voc_spec(path, use_difficult=voc_use_difficult)
    path = Path(path)
    if path.is_dir():
        raise LibraError(f"{path}: {voc_path_problem(path) or 'is a folder, not an annotation file'}")
    try:
        with open(path, encoding="utf-8") as handle:
            dataset = json.load(handle)
    except FileNotFoundError as exc:
        raise LibraError(f"{path}: annotation file not found") from exc
    except OSError as exc:
        raise LibraError(f"{path}: cannot read ({exc.strerror})") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LibraError(f"{path}: not valid JSON ({exc})") from exc
    return checked_annotation_lists(dataset, str(path))


def checked_annotation_lists(dataset: Any, source: str) -> dict[str, Any]:
    """``dataset`` if it is an annotation dict with its three lists (images, annotations, categories), else a
    one-line LibraError starting with ``source`` (the file, or "ground truth" for a dict passed in)."""
    if not isinstance(dataset, dict):
        raise LibraError(f"{source}: expected a JSON object with images, annotations and categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(dataset.get(key), list):
            raise LibraError(f"{source}: missing required list field {key!r}")
    return dataset


def _field(record: dict, key: str, where: str, kinds: type | tuple[type, ...]) -> Any:
    if key not in record:
        raise LibraError(f"{where}: missing field {key!r}")
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise LibraError(f"{where}.{key}: unexpected value {value!r}")
    return value


def _objects_with_unique_ids(items: list, source: str, list_name: str, what: str) -> Iterator[tuple[str, dict, int]]:
    """``(where, item, its id)`` for each item of the annotation file's list ``list_name``, in order; an item
    that is not an object, has no integer ``id`` or repeats an earlier id is a one-line LibraError naming it."""
    seen: set[int] = set()
    for i, item in enumerate(items):
        where = f"{source}: {list_name}[{i}]"
        if not isinstance(item, dict):
            raise LibraError(f"{where}: expected an object")
        item_id = _field(item, "id", where, int)
        if item_id in seen:
            raise LibraError(f"{where}.id: duplicate {what} id {item_id}")
        seen.add(item_id)
        yield where, item, item_id


def _image_file_name(image: dict, where: str) -> str:
    name = image.get("file_name")
    if not name and image.get("coco_url"):
        # LVIS v1 names images only by their COCO URL; the file is the URL's last component.
        name = str(image["coco_url"]).rsplit("/", 1)[-1]
    if not isinstance(name, str) or not name:
        raise LibraError(f"{where}: missing field 'file_name' (or 'coco_url')")
    return name


def _resolve_image_path(root: Path, name: str, where: str) -> Path:
    if _plain_component(name) and not os.path.islink(root / name):
        return root / name  # ``root`` is resolved and the name is one component, not a link: resolve() would give this
    path = (root / name).resolve()
    if not path.is_relative_to(root):
        raise LibraError(f"{where}.file_name: {name!r} points outside the image folder {root}")
    return path


# LVIS v0.5 names images after COCO 2014 (COCO_val2014_000000397133.jpg); COCO 2017 folders hold 000000397133.jpg.
COCO_2014_NAME = re.compile(r"COCO_[A-Za-z]+\d{4}_(\d{12})(\.\w+)")
COCO_2017_SPLITS = ("train2017", "val2017")


def _plain_component(text: str) -> bool:
    """A single path component that stays where it is put: not empty, no separator, not . or .."""
    return bool(text) and text not in (".", "..") and "/" not in text and "\\" not in text


def image_path_candidates(root: Path, image: dict, where: str) -> list[Path]:
    """Where an image record's file may lie, in the order tried (``root`` is the resolved image folder).

    First ``root / file_name`` (or the ``coco_url`` basename when there is no ``file_name``, as in LVIS v1).
    Then, for an image with a ``coco_url`` such as ``http://images.cocodataset.org/val2017/000000397133.jpg``:
    ``root/val2017/<basename>`` (``root`` is the COCO folder holding train2017/ and val2017/),
    ``root/<basename>`` and ``root/../val2017/<basename>`` (``root`` is one split folder and the image lies
    in its sibling: LVIS v1 val draws images from both COCO 2017 splits). A COCO 2014 file name
    (``COCO_val2014_000000397133.jpg``, LVIS v0.5) is also tried as its COCO 2017 name ``000000397133.jpg``,
    in the same folders and, without a ``coco_url``, in ``train2017``/``val2017`` under ``root`` and beside it.
    """
    name = _image_file_name(image, where)
    candidates = [_resolve_image_path(root, name, where)]
    basenames = [name.replace("\\", "/").rsplit("/", 1)[-1]]
    splits: list[str] = []
    url = image.get("coco_url")
    if isinstance(url, str) and url:
        parts = url.split("?", 1)[0].rstrip("/").split("/")
        if _plain_component(parts[-1]):
            basenames.append(parts[-1])
        if len(parts) >= 2 and _plain_component(parts[-2]) and parts[-2] not in ("", "http:", "https:"):
            splits.append(parts[-2])
    for base in list(basenames):
        match = COCO_2014_NAME.fullmatch(base)
        if match:
            basenames.append(match.group(1) + match.group(2))
            if not splits:
                splits.extend(COCO_2017_SPLITS)
    folders = [root, *(root / split for split in splits), *(root.parent / split for split in splits)]
    for folder in folders:
        for base in basenames:
            if _plain_component(base):
                candidates.append(folder / base)
    unique: list[Path] = []
    for candidate in candidates:
        if candidate not in unique:
            unique.append(candidate)
    return unique


def resolve_image_file(root: Path, image: dict, where: str) -> tuple[Path, tuple[Path, ...]]:
    """The first existing candidate of :func:`image_path_candidates`, and ``()``; or, when none exists, the
    first candidate and every path tried (so that the bad-sample check can say where it looked)."""
    first = _resolve_image_path(root, _image_file_name(image, where), where)
    if first.is_file():  # the common case, checked before the alternatives are worked out
        return first, ()
    candidates = image_path_candidates(root, image, where)
    for candidate in candidates:
        if candidate.is_file():
            return candidate, ()
    return candidates[0], tuple(candidates)


class DetectionDataset(torch.utils.data.Dataset):
    """A COCO or LVIS annotation file plus its image folder.

    Args:
        ann_file: path to the JSON annotations.
        image_root: folder the images' ``file_name`` (or ``coco_url`` basename) are relative to; for COCO
            and LVIS files this may also be the COCO folder holding train2017/ and val2017/, or one of those
            (see :func:`image_path_candidates`).
        augmentation: training-time flips / resizes; None for evaluation.
        category_ids: the label order to use (e.g. a trained model's), default sorted ids of the file.
        on_bad_sample: "error" raises on a degenerate box or (with masks) a malformed segmentation (and, in
            ``verify_images``, on an unusable image file); "skip" drops it and counts it.
        with_masks: also yield ``target["masks"]`` from the annotations' ``segmentation`` (Mask R-CNN).
        voc_use_difficult: for a Pascal VOC ``ann_file``, train on objects marked difficult too.
        drop_unannotated: leave out images that no annotation of the file names (crowd ones count) and
            images under ``MIN_IMAGE_SIDE`` px on a side, as the reference's training set does (mmdetection
            v1 ``CocoDataset._filter_imgs``); their number is ``dropped_images``.
    Items are indexed by ``int`` or by ``(index, augmentation_seed)`` so that augmentation is a function
    of the sample's position in the run, independent of worker processes and resumption.
    """

    def __init__(
        self,
        ann_file: str | Path,
        image_root: str | Path,
        *,
        augmentation: TrainAugmentation | None = None,
        category_ids: Sequence[int] | None = None,
        on_bad_sample: str = "error",
        with_masks: bool = False,
        voc_use_difficult: bool = False,
        drop_unannotated: bool = False,
    ) -> None:
        self.ann_file = Path(ann_file)
        self.with_masks = with_masks
        self.image_root = Path(image_root).resolve()
        if not self.image_root.is_dir():
            raise LibraError(f"{image_root}: image folder not found")
        self.augmentation = augmentation
        self.dataset = read_annotation_file(ann_file, voc_use_difficult=voc_use_difficult)
        self.format = "lvis" if _looks_like_lvis(self.dataset) else "coco"
        if is_voc_dataset(self.dataset):
            self.format = VOC_FORMAT
        self.categories = self._read_categories()
        file_ids = sorted(self.categories)
        self.category_ids: list[int] = list(category_ids) if category_ids is not None else file_ids
        unknown = sorted(set(file_ids) - set(self.category_ids))
        if category_ids is not None and unknown:
            raise LibraError(f"{self.ann_file}: category ids {unknown[:5]} are unknown to the model")
        self.on_bad_sample = on_bad_sample
        self.skipped_boxes = 0
        self.skipped_images = 0
        self.records = self._read_records(on_bad_sample)
        self.dropped_images = 0
        if drop_unannotated:
            annotated = {ann["image_id"] for ann in self.dataset["annotations"]}
            kept = [r for r in self.records if r.image_id in annotated and min(r.width, r.height) >= MIN_IMAGE_SIDE]
            self.dropped_images = len(self.records) - len(kept)
            self.records = kept

    # --- parsing -------------------------------------------------------------------------------------
    def _read_categories(self) -> dict[int, dict]:
        entries = _objects_with_unique_ids(self.dataset["categories"], str(self.ann_file), "categories", "category")
        categories = {cat_id: category for _, category, cat_id in entries}
        if not categories:
            raise LibraError(f"{self.ann_file}: 'categories' is empty")
        return categories

    def _read_records(self, on_bad_sample: str) -> list[ImageRecord]:
        label_of = {cat_id: label for label, cat_id in enumerate(self.category_ids, start=1)}
        source = str(self.ann_file)  # formatted once: a COCO train file has 860,001 annotations to name
        images: dict[int, dict] = {}
        for where, image, image_id in _objects_with_unique_ids(self.dataset["images"], source, "images", "image"):
            for key in ("width", "height"):
                if _field(image, key, where, int) <= 0:
                    raise LibraError(f"{where}.{key}: must be positive, got {image[key]}")
            images[image_id] = image
        boxes: dict[int, list[tuple[float, float, float, float]]] = {image_id: [] for image_id in images}
        labels: dict[int, list[int]] = {image_id: [] for image_id in images}
        segmentations: dict[int, list[tuple[int, Any]]] = {image_id: [] for image_id in images}
        for i, ann in enumerate(self.dataset["annotations"]):
            where = f"{source}: annotations[{i}]"
            if not isinstance(ann, dict):
                raise LibraError(f"{where}: expected an object")
            image_id = _field(ann, "image_id", where, int)
            if image_id not in images:
                raise LibraError(f"{where}.image_id: unknown image id {image_id}")
            cat_id = _field(ann, "category_id", where, int)
            if cat_id not in self.categories:
                raise LibraError(f"{where}.category_id: unknown category id {cat_id}")
            if ann.get("iscrowd", 0):
                continue  # crowd regions are ignored by training (and by COCOeval)
            bbox = _field(ann, "bbox", where, list)
            if len(bbox) != 4 or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in bbox):
                raise LibraError(f"{where}.bbox: expected [x, y, w, h] numbers, got {bbox!r}")
            x, y, w, h = (float(v) for v in bbox)
            image = images[image_id]
            x1, y1 = max(x, 0.0), max(y, 0.0)
            x2, y2 = min(x + w, float(image["width"])), min(y + h, float(image["height"]))
            if w <= 0 or h <= 0 or x2 <= x1 or y2 <= y1:
                if on_bad_sample == "skip":
                    self.skipped_boxes += 1
                    continue
                problem = "has zero or negative size" if w <= 0 or h <= 0 else "lies outside the image"
                raise LibraError(f"{where}.bbox: {bbox!r} {problem} (use --on-bad-sample skip to drop it)")
            if self.with_masks:
                problem = segmentation_problem(ann, image["height"], image["width"])
                if problem is not None:
                    if on_bad_sample == "skip":
                        self.skipped_boxes += 1
                        continue
                    raise LibraError(f"{where}{problem} (use --on-bad-sample skip to drop it)")
                segmentations[image_id].append((i, ann["segmentation"]))
            boxes[image_id].append((x1, y1, x2, y2))
            labels[image_id].append(label_of[cat_id])
        records = []
        for image_id in sorted(images):
            image = images[image_id]
            where = f"{source}: image {image_id}"
            path, tried = resolve_image_file(self.image_root, image, where)
            records.append(
                ImageRecord(
                    image_id=image_id,
                    path=path,
                    width=image["width"],
                    height=image["height"],
                    boxes=tuple(boxes[image_id]),
                    labels=tuple(labels[image_id]),
                    tried=tried,
                    segmentations=tuple(segmentations[image_id]),
                )
            )
        return records

    # --- public API ----------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        """Number of foreground classes C (labels run 1..C)."""
        return len(self.category_ids)

    def label_to_category_id(self, label: int) -> int:
        return self.category_ids[label - 1]

    def category_names(self) -> list[str]:
        return [str(self.categories.get(cat_id, {}).get("name", cat_id)) for cat_id in self.category_ids]

    def images_per_class(self) -> torch.Tensor:
        """int64 [C]: number of images containing each class (crowd excluded), for EQL's frequencies."""
        pairs = {(index, label) for index, record in enumerate(self.records) for label in record.labels}
        labels = np.fromiter((label for _, label in pairs), dtype=np.int64, count=len(pairs))
        return torch.from_numpy(np.bincount(labels - 1, minlength=self.num_classes)[: self.num_classes])

    def num_annotated_images(self) -> int:
        """Images with at least one (non-crowd) box: the EQL reference's frequency denominator."""
        return sum(1 for record in self.records if record.labels)

    def instances_per_class(self) -> torch.Tensor:
        labels = np.fromiter((label for record in self.records for label in record.labels), dtype=np.int64)
        return torch.from_numpy(np.bincount(labels - 1, minlength=self.num_classes)[: self.num_classes])

    def __len__(self) -> int:
        return len(self.records)

    def load_image(self, record: ImageRecord) -> torch.Tensor:
        """float [3, H, W] in [0, 1]: the record's image upright (EXIF orientation applied), as RGB."""
        try:
            image = open_rgb(record.path)
        except ImageReadError as exc:
            problem = exc.reason if exc.reason != "image file not found" else _with_tried(exc.reason, record)
            raise LibraError(f"{record.path}: {problem} (image id {record.image_id})") from exc
        return image_tensor(image)

    def load_masks(self, record: ImageRecord) -> torch.Tensor:
        """uint8 [N, H, W] 0/1: the decoded masks of ``record``'s boxes at its annotated height and width."""
        rles = [
            segmentation_rle(segmentation, record.height, record.width, f"{self.ann_file}: annotations[{i}]")
            for i, segmentation in record.segmentations
        ]
        if not rles:
            return torch.zeros((0, record.height, record.width), dtype=torch.uint8)
        with warnings.catch_warnings():
            # pycocotools' decode trips numpy 2's notice about __array__'s copy keyword; the result is sound.
            warnings.filterwarnings("ignore", message=".*copy keyword", category=DeprecationWarning)
            masks = mask_utils.decode(rles)  # [H, W, N]
        return torch.from_numpy(np.ascontiguousarray(masks.transpose(2, 0, 1)))

    def verify_images(self) -> None:
        """Check every image file before any work starts, then drop or refuse the unusable ones.

        The check opens each file and verifies its data stream without decoding pixels (PIL's
        ``verify``: the header for every format, chunk checksums for PNG), so missing, truncated and
        foreign files surface here rather than mid-training; and it compares the image's size, upright by
        its EXIF orientation, with the width and height the annotation declares, since boxes placed on a
        differently sized (or sideways) image are wrong. With ``on_bad_sample="error"`` the first bad
        image raises LibraError; with "skip" bad images and their annotations are dropped (also from
        ``self.dataset``, so evaluation scores only the images that were used) and counted in
        ``skipped_images``.
        """
        workers = min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            checks = list(pool.map(check_image_file, (record.path for record in self.records)))
        bad = []
        for record, check in zip(self.records, checks, strict=True):
            problem = _with_tried(check.problem, record) if check.problem else None
            problem = problem or size_mismatch(check, (record.width, record.height))
            if problem:
                bad.append((record, problem))
        if not bad:
            return
        if self.on_bad_sample != "skip":
            record, problem = bad[0]
            raise LibraError(
                f"{record.path}: {problem} (image id {record.image_id} of {self.ann_file}; "
                f"{len(bad)} bad image(s) in all, use --on-bad-sample skip to drop them)"
            )
        dropped = {record.image_id for record, _ in bad}
        self.records = [record for record in self.records if record.image_id not in dropped]
        self.skipped_images += len(dropped)
        self.dataset = {
            **self.dataset,
            "images": [image for image in self.dataset["images"] if image["id"] not in dropped],
            "annotations": [ann for ann in self.dataset["annotations"] if ann["image_id"] not in dropped],
        }

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, dict[str, Any]]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        record = self.records[index]
        image = self.load_image(record)
        boxes = torch.tensor(record.boxes, dtype=torch.float32).reshape(-1, 4)
        # Boxes are in the annotated size; rescale if the file on disk differs.
        height, width = image.shape[-2:]
        if (width, height) != (record.width, record.height):
            scale = torch.tensor([width / record.width, height / record.height] * 2)
            boxes = boxes * scale
        target = {
            "boxes": boxes,
            "labels": torch.tensor(record.labels, dtype=torch.int64),
            "image_id": record.image_id,
        }
        if self.with_masks:
            target["masks"] = resize_masks(self.load_masks(record), (height, width))
        if self.augmentation is not None:
            generator = torch.Generator().manual_seed(seed if seed is not None else index)
            image, target = self.augmentation(image, target, generator)
        return image, target


def _with_tried(problem: str, record: ImageRecord) -> str:
    if len(record.tried) <= 1:
        return problem
    return f"{problem}; tried {', '.join(str(path) for path in record.tried)}"


# --- masks -------------------------------------------------------------------------------------------
# Compressed RLE counts (pycocotools' string form) use the 64 characters "0" (48) to "o" (111).
_RLE_STRING = re.compile(r"[0-o]*")


def segmentation_problem(ann: dict, height: int, width: int) -> str | None:
    """What is wrong with an annotation's ``segmentation`` for an image of ``height`` × ``width``, as
    ``".field: problem"``, or None if it can be decoded.

    The checks are the cheap ones a whole file can afford at load time: polygon shapes and numbers, RLE
    sizes, the total of uncompressed counts and the alphabet of compressed ones (whose total is checked when
    they are decoded, see :func:`segmentation_rle`).
    """
    if ann.get("segmentation") is None:
        return ": missing field 'segmentation' (needed for masks)"
    segmentation = ann["segmentation"]
    if isinstance(segmentation, list):
        if not segmentation:
            return ".segmentation: no polygon in []"
        for k, polygon in enumerate(segmentation):
            problem = _polygon_problem(polygon)
            if problem is not None:
                return f".segmentation[{k}]: {problem}"
        return None
    if not isinstance(segmentation, dict) or "counts" not in segmentation or "size" not in segmentation:
        return (
            f".segmentation: expected polygons [[x0, y0, x1, y1, ...], ...] or an RLE {{'size', 'counts'}}, "
            f"got {_short(segmentation)}"
        )
    size, counts = segmentation["size"], segmentation["counts"]
    if size != [height, width] or any(isinstance(v, bool) for v in size):
        return f".segmentation.size: {_short(size)} differs from the image's [height, width] [{height}, {width}]"
    if isinstance(counts, list):
        if not set(map(type, counts)) <= {int} or (counts and min(counts) < 0):
            return f".segmentation.counts: expected non-negative integers, got {_short(counts)}"
        if sum(counts) != height * width:
            return f".segmentation.counts: sum to {sum(counts)}, not height × width = {height * width}"
        return None
    if not isinstance(counts, str) or not _RLE_STRING.fullmatch(counts):
        return f".segmentation.counts: not a compressed RLE string or a list of counts: {_short(counts)}"
    return None


def _polygon_problem(polygon: Any) -> str | None:
    if not isinstance(polygon, list) or not set(map(type, polygon)) <= {int, float}:
        return f"expected a list of numbers [x0, y0, x1, y1, ...], got {_short(polygon)}"
    if len(polygon) % 2:
        return f"odd number of coordinates ({len(polygon)})"
    if len(polygon) < 6:
        return f"a polygon needs at least 3 points, got {len(polygon) // 2}"
    if not math.isfinite(sum(polygon)):
        return f"coordinates must be finite, got {_short(polygon)}"
    return None


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def rle_string_counts(text: str) -> list[int] | None:
    """The run lengths a compressed RLE string encodes, or None if it does not decode.

    The format (pycocotools' ``rleToString``): each count is written in 5-bit groups, least significant
    first, as characters 48 + group, with 32 added while more groups follow; the last group's bit 16 is
    the sign. From the third count on, a count is stored as its difference to the count two before it.
    """
    counts: list[int] = []
    value, shift = 0, 0
    for char in text:
        group = ord(char) - 48
        if not 0 <= group < 64:
            return None
        value |= (group & 0x1F) << shift
        shift += 5
        if group & 0x20:
            continue
        if group & 0x10:
            value -= 1 << shift
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
        value, shift = 0, 0
    return counts if shift == 0 else None


def segmentation_rle(segmentation: Any, height: int, width: int, where: str) -> dict:
    """A segmentation that passed :func:`segmentation_problem` as one pycocotools RLE, ready to decode.

    Polygons are rasterised with pycocotools and their parts united; a compressed RLE's counts are checked
    to be non-negative and to cover the image exactly, as pycocotools' decoder trusts them (``where`` names
    the annotation in the error).
    """
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation["counts"], list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        counts = rle_string_counts(segmentation["counts"])
        if counts is None or min(counts, default=0) < 0:
            raise LibraError(f"{where}.segmentation.counts: {_short(segmentation['counts'])} is no compressed RLE")
        if sum(counts) != height * width:
            raise LibraError(
                f"{where}.segmentation.counts: compressed RLE runs sum to {sum(counts)}, not height × width = "
                f"{height * width}"
            )
        rle = {"size": [height, width], "counts": segmentation["counts"].encode("ascii")}
    return rle


def _looks_like_lvis(dataset: dict) -> bool:
    categories = dataset.get("categories") or []
    images = dataset.get("images") or []
    return bool(
        (categories and isinstance(categories[0], dict) and "frequency" in categories[0])
        or (images and isinstance(images[0], dict) and "neg_category_ids" in images[0])
    )


def collate(batch: list[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """Detection batches are lists: images differ in size and targets in box count."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)
