"""The synthetic benchmark: determinism, valid COCO / LVIS files, size spread, occlusion, crowd, long tail."""

import contextlib
import hashlib
import io
import itertools
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from libra_cli.data import synth
from libra_cli.data.build import default_synth_spec
from libra_cli.data.synth import (
    COLOURS,
    LONG_TAIL_NUM_CLASSES,
    SHAPES,
    SynthSpec,
    benchmark_exists,
    category_list,
    generate_benchmark,
    read_benchmark_spec,
    split_image_counts,
)
from libra_cli.engine.metrics import evaluate_lvis
from libra_cli.errors import LibraError

SMALL = SynthSpec(num_train=6, num_val=3, image_size=96, seed=5)
# What `libra data synth --long-tail` and `libra train --long-tail` generate.
LONG_TAIL = SynthSpec(long_tail=True, num_classes=LONG_TAIL_NUM_CLASSES)
SMALL_LONG_TAIL = SynthSpec(num_train=6, image_size=64, num_classes=6, long_tail=True, val_instances_per_class=3)


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _file_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _quiet_coco(path: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


@pytest.fixture(scope="module")
def small_benchmark(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("small")
    generate_benchmark(out, SMALL)
    return out


@pytest.fixture(scope="module")
def sizes_benchmark(tmp_path_factory) -> Path:
    """40 training images at 256 px, the resolution the size ranges are designed for."""
    out = tmp_path_factory.mktemp("sizes")
    generate_benchmark(out, SynthSpec(num_train=40, num_val=0, image_size=256, seed=3))
    return out


@pytest.fixture(scope="module")
def long_tail_benchmark(tmp_path_factory) -> Path:
    """The default long-tailed benchmark, byte for byte (500 + 181 images at 256 px: about 11 s on 2 cores).

    Not a smaller stand-in: which classes come out rare depends on the random stream, which the image size
    changes, and the claims below are about the benchmark users get.
    """
    out = tmp_path_factory.mktemp("long_tail")
    generate_benchmark(out, LONG_TAIL)
    return out


# ---------------------------------------------------------------------------------------- categories


def test_first_categories_alternate_shape_and_colour():
    # 4 shapes × 2 colours, the colour shifting with the shape, so any prefix is easy to tell apart.
    assert [f"{c} {s}" for s, c in category_list()[:8]] == [
        "red circle",
        "blue square",
        "red triangle",
        "blue star",
        "blue circle",
        "red square",
        "blue triangle",
        "red star",
    ]


def test_category_list_holds_every_shape_colour_pair_once():
    pairs = category_list()
    assert len(pairs) == len(SHAPES) * len(COLOURS) == 64
    assert set(pairs) == {(s, c) for s in SHAPES for c in COLOURS}


def test_look_alikes_are_never_a_category():
    # Shapes: disjoint sets. Colours: two jittered colours (±15 per channel each) can only coincide if
    # their base colours are within 30 in every channel; every distractor colour is farther than that.
    assert not set(synth._DISTRACTOR_SHAPES) & set(SHAPES)
    jitter_reach = 2 * synth._COLOUR_JITTER
    for fake in synth._DISTRACTOR_COLOURS:
        for real in COLOURS.values():
            assert max(abs(a - b) for a, b in zip(fake, real, strict=True)) > jitter_reach, (fake, real)


# ---------------------------------------------------------------------------------------- drawing


def test_paint_returns_the_tight_pixel_extent_and_leaves_holes_open():
    canvas = Image.new("RGB", (64, 64), (0, 0, 0))
    square = np.array([[10.0, 10.0], [30.0, 10.0], [30.0, 20.0], [10.0, 20.0]])
    extent = synth._paint(canvas, square, None, (200, 100, 40))
    # Pillow fills the vertex pixels, so columns 10..30 and rows 10..20: exclusive ends 31 and 21.
    assert extent == (10, 10, 31, 21)
    assert canvas.getpixel((20, 15)) == (200, 100, 40)  # inside
    assert canvas.getpixel((10, 10)) == (100, 50, 20)  # the rim is half as bright
    assert canvas.getpixel((9, 15)) == (0, 0, 0) and canvas.getpixel((31, 15)) == (0, 0, 0)

    ring = Image.new("RGB", (64, 64), (0, 0, 0))
    outer, hole = synth._unit_shape("ring")
    extent = synth._paint(
        ring,
        synth._place(outer, (32.0, 32.0), 40.0, 40.0, 0.0),
        synth._place(hole, (32.0, 32.0), 40.0, 40.0, 0.0),
        (0, 200, 0),
    )
    assert extent == (12, 12, 53, 53)  # radius 20 around 32: pixels 12..52
    assert ring.getpixel((32, 32)) == (0, 0, 0)  # the hole shows what lay beneath
    assert ring.getpixel((32, 15)) == (0, 200, 0)  # on the band between radius 11 and 20


def test_paint_clips_the_extent_to_the_image():
    canvas = Image.new("RGB", (64, 64), (0, 0, 0))
    half_outside = np.array([[-20.0, 5.0], [20.0, 5.0], [20.0, 15.0], [-20.0, 15.0]])
    assert synth._paint(canvas, half_outside, None, (255, 0, 0)) == (0, 5, 21, 16)


# ---------------------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(tmp_path, small_benchmark):
    again = tmp_path / "again"
    generate_benchmark(again, SMALL)
    first, second = _file_hashes(small_benchmark), _file_hashes(again)
    assert len(first) == 6 + 3 + 3  # images, train.json, val.json, benchmark.json
    assert first == second

    other = tmp_path / "other"
    generate_benchmark(other, SynthSpec(num_train=6, num_val=3, image_size=96, seed=6))
    third = _file_hashes(other)
    assert third["annotations/train.json"] != first["annotations/train.json"]
    assert all(third[f"images/train/{i:06d}.png"] != first[f"images/train/{i:06d}.png"] for i in range(6))


def test_long_tail_same_seed_gives_identical_bytes_and_another_seed_does_not(tmp_path):
    generate_benchmark(tmp_path / "first", SMALL_LONG_TAIL)
    generate_benchmark(tmp_path / "second", SMALL_LONG_TAIL)
    first, second = _file_hashes(tmp_path / "first"), _file_hashes(tmp_path / "second")
    assert first == second
    generate_benchmark(tmp_path / "other", replace(SMALL_LONG_TAIL, seed=1))
    assert _file_hashes(tmp_path / "other")["annotations/val.json"] != first["annotations/val.json"]


def test_the_demo_benchmark_is_unchanged(tmp_path):
    # The first 4 train and 2 val images of the demo's benchmark (SynthSpec() at its defaults) and files of the
    # same shape, hashed when the long-tailed val split became class-balanced: that change, and any later one to
    # the long tail, must leave the COCO-format benchmark as it was. Pixels are hashed decoded, so that a zlib
    # that compresses differently does not count as a change; a Pillow that rasterises polygons differently would.
    # The JSON files were hashed again when segmentations became visible masks (benchmark version 2): the pixel
    # hash did not change, and boxes, areas and ids were checked equal to the version 1 files.
    generate_benchmark(tmp_path, SynthSpec(num_train=4, num_val=2))
    files = {
        name: hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
        for name in ("annotations/train.json", "annotations/val.json", "benchmark.json")
    }
    assert files == {
        "annotations/train.json": "0a2fcf65f3f647a49696a70412a1a149c51e280a15a970e670fb3f7761271ce2",
        "annotations/val.json": "5ba7e640b379d3839aaf010b4a759064567d34604cc7f66da143d9edf70db213",
        "benchmark.json": "490b4a20274f5995be4850354127d99f3051f09af44f10c6d892fb2e5bd327f9",
    }
    pixels = hashlib.sha256()
    for split, count in (("train", 4), ("val", 2)):
        for index in range(count):
            with Image.open(tmp_path / "images" / split / f"{index:06d}.png") as picture:
                pixels.update(np.asarray(picture).tobytes())
    assert pixels.hexdigest() == "590bae1f7d2626b6a52365857715f5a7bd0c135759de4aad4c338dd1be1b4b64"
    assert "val_instances_per_class" not in _load(tmp_path / "benchmark.json")["spec"]


# ---------------------------------------------------------------------------------------- COCO format


@pytest.mark.parametrize("split, count", [("train", 6), ("val", 3)])
def test_annotation_file_is_valid_coco(small_benchmark, split, count):
    path = small_benchmark / "annotations" / f"{split}.json"
    coco = _quiet_coco(path)
    data = _load(path)
    size = SMALL.image_size
    assert [c["id"] for c in data["categories"]] == list(range(1, 9))
    assert data["categories"][0] == {"id": 1, "name": "red circle", "supercategory": "circle"}
    assert [img["id"] for img in data["images"]] == list(range(1, count + 1))
    assert len(coco.getImgIds()) == count
    for img in data["images"]:
        with Image.open(small_benchmark / "images" / split / img["file_name"]) as picture:
            assert picture.size == (img["width"], img["height"]) == (size, size)
    ids = [a["id"] for a in data["annotations"]]
    assert ids == list(range(1, len(ids) + 1))  # unique, from 1
    assert len(ids) >= count * SMALL.min_objects - 2  # a rare object may find no honest place
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        assert all(isinstance(v, float) for v in a["bbox"])
        assert a["area"] == w * h
        assert 0 <= x and 0 <= y and w >= 1 and h >= 1 and x + w <= size and y + h <= size
        assert a["iscrowd"] in (0, 1)
        assert a["category_id"] in coco.getCatIds()
        # The segmentation is the visible mask as compressed RLE; it lies within the box (the drawn extent).
        assert a["segmentation"]["size"] == [size, size] and isinstance(a["segmentation"]["counts"], str)
        mask = coco.annToMask(a)
        assert 0 < mask.sum() == mask[int(y) : int(y + h), int(x) : int(x + w)].sum()


def test_benchmark_record_and_summary(tmp_path):
    calls = []
    summary = generate_benchmark(tmp_path / "b", SMALL, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 9) for i in range(1, 10)]
    record = _load(tmp_path / "b" / "benchmark.json")
    assert record["format"] == "coco" and record["spec"]["seed"] == 5
    train = _load(tmp_path / "b" / "annotations" / "train.json")
    assert record["splits"]["train"]["images"] == summary["splits"]["train"]["images"] == 6
    assert summary["splits"]["train"]["annotations"] == len(train["annotations"])
    per_class = summary["splits"]["train"]["instances_per_class"]
    assert sum(per_class.values()) == len(train["annotations"])
    assert per_class["red circle"] == sum(a["category_id"] == 1 for a in train["annotations"])


def test_sparse_ids_are_increasing_and_not_one_to_c(tmp_path):
    spec = SynthSpec(num_train=3, num_val=1, image_size=64, num_classes=5, sparse_ids=True)
    generate_benchmark(tmp_path, spec)
    data = _load(tmp_path / "annotations" / "train.json")
    ids = [c["id"] for c in data["categories"]]
    assert ids == [3, 7, 11, 15, 19]
    assert all(b > a for a, b in zip(ids, ids[1:], strict=False)) and ids != list(range(1, 6))
    assert {a["category_id"] for a in data["annotations"]} <= set(ids)


# ---------------------------------------------------------------------------------------- content


def test_sizes_span_coco_small_medium_and_large(sizes_benchmark):
    areas = np.array(
        [a["area"] for a in _load(sizes_benchmark / "annotations" / "train.json")["annotations"] if not a["iscrowd"]]
    )
    assert (areas < 32**2).sum() > 0
    assert ((areas >= 32**2) & (areas < 96**2)).sum() > 0
    assert (areas >= 96**2).sum() > 0


def test_no_box_is_more_than_half_covered_by_later_objects(sizes_benchmark):
    data = _load(sizes_benchmark / "annotations" / "train.json")
    overlapping = 0
    for img in data["images"]:
        boxes = [[int(v) for v in a["bbox"]] for a in data["annotations"] if a["image_id"] == img["id"]]
        for i, (x, y, w, h) in enumerate(boxes):
            covered = np.zeros((h, w), dtype=bool)
            for lx, ly, lw, lh in boxes[i + 1 :]:  # drawn later, so on top
                covered[max(ly - y, 0) : max(ly + lh - y, 0), max(lx - x, 0) : max(lx + lw - x, 0)] = True
            assert covered.mean() <= 0.5
            overlapping += covered.any()
    assert overlapping > 0  # occlusion does happen


def test_crowd_region_is_one_iscrowd_box(tmp_path, monkeypatch):
    monkeypatch.setattr(synth, "_CROWD_PROBABILITY", 1.0)
    generate_benchmark(tmp_path, SynthSpec(num_train=4, num_val=0, image_size=128))
    path = tmp_path / "annotations" / "train.json"
    _quiet_coco(path)
    data = _load(path)
    for img in data["images"]:
        crowd = [a for a in data["annotations"] if a["image_id"] == img["id"] and a["iscrowd"] == 1]
        assert len(crowd) == 1
        x, y, w, h = crowd[0]["bbox"]
        assert crowd[0]["area"] == w * h
        # A tight cluster: object centres within 0.07 × 128 px of its centre, objects at most 9 px wide
        # (9·√2 once rotated), so the box spans at most 2 × 8.96 + 12.73 + 1 (inclusive pixels) < 32 px.
        assert 5 <= w < 32 and 5 <= h < 32


def test_long_tail_has_no_crowd_regions(tmp_path, monkeypatch):
    monkeypatch.setattr(synth, "_CROWD_PROBABILITY", 1.0)
    generate_benchmark(tmp_path, SynthSpec(num_train=3, num_val=0, image_size=64, long_tail=True))
    assert all(a["iscrowd"] == 0 for a in _load(tmp_path / "annotations" / "train.json")["annotations"])


# ---------------------------------------------------------------------------------------- long tail


def test_the_default_long_tail_spec_is_what_training_uses():
    assert default_synth_spec(long_tail=True) == LONG_TAIL


def test_long_tail_categories_carry_lvis_fields_and_the_frequency_rule(long_tail_benchmark):
    train = _load(long_tail_benchmark / "annotations" / "train.json")
    val = _load(long_tail_benchmark / "annotations" / "val.json")
    assert train["categories"] == val["categories"]  # counted on train, written into both
    for category in train["categories"]:
        mine = [a for a in train["annotations"] if a["category_id"] == category["id"]]
        image_count = len({a["image_id"] for a in mine})
        assert category["image_count"] == image_count
        assert category["instance_count"] == len(mine)
        expected = "r" if image_count < 10 else ("c" if image_count < 100 else "f")
        assert category["frequency"] == expected
        assert category["synset"] and category["synonyms"] and category["def"]


def test_long_tail_train_split_has_rare_common_and_frequent_classes(long_tail_benchmark):
    categories = _load(long_tail_benchmark / "annotations" / "train.json")["categories"]
    groups = {group: [c["image_count"] for c in categories if c["frequency"] == group] for group in "rcf"}
    # Seed 0 gives 5 rare classes (6-9 training images), 31 common and 4 frequent (101-385). Several rare
    # classes, so that APr averages over more than one; rare < 10 and frequent >= 100 images, so each rare
    # class has under a tenth of the images of any frequent one.
    assert len(groups["r"]) >= 3 and groups["c"] and groups["f"]
    image_counts = [c["image_count"] for c in categories]
    assert max(image_counts) >= 10 * min(image_counts)  # 385 vs 6


def test_long_tail_instance_counts_follow_zipf(long_tail_benchmark):
    train = _load(long_tail_benchmark / "annotations" / "train.json")
    counts = [c["instance_count"] for c in train["categories"]]
    # Class 0's share is 1 / Σ_k (k+1)^-1.2 over 40 classes ≈ 0.312; about 2,200 draws give ±0.01 noise.
    expected_share = 1.0 / sum((k + 1) ** -1.2 for k in range(LONG_TAIL_NUM_CLASSES))
    assert counts[0] / sum(counts) == pytest.approx(expected_share, abs=0.04)
    assert counts[0] > 20 * counts[-1]
    assert np.mean(counts[:10]) > 5 * np.mean(counts[-10:])


def test_long_tail_val_split_is_class_balanced(long_tail_benchmark):
    # Every class, rare ones included, has exactly val_instances_per_class = 20 instances (ImageNet-LT's and
    # Places-LT's convention), dealt to images of 2-7 objects like the training images: 800 in 181 images.
    val = _load(long_tail_benchmark / "annotations" / "val.json")
    per_class = {c["id"]: 0 for c in val["categories"]}
    for a in val["annotations"]:
        per_class[a["category_id"]] += 1
    assert len(per_class) == LONG_TAIL_NUM_CLASSES
    assert min(per_class.values()) >= 20
    assert set(per_class.values()) == {LONG_TAIL.val_instances_per_class}
    assert len(val["images"]) == split_image_counts(LONG_TAIL)["val"] == 181
    objects_per_image = np.bincount([a["image_id"] for a in val["annotations"]], minlength=len(val["images"]) + 1)
    assert objects_per_image[1:-1].min() >= LONG_TAIL.min_objects  # the last image takes what is left
    assert objects_per_image.max() <= LONG_TAIL.max_objects
    record = _load(long_tail_benchmark / "benchmark.json")
    assert record["spec"]["val_instances_per_class"] == 20 and record["splits"]["val"]["images"] == 181


def test_long_tail_images_carry_federated_lists(long_tail_benchmark):
    for split in ("train", "val"):
        data = _load(long_tail_benchmark / "annotations" / f"{split}.json")
        present: dict[int, set[int]] = {img["id"]: set() for img in data["images"]}
        for a in data["annotations"]:
            present[a["image_id"]].add(a["category_id"])
        for img in data["images"]:
            assert img["coco_url"].endswith("/" + img["file_name"])
            assert img["neg_category_ids"] and not set(img["neg_category_ids"]) & present[img["id"]]
            assert set(img["not_exhaustive_category_ids"]) <= present[img["id"]]
        # Every category is a verified negative somewhere, so the federated evaluation counts its false positives.
        negatives = set().union(*(img["neg_category_ids"] for img in data["images"]))
        assert negatives == {c["id"] for c in data["categories"]}


def test_lvis_eval_scores_ground_truth_as_detections_ap_one_for_every_val_class(long_tail_benchmark):
    val = _load(long_tail_benchmark / "annotations" / "val.json")
    detections = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
        for a in val["annotations"]
    ]
    result = evaluate_lvis(val, detections)
    assert len(result["per_category"]) == LONG_TAIL_NUM_CLASSES
    for row in result["per_category"]:
        assert row["num_gt"] == 20
        assert row["AP"] == pytest.approx(1.0, abs=1e-9), row["name"]
    for name in ("AP", "APr", "APc", "APf"):
        assert result["summary"][name] == pytest.approx(1.0, abs=1e-9), name


def test_a_planned_val_object_without_room_moves_to_the_next_image(tmp_path, monkeypatch):
    # The first planned object finds every one of its placements too covered; it is drawn in image 2 instead.
    calls = itertools.count()
    real = synth._covered_too_much
    monkeypatch.setattr(
        synth, "_covered_too_much", lambda box, coverage: next(calls) < synth._PLACEMENT_ATTEMPTS or real(box, coverage)
    )
    spec = SynthSpec(num_train=0, image_size=64, num_classes=4, long_tail=True, val_instances_per_class=5)
    summary = generate_benchmark(tmp_path, spec)
    assert set(summary["splits"]["val"]["instances_per_class"].values()) == {5}
    plan = synth._val_label_plan(spec)
    val = _load(tmp_path / "annotations" / "val.json")
    objects_per_image = np.bincount([a["image_id"] for a in val["annotations"]], minlength=len(plan) + 1)[1:]
    assert objects_per_image[:2].tolist() == [len(plan[0]) - 1, len(plan[1]) + 1]
    assert objects_per_image[2:].tolist() == [len(labels) for labels in plan[2:]]


def test_an_old_long_tail_benchmark_is_not_reused(tmp_path):
    # One written before the val split became class-balanced has no val_instances_per_class in its spec.
    generate_benchmark(tmp_path, SMALL_LONG_TAIL)
    assert benchmark_exists(tmp_path, SMALL_LONG_TAIL)
    assert not benchmark_exists(tmp_path, replace(SMALL_LONG_TAIL, val_instances_per_class=4))
    record = _load(tmp_path / "benchmark.json")
    del record["spec"]["val_instances_per_class"]
    (tmp_path / "benchmark.json").write_text(json.dumps(record))
    assert read_benchmark_spec(tmp_path) is None
    assert not benchmark_exists(tmp_path, SMALL_LONG_TAIL)


# ---------------------------------------------------------------------------------------- directory


def test_read_and_exists_reflect_a_complete_benchmark(tmp_path, small_benchmark):
    assert read_benchmark_spec(small_benchmark) == SMALL
    assert benchmark_exists(small_benchmark, SMALL)
    assert not benchmark_exists(small_benchmark, SynthSpec(num_train=6, num_val=3, image_size=96, seed=6))
    assert read_benchmark_spec(tmp_path / "missing") is None
    (tmp_path / "annotations").mkdir()  # an interrupted run: files but no benchmark.json
    assert read_benchmark_spec(tmp_path) is None


def test_regenerating_replaces_an_old_benchmark_and_its_images(tmp_path):
    generate_benchmark(tmp_path, SynthSpec(num_train=5, num_val=2, image_size=64))
    smaller = SynthSpec(num_train=2, num_val=1, image_size=64, seed=1)
    generate_benchmark(tmp_path, smaller)
    assert sorted(p.name for p in (tmp_path / "images" / "train").iterdir()) == ["000000.png", "000001.png"]
    assert benchmark_exists(tmp_path, smaller)
    assert not (tmp_path / synth._IN_PROGRESS_FILE).exists()


def test_an_interrupted_run_reads_as_incomplete_and_may_be_overwritten(tmp_path):
    generate_benchmark(tmp_path, SMALL)
    (tmp_path / "benchmark.json").unlink()
    (tmp_path / synth._IN_PROGRESS_FILE).touch()
    assert read_benchmark_spec(tmp_path) is None
    generate_benchmark(tmp_path, SMALL)
    assert benchmark_exists(tmp_path, SMALL)


def test_refuses_a_directory_that_is_not_a_benchmark(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(LibraError, match="not empty"):
        generate_benchmark(tmp_path, SMALL)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    assert (tmp_path / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    "field, value",
    [
        ("num_classes", 65),
        ("num_classes", 0),
        ("image_size", 32),
        ("num_train", -1),
        ("num_val", -5),
        ("min_objects", -1),
        ("max_objects", 51),
        ("zipf_exponent", -0.5),
        ("zipf_exponent", float("nan")),
        ("seed", -3),
        ("val_instances_per_class", -1),
        ("image_size", 12.5),
        ("long_tail", "yes"),
    ],
)
def test_bad_parameters_raise_a_one_line_libra_error(tmp_path, field, value):
    spec = SynthSpec(**{field: value})
    with pytest.raises(LibraError) as caught:
        generate_benchmark(tmp_path / "out", spec)
    message = str(caught.value)
    assert f"{field}=" in message and "\n" not in message
    assert not (tmp_path / "out").exists()  # nothing written


def test_max_objects_below_min_objects_is_refused(tmp_path):
    with pytest.raises(LibraError, match="max_objects=2 is smaller than min_objects=4"):
        generate_benchmark(tmp_path, SynthSpec(min_objects=4, max_objects=2))


def test_a_long_tail_needs_room_for_its_val_objects(tmp_path):
    with pytest.raises(LibraError, match="max_objects=0 leaves no room"):
        generate_benchmark(tmp_path, SynthSpec(long_tail=True, min_objects=0, max_objects=0))


def test_a_benchmark_with_outline_polygons_is_not_reused(tmp_path, small_benchmark):
    # Version 2 writes visible masks; a benchmark.json without a version (or of another) was written with
    # outline polygons and is generated again.
    assert _load(small_benchmark / "benchmark.json")["version"] == 2
    for version in (None, 1):
        generate_benchmark(tmp_path, SMALL)
        record = _load(tmp_path / "benchmark.json")
        if version is None:
            del record["version"]
        else:
            record["version"] = version
        (tmp_path / "benchmark.json").write_text(json.dumps(record))
        assert read_benchmark_spec(tmp_path) is None and not benchmark_exists(tmp_path, SMALL)


# ---------------------------------------------------------------------------------------- difficulty


def test_coco_like_difficulty_sets_its_documented_knobs_and_a_long_tail_keeps_its_classes():
    # DIFFICULTIES["coco-like"]: 4-15 objects, a quarter forced small, up to 10 look-alikes, 3× clutter, 20 classes.
    spec = default_synth_spec(difficulty="coco-like")
    assert (spec.num_classes, spec.min_objects, spec.max_objects) == (20, 4, 15)
    assert (spec.small_fraction, spec.max_distractors, spec.clutter_factor) == (0.25, 10, 3)
    assert default_synth_spec(difficulty="default") == SynthSpec()
    long_tail = default_synth_spec(long_tail=True, difficulty="coco-like")
    assert (long_tail.num_classes, long_tail.max_objects, long_tail.long_tail) == (40, 15, True)
    with pytest.raises(LibraError, match="'extreme' is not one of default, coco-like, coco-hard"):
        default_synth_spec(difficulty="extreme")


def test_coco_hard_difficulty_sets_its_documented_knobs():
    # DIFFICULTIES["coco-hard"]: 6-20 objects, half forced small, up to 16 look-alikes, 4× clutter, 40 classes.
    spec = default_synth_spec(difficulty="coco-hard")
    assert (spec.num_classes, spec.min_objects, spec.max_objects) == (40, 6, 20)
    assert (spec.small_fraction, spec.max_distractors, spec.clutter_factor) == (0.5, 16, 4)


def test_small_fraction_one_draws_every_labelled_object_small(tmp_path):
    # A small object's side s is at most 32 px, its aspect at most 1.4 (w ≤ 32·√1.4 = 37.9) and its rotation at
    # most 15°, so its box side is at most 37.9 · (cos 15° + sin 15°) + 1 px of rounding = 47.4 px. The default
    # size draw (log-uniform up to 0.55 × 256 = 140.8 px) passes 48 px for 41 % of objects: among 4 images'
    # objects some do.
    small = SynthSpec(num_train=4, num_val=1, small_fraction=1.0, distractors=False)
    generate_benchmark(tmp_path / "small", small)
    generate_benchmark(tmp_path / "default", SynthSpec(num_train=4, num_val=1, distractors=False))
    sides = {}
    for name in ("small", "default"):
        anns = _load(tmp_path / name / "annotations" / "train.json")["annotations"]
        sides[name] = [max(a["bbox"][2], a["bbox"][3]) for a in anns if not a["iscrowd"]]
    assert sides["small"] and max(sides["small"]) <= 47.4
    assert max(sides["default"]) > 48
    assert _load(tmp_path / "small" / "benchmark.json")["spec"]["small_fraction"] == 1.0


def test_synth_command_takes_a_difficulty_and_single_knobs_override_it(tmp_path):
    from typer.testing import CliRunner

    from libra_cli.cli import app

    runner = CliRunner()
    out = tmp_path / "b"
    args = ["data", "synth", str(out), "--difficulty", "coco-like", "--num-train", "2", "--num-val", "1"]
    result = runner.invoke(app, [*args, "--max-objects", "6"])
    assert result.exit_code == 0, result.output
    spec = _load(out / "benchmark.json")["spec"]
    # coco-like's knobs, with --max-objects 6 in place of its 15.
    assert (spec["num_classes"], spec["min_objects"], spec["max_objects"]) == (20, 4, 6)
    assert (spec["small_fraction"], spec["max_distractors"], spec["clutter_factor"]) == (0.25, 10, 3)
    bad = runner.invoke(app, ["data", "synth", str(tmp_path / "c"), "--difficulty", "extreme"])
    assert bad.exit_code == 2 and "'extreme' is not one of default, coco-like, coco-hard" in bad.output


def test_the_config_accepts_exactly_the_named_difficulties():
    from libra_cli.config import load_config
    from libra_cli.data.synth import DIFFICULTIES

    for name in DIFFICULTIES:
        assert load_config(None, {"data": {"synth_difficulty": name}}).data.synth_difficulty == name
    expected = "data.synth_difficulty .*must be one of default, coco-like, coco-hard; got 'extreme'"
    with pytest.raises(LibraError, match=expected):
        load_config(None, {"data": {"synth_difficulty": "extreme"}})
