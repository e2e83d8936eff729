"""``benchmarks/eval_scale.py``: its synthetic data and its ``--smoke`` run (both formats, tiny sizes)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from benchmarks.eval_scale import (
    STAGES,
    coco_ground_truth,
    lvis_ground_truth,
    main,
    parse_args,
    synthetic_detections,
)

# COCO's category ids: 1..90 without 12, 26, 29, 30, 45, 66, 68, 69, 71, 83.
COCO_IDS = set(range(1, 91)) - {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}


def test_coco_data_has_the_sparse_ids_and_the_requested_detections_per_image():
    dataset = coco_ground_truth(num_images=30, boxes_per_image=7.0, seed=1)
    detections = synthetic_detections(dataset, per_image=25, seed=2)

    assert {category["id"] for category in dataset["categories"]} == COCO_IDS
    assert len(dataset["images"]) == 30
    assert Counter(detection["image_id"] for detection in detections) == {i: 25 for i in range(1, 31)}
    assert all(ann["category_id"] in COCO_IDS for ann in dataset["annotations"])
    # Same seed, same data: the benchmark's inputs are reproducible.
    assert coco_ground_truth(num_images=30, boxes_per_image=7.0, seed=1) == dataset
    assert synthetic_detections(dataset, per_image=25, seed=2) == detections


def test_lvis_data_has_the_lvis_v1_frequency_groups_and_federated_lists():
    dataset = lvis_ground_truth(num_images=20, boxes_per_image=10.0, seed=3)

    assert Counter(category["frequency"] for category in dataset["categories"]) == {"r": 337, "c": 461, "f": 405}
    present = {(ann["image_id"], ann["category_id"]) for ann in dataset["annotations"]}
    for image in dataset["images"]:
        # A negative category is one the image is known not to contain; a not-exhaustive one is present.
        assert not any((image["id"], category_id) in present for category_id in image["neg_category_ids"])
        assert all((image["id"], category_id) in present for category_id in image["not_exhaustive_category_ids"])


def test_lvis_fraction_outside_zero_one_is_rejected():
    with pytest.raises(SystemExit):
        parse_args(["--lvis-fraction", "0"])


def test_smoke_run_writes_agreeing_numbers_and_the_tables(tmp_path):
    out, json_out = tmp_path / "eval_scale.md", tmp_path / "eval_scale.json"

    main(["--smoke", "--out", str(out), "--json", str(json_out)])

    report = json.loads(json_out.read_text())
    assert report["smoke"] is True and report["versions"]["faster-coco-eval"] == "1.8.0"
    expected_sizes = {"coco": (20, 80, 20 * 20), "lvis": (10, 1203, 10 * 30)}
    for annotation_format, (images, categories, detections) in expected_sizes.items():
        entry = report["formats"][annotation_format]
        sizes = entry["sizes"]
        assert (sizes["images"], sizes["categories"], sizes["detections"]) == (images, categories, detections)
        for evaluator in ("official", "faster"):
            seconds = entry["results"][evaluator]["seconds"]
            assert all(seconds[stage] >= 0 for stage in STAGES)
            assert seconds["total"] == pytest.approx(sum(seconds[stage] for stage in STAGES))
        # The two implementations give the same numbers (tests/engine/test_evaluators.py checks why).
        assert entry["agreement"]["summary"] <= 1e-6 and entry["agreement"]["per_category"] <= 1e-6
        official_ap = entry["results"]["official"]["summary"]["AP"]
        assert 0.0 < official_ap < 1.0  # jittered hits and false positives: matching was exercised

    markdown = out.read_text()
    assert (
        markdown.count("| evaluator | prepare s | load s | evaluate s | accumulate s | total s | peak RSS MiB |") == 2
    )
    assert "**COCO**: 20 images" in markdown and "**LVIS**: 10 images" in markdown
    rows = Counter(line.split("|")[1].strip() for line in markdown.splitlines() if line.startswith("| "))
    assert rows["official"] == 2 and rows["faster"] == 2  # one timing row each per format
