"""The error analysis on hand-made ground truth and detections where each kind of error occurs a known
number of times; every expected AP is worked out by hand in the comments.

Arithmetic used throughout (COCO's 101 recall points 0, .01, …, 1, precision made monotone):
- one object of two found first, then nothing: precision 1 at recall 0..0.50 (51 points), 0 after →
  AP 51/101;
- hit, false positive, hit over two objects: precision 1 up to recall .5 (51 points) and 2/3 from .51 to
  1 (50 points) → AP (51 + 50 * 2/3) / 101.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from libra_cli.analysis import ANALYSES
from libra_cli.analysis.errors import COCO_KINDS, analyze_errors, write_errors
from libra_cli.analysis.tide import TIDE_KINDS, average_precision
from libra_cli.cli import app
from libra_cli.engine.metrics import evaluate_coco
from libra_cli.errors import LibraError

HALF = 51 / 101
HIT_MISS_HIT = (51 + 50 * 2 / 3) / 101
BOX = [0, 0, 10, 10]
FAR = [60, 60, 10, 10]  # IoU 0 with BOX

runner = CliRunner()


def ground_truth(objects, categories=None, num_images=3, **extra_category_fields):
    """A COCO dict: ``objects`` is a list of (image id, category id, bbox); categories default to one
    "thing" (id 1)."""
    categories = categories or [{"id": 1, "name": "thing"}]
    return {
        "images": [{"id": image_id, "file_name": f"{image_id}.jpg"} for image_id in range(1, num_images + 1)],
        "categories": [{**category, **extra_category_fields} for category in categories],
        "annotations": [
            {"id": index + 1, "image_id": image_id, "category_id": category_id, "bbox": bbox, "iscrowd": 0}
            for index, (image_id, category_id, bbox) in enumerate(objects)
        ],
    }


def detection(image_id, category_id, bbox, score):
    return {"image_id": image_id, "category_id": category_id, "bbox": bbox, "score": score}


def make_run(tmp_path: Path, gt: dict, detections: list) -> tuple[Path, Path]:
    """A run directory holding only ``eval/detections.json``, and the ground-truth file beside it."""
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    (run / "eval" / "detections.json").write_text(json.dumps(detections))
    ann = tmp_path / "gt.json"
    ann.write_text(json.dumps(gt))
    return run, ann


def analyse(tmp_path, gt, detections):
    run, ann = make_run(tmp_path, gt, detections)
    return analyze_errors(run, ann=ann)


def assert_overall(result, expected: dict):
    for kind, value in expected.items():
        actual = result["coco"]["overall"][kind]
        assert (actual is None) if value is None else actual == pytest.approx(value, abs=1e-9), kind


def assert_tide(result, ap50: float, delta: dict | None = None, counts: dict | None = None):
    tide = result["tide"]
    assert tide["ap50"] == pytest.approx(ap50, abs=1e-9)
    delta, counts = delta or {}, counts or {}
    for kind in TIDE_KINDS:
        assert tide["delta_ap"][kind] == pytest.approx(delta.get(kind, 0.0), abs=1e-9), kind
        assert tide["counts"][kind] == counts.get(kind, 0), kind


def test_errors_is_listed_with_the_analyses():
    assert ANALYSES["errors"].analyze is analyze_errors and ANALYSES["errors"].write is write_errors


def test_perfect_detections_have_no_error(tmp_path):
    objects = [(1, 1, BOX), (2, 1, [5, 5, 20, 30]), (3, 1, FAR)]
    detections = [
        detection(image, category, box, 0.9 - 0.1 * index) for index, (image, category, box) in enumerate(objects)
    ]
    result = analyse(tmp_path, ground_truth(objects), detections)
    assert_overall(result, {kind: 1.0 for kind in COCO_KINDS if kind != "Sim"})
    assert result["coco"]["per_category"][0]["C75"] == pytest.approx(1.0)
    assert all(value == pytest.approx(1.0) for value in result["coco"]["curves"]["C75"])
    assert_tide(result, ap50=1.0)


def test_no_detections_leave_every_object_missed(tmp_path):
    # Nothing found: every curve up to BG is 0 at every recall; FN (all errors removed) is 1. TIDE's miss
    # oracle removes all three objects: nothing left to find and nothing detected → AP 1, ΔAP 1 − 0.
    result = analyse(tmp_path, ground_truth([(1, 1, BOX), (2, 1, BOX), (3, 1, FAR)]), [])
    assert_overall(result, {"C75": 0.0, "C50": 0.0, "Loc": 0.0, "Oth": 0.0, "BG": 0.0, "FN": 1.0, "Sim": None})
    assert result["num_detections"] == 0
    assert_tide(result, ap50=0.0, delta={"miss": 1.0}, counts={"miss": 3})


def test_localisation_errors_only(tmp_path):
    # Image 1: box [0, 0, 10, 6] on BOX, IoU 60/100 = 0.6 (a hit at .5, not at .75), score .9.
    # Image 2: box [0, 0, 10, 2] on BOX, IoU 0.2 (a hit only at IoU .1), score .8.
    # C75: two misses → 0. C50: hit then false positive → HALF. Loc and everything after: two hits → 1.
    objects = [(1, 1, BOX), (2, 1, BOX)]
    detections = [detection(1, 1, [0, 0, 10, 6], 0.9), detection(2, 1, [0, 0, 10, 2], 0.8)]
    result = analyse(tmp_path, ground_truth(objects, num_images=2), detections)
    assert_overall(result, {"C75": 0.0, "C50": HALF, "Loc": 1.0, "Oth": 1.0, "BG": 1.0, "FN": 1.0})
    # TIDE: the IoU-.2 box is one localisation error; fixing it makes both hits → AP 1. Its object is
    # pointed at by that error, so it is not also missed.
    assert_tide(result, ap50=HALF, delta={"loc": 1.0 - HALF}, counts={"loc": 1})


def test_two_localisation_errors_on_one_object_fix_only_the_higher_scoring(tmp_path):
    # One object, two boxes of IoU .4 (scores .9, .8). Loc oracle: the .9 one becomes the hit, the .8 one
    # is removed → AP 1. Both are counted as localisation errors.
    detections = [detection(1, 1, [0, 0, 10, 4], 0.9), detection(1, 1, [0, 6, 10, 4], 0.8)]
    result = analyse(tmp_path, ground_truth([(1, 1, BOX)], num_images=1), detections)
    assert_tide(result, ap50=0.0, delta={"loc": 1.0}, counts={"loc": 2})


def test_a_poor_box_on_an_object_already_found_is_removed_not_made_a_hit(tmp_path):
    # Object A (image 1) and B (image 2). Detections: .95 box of IoU .4 on A, .9 exact box on A (the hit:
    # the .95 one is below IoU .5), .7 far from everything, .5 exact on B.
    # AP50: FP, hit, FP, hit → precisions 0, 1/2, 1/3, 1/2, made monotone: 1/2 at every recall → 0.5.
    # loc oracle: A is already taken, so the .95 box is removed, not made a hit → hit, FP, hit →
    # HIT_MISS_HIT. bkg oracle: the .7 box removed → FP, hit, hit → 2/3 at every recall.
    objects = [(1, 1, BOX), (2, 1, BOX)]
    detections = [
        detection(1, 1, [0, 0, 10, 4], 0.95),
        detection(1, 1, BOX, 0.9),
        detection(1, 1, FAR, 0.7),
        detection(2, 1, BOX, 0.5),
    ]
    result = analyse(tmp_path, ground_truth(objects, num_images=2), detections)
    assert_tide(result, ap50=0.5, delta={"loc": HIT_MISS_HIT - 0.5, "bkg": 2 / 3 - 0.5}, counts={"loc": 1, "bkg": 1})
    # COCO at IoU .1 (Loc): the .95 box takes A, so the exact .9 box on A becomes a duplicate: hit, FP, FP,
    # hit → precision 1 up to recall .5 (51 points), 1/2 after (50 points).
    assert_overall(result, {"C50": 0.5, "Loc": (51 + 50 / 2) / 101, "BG": 1.0})


def test_detections_inside_a_crowd_region_are_neither_hits_nor_errors(tmp_path):
    # A crowd region (iscrowd 1) with a .95 box inside it (intersection / box area = 1), and one object
    # found by a .9 box: both protocols ignore the .95 box, so everything is perfect.
    gt = ground_truth([(1, 1, BOX)], num_images=1)
    gt["annotations"].append({"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 50, 40, 40], "iscrowd": 1})
    result = analyse(tmp_path, gt, [detection(1, 1, [55, 55, 10, 10], 0.95), detection(1, 1, BOX, 0.9)])
    assert_overall(result, {"C75": 1.0, "C50": 1.0, "Loc": 1.0, "Oth": 1.0, "BG": 1.0, "FN": 1.0})
    assert_tide(result, ap50=1.0)


def test_background_false_positives_only(tmp_path):
    # Hit (.9, image 1), a box far from everything (.8, image 1), hit (.7, image 2): HIT_MISS_HIT on every
    # curve up to Oth; removing the background box (BG) leaves precision 1 → 1.
    objects = [(1, 1, BOX), (2, 1, BOX)]
    detections = [detection(1, 1, BOX, 0.9), detection(1, 1, FAR, 0.8), detection(2, 1, BOX, 0.7)]
    result = analyse(tmp_path, ground_truth(objects, num_images=2), detections)
    assert_overall(
        result,
        {"C75": HIT_MISS_HIT, "C50": HIT_MISS_HIT, "Loc": HIT_MISS_HIT, "Oth": HIT_MISS_HIT, "BG": 1.0, "FN": 1.0},
    )
    assert_tide(result, ap50=HIT_MISS_HIT, delta={"bkg": 1.0 - HIT_MISS_HIT}, counts={"bkg": 1})


def test_duplicates_stay_false_positives_until_the_background_step(tmp_path):
    # A second box (IoU 0.8 ≥ .75) on the object image 1's hit already took, scored between two hits: a
    # false positive at every IoU (the COCO tool's Loc forgives poor boxes, not duplicates), so every
    # curve up to Oth is HIT_MISS_HIT; BG removes it → 1.
    objects = [(1, 1, BOX), (2, 1, BOX)]
    detections = [detection(1, 1, BOX, 0.9), detection(1, 1, [0, 0, 10, 8], 0.8), detection(2, 1, BOX, 0.7)]
    result = analyse(tmp_path, ground_truth(objects, num_images=2), detections)
    assert_overall(
        result,
        {"C75": HIT_MISS_HIT, "C50": HIT_MISS_HIT, "Loc": HIT_MISS_HIT, "Oth": HIT_MISS_HIT, "BG": 1.0, "FN": 1.0},
    )
    assert_tide(result, ap50=HIT_MISS_HIT, delta={"dupe": 1.0 - HIT_MISS_HIT}, counts={"dupe": 1})


ANIMALS_AND_A_CAR = [
    {"id": 1, "name": "cat", "supercategory": "animal"},
    {"id": 2, "name": "dog", "supercategory": "animal"},
    {"id": 3, "name": "car", "supercategory": "vehicle"},
]


def test_class_confusions_within_and_outside_a_supercategory(tmp_path):
    # Objects: a dog (image 1), a car (image 2), a cat (image 3). Detections, all "cat" on exact boxes:
    # .9 on the dog (same supercategory), .8 on the car (another one), .7 on the cat (a hit).
    objects = [(1, 2, BOX), (2, 3, BOX), (3, 1, BOX)]
    detections = [detection(1, 1, BOX, 0.9), detection(2, 1, BOX, 0.8), detection(3, 1, BOX, 0.7)]
    result = analyse(tmp_path, ground_truth(objects, ANIMALS_AND_A_CAR), detections)
    cat, dog, car = result["coco"]["per_category"]
    # cat: FP, FP, hit → precision 1/3 at recall 1 up to Loc; Sim forgives the box on the dog → 1/2;
    # Oth also the box on the car → 1. dog and car have no detections: 0 up to BG, FN 1.
    expected_cat = {"C75": 1 / 3, "C50": 1 / 3, "Loc": 1 / 3, "Sim": 1 / 2, "Oth": 1.0, "BG": 1.0, "FN": 1.0}
    for kind, value in expected_cat.items():
        assert cat[kind] == pytest.approx(value), kind
    for other in (dog, car):
        assert [other[kind] for kind in COCO_KINDS] == pytest.approx([0, 0, 0, 0, 0, 0, 1])
    # Overall: the mean of the three categories.
    assert_overall(
        result, {"C75": 1 / 9, "C50": 1 / 9, "Loc": 1 / 9, "Sim": 1 / 6, "Oth": 1 / 3, "BG": 1 / 3, "FN": 1.0}
    )
    # TIDE: two classification errors; fixing them makes the .9 box a dog hit and the .8 box a car hit,
    # so every category scores 1 (was 1/3, 0, 0 → 1/9). The dog and the car are pointed at, not missed.
    assert_tide(result, ap50=1 / 9, delta={"cls": 1 - 1 / 9}, counts={"cls": 2})
    assert result["note"] is None


def test_a_category_without_supercategory_forgives_no_confusion_in_sim(tmp_path):
    # "a" and "b" name no supercategory (the others do, so Sim is computed): an "a" box on the "b" object
    # scored above the "a" hit stays a false positive in Sim (1/2: FP, hit) and is forgiven in Oth (1).
    categories = [
        {"id": 1, "name": "a"},
        {"id": 2, "name": "b"},
        {"id": 3, "name": "c", "supercategory": "x"},
        {"id": 4, "name": "d", "supercategory": "y"},
    ]
    objects = [(1, 1, BOX), (2, 2, BOX)]
    detections = [detection(2, 1, BOX, 0.9), detection(1, 1, BOX, 0.8)]
    result = analyse(tmp_path, ground_truth(objects, categories, num_images=2), detections)
    a = result["coco"]["per_category"][0]
    assert (a["Loc"], a["Sim"], a["Oth"]) == pytest.approx((0.5, 0.5, 1.0))


def test_without_supercategories_sim_is_null(tmp_path):
    categories = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    result = analyse(tmp_path, ground_truth([(1, 1, BOX), (2, 2, BOX)], categories), [detection(1, 1, BOX, 0.9)])
    assert result["coco"]["overall"]["Sim"] is None
    assert result["coco"]["curves"]["Sim"] is None
    assert all(entry["Sim"] is None for entry in result["coco"]["per_category"])
    assert "Sim" in result["note"]
    # cat found (1), dog has no detection (0): C50 1/2, FN 1.
    assert_overall(result, {"C50": 0.5, "FN": 1.0})


def test_both_kind_is_a_wrong_class_poorly_localised(tmp_path):
    # A "dog" box of IoU 0.4 on the only object, a cat: not loc (wrong class), not cls (IoU < .5), not
    # background (IoU > .1) → "both". Removing it changes nothing (the cat is missed either way), and the
    # cat is missed: no cls/loc error points at it.
    categories = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    result = analyse(
        tmp_path, ground_truth([(1, 1, BOX)], categories, num_images=1), [detection(1, 2, [0, 0, 10, 4], 0.9)]
    )
    # miss oracle: cat has nothing left to find and no detection → 1 (from 0).
    assert_tide(result, ap50=0.0, delta={"miss": 1.0}, counts={"both": 1, "miss": 1})


def test_lvis_ground_truth_is_scored_with_the_coco_protocol_on_annotated_categories(tmp_path):
    categories = [{"id": 1, "name": "cat", "frequency": "f"}, {"id": 2, "name": "dog", "frequency": "r"}]
    gt = ground_truth([(1, 1, BOX)], categories, num_images=1)
    result = analyse(tmp_path, gt, [detection(1, 1, BOX, 0.9), detection(1, 2, FAR, 0.5)])
    assert result["format"] == "lvis"
    assert [entry["category_id"] for entry in result["coco"]["per_category"]] == [1]  # dog has no annotation
    assert "COCO protocol" in result["note"] and "1 detections of categories without annotations" in result["note"]
    assert_overall(result, {"C75": 1.0, "FN": 1.0})
    assert_tide(result, ap50=1.0)


def random_scene(seed: int, num_images: int = 12):
    """Ground truth over 4 categories in 2 supercategories and noisy detections of it: shifted and
    rescaled copies of the objects (some with another class) plus random boxes."""
    rng = np.random.default_rng(seed)
    categories = [{"id": index, "name": f"c{index}", "supercategory": f"s{index % 2}"} for index in (1, 2, 3, 5)]
    objects, detections = [], []
    for image_id in range(1, num_images + 1):
        for _ in range(rng.integers(0, 5)):
            category = int(rng.choice([1, 2, 3, 5]))
            x, y, w, h = (float(value) for value in (*rng.uniform(0, 150, 2), *rng.uniform(5, 50, 2)))
            objects.append((image_id, category, [x, y, w, h]))
            for _ in range(rng.integers(0, 3)):
                label = category if rng.random() < 0.75 else int(rng.choice([1, 2, 3, 5]))
                shift, scale = rng.uniform(-0.3, 0.3, 2), rng.uniform(0.7, 1.3)
                box = [x + shift[0] * w, y + shift[1] * h, w * scale, h * scale]
                detections.append(detection(image_id, label, box, float(rng.random())))
        for _ in range(rng.integers(0, 3)):
            box = [float(value) for value in (*rng.uniform(0, 150, 2), *rng.uniform(5, 50, 2))]
            detections.append(detection(image_id, int(rng.choice([1, 2, 3, 5])), box, float(rng.random())))
    return ground_truth(objects, categories, num_images=num_images), detections


@pytest.mark.parametrize("seed", [0, 1])
def test_c75_and_c50_are_cocos_ap75_and_ap50_and_each_curve_forgives_more(tmp_path, seed):
    gt, detections = random_scene(seed)
    result = analyse(tmp_path, gt, detections)
    summary = evaluate_coco(gt, detections)["summary"]
    assert result["coco"]["overall"]["C75"] == pytest.approx(summary["AP75"], abs=1e-12)
    assert result["coco"]["overall"]["C50"] == pytest.approx(summary["AP50"], abs=1e-12)
    for entry in result["coco"]["per_category"]:  # each step only forgives errors: never a lower AP
        areas = [entry[kind] for kind in COCO_KINDS]
        assert all(earlier <= later + 1e-12 for earlier, later in zip(areas, areas[1:], strict=False)), entry
        assert entry["FN"] == 1.0
    # TIDE's AP50 is COCO's AP50 but for its matching (greedy over all classes, 100 boxes per image) and
    # its recall points (exact i / 100); neither difference comes into play in these scenes.
    assert result["tide"]["ap50"] == pytest.approx(summary["AP50"], abs=1e-9)


def test_average_precision_edge_cases():
    assert average_precision([], 2) == 0.0  # objects to find, nothing found
    assert average_precision([], 0) == 1.0  # nothing to find, nothing detected
    assert average_precision([(0.5, False)], 0) == 0.0  # nothing to find, a false positive
    assert average_precision([(0.9, True), (0.8, False)], 2) == pytest.approx(HALF)


def test_ground_truth_defaults_to_the_file_the_evaluation_used(tmp_path):
    run, ann = make_run(tmp_path, ground_truth([(1, 1, BOX)], num_images=1), [detection(1, 1, BOX, 0.9)])
    (run / "eval" / "metrics.json").write_text(json.dumps({"summary": {}, "ann_file": str(ann)}))
    result = analyze_errors(run)
    assert result["ann"] == str(ann)
    assert result["tide"]["ap50"] == pytest.approx(1.0)


def test_write_errors_writes_json_csv_and_png(tmp_path):
    objects = [(1, 1, BOX), (2, 1, BOX)]
    detections = [detection(1, 1, [0, 0, 10, 6], 0.9), detection(2, 1, [0, 0, 10, 4], 0.8)]
    result = analyse(tmp_path, ground_truth(objects, num_images=2), detections)
    written = write_errors(result)
    assert list(written) == ["errors.json", "errors.csv", "errors.png"]
    saved = json.loads(written["errors.json"].read_text())
    assert saved["analysis"] == "errors" and saved["coco"]["kinds"] == list(COCO_KINDS)
    assert len(saved["coco"]["recall"]) == 101 and saved["coco"]["recall"][1] == 0.01
    assert all(len(saved["coco"]["curves"][kind]) == 101 for kind in COCO_KINDS if kind != "Sim")
    lines = written["errors.csv"].read_text().splitlines()
    assert lines[0] == "category_id,name,C75,C50,Loc,Sim,Oth,BG,FN"
    assert lines[1] == f"1,thing,0.0000,{HALF:.4f},1.0000,,1.0000,1.0000,1.0000"
    assert written["errors.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- the command ---------------------------------------------------------------------------------------


def test_cli_prints_the_breakdown_and_writes_the_files(tmp_path):
    run, ann = make_run(tmp_path, ground_truth([(1, 1, BOX)], num_images=1), [detection(1, 1, BOX, 0.9)])
    result = runner.invoke(app, ["analyze", "errors", str(run), "--ann", str(ann)])
    assert result.exit_code == 0, result.output
    assert "C75" in result.output and "dupe" in result.output
    assert sorted(path.name for path in (run / "analysis").iterdir()) == ["errors.csv", "errors.json", "errors.png"]


def _bad_detections_cases():
    return [
        ([detection(7, 1, BOX, 0.9)], "image_id 7 is not an image of"),
        ([detection(1, 5, BOX, 0.9)], "category_id 5 is not a category of"),
        ([detection(1, 1, [0, 0, 10], 0.9)], "bbox must be [x, y, w, h]"),
        ([{"image_id": 1, "bbox": BOX, "score": 0.9}], "missing category_id"),
        ([detection(1, 1, BOX, "high")], "score must be a finite number"),
    ]


@pytest.mark.parametrize(("detections", "message"), _bad_detections_cases())
def test_cli_bad_detections_are_one_line_and_leave_analysis_untouched(tmp_path, detections, message):
    run, ann = make_run(tmp_path, ground_truth([(1, 1, BOX)], num_images=1), detections)
    old = run / "analysis" / "errors.json"
    old.parent.mkdir()
    old.write_text('{"old": true}')
    result = runner.invoke(app, ["analyze", "errors", str(run), "--ann", str(ann)])
    assert result.exit_code == 2
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and "detections.json: detections[0]" in lines[0]
    assert "Traceback" not in result.output
    assert old.read_text() == '{"old": true}'
    assert sorted(path.name for path in old.parent.iterdir()) == ["errors.json"]


def test_cli_run_without_detections_asks_for_libra_eval(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    result = runner.invoke(app, ["analyze", "errors", str(run)])
    assert result.exit_code == 2
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "run `libra eval" in lines[0]
    assert not (run / "analysis").exists()


def test_images_without_ann_is_refused(tmp_path):
    run, _ = make_run(tmp_path, ground_truth([(1, 1, BOX)], num_images=1), [])
    with pytest.raises(LibraError, match="--images"):
        analyze_errors(run, images=tmp_path)


def test_a_trained_run_is_analysed_against_the_ground_truth_its_evaluation_used(tiny_run):
    # The run's own eval/metrics.json (pycocotools' summary of the same detections) is the reference:
    # C75 and C50 are its AP75 and AP50, and the ground truth defaults to the file it names.
    metrics = json.loads((tiny_run / "eval" / "metrics.json").read_text())
    result = analyze_errors(tiny_run)
    assert result["ann"] == metrics["ann_file"]
    assert result["num_detections"] == metrics["num_detections"]
    assert result["coco"]["overall"]["C75"] == pytest.approx(metrics["summary"]["AP75"], abs=1e-12)
    assert result["coco"]["overall"]["C50"] == pytest.approx(metrics["summary"]["AP50"], abs=1e-12)
    assert result["coco"]["overall"]["FN"] == 1.0


# --- every run of a grid or the demo --------------------------------------------------------------------


def test_decompose_errors_analyses_each_evaluated_run_once_and_passes_over_the_others(tmp_path):
    from libra_cli.workflow import decompose_errors

    # One perfect detection: TIDE's AP50 is 1. A run folder without eval/ was never evaluated.
    run, ann = make_run(tmp_path, ground_truth([(1, 1, BOX)], num_images=1), [detection(1, 1, BOX, 0.9)])
    (run / "eval" / "metrics.json").write_text(json.dumps({"summary": {}, "ann_file": str(ann)}))
    unevaluated = tmp_path / "unevaluated"
    unevaluated.mkdir()
    assert decompose_errors([run, unevaluated]) == [run]
    saved = json.loads((run / "analysis" / "errors.json").read_text())
    assert saved["tide"]["ap50"] == pytest.approx(1.0)
    assert not (unevaluated / "analysis").exists()
    # A second pass finds the decomposition written and leaves it as it was.
    before = (run / "analysis" / "errors.json").read_bytes()
    assert decompose_errors([run, unevaluated]) == []
    assert (run / "analysis" / "errors.json").read_bytes() == before
