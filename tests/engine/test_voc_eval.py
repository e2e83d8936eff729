"""Pascal VOC AP against values worked out by hand: 11-point and area AP, difficult boxes, duplicates."""

from __future__ import annotations

import numpy as np
import pytest

from libra_cli.data.voc import read_voc_spec
from libra_cli.engine.metrics import evaluate_detections
from libra_cli.engine.voc_eval import ap_11_point, ap_area, box_iou_xyxy, match_detections
from tests.data.test_voc import write_year

# One class, two images. Ground truth (xywh, continuous pixels):
#   image 1: g1 [0, 0, 10, 10], g2 [20, 20, 10, 10], g3 [40, 40, 10, 10] difficult
#   image 2: g4 [0, 0, 10, 10]
# → 3 non-difficult boxes (npos = 3).
GROUND_TRUTH = {
    "info": {"format": "voc"},
    "images": [{"id": 1, "width": 60, "height": 60}, {"id": 2, "width": 60, "height": 60}],
    "categories": [{"id": 1, "name": "dog"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "difficult": 0},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [20, 20, 10, 10], "difficult": 0},
        {"id": 3, "image_id": 1, "category_id": 1, "bbox": [40, 40, 10, 10], "difficult": 1},
        {"id": 4, "image_id": 2, "category_id": 1, "bbox": [0, 0, 10, 10], "difficult": 0},
    ],
}
# Detections, by descending score:
#   d1 0.9  image 1 [0, 0, 10, 10]   IoU 1 with g1                 → TP (takes g1)
#   d2 0.8  image 1 [0, 0, 10, 9]    IoU 90/100 with g1, taken     → FP (duplicate)
#   d3 0.7  image 1 [40, 40, 10, 10] IoU 1 with difficult g3       → neither
#   d5 0.65 image 1 [20, 20, 10, 11] IoU 100/110 with g2           → TP
#   d4 0.6  image 2 [5, 0, 10, 10]   IoU 50/150 = 1/3 with g4      → FP (poor overlap)
DETECTIONS = [
    {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9},
    {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 9], "score": 0.8},
    {"image_id": 1, "category_id": 1, "bbox": [40, 40, 10, 10], "score": 0.7},
    {"image_id": 2, "category_id": 1, "bbox": [5, 0, 10, 10], "score": 0.6},
    {"image_id": 1, "category_id": 1, "bbox": [20, 20, 10, 11], "score": 0.65},
]
# Counted detections TP, FP, TP, FP: cumulative TP 1, 1, 2, 2 and FP 0, 1, 1, 2, so
#   recall    1/3, 1/3, 2/3, 2/3
#   precision 1,   1/2, 2/3, 1/2
# 11-point: t = 0, .1, .2, .3 → max precision at recall ≥ t = 1; t = .4, .5, .6 → 2/3 (the last two points);
#   t = .7 … 1 → recall never reaches t, 0.  AP07 = (4 · 1 + 3 · 2/3) / 11 = 6/11.
# Area: envelope (best precision at this recall or beyond) 1, 2/3, 2/3, 1/2; recall steps 0 → 1/3 at 1 and
#   1/3 → 2/3 at 2/3.  AP = 1/3 · 1 + 1/3 · 2/3 = 5/9.
AP_07 = 6 / 11
AP_AREA = 5 / 9


def test_precision_recall_points_and_both_aps_match_the_hand_computation():
    result = evaluate_detections(GROUND_TRUTH, DETECTIONS)
    assert result["format"] == "voc"
    assert result["summary"]["mAP_07"] == pytest.approx(AP_07)
    assert result["summary"]["mAP"] == pytest.approx(AP_AREA)
    (row,) = result["per_category"]
    assert row["AP_voc07"] == pytest.approx(AP_07) and row["AP_voc"] == pytest.approx(AP_AREA)
    assert row["num_gt"] == 3 and row["num_difficult"] == 1
    # The COCO-style numbers stay (AP is the headline). At IoU 0.5 COCOeval sees the same TP, FP, TP, FP (g3 an
    # iscrowd region that d3 lies in); its envelope 1, 2/3, 2/3, 1/2 read at recall 0, .01, …, 1 gives 1 at the
    # 34 points ≤ 1/3, 2/3 at the 33 points .34 … .66, 0 beyond 2/3: AP50 = (34 + 33 · 2/3) / 101 = 56/101.
    assert result["summary"]["AP50"] == pytest.approx(56 / 101)
    assert "AP" in result["summary"]


def test_the_matching_sequence_ignores_the_difficult_match_and_counts_the_duplicate():
    ground_truth = {
        1: (np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], float), np.array([False, False, True])),
        2: (np.array([[0, 0, 10, 10]], float), np.array([False])),
    }
    detections = [(d["image_id"], d["score"], _xyxy(d["bbox"])) for d in DETECTIONS]
    tp, fp = match_detections(detections, ground_truth)
    # d3 (on the difficult box) is left out: four counted detections, not five.
    assert tp.tolist() == [1, 0, 1, 0] and fp.tolist() == [0, 1, 0, 1]


def test_a_detection_on_a_difficult_box_is_neither_hit_nor_miss():
    without_d3 = [d for d in DETECTIONS if d["bbox"] != [40, 40, 10, 10]]
    result = evaluate_detections(GROUND_TRUTH, without_d3)
    assert result["summary"]["mAP"] == pytest.approx(AP_AREA)  # unchanged: d3 was no FP
    # Were g3 not difficult, d3 would be a TP and npos 4: TP, FP, TP, TP, FP → recall 1/4, 1/4, 2/4, 3/4, 3/4,
    # precision 1, 1/2, 2/3, 3/4, 3/5; envelope 1, 3/4, 3/4, 3/4, 3/5; area = 1/4 · 1 + 2/4 · 3/4 = 5/8.
    plain = {**GROUND_TRUTH, "annotations": [{**a, "difficult": 0} for a in GROUND_TRUTH["annotations"]]}
    assert evaluate_detections(plain, DETECTIONS)["summary"]["mAP"] == pytest.approx(5 / 8)


def test_iou_is_the_devkits_with_its_plus_one_and_half_overlap_is_not_a_match():
    # Devkit boxes (1-based inclusive) GT (1, 1, 10, 10) and detection (6, 1, 15, 10): overlap width
    # min(10, 15) − max(1, 6) + 1 = 5, so 50 / (100 + 100 − 50) = 1/3. Read as [xmin − 1, xmax]: [0, 10] and [5, 15].
    assert box_iou_xyxy(np.array([5.0, 0, 15, 10]), np.array([[0.0, 0, 10, 10]]))[0] == pytest.approx(1 / 3)
    # IoU exactly 0.5 ([0, 0, 10, 5] in [0, 0, 10, 10]) is no match: the devkit wants IoU > 0.5.
    tp, fp = match_detections([(1, 0.9, (0, 0, 10, 5))], {1: (np.array([[0.0, 0, 10, 10]]), np.array([False]))})
    assert tp.tolist() == [0] and fp.tolist() == [1]


def test_ap_formulas_on_a_perfect_and_an_empty_ranking():
    # All three boxes found first: precision 1 at recall 1/3, 2/3, 1 → both APs are 1.
    recall, precision = np.array([1 / 3, 2 / 3, 1.0]), np.ones(3)
    assert ap_11_point(recall, precision) == pytest.approx(1.0) and ap_area(recall, precision) == pytest.approx(1.0)
    # No detection: every AP is 0 (the class has ground truth to find).
    result = evaluate_detections(GROUND_TRUTH, [])
    assert result["summary"]["mAP"] == 0.0 and result["summary"]["mAP_07"] == 0.0


def test_a_class_without_ground_truth_has_no_ap_and_stays_out_of_the_mean():
    ground_truth = {**GROUND_TRUTH, "categories": [*GROUND_TRUTH["categories"], {"id": 2, "name": "cat"}]}
    result = evaluate_detections(ground_truth, DETECTIONS)
    rows = {row["name"]: row for row in result["per_category"]}
    assert rows["cat"]["AP_voc"] is None and rows["cat"]["AP_voc07"] is None
    assert result["summary"]["mAP"] == pytest.approx(AP_AREA)


def test_ground_truth_read_from_voc_xml_scores_as_worked_out(tmp_path):
    # The same boxes written as the devkit writes them: [x, y, w, h] → (x + 1, y + 1, x + w, y + h).
    root = tmp_path / "VOCdevkit"
    images = {
        "000001": (60, 60, [("dog", 1, 1, 10, 10, 0, 0), ("dog", 21, 21, 30, 30, 0, 0), ("dog", 41, 41, 50, 50, 1, 0)]),
        "000002": (60, 60, [("dog", 1, 1, 10, 10, 0, 0)]),
    }
    write_year(root, "VOC2007", images, {"test": ["000001", "000002"]}, classes=["dog"])
    dataset = read_voc_spec(root / "VOC2007")
    ids = {"000001": 20070000000001, "000002": 20070000000002}
    detections = [{**d, "image_id": ids[f"00000{d['image_id']}"]} for d in DETECTIONS]
    result = evaluate_detections(dataset, detections)
    assert result["summary"]["mAP"] == pytest.approx(AP_AREA)
    assert result["summary"]["mAP_07"] == pytest.approx(AP_07)


def _xyxy(bbox: list[float]) -> tuple[float, float, float, float]:
    x, y, w, h = bbox
    return (x, y, x + w, y + h)
