"""A COCO-format benchmark (``libra data synth``'s layout) written out as a Pascal VOC year folder.

The result reads back with :mod:`libra_cli.data.voc`::

    OUT/VOCdevkit/VOC2007/Annotations/000001.xml ...     one XML per image, <size> and <object>s
    OUT/VOCdevkit/VOC2007/ImageSets/Main/trainval.txt    the benchmark's train split
    OUT/VOCdevkit/VOC2007/ImageSets/Main/test.txt        the benchmark's val split
    OUT/VOCdevkit/VOC2007/JPEGImages/000001.jpg ...      JPEG, quality 95
    OUT/VOCdevkit/VOC2007/classes.txt                    the benchmark's category names in id order

Images are numbered 000001, 000002, … over the train split, then on over the val split, so the two splits
share one year folder without clashing ids. A COCO box ``[x, y, w, h]`` (continuous 0-based pixels) becomes
the 1-based inclusive ``xmin = x + 1, ymin = y + 1, xmax = x + w, ymax = y + h`` — the inverse of the
reader's conversion, so whole-pixel boxes come back exactly. Crowd regions become ``difficult = 1`` objects
(ignored by VOC evaluation, as crowd is by COCO's); ``truncated`` is written as 0.

The tree is assembled in a temporary folder beside its destination and moved into place in one rename, so
an interrupted export leaves no half-written VOCdevkit.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from PIL import Image

from libra_cli.errors import LibraError
from libra_cli.voc_sources import ANNOTATIONS_DIR, CLASSES_FILE, IMAGE_SUFFIX, IMAGES_DIR, LISTS_DIR

DEVKIT_DIR = "VOCdevkit"
YEAR_DIR = "VOC2007"
JPEG_QUALITY = 95
# benchmark split → VOC split it becomes
SPLIT_NAMES = {"train": "trainval", "val": "test"}


def voc_year_dir(out: str | Path) -> Path:
    """Where :func:`export_benchmark_to_voc` puts the year folder under ``out``."""
    return Path(out) / DEVKIT_DIR / YEAR_DIR


def export_benchmark_to_voc(benchmark: str | Path, out: str | Path) -> dict[str, Any]:
    """Write the COCO-format benchmark in ``benchmark`` (annotations/{train,val}.json, images/{train,val}/)
    as ``out/VOCdevkit/VOC2007``; returns ``{"year_dir", "splits": {voc split: {"images", "objects",
    "difficult"}}}``. Refuses an ``out`` that already holds a VOCdevkit."""
    benchmark, destination = Path(benchmark), voc_year_dir(out)
    if destination.parent.exists():
        raise LibraError(f"{destination.parent}: already exists; choose an empty or new output folder")
    splits = {split: _read_split(benchmark, split) for split in SPLIT_NAMES}
    categories = sorted(splits["train"]["categories"], key=lambda category: category["id"])
    destination.parent.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{DEVKIT_DIR}.", suffix=".tmp", dir=destination.parent.parent))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; the finished tree is an ordinary folder
        year = staging / YEAR_DIR
        for folder in (year / ANNOTATIONS_DIR, year / LISTS_DIR, year / IMAGES_DIR):
            folder.mkdir(parents=True)
        (year / CLASSES_FILE).write_text("".join(f"{c['name']}\n" for c in categories), encoding="utf-8")
        name_of = {category["id"]: category["name"] for category in categories}
        counts, number = {}, 0
        for split, voc_split in SPLIT_NAMES.items():
            dataset = splits[split]["dataset"]
            by_image: dict[int, list[dict]] = {image["id"]: [] for image in dataset["images"]}
            for ann in dataset["annotations"]:
                by_image[ann["image_id"]].append(ann)
            stems = []
            for image in dataset["images"]:
                number += 1
                stem = f"{number:06d}"
                stems.append(stem)
                source = benchmark / "images" / split / image["file_name"]
                _write_jpeg(source, year / IMAGES_DIR / f"{stem}{IMAGE_SUFFIX}")
                xml = _annotation_xml(stem, image, by_image[image["id"]], name_of)
                ET.ElementTree(xml).write(year / ANNOTATIONS_DIR / f"{stem}.xml", encoding="utf-8")
            (year / LISTS_DIR / f"{voc_split}.txt").write_text("".join(f"{s}\n" for s in stems), encoding="utf-8")
            crowd = sum(1 for ann in dataset["annotations"] if ann.get("iscrowd", 0))
            counts[voc_split] = {"images": len(stems), "objects": len(dataset["annotations"]), "difficult": crowd}
        os.replace(staging, destination.parent)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return {"year_dir": str(destination), "splits": counts}


def _read_split(benchmark: Path, split: str) -> dict[str, Any]:
    path = benchmark / "annotations" / f"{split}.json"
    try:
        dataset = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LibraError(f"{path}: cannot read the benchmark's annotations ({exc})") from exc
    return {"dataset": dataset, "categories": dataset["categories"]}


def _write_jpeg(source: Path, target: Path) -> None:
    with Image.open(source) as image:
        image.convert("RGB").save(target, format="JPEG", quality=JPEG_QUALITY)


def _annotation_xml(stem: str, image: dict, annotations: list[dict], name_of: dict[int, str]) -> ET.Element:
    """The VOC ``<annotation>`` of one image."""
    root = ET.Element("annotation")
    _child(root, "folder", YEAR_DIR)
    _child(root, "filename", f"{stem}{IMAGE_SUFFIX}")
    size = _child(root, "size")
    _child(size, "width", str(image["width"]))
    _child(size, "height", str(image["height"]))
    _child(size, "depth", "3")
    _child(root, "segmented", "0")
    for ann in annotations:
        x, y, w, h = (float(v) for v in ann["bbox"])
        obj = _child(root, "object")
        _child(obj, "name", name_of[ann["category_id"]])
        _child(obj, "pose", "Unspecified")
        _child(obj, "truncated", "0")
        _child(obj, "difficult", str(int(bool(ann.get("iscrowd", 0)))))
        box = _child(obj, "bndbox")
        for key, value in (("xmin", x + 1), ("ymin", y + 1), ("xmax", x + w), ("ymax", y + h)):
            _child(box, key, _pixel_text(value))
    return root


def _child(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    node = ET.SubElement(parent, tag)
    if text is not None:
        node.text = text
    return node


def _pixel_text(value: float) -> str:
    """Whole pixels as integers (as the devkit writes them), anything else as the shortest exact float."""
    return str(int(value)) if value == int(value) else repr(value)
