"""``libra data show``: a dataset's ground truth drawn on its images, to look at the data before training.

The annotations are read by the training reader (``DetectionDataset``) with its checks — a COCO or LVIS
JSON file, or Pascal VOC year folders / ImageSets lists — so what is drawn is what training would see:
boxes clipped to the image, in the category colours of ``libra report`` and labelled with the category's
name. Crowd regions (and VOC objects marked ``difficult``, which evaluation ignores) are drawn apart, in
:data:`~libra_cli.report.detections.IGNORED_COLOUR` with "(crowd)" / "(difficult)" after the name; instance
masks are overlaid when every object of the file has one.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from libra_cli.data.build import split_files
from libra_cli.data.coco import DetectionDataset, ImageRecord
from libra_cli.data.transforms import resize_masks
from libra_cli.errors import LibraError
from libra_cli.report.detections import (
    Boxes,
    category_colours,
    check_out_dir,
    draw_panel,
    drawn_name,
    read_image,
    save_png,
)

DEFAULT_NUM = 8  # images drawn when neither a number nor ids are given


@dataclass
class ShownImages:
    """What :func:`show_dataset` drew."""

    ann_file: Path
    format: str  # "coco", "lvis" or "voc"
    num_images: int  # images in the annotation file
    drawn: list[tuple[int, Path]] = field(default_factory=list)  # (image id, drawing)
    masks: bool = False  # whether masks were overlaid


def choose_image_ids(available: Sequence[int], num: int | None, ids: Sequence[int] | None, seed: int) -> list[int]:
    """``ids`` as given (each must exist), else ``num`` of the ids drawn by ``random.Random(seed)`` without
    repeats (over the ids in increasing order), in increasing order."""
    ordered = sorted(available)
    if ids:
        unknown = [i for i in ids if i not in set(ordered)]
        if unknown:
            raise LibraError(f"--ids: image id {unknown[0]} is not in the annotation file")
        return list(dict.fromkeys(ids))
    count = DEFAULT_NUM if num is None else num
    if count < 1:
        raise LibraError(f"--num: must be at least 1, got {count}")
    return sorted(random.Random(seed).sample(ordered, min(count, len(ordered))))


def _has_all_masks(dataset: DetectionDataset) -> bool:
    annotations = [ann for ann in dataset.dataset["annotations"] if not ann.get("iscrowd", 0)]
    return bool(annotations) and all(ann.get("segmentation") for ann in annotations)


def _ignored_regions(dataset: DetectionDataset, record: ImageRecord) -> list[tuple[tuple[float, ...], int, str]]:
    """The image's crowd regions and VOC difficult objects: (xyxy clipped to the image, category id, why)."""
    regions = []
    for ann in dataset.dataset["annotations"]:
        if ann["image_id"] != record.image_id or not ann.get("iscrowd", 0):
            continue
        x, y, w, h = (float(v) for v in ann["bbox"])
        box = (max(x, 0.0), max(y, 0.0), min(x + w, float(record.width)), min(y + h, float(record.height)))
        if box[2] > box[0] and box[3] > box[1]:
            regions.append((box, ann["category_id"], "difficult" if ann.get("difficult") else "crowd"))
    return regions


def show_dataset(
    ann: str | Path,
    images: str | Path | None,
    out: str | Path,
    *,
    num: int | None = None,
    ids: Sequence[int] | None = None,
    seed: int = 0,
    split: str = "trainval",
    force: bool = False,
) -> ShownImages:
    """Draw the ground truth of ``num`` images drawn by ``seed`` (or of the image ``ids``) of ``ann`` into
    ``out`` as ``<file stem>.png``. ``images`` is the image folder (for VOC it may be left out); ``split`` the
    ImageSets list read from VOC year folders. An ``out`` folder holding files is refused unless ``force``."""
    ann_file, image_root = split_files(ann, images, split, "--split")
    out = Path(out)
    check_out_dir(out, force)
    dataset = DetectionDataset(ann_file, image_root)
    if not dataset.records:
        raise LibraError(f"{ann_file}: no images to draw")
    with_masks = _has_all_masks(dataset)
    if with_masks:  # the masks go through the same checks as a Mask R-CNN's training
        dataset = DetectionDataset(ann_file, image_root, with_masks=True)
    records = {record.image_id: record for record in dataset.records}
    names = dict(zip(dataset.category_ids, dataset.category_names(), strict=True))
    colours = category_colours(dataset.category_ids)
    shown = ShownImages(dataset.ann_file, dataset.format, len(records), masks=with_masks)
    taken: set[str] = set()
    for image_id in choose_image_ids(list(records), num, ids, seed):
        record = records[image_id]
        pixels = read_image(record.path, image_id, ann_file)
        height, width = pixels.shape[-2:]
        ignored = _ignored_regions(dataset, record)
        category_ids = tuple(dataset.label_to_category_id(label) for label in record.labels)
        boxes = Boxes(
            record.boxes + tuple(box for box, _, _ in ignored), category_ids + tuple(c for _, c, _ in ignored)
        )
        masks = None
        if with_masks:
            masks = resize_masks(dataset.load_masks(record), (height, width)).bool()
            masks = torch.cat([masks, masks.new_zeros((len(ignored), height, width))])
        reasons = [None] * len(record.boxes) + [why for _, _, why in ignored]
        scale = (width / record.width, height / record.height)
        drawn = draw_panel(pixels, boxes, names, colours, 0.0, scale, masks=masks, ignored=reasons)
        path = out / drawn_name(record.path, taken)
        save_png(drawn, path)
        shown.drawn.append((image_id, path))
    return shown
