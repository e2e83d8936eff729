"""faster-coco-eval against the official evaluators (pycocotools for COCO, the lvis package for LVIS).

libra scores box AP with faster-coco-eval where it reproduces the official numbers (``evaluator="auto"``),
so every case here scores the same input with ``evaluator="official"`` and ``evaluator="faster"`` and
requires every summary number and every per-category AP / AP50 to agree within 1e-6 (a number missing in
one must be missing in the other). The inputs cover what the two implementations could treat differently:
crowd regions (hit and missed), sparse category ids, empty detections, boxes exactly on the area-range
limits, score ties, more detections than maxDets, categories and images without ground truth, the LVIS
federated rules (negative and not-exhaustive categories), the per-image limit, and the inputs where the
official evaluators read a field the other does not (LVIS ``iscrowd`` / ``ignore``).
"""

import copy

import numpy as np
import pytest

from libra_cli.config import RunConfig, validate
from libra_cli.engine.metrics import _faster_mismatch, evaluate_coco, evaluate_detections, evaluate_lvis
from libra_cli.errors import LibraError
from tests.engine.test_metrics import COCO_BOXES, LVIS_BOXES, coco_dataset, lvis_dataset, perfect_detections

TOLERANCE = 1e-6


def assert_same_numbers(official: dict, faster: dict) -> None:
    assert list(official["summary"]) == list(faster["summary"])
    for name, value in official["summary"].items():
        if value is None:
            assert faster["summary"][name] is None, name
        else:
            assert faster["summary"][name] == pytest.approx(value, abs=TOLERANCE), name
    assert len(official["per_category"]) == len(faster["per_category"])
    for ours, theirs in zip(official["per_category"], faster["per_category"], strict=True):
        assert ours["category_id"] == theirs["category_id"] and ours["num_gt"] == theirs["num_gt"]
        for name in ("AP", "AP50"):
            if ours[name] is None:
                assert theirs[name] is None, (ours["category_id"], name)
            else:
                assert theirs[name] == pytest.approx(ours[name], abs=TOLERANCE), (ours["category_id"], name)


def compare(evaluate, dataset: dict, detections: list[dict], **options) -> dict:
    """Score with both implementations (each on its own copies) and check they agree; the official result."""
    official = evaluate(copy.deepcopy(dataset), copy.deepcopy(detections), evaluator="official", **options)
    faster = evaluate(copy.deepcopy(dataset), copy.deepcopy(detections), evaluator="faster", **options)
    assert_same_numbers(official, faster)
    return official


def noisy_detections(boxes, rng, *, image_ids, category_ids, false_positives: int, tied: bool = False) -> list[dict]:
    """A jittered hit and a looser duplicate of every box, plus background false positives; with ``tied``
    every score is 0.5, so the ranking is decided by the implementations' tie-breaking alone."""
    detections = []
    for image_id, category_id, (x, y, w, h) in boxes:
        for spread in (0.1, 0.25):
            dx, dy, dw, dh = rng.uniform(-spread, spread, size=4) * [w, h, w, h]
            box = [float(x + dx), float(y + dy), float(max(1.0, w + dw)), float(max(1.0, h + dh))]
            detections.append({"image_id": image_id, "category_id": category_id, "bbox": box, "score": 0.0})
    for _ in range(false_positives):
        corner, size = rng.uniform(0, 300, size=2), rng.uniform(4, 120, size=2)
        detections.append(
            {
                "image_id": int(rng.choice(image_ids)),
                "category_id": int(rng.choice(category_ids)),
                "bbox": [float(v) for v in (*corner, *size)],
                "score": 0.0,
            }
        )
    for detection in detections:
        detection["score"] = 0.5 if tied else round(float(rng.uniform()), 3)  # 3 decimals: some ties
    return detections


COCO_IMAGES, COCO_CATEGORY_IDS = [1, 2, 5], [3, 7, 12]


# ---------------------------------------------------------------------------------------------- COCO


def test_coco_perfect_empty_and_noisy_detections_agree():
    rng = np.random.default_rng(7)
    dataset = coco_dataset()
    perfect = compare(evaluate_coco, dataset, perfect_detections(COCO_BOXES))
    assert perfect["summary"]["AP"] == pytest.approx(1.0)  # the construction's value (test_metrics)
    empty = compare(evaluate_coco, dataset, [])
    assert empty["summary"]["AP"] == 0.0
    for seed_offset in range(3):
        detections = noisy_detections(
            COCO_BOXES, rng, image_ids=COCO_IMAGES, category_ids=COCO_CATEGORY_IDS, false_positives=6 + seed_offset
        )
        noisy = compare(evaluate_coco, dataset, detections)
        assert 0.0 < noisy["summary"]["AP"] < 1.0  # matching was exercised: neither all hits nor all misses


def test_coco_score_ties_and_more_detections_than_max_dets_agree():
    rng = np.random.default_rng(11)
    dataset = coco_dataset()
    common = {"image_ids": COCO_IMAGES, "category_ids": COCO_CATEGORY_IDS}
    compare(evaluate_coco, dataset, noisy_detections(COCO_BOXES, rng, false_positives=12, tied=True, **common))
    # 400 false positives over 3 images: more than maxDets 100 per image and category for some pairs.
    compare(evaluate_coco, dataset, noisy_detections(COCO_BOXES, rng, false_positives=400, **common))


def test_coco_crowd_regions_hit_and_missed_agree():
    rng = np.random.default_rng(3)
    dataset = coco_dataset()  # image 5 holds a category-7 crowd region at [300, 300, 80, 60]
    detections = noisy_detections(
        COCO_BOXES, rng, image_ids=COCO_IMAGES, category_ids=COCO_CATEGORY_IDS, false_positives=4
    )
    # Several detections inside the crowd region: matched to it, hence ignored (a crowd box can be
    # matched any number of times), never false positives.
    detections += [
        {"image_id": 5, "category_id": 7, "bbox": [300.0 + 12 * i, 305.0, 30.0, 40.0], "score": 0.9 - 0.1 * i}
        for i in range(4)
    ]
    compare(evaluate_coco, dataset, detections)
    # A dataset-provided ``ignore`` flag is overridden by ``iscrowd`` in pycocotools; it must be in both.
    flagged = copy.deepcopy(dataset)
    flagged["annotations"][2]["ignore"] = 1
    compare(evaluate_coco, flagged, detections)


def test_coco_boxes_on_the_area_range_limits_and_missing_fields_agree():
    rng = np.random.default_rng(5)
    # Areas exactly 32² and 96²: both limits are inclusive in COCOeval, so each box is in two ranges.
    boxes = [(1, 3, [10.0, 10.0, 32.0, 32.0]), (1, 7, [50.0, 50.0, 96.0, 96.0])] + COCO_BOXES[2:]
    dataset = coco_dataset()
    for ann, (_, _, bbox) in zip(dataset["annotations"][:2], boxes[:2], strict=True):
        ann["bbox"], ann["area"] = list(bbox), bbox[2] * bbox[3]
    common = {"image_ids": COCO_IMAGES, "category_ids": COCO_CATEGORY_IDS}
    compare(evaluate_coco, dataset, noisy_detections(boxes, rng, false_positives=5, **common))
    bare = coco_dataset(with_crowd=False, with_iscrowd_field=False, with_area=False)
    compare(evaluate_coco, bare, noisy_detections(COCO_BOXES, rng, false_positives=5, **common))


def test_coco_categories_and_images_without_ground_truth_agree():
    rng = np.random.default_rng(9)
    dataset = coco_dataset()
    dataset["categories"].append({"id": 40, "name": "never annotated"})
    dataset["images"].append({"id": 9, "width": 400, "height": 400})
    detections = noisy_detections(
        COCO_BOXES, rng, image_ids=[1, 2, 5, 9], category_ids=[3, 7, 12, 40], false_positives=10
    )
    result = compare(evaluate_coco, dataset, detections)
    assert result["per_category"][-1]["AP"] is None  # category 40 has nothing to find


# ---------------------------------------------------------------------------------------------- LVIS

LVIS_IMAGES, LVIS_CATEGORY_IDS = [1, 2, 3], [1, 4, 9]


def test_lvis_perfect_empty_and_noisy_detections_agree():
    rng = np.random.default_rng(17)
    dataset = lvis_dataset()
    assert compare(evaluate_lvis, dataset, perfect_detections(LVIS_BOXES))["summary"]["APr"] == pytest.approx(1.0)
    assert compare(evaluate_lvis, dataset, [])["summary"]["AP"] == 0.0
    common = {"image_ids": LVIS_IMAGES, "category_ids": LVIS_CATEGORY_IDS}
    for false_positives in (5, 10, 200):
        compare(evaluate_lvis, dataset, noisy_detections(LVIS_BOXES, rng, false_positives=false_positives, **common))
    compare(evaluate_lvis, dataset, noisy_detections(LVIS_BOXES, rng, false_positives=10, tied=True, **common))


def test_lvis_federated_rules_agree():
    # The detections of test_metrics' federated test, whose hand-worked values are APr 1/2 and APf 1.
    detections = perfect_detections(LVIS_BOXES)
    detections[0]["score"] = 0.5
    for image_id, category_id in ((3, 1), (2, 9), (2, 1)):  # not counted, not exhaustive, negative
        detections.append(
            {"image_id": image_id, "category_id": category_id, "bbox": [300.0, 300.0, 30.0, 30.0], "score": 0.99}
        )
    result = compare(evaluate_lvis, lvis_dataset(), detections)
    assert result["summary"]["APr"] == pytest.approx(0.5) and result["summary"]["APf"] == pytest.approx(1.0)


def test_lvis_per_image_limit_agrees():
    rng = np.random.default_rng(23)
    detections = noisy_detections(
        LVIS_BOXES, rng, image_ids=LVIS_IMAGES, category_ids=LVIS_CATEGORY_IDS, false_positives=30
    )
    for max_dets in (1, 2, 5):
        result = compare(evaluate_lvis, lvis_dataset(), detections, max_dets=max_dets)
        assert f"AR@{max_dets}" in result["summary"]


def test_lvis_crowd_flag_is_read_as_lvis_does():
    # lvis has no crowd boxes: it matches an annotation with iscrowd 1 like any other, and so must libra's
    # faster path (faster-coco-eval on its own would ignore it).
    rng = np.random.default_rng(29)
    dataset = lvis_dataset()
    dataset["annotations"][0]["iscrowd"] = 1
    detections = noisy_detections(
        LVIS_BOXES, rng, image_ids=LVIS_IMAGES, category_ids=LVIS_CATEGORY_IDS, false_positives=10
    )
    compare(evaluate_lvis, dataset, detections)


# ---------------------------------------------------------------------------------------------- choice


def test_lvis_ignore_flag_keeps_auto_on_the_official_evaluator():
    rng = np.random.default_rng(31)
    dataset = lvis_dataset()
    dataset["annotations"][0]["ignore"] = 1
    detections = noisy_detections(
        LVIS_BOXES, rng, image_ids=LVIS_IMAGES, category_ids=LVIS_CATEGORY_IDS, false_positives=10
    )
    official = evaluate_lvis(copy.deepcopy(dataset), copy.deepcopy(detections), evaluator="official")
    auto = evaluate_lvis(copy.deepcopy(dataset), copy.deepcopy(detections), evaluator="auto")
    assert auto == official
    with pytest.raises(LibraError, match=r"annotations\[0\] has 'ignore'"):
        evaluate_lvis(dataset, detections, evaluator="faster")


def test_auto_uses_faster_exactly_where_it_was_checked():
    assert _faster_mismatch("bbox", coco_dataset(), "coco") is None
    assert _faster_mismatch("bbox", lvis_dataset(), "lvis") is None
    assert "iou_type 'segm'" in _faster_mismatch("segm", coco_dataset(), "coco")
    string_ids = coco_dataset()
    string_ids["images"][1]["id"] = "2"
    assert _faster_mismatch("bbox", string_ids, "coco") == "ground truth images[1] has the non-integer id '2'"


def test_unknown_evaluator_is_a_libra_error_naming_the_value():
    with pytest.raises(LibraError, match=r"evaluator: 'fastest' is not one of auto, official, faster"):
        evaluate_detections(coco_dataset(), [], evaluator="fastest")


def test_evaluate_detections_passes_the_choice_on():
    # Through the dispatcher the two implementations still agree, on both formats.
    rng = np.random.default_rng(37)
    coco = noisy_detections(COCO_BOXES, rng, image_ids=COCO_IMAGES, category_ids=COCO_CATEGORY_IDS, false_positives=5)
    assert_same_numbers(
        evaluate_detections(coco_dataset(), copy.deepcopy(coco), evaluator="official"),
        evaluate_detections(coco_dataset(), copy.deepcopy(coco), evaluator="faster"),
    )
    lvis = noisy_detections(LVIS_BOXES, rng, image_ids=LVIS_IMAGES, category_ids=LVIS_CATEGORY_IDS, false_positives=5)
    assert_same_numbers(
        evaluate_detections(lvis_dataset(), copy.deepcopy(lvis), evaluator="official"),
        evaluate_detections(lvis_dataset(), copy.deepcopy(lvis), evaluator="faster"),
    )


def test_config_rejects_an_unknown_evaluator_naming_the_field():
    config = RunConfig()
    config.train.evaluator = "fastest"
    with pytest.raises(
        LibraError, match=r"train\.evaluator \(--evaluator\): must be one of auto, official, faster; got 'fastest'"
    ):
        validate(config)
