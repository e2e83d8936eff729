"""Annotation and results files of COCO's and LVIS' full sizes, without the pixels.

Writes ground truth of the size of COCO train2017 / val2017 and LVIS v1 train / val (the exact image and
annotation counts of the released files, :data:`SETS`) with the statistics that matter to libra's
reader, samplers and evaluators: a long-tailed number of objects per image (some images without any),
box sizes spread over COCO's small (< 32²), medium and large (> 96²) ranges, about 1 % COCO crowd
regions, LVIS' 1,203 categories in 337 rare / 461 common / 405 frequent with their federated
``neg_category_ids`` and ``not_exhaustive_category_ids``. The records themselves come from
``benchmarks/eval_scale.py``'s generators (one generator for both benchmarks); this module gives them
exact sizes and file names.

Every image record names one of a few small JPEG files written beside the annotations (``images/``),
so training, ``libra data stats`` and evaluation run on the full-size files without gigabytes of pixels
(the dataset rescales the boxes to the file's real size). Results files hold 100 (COCO) or 300 (LVIS)
detections per image with a controllable ``quality`` (see ``eval_scale.synthetic_detections``).

    python benchmarks/full_size.py OUT --sets coco_val lvis_val --results
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPOSITORY = Path(__file__).resolve().parents[1]
if str(REPOSITORY) not in sys.path:
    sys.path.insert(0, str(REPOSITORY))

from benchmarks.eval_scale import coco_ground_truth, lvis_ground_truth, synthetic_detections  # noqa: E402
from libra_cli.io import atomic_write_text  # noqa: E402


@dataclass(frozen=True)
class SetSize:
    """One released annotation file's size: format, images, annotations, the COCO 2017 split it draws from
    and detections per image in a results file (the protocol's limit)."""

    format: str
    images: int
    annotations: int
    split: str
    detections_per_image: int


SETS = {
    "coco_train": SetSize("coco", 118_287, 860_001, "train2017", 100),
    "coco_val": SetSize("coco", 5_000, 36_781, "val2017", 100),
    "lvis_train": SetSize("lvis", 100_170, 1_270_141, "train2017", 300),
    "lvis_val": SetSize("lvis", 19_809, 244_707, "val2017", 300),
}
# LVIS' groups by training images per category: rare 1-10, common 11-100, frequent > 100. With about
# four categories per image these weights give a rare category ~5 and a frequent one ~900 LVIS-train images.
LVIS_FULL_SIZE_WEIGHTS = {"r": 5.0, "c": 40.0, "f": 940.0}
SHARED_IMAGES = 4  # small JPEG files every image record points to
SHARED_IMAGE_SIZE = (96, 72)  # width, height in pixels: the aspect of COCO's 640 × 480
EMPTY_IMAGE_FRACTION = 0.01  # COCO train2017 has 1,021 of 118,287 images without annotations


def object_counts(num_images: int, num_annotations: int, seed: int, empty_fraction: float) -> np.ndarray:
    """Objects per image: ``empty_fraction`` of the images empty, the others 1 + a negative binomial (a
    standard deviation about the mean, as in COCO, where most images hold a few objects and some over
    fifty), summing to exactly ``num_annotations``."""
    rng = np.random.default_rng(seed)
    empty = rng.uniform(size=num_images) < empty_fraction
    mean = num_annotations / (num_images - int(empty.sum())) - 1  # of the negative binomial part
    shape = 1.5  # the negative binomial's n: variance mean + mean² / n
    counts = 1 + rng.negative_binomial(shape, shape / (shape + mean), size=num_images)
    counts[empty] = 0
    nonempty = np.flatnonzero(counts)
    difference = num_annotations - int(counts.sum())
    # Spread the difference one object at a time over non-empty images (never emptying one).
    while difference != 0:
        step = 1 if difference > 0 else -1
        chosen = rng.choice(nonempty, size=min(abs(difference), nonempty.size), replace=False)
        if step < 0:
            chosen = chosen[counts[chosen] > 1]
        counts[chosen] += step
        difference -= step * chosen.size
    return counts


def ground_truth(name: str, seed: int = 0, fraction: float = 1.0) -> dict:
    """The annotation dict of set ``name`` (a key of :data:`SETS`), or of its first ``fraction`` of images
    with the same per-image statistics. Image records point to the shared files (``file_name`` for COCO,
    ``coco_url`` for LVIS v1, whose files are named by their URL)."""
    size = SETS[name]
    num_images = max(1, round(size.images * fraction))
    counts = object_counts(size.images, size.annotations, seed, EMPTY_IMAGE_FRACTION)[:num_images]
    mean = size.annotations / size.images
    if size.format == "lvis":
        dataset = lvis_ground_truth(num_images, mean, seed, counts=counts, frequency_weights=LVIS_FULL_SIZE_WEIGHTS)
    else:
        dataset = coco_ground_truth(num_images, mean, seed, counts=counts)
    for image in dataset["images"]:
        file_name = shared_image_name(image["id"])
        if size.format == "lvis":
            image.pop("file_name", None)
            image["coco_url"] = f"http://images.cocodataset.org/{size.split}/{file_name}"
        else:
            image["file_name"] = file_name
    dataset["info"] = {"description": f"synthetic, {name}-sized (benchmarks/full_size.py, seed {seed})"}
    return dataset


def shared_image_name(image_id: int) -> str:
    return f"{image_id % SHARED_IMAGES:012d}.jpg"


def write_shared_images(folder: Path) -> list[Path]:
    """The few small JPEG files every image record points to: smooth gradients with a bright block."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    width, height = SHARED_IMAGE_SIZE
    paths = []
    for index in range(SHARED_IMAGES):
        y, x = np.mgrid[0:height, 0:width]
        pixels = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 60 * index)], axis=-1)
        pixels[10 + index * 5 : 30 + index * 5, 20:50] = 230
        path = folder / shared_image_name(index)
        Image.fromarray(pixels.astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def write_set(out: Path, name: str, *, seed: int = 0, fraction: float = 1.0, results: bool = False,
              quality: float = 0.6) -> dict:  # fmt: skip
    """Write ``out/annotations/<name>.json`` (and with ``results`` ``out/results/<name>.json``) and the
    shared images in ``out/images``; returns the sizes and seconds."""
    start = time.perf_counter()
    write_shared_images(out / "images")
    dataset = ground_truth(name, seed, fraction)
    summary = {"images": len(dataset["images"]), "annotations": len(dataset["annotations"])}
    annotations = out / "annotations" / f"{name}.json"
    annotations.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(annotations, json.dumps(dataset))
    summary["annotation_file"] = str(annotations)
    if results:
        size = SETS[name]
        detections = synthetic_detections(
            dataset, size.detections_per_image, seed + 1, negatives=size.format == "lvis", quality=quality
        )
        path = out / "results" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(detections))
        summary.update(detections=len(detections), results_file=str(path))
    summary["seconds"] = round(time.perf_counter() - start, 1)
    return summary


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for annotations/, results/ and images/")
    parser.add_argument("--sets", nargs="+", choices=sorted(SETS), default=sorted(SETS))
    parser.add_argument("--results", action="store_true", help="also write a results file of each set")
    parser.add_argument("--quality", type=float, default=0.6, help="detector quality in [0, 1] (higher, higher AP)")
    parser.add_argument("--fraction", type=float, default=1.0, help="the first fraction of each set's images")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not 0 < args.fraction <= 1:
        parser.error(f"--fraction must be in (0, 1], got {args.fraction}")
    if not 0 <= args.quality <= 1:
        parser.error(f"--quality must be in [0, 1], got {args.quality}")
    written = {}
    for name in args.sets:
        written[name] = write_set(
            args.out, name, seed=args.seed, fraction=args.fraction, results=args.results, quality=args.quality
        )
        print(json.dumps({name: written[name]}), flush=True)
    return written


if __name__ == "__main__":
    main()
