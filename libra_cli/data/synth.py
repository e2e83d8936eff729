"""A synthetic detection benchmark written in real COCO / LVIS format, so no dataset has to be downloaded.

Images are flat coloured shapes on a muted, textured gradient. A category is a (shape, colour) pair such as
"red circle"; the same loaders and evaluators then serve this benchmark and real COCO / LVIS. The content is
small enough for a detector trained from scratch on a CPU to learn, yet it carries what the Libra diagnostics
look at: object sizes spanning COCO's small / medium / large ranges, overlapping objects, hard negatives
(look-alike shapes that are no category, plus clutter), occasional ``iscrowd`` regions and, optionally, a
Zipf-like long tail written as LVIS (``frequency``, ``neg_category_ids``, ...).

Layout of a benchmark directory::

    OUT/images/train/000000.png ...   OUT/images/val/000000.png ...
    OUT/annotations/train.json        OUT/annotations/val.json
    OUT/benchmark.json                the spec and counts, written last: its presence means "complete"

Boxes are COCO ``[x, y, w, h]`` in pixels: the tight box of the drawn shape, occluded parts included. Each
``segmentation`` is the object's exact visible mask as compressed RLE (``{"size": [h, w], "counts": str}``,
pycocotools' encoding): the pixels its shape covered (holes left open) less those of the objects drawn after
it; a crowd region's is the union of its tiny shapes. ``area`` is the box's ``w * h``, not the mask's pixel
count, so that the COCO and LVIS evaluators' small / medium / large ranges sort objects by box as they always
have. Every image is drawn from its own random generator seeded by ``(seed, split, index)``, so a seed gives
byte-identical images and JSON; the masks are read from what is drawn and take no random draws.

For a long tail pass ``num_classes=LONG_TAIL_NUM_CLASSES`` (40): with the default 500 training images the
LVIS rare, common and frequent groups are then all populated. Only the training split is long-tailed: the
validation split is class-balanced, as in ImageNet-LT and Places-LT, with ``val_instances_per_class`` (20)
instances of every class, so that a rare class's AP rests on 20 boxes rather than the 1-4 that a Zipf-drawn
validation split of 100 images would hold. (LVIS's own val is long-tailed like its train split; LVIS makes
up for it with a far larger val set and federated labels, which this benchmark also writes.) LVIS has no
notion of crowd, so long-tail benchmarks carry no ``iscrowd`` regions (the LVIS evaluator would score one as
an ordinary object).
"""

import functools
import json
import math
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from libra_cli.errors import LibraError

SHAPES = ("circle", "square", "triangle", "star", "diamond", "ring", "cross", "hexagon")
# Saturated and far apart: any two differ by >= 80 in some channel, well beyond the ±15 jitter.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "blue": (30, 70, 230),
    "green": (30, 170, 50),
    "yellow": (240, 210, 20),
    "magenta": (220, 40, 220),
    "cyan": (20, 210, 220),
    "orange": (255, 130, 0),
    "purple": (120, 40, 170),
}
# Look-alikes: category shapes get one of these colours, which are no category colour.
_PALE_TARGET = np.array([215.0, 215.0, 215.0])
_DISTRACTOR_COLOURS: tuple[tuple[int, int, int], ...] = (
    (128, 128, 128),  # grey
    (115, 70, 35),  # brown
    (240, 240, 240),  # white
) + tuple(  # pale versions of the category colours
    tuple(int(v) for v in np.rint(0.35 * np.array(rgb) + 0.65 * _PALE_TARGET)) for rgb in COLOURS.values()
)
# ... or category colours go on these shapes, which are no category shape.
_DISTRACTOR_SHAPES = ("pentagon", "half_disc", "bar")

# Use num_classes=LONG_TAIL_NUM_CLASSES with long_tail=True: with 500 training images and the default Zipf
# exponent 1.2 the rare (< 10 images), common (10-99) and frequent (>= 100) groups are then all non-empty.
LONG_TAIL_NUM_CLASSES = 40

_SPLIT_CODES = {"train": 0, "val": 1}
_CROWD_PROBABILITY = 0.05  # images with one iscrowd region (COCO format only: LVIS has no crowd)
_NOT_EXHAUSTIVE_PROBABILITY = 0.05  # LVIS images that flag one present category as not exhaustive
_MIN_OBJECT_SIDE = 10.0  # pixels; the largest side is _MAX_SIDE_FRACTION × image_size
_MAX_SIDE_FRACTION = 0.55
_MAX_COVERED_FRACTION = 0.5  # an earlier object's box may be at most this much covered by later ones
_PLACEMENT_ATTEMPTS = 30
_COLOUR_JITTER = 15
_MAX_ROTATION_DEGREES = 15.0  # small, so a square never turns into a diamond
_MAX_OBJECTS_LIMIT = 50
_IMAGE_SIZE_RANGE = (64, 4096)
_BENCHMARK_FILE = "benchmark.json"
# benchmark.json's "version": 2 writes exact visible masks as RLE (1, unversioned, wrote outline polygons).
# A folder of another version is generated again rather than reused.
_BENCHMARK_VERSION = 2
_IN_PROGRESS_FILE = ".synth-in-progress"  # marks a directory this module is (or was, if interrupted) writing
_IMAGE_NAME = re.compile(r"^\d{6}\.png$")
# SynthSpec fields that only a long-tailed benchmark uses (left out of a COCO benchmark's benchmark.json).
_LONG_TAIL_ONLY_FIELDS = ("val_instances_per_class",)
# The difficulty knobs' neutral values: benchmark.json leaves out a knob at its neutral value, so a default
# benchmark's file reads as it did before the knobs existed (and cached copies of it stay valid).
_NEUTRAL_DIFFICULTY = {"small_fraction": 0.0, "max_distractors": 4, "clutter_factor": 1}
# COCO's small objects: area below 32² pixels; the smallest labelled object is _MIN_OBJECT_SIDE.
_SMALL_OBJECT_SIDE = 32.0


@dataclass(frozen=True)
class SynthSpec:
    num_train: int = 500  # training images
    num_val: int = 100  # validation images (a long-tailed val split is sized by val_instances_per_class instead)
    image_size: int = 256  # side of the square images, pixels
    num_classes: int = 8  # categories: the first num_classes of category_list()
    long_tail: bool = False  # Zipf-like class frequencies and LVIS-format annotations (no crowd regions)
    zipf_exponent: float = 1.2  # class k (0 = most frequent) has frequency ∝ 1 / (k + 1) ** zipf_exponent
    # long_tail only: the val split is class-balanced, exactly this many instances of every class, dealt to as
    # many images of min_objects..max_objects objects as they fill (20 × 40 classes: 181 images with seed 0)
    val_instances_per_class: int = 20
    sparse_ids: bool = False  # category ids 3, 7, 11, ... instead of 1..C, to exercise id mapping
    min_objects: int = 2  # labelled objects per image, uniform in [min_objects, max_objects]
    max_objects: int = 7
    distractors: bool = True  # unlabelled look-alike shapes and clutter (hard negatives)
    seed: int = 0  # same seed, same bytes
    # Difficulty knobs (see DIFFICULTIES); at these defaults the benchmark is drawn exactly as before they existed.
    small_fraction: float = 0.0  # share of labelled objects drawn small: side 10-32 px (COCO's "small", area < 32²)
    max_distractors: int = 4  # look-alikes per image, uniform in 1..max_distractors (with distractors on)
    clutter_factor: int = 1  # clutter per image: 0..3·f thin lines and 0..4·f small blobs (with distractors on)


@functools.cache
def category_list() -> tuple[tuple[str, str], ...]:
    """All (shape, colour) categories, ordered so that every prefix is as easy to tell apart as possible.

    The set grows in blocks: 4 shapes × 2 colours, the same shapes × 2 more colours, the other 4 shapes ×
    those 4 colours, then all 8 shapes × the last 4 colours (64 in all). Inside a block the colour shifts
    with the shape, so neighbouring categories differ in both: red circle, blue square, red triangle, ...
    """
    colours = tuple(COLOURS)
    blocks = [(SHAPES[:4], colours[:2]), (SHAPES[:4], colours[2:4]), (SHAPES[4:], colours[:4]), (SHAPES, colours[4:])]
    order = []
    for shapes, block_colours in blocks:
        for shift in range(len(block_colours)):
            for i, shape in enumerate(shapes):
                order.append((shape, block_colours[(i + shift) % len(block_colours)]))
    return tuple(order)


# Named difficulty presets of ``libra data synth --difficulty`` and ``data.synth_difficulty``: the SynthSpec
# fields each sets. "default" is the benchmark the demo trains on (a 12-epoch baseline reaches AP50 ≈ 0.97 on
# it, too close to the ceiling for a component to show). "coco-like" adds what the papers' imbalances feed
# on: more objects per image (4-15, COCO averages 7.3), a quarter of them drawn small on top of the default
# size draw (about 65 % under 32² px; the default has 49 %, COCO 41 %),
# up to 10 look-alike hard negatives and three times the clutter (many easy and some hard negatives per
# positive), and 20 classes of the 8 shapes × 8 colours instead of 8 (the long-tailed benchmark keeps its 40).
# A 12-epoch baseline still reaches AP50 ≈ 0.95 on coco-like, so "coco-hard" goes past COCO's statistics
# where the ceiling comes from: 6-20 objects per image (crowding, more positives per image to balance), half
# of them forced small (small objects are where detectors lose most), up to 16 look-alikes and four times the
# clutter (hard and easy negatives), and 40 classes, which brings same-shape categories in colours closer
# together (class confusion).
DIFFICULTIES: dict[str, dict[str, object]] = {
    "default": {},
    "coco-like": {
        "num_classes": 20,
        "min_objects": 4,
        "max_objects": 15,
        "small_fraction": 0.25,
        "max_distractors": 10,
        "clutter_factor": 3,
    },
    "coco-hard": {
        "num_classes": 40,
        "min_objects": 6,
        "max_objects": 20,
        "small_fraction": 0.5,
        "max_distractors": 16,
        "clutter_factor": 4,
    },
}


def difficulty_settings(name: str, *, long_tail: bool = False) -> dict[str, object]:
    """The SynthSpec fields of a named difficulty (a long tail keeps its own class count); LibraError if unknown."""
    if name not in DIFFICULTIES:
        raise LibraError(f"synth difficulty {name!r} is not one of {', '.join(DIFFICULTIES)}")
    settings = dict(DIFFICULTIES[name])
    if long_tail:
        settings.pop("num_classes", None)
    return settings


def category_ids(spec: SynthSpec) -> list[int]:
    """Dataset category ids in category order: 1..C, or 3, 7, 11, ... (3 + 4k) with ``sparse_ids``."""
    return [3 + 4 * k if spec.sparse_ids else k + 1 for k in range(spec.num_classes)]


def class_frequencies(spec: SynthSpec) -> np.ndarray:
    """Probability that an object is of class k: uniform, or ∝ 1 / (k + 1)^s with ``long_tail``. Shape [C]."""
    if not spec.long_tail:
        return np.full(spec.num_classes, 1.0 / spec.num_classes)
    weights = 1.0 / np.arange(1, spec.num_classes + 1, dtype=np.float64) ** spec.zipf_exponent
    return weights / weights.sum()


def split_image_counts(spec: SynthSpec) -> dict[str, int]:
    """Images per split: ``num_train`` and ``num_val``, or as many val images as a long tail's plan fills.

    Raises LibraError for a bad spec.
    """
    validate_spec(spec)
    val = len(_val_label_plan(spec)) if spec.long_tail else spec.num_val
    return {"train": spec.num_train, "val": val}


def _val_label_plan(spec: SynthSpec) -> list[list[int]]:
    """The class indices of each image of a long-tailed (class-balanced) val split.

    Every class appears exactly ``val_instances_per_class`` times, in an order shuffled by the seed; the
    sequence is cut into images of ``min_objects``..``max_objects`` objects (uniform, like the training
    images; the last image takes what is left).
    """
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, _SPLIT_CODES["val"]]))
    classes = np.repeat(np.arange(spec.num_classes), spec.val_instances_per_class)
    deck = rng.permutation(classes).tolist()
    plan, start = [], 0
    while start < len(deck):
        count = int(rng.integers(spec.min_objects, spec.max_objects + 1))
        plan.append(deck[start : start + count])
        start += count
    return plan


def validate_spec(spec: SynthSpec) -> None:
    """Raise LibraError naming the first parameter of ``spec`` that is out of range."""
    for name in (
        "num_train",
        "num_val",
        "val_instances_per_class",
        "image_size",
        "num_classes",
        "min_objects",
        "max_objects",
        "seed",
        "max_distractors",
        "clutter_factor",
    ):
        value = getattr(spec, name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise LibraError(f"synth: {name}={value!r} must be an integer")
        if value < 0:
            raise LibraError(f"synth: {name}={value} must not be negative")
    available = len(category_list())
    if not 1 <= spec.num_classes <= available:
        raise LibraError(
            f"synth: num_classes={spec.num_classes} must be between 1 and {available} "
            f"({len(SHAPES)} shapes × {len(COLOURS)} colours)"
        )
    low, high = _IMAGE_SIZE_RANGE
    if not low <= spec.image_size <= high:
        raise LibraError(f"synth: image_size={spec.image_size} must be between {low} and {high}")
    if spec.distractors and spec.max_distractors < 1:
        raise LibraError(f"synth: max_distractors={spec.max_distractors} must be at least 1 (or turn distractors off)")
    if (
        not isinstance(spec.small_fraction, int | float)
        or isinstance(spec.small_fraction, bool)
        or not 0 <= spec.small_fraction <= 1
    ):
        raise LibraError(f"synth: small_fraction={spec.small_fraction!r} must lie in [0, 1]")
    if spec.max_objects < spec.min_objects:
        raise LibraError(f"synth: max_objects={spec.max_objects} is smaller than min_objects={spec.min_objects}")
    if spec.max_objects > _MAX_OBJECTS_LIMIT:
        raise LibraError(f"synth: max_objects={spec.max_objects} must be at most {_MAX_OBJECTS_LIMIT}")
    if spec.long_tail and spec.val_instances_per_class and not spec.max_objects:
        raise LibraError(
            f"synth: max_objects=0 leaves no room for the val split's val_instances_per_class="
            f"{spec.val_instances_per_class}"
        )
    if (
        not isinstance(spec.zipf_exponent, int | float)
        or not math.isfinite(spec.zipf_exponent)
        or spec.zipf_exponent < 0
    ):
        raise LibraError(f"synth: zipf_exponent={spec.zipf_exponent!r} must be a finite number >= 0")
    for name in ("long_tail", "sparse_ids", "distractors"):
        if not isinstance(getattr(spec, name), bool):
            raise LibraError(f"synth: {name}={getattr(spec, name)!r} must be true or false")


# ---------------------------------------------------------------------------------------------- shapes


def _regular_polygon(corners: int, start_degrees: float = -90.0) -> np.ndarray:
    angles = np.deg2rad(start_degrees + 360.0 * np.arange(corners) / corners)
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _unit_shape(shape: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Outline of ``shape`` in unit coordinates (extent about [-1, 1]²) and its hole, if any; [N, 2]."""
    if shape == "circle":
        return _regular_polygon(32), None
    if shape == "ring":
        return _regular_polygon(32), 0.55 * _regular_polygon(32)
    if shape == "square":
        return np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]), None
    if shape == "triangle":
        return np.array([[0.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]), None
    if shape == "diamond":  # narrower than tall, so it never reads as a rotated square
        return np.array([[0.0, -1.0], [0.65, 0.0], [0.0, 1.0], [-0.65, 0.0]]), None
    if shape == "star":
        radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        return _regular_polygon(10) * radii[:, None], None
    if shape == "cross":
        a = 0.33
        corners = [
            [-a, -1],
            [a, -1],
            [a, -a],
            [1, -a],
            [1, a],
            [a, a],
            [a, 1],
            [-a, 1],
            [-a, a],
            [-1, a],
            [-1, -a],
            [-a, -a],
        ]
        return np.array(corners, dtype=np.float64), None
    if shape == "hexagon":
        return _regular_polygon(6, start_degrees=0.0), None
    if shape == "pentagon":
        return _regular_polygon(5), None
    if shape == "half_disc":
        angles = np.deg2rad(np.linspace(180.0, 360.0, 17))
        return np.stack([np.cos(angles), np.sin(angles) + 0.5], axis=1), None
    if shape == "bar":
        return np.array([[-1.0, -0.18], [1.0, -0.18], [1.0, 0.18], [-1.0, 0.18]]), None
    raise ValueError(f"unknown shape {shape!r}")


def _place(points: np.ndarray, centre: tuple[float, float], width: float, height: float, degrees: float) -> np.ndarray:
    """Scale unit ``points`` [N, 2] to width × height, rotate by ``degrees``, move to ``centre`` (pixels)."""
    scaled = points * np.array([width / 2.0, height / 2.0])
    theta = math.radians(degrees)
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    return scaled @ rotation.T + np.array(centre)


def _jitter(rgb: tuple[int, int, int], rng: np.random.Generator) -> tuple[int, int, int]:
    shifted = np.array(rgb) + rng.integers(-_COLOUR_JITTER, _COLOUR_JITTER + 1, size=3)
    return tuple(int(v) for v in np.clip(shifted, 0, 255))


def _paint(
    canvas: Image.Image,
    outline: np.ndarray,
    hole: np.ndarray | None,
    rgb: tuple[int, int, int],
    owner: np.ndarray | None = None,
    owner_id: int = 0,
) -> tuple[int, int, int, int] | None:
    """Draw a filled shape with a darker rim onto ``canvas``; return its drawn extent (x0, y0, x1, y1).

    ``outline`` and ``hole`` are polygons in pixels, [N, 2] as (x, y). The extent is read from the drawn mask
    (x1, y1 exclusive), so it is the tight box of what is visible, clipped to the image; None if nothing is.
    ``owner``: an int map [H, W] of which object each pixel shows; the shape's pixels are set to ``owner_id``.
    """
    size = canvas.size[0]
    x0, y0 = (max(0, math.floor(v)) for v in outline.min(axis=0))
    x1, y1 = (min(size, math.ceil(v) + 1) for v in outline.max(axis=0))
    if x1 <= x0 or y1 <= y0:
        return None
    region = (x0, y0, x1, y1)
    offset = np.array([x0, y0])
    local = [tuple(p) for p in (outline - offset).tolist()]
    body = Image.new("L", (x1 - x0, y1 - y0), 0)
    draw = ImageDraw.Draw(body)
    draw.polygon(local, fill=255)
    local_hole = None
    if hole is not None:
        local_hole = [tuple(p) for p in (hole - offset).tolist()]
        draw.polygon(local_hole, fill=0)
    extent = body.getbbox()
    if extent is None:
        return None
    # The rim: the body minus a band along each edge gets the bright colour, the band stays dark.
    rim = max(1, round(min(extent[2] - extent[0], extent[3] - extent[1]) / 14))
    interior = body.copy()
    interior_draw = ImageDraw.Draw(interior)
    interior_draw.polygon(local, outline=0, width=rim)
    if local_hole is not None:
        interior_draw.line(local_hole + [local_hole[0]], fill=0, width=2 * rim)
    canvas.paste(tuple(int(0.5 * v) for v in rgb), region, body)
    canvas.paste(rgb, region, interior)
    if owner is not None:  # the rim lies within the body: every body pixel now shows this shape
        owner[y0:y1, x0:x1][np.asarray(body) > 0] = owner_id
    return x0 + extent[0], y0 + extent[1], x0 + extent[2], y0 + extent[3]


# ---------------------------------------------------------------------------------------------- images


def _background(size: int, rng: np.random.Generator) -> Image.Image:
    """A smooth gradient between muted colours, plus low-frequency texture and mild pixel noise."""
    grey = rng.uniform(70.0, 180.0, size=(3, 3, 1))
    tint = rng.uniform(-20.0, 20.0, size=(3, 3, 3))
    corners = Image.fromarray(np.clip(grey + tint, 0, 255).astype(np.uint8))
    gradient = np.asarray(corners.resize((size, size), Image.Resampling.BILINEAR), dtype=np.int16)
    coarse = rng.integers(0, 256, size=(8, 8), dtype=np.uint8)
    smooth = Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)
    texture = (np.asarray(smooth, dtype=np.int16) - 128) // 16  # about ±8 grey levels
    noise = rng.integers(-3, 4, size=(size, size, 3), dtype=np.int16)
    pixels = gradient + texture[:, :, None] + noise
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _muted_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    grey = rng.uniform(40.0, 210.0)
    return tuple(int(v) for v in np.clip(grey + rng.uniform(-25.0, 25.0, size=3), 0, 255))


def _random_geometry(
    size: int, rng: np.random.Generator, side_range: tuple[float, float]
) -> tuple[tuple[float, float], float, float, float]:
    """Centre, width, height and rotation of a shape: side log-uniform in ``side_range``, aspect 0.7-1.4."""
    side = math.exp(rng.uniform(math.log(side_range[0]), math.log(side_range[1])))
    aspect = math.exp(rng.uniform(math.log(0.7), math.log(1.4)))
    width, height = side * math.sqrt(aspect), side / math.sqrt(aspect)
    # At least about three quarters of each side lies inside the image.
    centre = (rng.uniform(0.25 * width, size - 0.25 * width), rng.uniform(0.25 * height, size - 0.25 * height))
    return centre, width, height, rng.uniform(-_MAX_ROTATION_DEGREES, _MAX_ROTATION_DEGREES)


def _draw_clutter_and_distractors(
    canvas: Image.Image, spec: SynthSpec, side_range: tuple[float, float], rng: np.random.Generator
) -> None:
    """Thin lines, small blobs and 1-4 look-alikes that are never a category (shape, colour) pair."""
    size = spec.image_size
    draw = ImageDraw.Draw(canvas)
    for _ in range(rng.integers(0, 3 * spec.clutter_factor + 1)):
        ends = rng.uniform(0, size, size=4).tolist()
        draw.line(ends, fill=_muted_colour(rng), width=int(rng.integers(1, 3)))
    for _ in range(rng.integers(0, 4 * spec.clutter_factor + 1)):
        x, y, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(1.5, 4.0)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=_muted_colour(rng))
    active = category_list()[: spec.num_classes]
    active_shapes = sorted({shape for shape, _ in active}, key=SHAPES.index)
    active_colours = sorted({colour for _, colour in active}, key=list(COLOURS).index)
    for _ in range(rng.integers(1, spec.max_distractors + 1)):
        if rng.random() < 0.5:
            shape = active_shapes[rng.integers(len(active_shapes))]
            rgb = _DISTRACTOR_COLOURS[rng.integers(len(_DISTRACTOR_COLOURS))]
        else:
            shape = _DISTRACTOR_SHAPES[rng.integers(len(_DISTRACTOR_SHAPES))]
            rgb = COLOURS[active_colours[rng.integers(len(active_colours))]]
        centre, width, height, degrees = _random_geometry(size, rng, side_range)
        if shape == "bar":
            degrees = rng.uniform(0.0, 180.0)
        outline, hole = _unit_shape(shape)
        _paint(
            canvas,
            _place(outline, centre, width, height, degrees),
            None if hole is None else _place(hole, centre, width, height, degrees),
            _jitter(rgb, rng),
        )


def _covered_too_much(candidate: tuple[int, int, int, int], coverage: list[tuple[tuple[int, ...], np.ndarray]]) -> bool:
    """Would covering ``candidate`` (x0, y0, x1, y1) leave some earlier box more than half hidden?"""
    cx0, cy0, cx1, cy1 = candidate
    for (x0, y0, x1, y1), covered in coverage:
        ix0, iy0, ix1, iy1 = max(cx0, x0), max(cy0, y0), min(cx1, x1), min(cy1, y1)
        if ix0 >= ix1 or iy0 >= iy1:
            continue
        trial = covered.copy()
        trial[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = True
        if trial.mean() > _MAX_COVERED_FRACTION:
            return True
    return False


def _cover(box: tuple[int, int, int, int], coverage: list[tuple[tuple[int, ...], np.ndarray]]) -> None:
    bx0, by0, bx1, by1 = box
    for (x0, y0, x1, y1), covered in coverage:
        ix0, iy0, ix1, iy1 = max(bx0, x0), max(by0, y0), min(bx1, x1), min(by1, y1)
        if ix0 < ix1 and iy0 < iy1:
            covered[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = True
    coverage.append((box, np.zeros((by1 - by0, bx1 - bx0), dtype=bool)))


def _visible_rle(owner: np.ndarray, owner_id: int) -> dict:
    """The pixels of ``owner`` that show object ``owner_id``, as COCO compressed RLE with a str ``counts``."""
    rle = mask_utils.encode(np.asfortranarray(owner == owner_id, dtype=np.uint8))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _draw_crowd(
    canvas: Image.Image,
    category: tuple[str, str],
    rng: np.random.Generator,
    owner: np.ndarray | None = None,
    owner_id: int = 0,
) -> tuple[int, int, int, int] | None:
    """A tight cluster of 5-10 tiny objects of one category; returns the box around all of them.

    ``owner`` / ``owner_id``: as for :func:`_paint`, for all of the cluster's objects.
    """
    size = canvas.size[0]
    radius = max(6.0, rng.uniform(0.04, 0.07) * size)
    cx, cy = rng.uniform(radius + 5, size - radius - 5, size=2)
    shape, colour = category
    outline, hole = _unit_shape(shape)
    extents = []
    for _ in range(rng.integers(5, 11)):
        angle, distance = rng.uniform(0, 2 * math.pi), radius * math.sqrt(rng.random())
        centre = (cx + distance * math.cos(angle), cy + distance * math.sin(angle))
        side = rng.uniform(5.0, 9.0)
        degrees = rng.uniform(-_MAX_ROTATION_DEGREES, _MAX_ROTATION_DEGREES)
        hole_here = None if hole is None else _place(hole, centre, side, side, degrees)
        extent = _paint(
            canvas,
            _place(outline, centre, side, side, degrees),
            hole_here,
            _jitter(COLOURS[colour], rng),
            owner,
            owner_id,
        )
        if extent is not None:
            extents.append(extent)
    if not extents:
        return None
    boxes = np.array(extents)
    return int(boxes[:, 0].min()), int(boxes[:, 1].min()), int(boxes[:, 2].max()), int(boxes[:, 3].max())


def _draw_image(
    spec: SynthSpec, rng: np.random.Generator, labels: list[int] | None = None
) -> tuple[Image.Image, list[dict]]:
    """One image and its objects: dicts with class index, box (x0, y0, x1, y1), iscrowd and segmentation
    (the visible pixels as compressed RLE, see :func:`_visible_rle`).

    ``labels``: the class indices of the objects to draw; None draws their number and classes from ``rng``.
    An object that finds no honest place is left out, so fewer objects than ``labels`` may come back.
    """
    size = spec.image_size
    side_range = (min(_MIN_OBJECT_SIDE, _MAX_SIDE_FRACTION * size), _MAX_SIDE_FRACTION * size)
    categories = category_list()[: spec.num_classes]
    frequencies = class_frequencies(spec)
    canvas = _background(size, rng)
    if spec.distractors:
        _draw_clutter_and_distractors(canvas, spec, side_range, rng)

    objects: list[dict] = []
    coverage: list[tuple[tuple[int, ...], np.ndarray]] = []
    # Which object each pixel shows (-1: none); painting an object claims its pixels, so a later object takes
    # them from an earlier one just as it covers it on the canvas. Object k's visible mask is owner == k.
    owner = np.full((size, size), -1, dtype=np.int16)
    if not spec.long_tail and rng.random() < _CROWD_PROBABILITY:
        label = int(rng.choice(spec.num_classes, p=frequencies))
        box = _draw_crowd(canvas, categories[label], rng, owner, len(objects))
        if box is not None:
            objects.append({"label": label, "box": box, "iscrowd": 1})
            _cover(box, coverage)

    if labels is None:
        # Lazily, so each class is drawn just before its object is placed: the order every seed's images have
        # always been drawn in.
        count = rng.integers(spec.min_objects, spec.max_objects + 1)
        labels = (int(rng.choice(spec.num_classes, p=frequencies)) for _ in range(count))
    small_range = (side_range[0], min(_SMALL_OBJECT_SIDE, side_range[1]))
    for label in labels:
        shape, colour = categories[label]
        unit_outline, unit_hole = _unit_shape(shape)
        # Only a benchmark with small objects draws the extra number, so the default's draws stay as they were.
        small = spec.small_fraction > 0 and rng.random() < spec.small_fraction
        for _attempt in range(_PLACEMENT_ATTEMPTS):
            centre, width, height, degrees = _random_geometry(size, rng, small_range if small else side_range)
            outline = _place(unit_outline, centre, width, height, degrees)
            # The painted extent lies within the polygon's pixel extent: test that box before painting.
            x0, y0 = (max(0, math.floor(v)) for v in outline.min(axis=0))
            x1, y1 = (min(size, math.ceil(v) + 1) for v in outline.max(axis=0))
            if x1 - x0 >= 2 and y1 - y0 >= 2 and not _covered_too_much((x0, y0, x1, y1), coverage):
                break
        else:
            continue  # no honest place left for this object: the image gets one fewer
        hole = None if unit_hole is None else _place(unit_hole, centre, width, height, degrees)
        box = _paint(canvas, outline, hole, _jitter(COLOURS[colour], rng), owner, len(objects))
        if box is None:
            continue
        objects.append({"label": label, "box": box, "iscrowd": 0})
        _cover(box, coverage)
    for index, obj in enumerate(objects):
        obj["segmentation"] = _visible_rle(owner, index)
    return canvas, objects


# ---------------------------------------------------------------------------------------------- files


def _write_json(path: Path, payload: dict) -> None:
    """Write through a temporary file and an atomic rename, so a reader never sees half a file."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(payload, separators=(",", ":")))
    os.replace(temporary, path)


def _prepare_directory(out: Path) -> None:
    """Refuse a directory that holds anything but a (possibly interrupted) benchmark; clear old images."""
    if out.exists() and not out.is_dir():
        raise LibraError(f"{out}: exists and is not a directory")
    if out.is_dir():
        entries = {p.name for p in out.iterdir()}
        if entries and not entries & {_BENCHMARK_FILE, _IN_PROGRESS_FILE}:
            raise LibraError(
                f"{out}: directory is not empty and holds no {_BENCHMARK_FILE}; choose an empty or new directory"
            )
    out.mkdir(parents=True, exist_ok=True)
    (out / _IN_PROGRESS_FILE).touch()
    (out / _BENCHMARK_FILE).unlink(missing_ok=True)  # from now on the directory reads as incomplete
    for split in _SPLIT_CODES:
        folder = out / "images" / split
        if folder.is_dir():
            for old in folder.iterdir():
                if _IMAGE_NAME.match(old.name):
                    old.unlink()


def _annotation_record(index: int, image_id: int, category_id: int, obj: dict) -> dict:
    x0, y0, x1, y1 = obj["box"]
    width, height = float(x1 - x0), float(y1 - y0)
    return {
        "id": index,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [float(x0), float(y0), width, height],
        "area": width * height,
        "iscrowd": obj["iscrowd"],
        "segmentation": obj["segmentation"],
    }


def _lvis_image_fields(labels: set[int], ids: list[int], rng: np.random.Generator) -> dict:
    """Federated-evaluation lists: half of the absent categories as verified negatives, and rarely one
    present category flagged as not exhaustively annotated."""
    absent = [k for k in range(len(ids)) if k not in labels]
    negatives = sorted(rng.permutation(absent)[: (len(absent) + 1) // 2].tolist()) if absent else []
    not_exhaustive = []
    if labels and rng.random() < _NOT_EXHAUSTIVE_PROBABILITY:
        present = sorted(labels)
        not_exhaustive = [ids[present[rng.integers(len(present))]]]
    return {"neg_category_ids": [ids[k] for k in negatives], "not_exhaustive_category_ids": not_exhaustive}


def _generate_split(
    out: Path,
    split: str,
    count: int,
    spec: SynthSpec,
    ids: list[int],
    tick: Callable[[], None],
    plan: list[list[int]] | None = None,
) -> tuple[list[dict], list[dict]]:
    """Draw and save ``count`` images of ``split``; return their COCO image and annotation records.

    ``plan``: the class indices of each image's objects (see ``_val_label_plan``); None draws them at random.
    A planned object that finds no room in its image moves on to the next one, so the split keeps its
    planned number of instances per class (unless the last image has no room either).
    """
    folder = out / "images" / split
    folder.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    carried: list[int] = []  # planned class indices that an earlier image had no room for
    for index in range(count):
        rng = np.random.default_rng(np.random.SeedSequence([spec.seed, _SPLIT_CODES[split], index]))
        labels = None if plan is None else carried + plan[index]
        canvas, objects = _draw_image(spec, rng, labels)
        if labels is not None:
            carried = sorted((Counter(labels) - Counter(o["label"] for o in objects)).elements())
        file_name = f"{index:06d}.png"
        canvas.save(folder / file_name, format="PNG", compress_level=1)
        image_id = index + 1
        record = {"id": image_id, "file_name": file_name, "width": spec.image_size, "height": spec.image_size}
        if spec.long_tail:
            record["coco_url"] = f"http://libra.invalid/images/{split}/{file_name}"
            record.update(_lvis_image_fields({o["label"] for o in objects}, ids, rng))
        images.append(record)
        for obj in objects:
            annotations.append(_annotation_record(len(annotations) + 1, image_id, ids[obj["label"]], obj))
        tick()
    return images, annotations


def _category_records(spec: SynthSpec, ids: list[int], train_annotations: list[dict]) -> list[dict]:
    """COCO categories; with long_tail, the LVIS fields counted on the training split."""
    records = []
    for category_id, (shape, colour) in zip(ids, category_list()[: spec.num_classes], strict=True):
        record = {"id": category_id, "name": f"{colour} {shape}", "supercategory": shape}
        if spec.long_tail:
            mine = [a for a in train_annotations if a["category_id"] == category_id]
            image_count = len({a["image_id"] for a in mine})
            record.update(
                {
                    "frequency": "r" if image_count < 10 else "c" if image_count < 100 else "f",
                    "image_count": image_count,
                    "instance_count": len(mine),
                    "synset": f"{colour}_{shape}.n.01",
                    "synonyms": [f"{colour}_{shape}"],
                    "def": f"a flat {colour} {shape} with a darker rim",
                }
            )
        records.append(record)
    return records


def generate_benchmark(
    out_dir: str | Path, spec: SynthSpec = SynthSpec(), *, progress: Callable[[int, int], None] | None = None
) -> dict:
    """Draw the benchmark described by ``spec`` into ``out_dir`` and return a summary.

    ``progress(done, total)`` is called after each image. The summary holds the paths, the image,
    annotation and crowd counts per split, and the instances per class name per split. Raises LibraError
    for a bad spec or an ``out_dir`` that holds something other than a benchmark.
    """
    validate_spec(spec)
    out = Path(out_dir)
    _prepare_directory(out)
    ids = category_ids(spec)
    counts = split_image_counts(spec)
    plans = {"train": None, "val": _val_label_plan(spec) if spec.long_tail else None}
    total, done = sum(counts.values()), 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    splits = {split: _generate_split(out, split, counts[split], spec, ids, tick, plans[split]) for split in counts}
    categories = _category_records(spec, ids, splits["train"][1])
    data_format = "lvis" if spec.long_tail else "coco"
    info = {
        "description": f"libra synthetic shapes benchmark ({data_format} format)",
        "version": str(_BENCHMARK_VERSION),
        "seed": spec.seed,
    }
    (out / "annotations").mkdir(exist_ok=True)
    summary_splits = {}
    for split, (images, annotations) in splits.items():
        path = out / "annotations" / f"{split}.json"
        _write_json(
            path, {"info": info, "licenses": [], "images": images, "annotations": annotations, "categories": categories}
        )
        per_class = {c["name"]: 0 for c in categories}
        name_of = {c["id"]: c["name"] for c in categories}
        for a in annotations:
            per_class[name_of[a["category_id"]]] += 1
        summary_splits[split] = {
            "images": len(images),
            "annotations": len(annotations),
            "crowd": sum(a["iscrowd"] for a in annotations),
            "instances_per_class": per_class,
            "image_dir": str(out / "images" / split),
            "annotation_file": str(path),
        }
    record = {
        "version": _BENCHMARK_VERSION,
        "format": data_format,
        "spec": _spec_record(spec),
        "splits": {
            split: {k: v for k, v in s.items() if k not in ("image_dir", "annotation_file")}
            for split, s in summary_splits.items()
        },
    }
    _write_json(out / _BENCHMARK_FILE, record)
    (out / _IN_PROGRESS_FILE).unlink(missing_ok=True)
    return {"out_dir": str(out), "format": data_format, "spec": asdict(spec), "splits": summary_splits}


def _spec_record(spec: SynthSpec) -> dict:
    """``spec`` as benchmark.json stores it: a COCO-format benchmark leaves out the fields only a long tail
    uses, so its file reads as it did before they existed (and cached copies of it stay valid)."""
    record = asdict(spec)
    if not spec.long_tail:
        for name in _LONG_TAIL_ONLY_FIELDS:
            del record[name]
    for name, neutral in _NEUTRAL_DIFFICULTY.items():
        if record[name] == neutral:
            del record[name]
    return record


def read_benchmark_spec(out_dir: str | Path) -> SynthSpec | None:
    """The spec a complete benchmark in ``out_dir`` was generated with; None if absent or incomplete.

    A long-tailed benchmark written before its val split became class-balanced lacks
    ``val_instances_per_class`` and reads as None, so it is generated again rather than reused; so does one
    of another ``version`` (before version 2, segmentations were outline polygons, not visible masks).
    """
    out = Path(out_dir)
    try:
        record = json.loads((out / _BENCHMARK_FILE).read_text())
        if record.get("version") != _BENCHMARK_VERSION:
            return None
        stored = {**_NEUTRAL_DIFFICULTY, **record["spec"]}
        expected = {f.name for f in fields(SynthSpec)}
        if not stored.get("long_tail"):
            expected -= set(_LONG_TAIL_ONLY_FIELDS)
        if set(stored) != expected:
            return None
        spec = SynthSpec(**stored)
        validate_spec(spec)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, LibraError):
        return None
    if (out / _IN_PROGRESS_FILE).exists():
        return None
    for split, count in split_image_counts(spec).items():
        if not (out / "annotations" / f"{split}.json").is_file():
            return None
        if count and not (out / "images" / split / f"{count - 1:06d}.png").is_file():
            return None
    return spec


def spec_differences(existing: SynthSpec, wanted: SynthSpec) -> list[str]:
    """The settings in which ``existing`` differs from ``wanted``, as ``"name EXISTING, not WANTED"``."""
    return [
        f"{item.name} {getattr(existing, item.name)!r}, not {getattr(wanted, item.name)!r}"
        for item in fields(SynthSpec)
        if getattr(existing, item.name) != getattr(wanted, item.name)
    ]


def benchmark_exists(out_dir: str | Path, spec: SynthSpec) -> bool:
    """True if ``out_dir`` holds a complete benchmark generated with exactly ``spec``."""
    return read_benchmark_spec(out_dir) == spec
