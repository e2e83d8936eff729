"""COCO and LVIS box AP from a detections list (the COCO and LVIS evaluation protocols).

Expected values are either known from the construction (exact boxes give IoU 1, so every threshold
agrees; a lone false positive gives precision 0), worked out by hand from the 101-point interpolated
precision, or taken from pycocotools' ``COCOeval`` driven directly from a JSON file in the test.
"""

import contextlib
import copy
import io
import json

import numpy as np
import pytest

from libra_cli.engine.metrics import (
    COCO_SUMMARY_NAMES,
    detect_annotation_format,
    evaluate_coco,
    evaluate_detections,
    evaluate_lvis,
)
from libra_cli.errors import LibraError

# Sparse category ids on purpose: they must be used as given, never re-indexed to 0..K-1.
COCO_CATEGORIES = [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}, {"id": 12, "name": "kite"}]

# (image_id, category_id, [x, y, w, h]) — small (< 32²), medium and large (> 96²) boxes all occur, so
# every area-restricted metric has ground truth to measure. Boxes of one image never overlap.
COCO_BOXES = [
    (1, 3, [10.0, 10.0, 20.0, 20.0]),  # small, area 400
    (1, 7, [50.0, 50.0, 60.0, 40.0]),  # medium, area 2400
    (1, 12, [200.0, 200.0, 120.0, 100.0]),  # large, area 12000
    (2, 3, [0.0, 0.0, 50.0, 50.0]),  # medium
    (2, 3, [100.0, 100.0, 15.0, 25.0]),  # small
    (2, 12, [150.0, 10.0, 110.0, 110.0]),  # large
    (5, 7, [30.0, 200.0, 25.0, 20.0]),  # small
    (5, 12, [120.0, 120.0, 70.0, 70.0]),  # medium
]
CROWD_BOX = (5, 7, [300.0, 300.0, 80.0, 60.0])  # crowd region of category 7, never detected


def coco_dataset(*, with_crowd: bool = True, with_iscrowd_field: bool = True, with_area: bool = True) -> dict:
    boxes = [(*box, 0) for box in COCO_BOXES] + ([(*CROWD_BOX, 1)] if with_crowd else [])
    annotations = []
    for index, (image_id, category_id, bbox, iscrowd) in enumerate(boxes):
        annotation = {"id": index + 1, "image_id": image_id, "category_id": category_id, "bbox": list(bbox)}
        if with_iscrowd_field:
            annotation["iscrowd"] = iscrowd
        if with_area:
            annotation["area"] = bbox[2] * bbox[3]
        annotations.append(annotation)
    images = [{"id": image_id, "width": 400, "height": 400} for image_id in (1, 2, 5)]
    return {"images": images, "annotations": annotations, "categories": copy.deepcopy(COCO_CATEGORIES)}


def perfect_detections(boxes) -> list[dict]:
    return [
        {"image_id": image_id, "category_id": category_id, "bbox": list(bbox), "score": 1.0}
        for image_id, category_id, bbox in boxes
    ]


def pycocotools_stats(dataset: dict, detections: list[dict], tmp_path) -> list[float]:
    """COCOeval's 12 summary numbers, driven the documented way: GT from a file, results via loadRes."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt_file = tmp_path / "instances.json"
    gt_file.write_text(json.dumps(dataset))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_file))
        evaluator = COCOeval(gt, gt.loadRes(copy.deepcopy(detections)), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return [float(value) for value in evaluator.stats]


# ---------------------------------------------------------------------------------------------- COCO


def test_perfect_detections_score_one_and_the_undetected_crowd_box_is_ignored():
    # Every non-crowd box detected exactly (IoU 1 at every threshold), no false positive: precision is 1
    # at every recall point. The crowd box is ignored GT, so missing it costs nothing.
    result = evaluate_coco(coco_dataset(), perfect_detections(COCO_BOXES))

    assert result["format"] == "coco"
    assert list(result["summary"]) == list(COCO_SUMMARY_NAMES)
    for name in COCO_SUMMARY_NAMES:
        if name != "AR1":
            assert result["summary"][name] == pytest.approx(1.0, abs=1e-9), name
    # AR1 counts one detection per image and category: image 2 has two category-3 boxes, so category 3
    # recalls 2 of its 3 boxes; the mean over the three categories is (2/3 + 1 + 1) / 3 = 8/9.
    assert result["summary"]["AR1"] == pytest.approx(8 / 9, abs=1e-9)
    for category in result["per_category"]:
        assert category["AP"] == pytest.approx(1.0, abs=1e-9)
        assert category["AP50"] == pytest.approx(1.0, abs=1e-9)


def test_ground_truth_without_iscrowd_or_area_scores_one_with_perfect_detections():
    dataset = coco_dataset(with_crowd=False, with_iscrowd_field=False, with_area=False)

    result = evaluate_coco(dataset, perfect_detections(COCO_BOXES))

    assert result["summary"]["AP"] == pytest.approx(1.0, abs=1e-9)
    assert result["summary"]["AP50"] == pytest.approx(1.0, abs=1e-9)
    # Areas were filled from the boxes, so the small / medium / large split still has ground truth.
    assert result["summary"]["APs"] == pytest.approx(1.0, abs=1e-9)
    assert result["summary"]["APl"] == pytest.approx(1.0, abs=1e-9)
    # The caller's dict is left as it was.
    assert all("iscrowd" not in annotation for annotation in dataset["annotations"])


def test_empty_detections_score_zero_for_every_coco_metric():
    result = evaluate_coco(coco_dataset(), [])

    assert result["summary"] == {name: 0.0 for name in COCO_SUMMARY_NAMES}
    assert [category["AP"] for category in result["per_category"]] == [0.0, 0.0, 0.0]


def test_summary_equals_cocoeval_run_directly_on_noisy_detections(tmp_path):
    rng = np.random.default_rng(2024)
    dataset = coco_dataset()
    detections = []
    for image_id, category_id, (x, y, w, h) in COCO_BOXES:
        for _ in range(2):  # a jittered hit and a duplicate, which becomes a false positive
            jitter = rng.uniform(-0.15, 0.15, size=4) * [w, h, w, h]
            box = [
                float(x + jitter[0]),
                float(y + jitter[1]),
                float(max(1.0, w + jitter[2])),
                float(max(1.0, h + jitter[3])),
            ]
            detections.append(
                {"image_id": image_id, "category_id": category_id, "bbox": box, "score": float(rng.uniform())}
            )
    for _ in range(6):  # background false positives
        detections.append(
            {
                "image_id": int(rng.choice([1, 2, 5])),
                "category_id": int(rng.choice([3, 7, 12])),
                "bbox": [float(v) for v in np.concatenate([rng.uniform(0, 300, 2), rng.uniform(5, 90, 2)])],
                "score": float(rng.uniform()),
            }
        )
    expected = pycocotools_stats(dataset, detections, tmp_path)

    summary = evaluate_coco(dataset, detections)["summary"]

    assert 0.0 < expected[0] < 1.0  # the case is not trivial
    assert [summary[name] for name in COCO_SUMMARY_NAMES] == pytest.approx(expected, abs=1e-12)


def test_per_category_ap_on_a_constructed_case():
    # Category 3: 3 GT boxes; ranked detections hit, miss (false positive), hit; the third box is never
    # found. Precision [1, 1/2, 2/3] -> interpolated [1, 2/3, 2/3] at recall [1/3, 1/3, 2/3]. Of the
    # 101 recall points 0.00..1.00, the 34 up to 0.33 get 1, the 33 from 0.34 to 0.66 get 2/3 and the
    # 34 above 2/3 get 0: AP = (34 + 33 * 2/3) / 101 = 56/101 at every IoU threshold (exact boxes).
    # Category 7: one GT, whose only detection is a false positive elsewhere: AP 0.
    # Category 12: no ground truth at all: AP is None (nothing to measure).
    dataset = {
        "images": [{"id": 1, "width": 400, "height": 400}, {"id": 2, "width": 400, "height": 400}],
        "categories": copy.deepcopy(COCO_CATEGORIES),
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [0, 0, 40, 40], "area": 1600, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [100, 0, 40, 40], "area": 1600, "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 3, "bbox": [0, 0, 40, 40], "area": 1600, "iscrowd": 0},
            {"id": 4, "image_id": 2, "category_id": 7, "bbox": [200, 200, 50, 50], "area": 2500},
        ],
    }
    detections = [
        {"image_id": 1, "category_id": 3, "bbox": [0, 0, 40, 40], "score": 0.9},
        {"image_id": 1, "category_id": 3, "bbox": [300, 300, 40, 40], "score": 0.8},
        {"image_id": 2, "category_id": 3, "bbox": [0, 0, 40, 40], "score": 0.7},
        {"image_id": 1, "category_id": 7, "bbox": [200, 200, 50, 50], "score": 0.95},
    ]

    per_category = {row["category_id"]: row for row in evaluate_coco(dataset, detections)["per_category"]}

    assert per_category[3]["AP"] == pytest.approx(56 / 101, abs=1e-9)
    assert per_category[3]["AP50"] == pytest.approx(56 / 101, abs=1e-9)
    assert per_category[3]["num_gt"] == 3
    assert per_category[7]["AP"] == 0.0
    assert per_category[7]["name"] == "dog"
    assert per_category[12]["AP"] is None and per_category[12]["AP50"] is None
    assert per_category[12]["num_gt"] == 0


def test_metrics_without_ground_truth_are_none_and_the_result_is_strict_json():
    # Only medium boxes: pycocotools writes -1 for APs/APl and ARs/ARl; they must come back as None.
    dataset = coco_dataset(with_crowd=False)
    dataset["annotations"] = [ann for ann in dataset["annotations"] if 32**2 <= ann["area"] <= 96**2]

    result = evaluate_coco(dataset, perfect_detections([(1, 7, [50.0, 50.0, 60.0, 40.0])]))

    for name in ("APs", "APl", "ARs", "ARl"):
        assert result["summary"][name] is None, name
    # Category 7 has its box found; 3 and 12 each have one medium box, missed.
    assert result["summary"]["AP"] == pytest.approx(1 / 3, abs=1e-9)
    text = json.dumps(result, allow_nan=False)
    assert json.loads(text) == result
    assert all(type(value) is float for value in result["summary"].values() if value is not None)


def test_detections_are_not_modified():
    detections = perfect_detections(COCO_BOXES)
    before = copy.deepcopy(detections)

    evaluate_coco(coco_dataset(), detections)

    assert detections == before


@pytest.mark.parametrize(
    ("field", "value"),
    [("image_id", 999), ("category_id", 5)],
)
def test_unknown_image_or_category_is_a_libra_error_naming_the_value(field, value):
    detections = perfect_detections(COCO_BOXES)
    detections[2][field] = value

    with pytest.raises(LibraError, match=rf"detections\[2\]: {field} {value} "):
        evaluate_coco(coco_dataset(), detections)


def test_missing_ground_truth_file_is_a_libra_error(tmp_path):
    with pytest.raises(LibraError, match="not found"):
        evaluate_coco(tmp_path / "absent.json", [])


# ---------------------------------------------------------------------------------------------- LVIS

LVIS_CATEGORIES = [
    {"id": 1, "name": "aardvark", "synset": "aardvark.n.01", "frequency": "r", "image_count": 1, "instance_count": 1},
    {"id": 4, "name": "bagpipe", "synset": "bagpipe.n.01", "frequency": "c", "image_count": 1, "instance_count": 1},
    {"id": 9, "name": "person", "synset": "person.n.01", "frequency": "f", "image_count": 2, "instance_count": 2},
]
# (image_id, category_id, [x, y, w, h]): one small, two medium, one large box.
LVIS_BOXES = [
    (1, 1, [10.0, 10.0, 20.0, 20.0]),  # rare, small
    (2, 4, [50.0, 50.0, 60.0, 60.0]),  # common, medium
    (1, 9, [100.0, 100.0, 120.0, 110.0]),  # frequent, large
    (3, 9, [20.0, 20.0, 40.0, 50.0]),  # frequent, medium
]


def lvis_dataset() -> dict:
    images = [
        # Image 1 is known to contain no bagpipe; image 2 no aardvark and only some of its persons are
        # annotated; image 3 has no negative or incomplete categories.
        {"id": 1, "width": 400, "height": 400, "neg_category_ids": [4], "not_exhaustive_category_ids": []},
        {"id": 2, "width": 400, "height": 400, "neg_category_ids": [1], "not_exhaustive_category_ids": [9]},
        {"id": 3, "width": 400, "height": 400, "neg_category_ids": [], "not_exhaustive_category_ids": []},
    ]
    annotations = []
    for index, (image_id, category_id, (x, y, w, h)) in enumerate(LVIS_BOXES):
        polygon = [x, y, x + w, y, x + w, y + h, x, y + h]
        annotations.append(
            {
                "id": index + 1,
                "image_id": image_id,
                "category_id": category_id,
                "bbox": [x, y, w, h],
                "area": w * h,
                "segmentation": [polygon],
            }
        )
    return {"images": images, "annotations": annotations, "categories": copy.deepcopy(LVIS_CATEGORIES)}


def test_lvis_perfect_detections_score_one_in_every_frequency_group():
    result = evaluate_lvis(lvis_dataset(), perfect_detections(LVIS_BOXES))

    assert result["format"] == "lvis"
    for name in ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf", "AR@300"):
        assert result["summary"][name] == pytest.approx(1.0, abs=1e-9), name
    frequencies = {row["category_id"]: row["frequency"] for row in result["per_category"]}
    assert frequencies == {1: "r", 4: "c", 9: "f"}
    assert {row["category_id"]: row["num_gt"] for row in result["per_category"]} == {1: 1, 4: 1, 9: 2}


def test_lvis_empty_detections_score_zero():
    result = evaluate_lvis(lvis_dataset(), [])

    expected = (
        "AP",
        "AP50",
        "AP75",
        "APs",
        "APm",
        "APl",
        "APr",
        "APc",
        "APf",
        "AR@300",
        "ARs@300",
        "ARm@300",
        "ARl@300",
    )
    assert result["summary"] == {name: 0.0 for name in expected}
    assert [row["AP"] for row in result["per_category"]] == [0.0, 0.0, 0.0]


def test_lvis_federated_rules():
    detections = perfect_detections(LVIS_BOXES)
    detections[0]["score"] = 0.5  # the one aardvark hit
    detections += [
        # An aardvark in image 3, which neither annotates nor rules out aardvarks: not counted.
        {"image_id": 3, "category_id": 1, "bbox": [300.0, 300.0, 30.0, 30.0], "score": 0.99},
        # An unmatched person in image 2, whose persons are not exhaustively annotated: not a false positive.
        {"image_id": 2, "category_id": 9, "bbox": [300.0, 300.0, 30.0, 30.0], "score": 0.99},
    ]
    assert evaluate_lvis(lvis_dataset(), detections)["summary"]["AP"] == pytest.approx(1.0, abs=1e-9)

    # An aardvark in image 2, which is known to have none: a false positive ranked above the one hit.
    # Precision [0, 1/2] at recall [0, 1] -> interpolated 1/2 at all 101 recall points: AP 1/2.
    detections.append({"image_id": 2, "category_id": 1, "bbox": [300.0, 300.0, 30.0, 30.0], "score": 0.99})
    result = evaluate_lvis(lvis_dataset(), detections)
    assert result["summary"]["APr"] == pytest.approx(0.5, abs=1e-9)
    assert result["summary"]["APf"] == pytest.approx(1.0, abs=1e-9)


def test_lvis_keeps_the_highest_scoring_detections_per_image():
    # Image 2 gets a false-positive bagpipe (score 0.9) above the true one (0.5). With one detection
    # per image only the false positive survives (AP 0 for bagpipe); with all of them the hit ranks
    # second (AP 1/2, as in the federated test).
    detections = perfect_detections([box for box in LVIS_BOXES if box[0] != 2]) + [
        {"image_id": 2, "category_id": 4, "bbox": [300.0, 300.0, 30.0, 30.0], "score": 0.9},
        {"image_id": 2, "category_id": 4, "bbox": [50.0, 50.0, 60.0, 60.0], "score": 0.5},
    ]

    top_one = evaluate_lvis(lvis_dataset(), detections, max_dets=1)
    all_kept = evaluate_lvis(lvis_dataset(), detections)

    assert top_one["summary"]["APc"] == 0.0
    assert "AR@1" in top_one["summary"]
    assert all_kept["summary"]["APc"] == pytest.approx(0.5, abs=1e-9)


def test_lvis_group_without_categories_is_none():
    dataset = lvis_dataset()
    dataset["categories"][0]["frequency"] = "c"  # no rare category left

    result = evaluate_lvis(dataset, perfect_detections(LVIS_BOXES))

    assert result["summary"]["APr"] is None
    assert result["summary"]["APc"] == pytest.approx(1.0, abs=1e-9)
    json.dumps(result, allow_nan=False)


# ------------------------------------------------------------------------------------------ dispatch


def test_annotation_format_detection():
    assert detect_annotation_format(coco_dataset()) == "coco"
    assert detect_annotation_format(lvis_dataset()) == "lvis"
    only_negative_lists = {"images": [{"id": 1, "neg_category_ids": []}], "categories": [{"id": 1}]}
    assert detect_annotation_format(only_negative_lists) == "lvis"


def test_evaluate_detections_dispatches_on_the_file_format(tmp_path):
    coco_file = tmp_path / "coco.json"
    coco_file.write_text(json.dumps(coco_dataset()))
    lvis_file = tmp_path / "lvis.json"
    lvis_file.write_text(json.dumps(lvis_dataset()))

    coco = evaluate_detections(coco_file, perfect_detections(COCO_BOXES))
    lvis = evaluate_detections(str(lvis_file), perfect_detections(LVIS_BOXES), max_dets=300)

    assert coco["format"] == "coco" and coco["summary"]["AP"] == pytest.approx(1.0, abs=1e-9)
    assert lvis["format"] == "lvis" and lvis["summary"]["APr"] == pytest.approx(1.0, abs=1e-9)
