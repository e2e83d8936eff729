"""Pascal VOC as distributed (a VOCdevkit year folder) read into an in-memory COCO-format dict.

A year folder holds ``Annotations/<id>.xml`` (one per image), ``ImageSets/Main/<split>.txt`` (the ids of a
split, one per line) and ``JPEGImages/<id>.jpg``. A *VOC source* names one year folder and one split, and is
written either as the folder plus a split (``VOCdevkit/VOC2007`` with ``data.train_split`` / ``data.val_split``)
or directly as the split's list file (``VOCdevkit/VOC2007/ImageSets/Main/test.txt``). Sources joined with
``+`` are read as their union, the papers' 07+12 protocol: ``VOCdevkit/VOC2007+VOCdevkit/VOC2012`` with the
split ``trainval``. Run directories record the list-file form, which names everything needed to read the
split again.

Box convention: VOC boxes are 1-based inclusive pixel indices, so ``xmin = 1, xmax = W`` covers a whole
image of width ``W``. In the continuous 0-based coordinates the detectors use, pixel ``i`` (1-based) spans
``[i - 1, i]``, so the box becomes ``x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax`` (detectron2's
reading of VOC), i.e. COCO ``[xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]``: the width is the
devkit's pixel count. A plain continuous IoU of such boxes equals the devkit's IoU with its ``+ 1`` on the
integer boxes, which is how :mod:`libra_cli.engine.voc_eval` stays consistent with the devkit.

Categories: the 20 VOC classes in the devkit's order with ids 1..20, unless the year folder holds a
``classes.txt`` (one class name per line, in id order), which then replaces them; every source of a union
must agree on the list. Annotations keep ``difficult`` and ``truncated`` (0/1). A difficult object is also
marked ``iscrowd = 1`` (an ignore region: never a training target, neither hit nor miss for COCOeval) unless
the reader is told to use difficult objects, as ``data.voc_use_difficult`` does for training.

Image ids are unique across a union: for ids that are numbers (``000005``, ``2008_000002``) the id is
``year * 10**10 + digits`` with ``year`` the folder name's trailing digits (2007 for ``VOC2007``), so
``VOC2007/000005`` is 20070000000005; otherwise images are numbered 1..N in reading order. ``file_name`` is
relative to the folder holding all year folders (``VOC2007/JPEGImages/000005.jpg`` under ``VOCdevkit``),
returned by :func:`voc_image_root`.
"""

from __future__ import annotations

import math
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from libra_cli.errors import LibraError
from libra_cli.voc_sources import (
    ANNOTATIONS_DIR,
    CLASSES_FILE,
    IMAGE_SUFFIX,
    IMAGES_DIR,
    LISTS_DIR,
    SOURCE_SEPARATOR,
    VocSource,
    parse_voc_sources,
    voc_image_root,
)

# The devkit's class order (VOCdevkit/VOCcode/VOCinit.m); category ids 1..20 follow it.
VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
VOC_FORMAT = "voc"  # the ``info.format`` of a dict read here, which is how evaluation recognises VOC
_NUMERIC_ID = re.compile(r"\d+(_\d+)?")
_YEAR = re.compile(r"(\d{4,})$")
_ID_DIGITS = 10  # numeric image ids have at most this many digits (2008_000002 → 2008000002)


def is_voc_dataset(dataset: dict) -> bool:
    """Whether an annotation dict was read by :func:`read_voc` (its ``info.format`` is ``"voc"``)."""
    info = dataset.get("info")
    return isinstance(info, dict) and info.get("format") == VOC_FORMAT


def read_voc_spec(spec: str | Path, *, default_split: str = "test", use_difficult: bool = False) -> dict[str, Any]:
    """:func:`read_voc` of the sources ``spec`` names; a bare year folder reads ``default_split``."""
    sources = parse_voc_sources(spec, default_split)
    if sources is None:
        raise LibraError(f"{spec}: not a VOC year folder nor an {LISTS_DIR}/<split>.txt list")
    return read_voc(sources, use_difficult=use_difficult)


def read_voc(sources: Sequence[VocSource], *, use_difficult: bool = False) -> dict[str, Any]:
    """The union of ``sources`` as a COCO-format dict (images, annotations, categories, info).

    ``use_difficult``: difficult objects are ordinary annotations (``iscrowd`` 0) instead of ignore regions;
    their ``difficult`` flag is kept either way.
    """
    if not sources:
        raise LibraError("no VOC source given")
    names = _common_class_names(sources)
    category_of = {name: index for index, name in enumerate(names, start=1)}
    root = voc_image_root(sources)
    entries = []  # (source, image id string, parsed xml)
    for source in sources:
        for stem in _read_split_list(source):
            entries.append((source, stem, _read_xml(source, stem, category_of)))
    numeric = all(_NUMERIC_ID.fullmatch(stem) and len(stem.replace("_", "")) <= _ID_DIGITS for _, stem, _ in entries)
    images, annotations, seen = [], [], {}
    for position, (source, stem, parsed) in enumerate(entries):
        image_id = _derived_image_id(source, stem, sources) if numeric else position + 1
        name = f"{source.year_dir.name}/{stem}"
        if image_id in seen:
            raise LibraError(f"{source.list_file}: image {name} is listed twice (also as {seen[image_id]})")
        seen[image_id] = name
        image_path = source.year_dir.resolve() / IMAGES_DIR / f"{stem}{IMAGE_SUFFIX}"
        images.append(
            {
                "id": image_id,
                "file_name": os.path.relpath(image_path, root),
                "width": parsed["width"],
                "height": parsed["height"],
                "voc_name": name,
            }
        )
        for obj in parsed["objects"]:
            x1, y1, x2, y2 = obj["box"]
            width, height = x2 - x1, y2 - y1
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": obj["category_id"],
                    "bbox": [x1, y1, width, height],
                    "area": width * height,
                    "iscrowd": int(obj["difficult"] and not use_difficult),
                    "difficult": obj["difficult"],
                    "truncated": obj["truncated"],
                }
            )
    return {
        "info": {
            "format": VOC_FORMAT,
            "description": "Pascal VOC read from " + SOURCE_SEPARATOR.join(str(s.list_file) for s in sources),
            "image_root": str(root),
        },
        "images": images,
        "annotations": annotations,
        "categories": [{"id": index, "name": name} for name, index in category_of.items()],
    }


# --- parts ---------------------------------------------------------------------------------------------


def read_class_names(year_dir: Path) -> tuple[str, ...]:
    """The year folder's ``classes.txt`` (blank lines skipped), or the 20 VOC classes without one."""
    path = year_dir / CLASSES_FILE
    if not path.is_file():
        return VOC_CLASSES
    try:
        names = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    except (OSError, UnicodeDecodeError) as exc:
        raise LibraError(f"{path}: cannot read the class list ({exc})") from exc
    if not names:
        raise LibraError(f"{path}: the class list is empty")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise LibraError(f"{path}: class {repeated[0]!r} is listed twice")
    return names


def _common_class_names(sources: Sequence[VocSource]) -> tuple[str, ...]:
    names = read_class_names(sources[0].year_dir)
    for source in sources[1:]:
        other = read_class_names(source.year_dir)
        if other != names:
            raise LibraError(
                f"{source.year_dir}: its classes ({', '.join(other[:3])}, …) differ from those of "
                f"{sources[0].year_dir} ({', '.join(names[:3])}, …); a union needs one class list"
            )
    return names


def _read_split_list(source: VocSource) -> list[str]:
    """The image ids of the split's list file (first token of each non-empty line)."""
    path = source.list_file
    if not path.is_file():
        raise LibraError(f"{path}: ImageSets list not found (split {source.split!r} of {source.year_dir})")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise LibraError(f"{path}: cannot read ({exc})") from exc
    stems = []
    for number, line in enumerate(lines, start=1):
        tokens = line.split()
        if not tokens:
            continue
        stem = tokens[0]
        if "/" in stem or "\\" in stem or stem in (".", ".."):
            raise LibraError(f"{path}: line {number}: {stem!r} is not an image id")
        stems.append(stem)
    return stems


def _read_xml(source: VocSource, stem: str, category_of: dict[str, int]) -> dict[str, Any]:
    """Size and objects of ``Annotations/<stem>.xml``: ``{"width", "height", "objects": [{"category_id",
    "box" (x1, y1, x2, y2) continuous 0-based, "difficult", "truncated"}]}``."""
    path = source.year_dir / ANNOTATIONS_DIR / f"{stem}.xml"
    if not path.is_file():
        raise LibraError(f"{source.list_file}: image id {stem!r} has no annotation file {path}")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise LibraError(f"{path}: not valid XML ({exc})") from exc
    except OSError as exc:
        raise LibraError(f"{path}: cannot read ({exc.strerror})") from exc
    size = root.find("size")
    if size is None:
        raise LibraError(f"{path}: missing <size>")
    width = _positive_int(path, size, "width", "size")
    height = _positive_int(path, size, "height", "size")
    objects = []
    for index, obj in enumerate(root.findall("object")):
        where = f"object[{index}]"
        name_node = obj.find("name")
        name = (name_node.text or "").strip() if name_node is not None else ""
        if not name:
            raise LibraError(f"{path}: {where}: missing <name>")
        if name not in category_of:
            raise LibraError(f"{path}: {where}.name: unknown class {name!r} (not in the class list)")
        box_node = obj.find("bndbox")
        if box_node is None:
            raise LibraError(f"{path}: {where} ({name}): missing <bndbox>")
        xmin, ymin, xmax, ymax = (
            _number(path, box_node, key, f"{where}.bndbox") for key in ("xmin", "ymin", "xmax", "ymax")
        )
        if not (1 <= xmin <= xmax <= width and 1 <= ymin <= ymax <= height):
            raise LibraError(
                f"{path}: {where}.bndbox: ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}) lies outside the "
                f"{width}x{height} image (VOC boxes are 1-based: 1 <= xmin <= xmax <= width)"
            )
        objects.append(
            {
                "category_id": category_of[name],
                "box": (xmin - 1.0, ymin - 1.0, xmax, ymax),
                "difficult": _flag(path, obj, "difficult", where),
                "truncated": _flag(path, obj, "truncated", where),
            }
        )
    return {"width": width, "height": height, "objects": objects}


def _text(node: ET.Element, key: str) -> str | None:
    child = node.find(key)
    return None if child is None or child.text is None else child.text.strip()


def _number(path: Path, node: ET.Element, key: str, where: str) -> float:
    text = _text(node, key)
    if text is None:
        raise LibraError(f"{path}: {where}: missing <{key}>")
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise LibraError(f"{path}: {where}.{key}: {text!r} is not a number")
    return value


def _positive_int(path: Path, node: ET.Element, key: str, where: str) -> int:
    value = _number(path, node, key, where)
    if value != int(value) or value <= 0:
        raise LibraError(f"{path}: {where}.{key}: expected a positive whole number of pixels, got {_text(node, key)!r}")
    return int(value)


def _flag(path: Path, node: ET.Element, key: str, where: str) -> int:
    """A 0/1 flag (absent: 0)."""
    text = _text(node, key)
    if text is None or text == "":
        return 0
    if text not in ("0", "1"):
        raise LibraError(f"{path}: {where}.{key}: expected 0 or 1, got {text!r}")
    return int(text)


def _derived_image_id(source: VocSource, stem: str, sources: Sequence[VocSource]) -> int:
    """``year * 10**10 + digits of the id``; a folder name without a year uses its position in the union."""
    match = _YEAR.search(source.year_dir.resolve().name)
    year = int(match.group(1)) if match else list(sources).index(source) + 1
    return year * 10**_ID_DIGITS + int(stem.replace("_", ""))
