"""What an annotation file holds, counted as training reads it: ``libra data stats ANN``.

The file is read by :class:`libra_cli.data.coco.DetectionDataset`, the reader training uses, with its
checks (ids, boxes inside the image, ``on_bad_sample``), so the counts are those of what a run would train
on: boxes are the non-crowd annotations clipped to their image, crowd regions are counted apart (training
and evaluation ignore them), and an image without a box is one training sees only as background.

Box sizes follow COCO's area ranges of the box area w × h (after clipping): small < 32², medium up to
96², large above. LVIS files also get their categories grouped by ``frequency`` (rare, common,
frequent: the groups of APr, APc, APf).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from libra_cli.data.coco import DetectionDataset
from libra_cli.io import atomic_write_bytes, atomic_write_text

AREA_RANGES = (("small", 0.0, 32.0**2), ("medium", 32.0**2, 96.0**2), ("large", 96.0**2, float("inf")))
FREQUENCY_GROUPS = {"r": "rare", "c": "common", "f": "frequent"}
# Box side sqrt(w × h) in pixels: bin edges of the histogram (the last bin takes everything above).
SIDE_EDGES = (0, 8, 16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)


def dataset_stats(ann: str | Path, images: str | Path | None = None, on_bad_sample: str = "error") -> dict[str, Any]:
    """The counts of annotation file ``ann`` (COCO or LVIS JSON, or a Pascal VOC source).

    ``images`` is the image folder (default: the file's folder); only whether each image's file is found
    is counted, no pixel is read. ``on_bad_sample`` as in training: "error" stops at the first degenerate
    box with a one-line LibraError, "skip" drops and counts it.

    Returns a JSON-ready dict: ``format``, ``images``, ``annotations`` (records in the file), ``boxes``
    (the training boxes), ``crowd``, ``skipped_boxes``, ``images_without_boxes``, ``image_files_missing``
    (with ``images`` given, else None), ``boxes_per_image`` (mean, median, max), ``box_sizes`` (small /
    medium / large counts), ``side_histogram`` (edges and counts of sqrt(w × h)), ``categories`` (per
    category: id, name, frequency, instances, images; file order) and for LVIS ``frequency_groups`` (per
    r / c / f: categories, instances, images holding one).
    """
    root = Path(images) if images is not None else Path(ann).parent
    dataset = DetectionDataset(ann, root, on_bad_sample=on_bad_sample)
    records = dataset.records
    boxes = np.array([box for record in records for box in record.boxes], dtype=float).reshape(-1, 4)
    per_image = np.array([len(record.boxes) for record in records], dtype=np.int64)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    sides = np.sqrt(areas)
    edges = np.array([*SIDE_EDGES, np.inf])
    instances = dataset.instances_per_class().tolist()
    images_per_class = dataset.images_per_class().tolist()
    categories = []
    for label, category_id in enumerate(dataset.category_ids):
        category = dataset.categories[category_id]
        row = {"id": category_id, "name": str(category.get("name", category_id))}
        if dataset.format == "lvis":
            row["frequency"] = category.get("frequency")
        row.update(instances=instances[label], images=images_per_class[label])
        categories.append(row)
    annotations = dataset.dataset["annotations"]
    stats: dict[str, Any] = {
        "ann_file": str(ann),
        "format": dataset.format,
        "images": len(records),
        "annotations": len(annotations),
        "boxes": int(len(boxes)),
        "crowd": sum(1 for ann_record in annotations if ann_record.get("iscrowd", 0)),
        "skipped_boxes": dataset.skipped_boxes,
        "images_without_boxes": int((per_image == 0).sum()),
        "image_files_missing": sum(1 for record in records if record.tried) if images is not None else None,
        "boxes_per_image": {
            "mean": float(per_image.mean()) if len(per_image) else None,
            "median": float(np.median(per_image)) if len(per_image) else None,
            "max": int(per_image.max()) if len(per_image) else None,
        },
        "box_sizes": {name: int(((areas >= low) & (areas < high)).sum()) for name, low, high in AREA_RANGES},
        "side_histogram": {"edges": list(SIDE_EDGES), "counts": np.histogram(sides, bins=edges)[0].tolist()},
        "categories": categories,
    }
    if dataset.format == "lvis":
        stats["frequency_groups"] = _frequency_groups(dataset, categories)
    return stats


def _frequency_groups(dataset: DetectionDataset, categories: list[dict]) -> dict[str, dict[str, int]]:
    """Per LVIS frequency group: its categories, their instances and the images holding at least one."""
    group_of_label = {label: row["frequency"] for label, row in enumerate(categories, start=1)}
    groups = {}
    for key in FREQUENCY_GROUPS:
        rows = [row for row in categories if row["frequency"] == key]
        images = sum(1 for record in dataset.records if any(group_of_label[label] == key for label in record.labels))
        groups[key] = {"categories": len(rows), "instances": sum(row["instances"] for row in rows), "images": images}
    return groups


def write_stats(stats: dict[str, Any], out: str | Path) -> dict[str, Path]:
    """Write ``OUT/stats.json`` and ``OUT/stats.png`` (instances per category, largest first and coloured
    by LVIS group; the histogram of box sides with COCO's area limits), each atomically."""
    from matplotlib.figure import Figure

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "stats.json", "png": out / "stats.png"}
    atomic_write_text(paths["json"], json.dumps(stats, indent=2) + "\n")

    figure = Figure(figsize=(11, 4), layout="constrained")
    per_class, sizes = figure.subplots(1, 2)
    rows = sorted(stats["categories"], key=lambda row: -row["instances"])
    colours = {"r": "tab:red", "c": "tab:orange", "f": "tab:blue"}
    per_class.bar(
        range(len(rows)),
        [max(row["instances"], 0.5) for row in rows],
        width=1.0,
        color=[colours.get(row.get("frequency"), "tab:blue") for row in rows],
    )
    per_class.set_yscale("log")
    per_class.set_xlabel("category (most instances first)")
    per_class.set_ylabel("instances (training boxes)")
    title = f"{stats['images']:,} images, {stats['boxes']:,} boxes, {len(rows):,} categories"
    per_class.set_title(title + (" (r / c / f: red / orange / blue)" if stats["format"] == "lvis" else ""))
    histogram = stats["side_histogram"]
    centres = np.arange(len(histogram["counts"]))
    sizes.bar(centres, histogram["counts"], width=0.9)
    edges = histogram["edges"]
    labels = [f"{a}-{b}" for a, b in zip(edges[:-1], edges[1:], strict=True)] + [f">{edges[-1]}"]
    sizes.set_xticks(centres, labels, rotation=60, fontsize=7)
    for limit in (32, 96):  # COCO's small / medium / large limits on sqrt(area)
        sizes.axvline(histogram["edges"].index(limit) - 0.5, color="grey", linestyle="--")
    counts = stats["box_sizes"]
    sizes.set_title(
        f"box side √(w·h), px\nsmall {counts['small']:,} · medium {counts['medium']:,} · large {counts['large']:,}",
        fontsize=10,
    )
    sizes.set_ylabel("boxes")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    atomic_write_bytes(paths["png"], buffer.getvalue())
    return paths
