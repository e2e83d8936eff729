"""Evaluation a chunk of categories at a time equals the official evaluators run in one pass.

``libra_cli.engine.metrics`` scores at most ``CHUNK_DETECTIONS`` detections at once and joins the chunks'
precision and recall tables before the official ``summarize``. Here the limit is made tiny, so every set
is cut into several chunks, and the numbers are compared with pycocotools' ``COCOeval`` and the lvis
package's ``LVISEval`` driven directly on the whole input, as their documentation shows: every summary
number and every per-category AP / AP50 must agree to 1e-9. The sets: the metric fixtures, and random
sets with crowd regions, ``ignore`` flags, sparse image and category ids, score ties, more detections
than maxDets, and the LVIS federated fields (negative and not-exhaustive categories, r / c / f).
"""

import copy
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from libra_cli.compat import import_lvis
from libra_cli.engine import metrics
from libra_cli.engine.metrics import evaluate_coco, evaluate_lvis
from libra_cli.engine.results_table import ResultsTable, category_chunks, results_table
from tests.engine.test_evaluators import noisy_detections
from tests.engine.test_metrics import COCO_BOXES, LVIS_BOXES, coco_dataset, lvis_dataset

TOLERANCE = 1e-9
LVIS_SUMMARY = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf", "AR@300", "ARs@300", "ARm@300")


@pytest.fixture
def chunk_counter(monkeypatch):
    """At most 6 detections and 40 (image, category) pairs a chunk; counts the chunks scored."""
    monkeypatch.setattr(metrics, "CHUNK_DETECTIONS", 6)
    monkeypatch.setattr(metrics, "CHUNK_CELLS", 40)
    monkeypatch.setattr(metrics, "ONE_PASS_CELLS", 40)
    counted = {"chunks": 0}
    original = metrics.category_chunks

    def counting(*args, **kwargs):
        chunks = original(*args, **kwargs)
        counted["chunks"] += len(chunks)
        return chunks

    monkeypatch.setattr(metrics, "category_chunks", counting)
    return counted


# ------------------------------------------------------------------------------------ references


def mean_valid(array: np.ndarray) -> float | None:
    valid = array[array > -1]
    return float(valid.mean()) if valid.size else None


def official_coco(dataset: dict, detections: list[dict]) -> dict:
    """pycocotools' documented use: COCO index, loadRes, COCOeval evaluate / accumulate / summarize."""
    gt = COCO()
    gt.dataset = copy.deepcopy(dataset)
    gt.createIndex()
    scorer = COCOeval(gt, gt.loadRes(copy.deepcopy(detections)), iouType="bbox")
    scorer.evaluate()
    scorer.accumulate()
    scorer.summarize()
    names = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
    precision = scorer.eval["precision"][:, :, :, 0, 2]  # area "all", maxDets 100
    return {
        "summary": {
            name: None if value == -1 else float(value) for name, value in zip(names, scorer.stats, strict=True)
        },
        "per_category": {
            category_id: (mean_valid(precision[:, :, k]), mean_valid(precision[0, :, k]))
            for k, category_id in enumerate(scorer.params.catIds)
        },
    }


def official_lvis(dataset: dict, detections: list[dict], tmp_path) -> dict:
    """The lvis package's documented use: LVIS(file), LVISResults(gt, results, max_dets=300), LVISEval.run."""
    LVIS, LVISResults, LVISEval = import_lvis()
    path = tmp_path / "lvis_gt.json"
    path.write_text(json.dumps(dataset))
    gt = LVIS(str(path))
    scorer = LVISEval(gt, LVISResults(gt, copy.deepcopy(detections), max_dets=300), iou_type="bbox")
    scorer.run()
    precision = scorer.eval["precision"][:, :, :, 0]  # area "all"
    return {
        "summary": {name: None if value == -1 else float(value) for name, value in scorer.get_results().items()},
        "per_category": {
            category_id: (mean_valid(precision[:, :, k]), mean_valid(precision[0, :, k]))
            for k, category_id in enumerate(scorer.params.cat_ids)
        },
    }


def assert_equal_to(reference: dict, ours: dict) -> None:
    assert set(ours["summary"]) == set(reference["summary"])
    for name, value in reference["summary"].items():
        if value is None:
            assert ours["summary"][name] is None, name
        else:
            assert ours["summary"][name] == pytest.approx(value, abs=TOLERANCE), name
    assert [row["category_id"] for row in ours["per_category"]] == list(reference["per_category"])
    for row in ours["per_category"]:
        expected = reference["per_category"][row["category_id"]]
        for ours_value, value in zip((row["AP"], row["AP50"]), expected, strict=True):
            assert (ours_value is None) == (value is None), row
            if value is not None:
                assert ours_value == pytest.approx(value, abs=TOLERANCE), row


# ------------------------------------------------------------------------------------ random sets


def random_coco(seed: int) -> tuple[dict, list[dict]]:
    """Sparse image and category ids, crowd regions, 'ignore' flags, tied scores, and one image-category
    pair with 130 detections (more than maxDets 100)."""
    rng = np.random.default_rng(seed)
    image_ids = [3, 10, 11, 40, 41, 97, 512, 1000]
    category_ids = [2, 5, 9, 17, 33, 34, 90]
    images = [{"id": i, "width": 320, "height": 240} for i in image_ids]
    annotations, boxes = [], []
    for image_id in image_ids:
        for _ in range(rng.integers(0, 6)):
            w, h = rng.uniform(5, 150, size=2)
            x, y = rng.uniform(0, 320 - w), rng.uniform(0, 240 - h)
            category_id = int(rng.choice(category_ids))
            crowd = int(rng.uniform() < 0.15)
            ann = {"id": len(annotations) + 1, "image_id": image_id, "category_id": category_id,
                   "bbox": [x, y, w, h], "area": w * h, "iscrowd": crowd}  # fmt: skip
            if rng.uniform() < 0.1:
                ann["ignore"] = 1
            annotations.append(ann)
            boxes.append((image_id, category_id, (x, y, w, h)))
    categories = [{"id": i, "name": f"c{i}"} for i in category_ids]
    detections = noisy_detections(boxes, rng, image_ids=image_ids, category_ids=category_ids, false_positives=60)
    for k in range(130):
        box = [float(v) for v in rng.uniform(0, 100, size=4)]
        detections.append({"image_id": 40, "category_id": 9, "bbox": box, "score": round(float(k % 7) / 7, 3)})
    return {"images": images, "annotations": annotations, "categories": categories}, detections


def random_lvis(seed: int) -> tuple[dict, list[dict]]:
    """Sparse ids, r / c / f categories, negative and not-exhaustive lists, detections of categories
    outside both (not counted), and one image with 340 detections (more than the 300 kept)."""
    rng = np.random.default_rng(seed)
    image_ids = [4, 8, 15, 16, 23, 42, 108]
    category_ids = [1, 3, 6, 10, 15, 21, 28, 36, 45]
    frequencies = ["r", "c", "f", "f", "c", "r", "f", "c", "f"]
    categories = [{"id": i, "name": f"c{i}", "frequency": f} for i, f in zip(category_ids, frequencies, strict=True)]
    images, annotations, boxes = [], [], []
    for image_id in image_ids:
        present = rng.choice(category_ids, size=3, replace=False)
        for category_id in present:
            for _ in range(rng.integers(1, 4)):
                w, h = rng.uniform(5, 150, size=2)
                x, y = rng.uniform(0, 320 - w), rng.uniform(0, 240 - h)
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(category_id),
                                    "bbox": [x, y, w, h], "area": w * h})  # fmt: skip
                boxes.append((image_id, int(category_id), (x, y, w, h)))
        absent = [int(c) for c in category_ids if c not in present]
        negatives = [int(c) for c in rng.choice(absent, size=3, replace=False)]
        not_exhaustive = [int(present[0])] if rng.uniform() < 0.5 else []
        images.append({"id": image_id, "width": 320, "height": 240, "neg_category_ids": negatives,
                       "not_exhaustive_category_ids": not_exhaustive})  # fmt: skip
    detections = noisy_detections(boxes, rng, image_ids=image_ids, category_ids=category_ids, false_positives=80)
    for k in range(340):
        box = [float(v) for v in rng.uniform(0, 100, size=4)]
        category_id = int(rng.choice(category_ids))
        detections.append({"image_id": 42, "category_id": category_id, "bbox": box, "score": round(k / 400, 3)})
    return {"images": images, "annotations": annotations, "categories": categories}, detections


# ------------------------------------------------------------------------------------ COCO


@pytest.mark.parametrize("evaluator", ["official", "faster"])
def test_coco_in_chunks_equals_cocoeval_on_the_fixture(evaluator, chunk_counter, tmp_path):
    rng = np.random.default_rng(5)
    dataset = coco_dataset()
    detections = noisy_detections(COCO_BOXES, rng, image_ids=[1, 2, 5], category_ids=[3, 7, 12], false_positives=20)
    ours = evaluate_coco(copy.deepcopy(dataset), detections, evaluator=evaluator)
    assert chunk_counter["chunks"] >= 2  # the limit of 6 detections really cut the categories
    assert_equal_to(official_coco(dataset, detections), ours)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("evaluator", ["official", "faster"])
def test_coco_in_chunks_equals_cocoeval_on_random_sets(seed, evaluator, chunk_counter):
    dataset, detections = random_coco(seed)
    ours = evaluate_coco(copy.deepcopy(dataset), detections, evaluator=evaluator)
    assert chunk_counter["chunks"] >= 3
    assert_equal_to(official_coco(dataset, detections), ours)


# ------------------------------------------------------------------------------------ LVIS


@pytest.mark.parametrize("evaluator", ["official", "faster"])
def test_lvis_in_chunks_equals_lviseval_on_the_fixture(evaluator, chunk_counter, tmp_path):
    rng = np.random.default_rng(7)
    dataset = lvis_dataset()
    category_ids = [c["id"] for c in dataset["categories"]]
    image_ids = [image["id"] for image in dataset["images"]]
    detections = noisy_detections(LVIS_BOXES, rng, image_ids=image_ids, category_ids=category_ids, false_positives=30)
    ours = evaluate_lvis(copy.deepcopy(dataset), detections, evaluator=evaluator)
    assert chunk_counter["chunks"] >= 2
    assert_equal_to(official_lvis(dataset, detections, tmp_path), ours)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("evaluator", ["official", "faster"])
def test_lvis_in_chunks_equals_lviseval_on_random_sets(seed, evaluator, chunk_counter, tmp_path):
    dataset, detections = random_lvis(seed)
    ours = evaluate_lvis(copy.deepcopy(dataset), detections, evaluator=evaluator)
    assert chunk_counter["chunks"] >= 3
    reference = official_lvis(dataset, detections, tmp_path)
    assert reference["summary"]["APr"] is not None and reference["summary"]["APf"] is not None  # groups exercised
    assert_equal_to(reference, ours)


def test_lvis_ignore_flags_in_chunks_equal_lviseval(chunk_counter, tmp_path):
    # 'ignore' is read only by the lvis package (auto keeps it on the official evaluator).
    dataset, detections = random_lvis(4)
    for ann in dataset["annotations"][::5]:
        ann["ignore"] = 1
    ours = evaluate_lvis(copy.deepcopy(dataset), detections, evaluator="auto")
    assert ours["evaluator"] == "lvis" and chunk_counter["chunks"] >= 3
    assert_equal_to(official_lvis(dataset, detections, tmp_path), ours)


# ------------------------------------------------------------------------------------ the pieces


def test_category_chunks_cut_consecutive_runs_within_the_limits():
    # Five categories visited in the order 4, 0, 1, 2, 3 (sorted ids); rows and images of each:
    rows = np.array([4, 0, 3, 9, 2])
    images_of = [np.array([0, 1]), np.array([], dtype=np.int64), np.array([1]), np.array([2, 3]), np.array([0])]
    # Rows ≤ 6: [4] 2 rows, + [0] 4 → 6, + [1] 0 → 6, + [2] 3 → 9 > 6: a new chunk; [3] 9 alone exceeds: its own.
    chunks = category_chunks(images_of, rows, [4, 0, 1, 2, 3], max_rows=6, max_cells=100)
    assert [chunk.categories for chunk in chunks] == [[4, 0, 1], [2], [3]]
    # The images of each chunk: the union of its categories' images.
    assert [chunk.images.tolist() for chunk in chunks] == [[0, 1], [1], [2, 3]]
    # Pairs ≤ 4: [4] 1 image × 1, + [0] images {0, 1} × 2 = 4, + [1] {0, 1} × 3 = 6 > 4: new chunk;
    # [1] + [2]: {1} × 2 = 2; + [3]: {1, 2, 3} × 3 = 9 > 4: new chunk.
    chunks = category_chunks(images_of, rows, [4, 0, 1, 2, 3], max_rows=100, max_cells=4)
    assert [chunk.categories for chunk in chunks] == [[4, 0], [1, 2], [3]]
    # Everything fits: one chunk.
    assert len(category_chunks(images_of, rows, [4, 0, 1, 2, 3], max_rows=100, max_cells=100)) == 1


def test_top_scoring_per_image_keeps_the_best_with_ties_in_given_order():
    # Image 0 has scores 0.2, 0.9, 0.5, 0.9 (rows 0, 2, 3, 5), image 1 has 0.1, 0.7 (rows 1, 4).
    table = ResultsTable(
        image_index=np.array([0, 1, 0, 0, 1, 0]),
        category_index=np.zeros(6, dtype=np.int64),
        score=np.array([0.2, 0.1, 0.9, 0.5, 0.7, 0.9]),
        bbox=np.arange(24, dtype=float).reshape(6, 4),
    )
    kept = table.top_scoring_per_image(2)
    # Image 0 first (it appears first): the two 0.9s, row 2 before row 5 (given order); then image 1: 0.7, 0.1.
    assert kept.score.tolist() == [0.9, 0.9, 0.7, 0.1]
    assert kept.bbox[:, 0].tolist() == [8.0, 20.0, 16.0, 4.0]  # rows 2, 5, 4, 1 (x = 4 × row)


def test_results_table_names_the_first_bad_record():
    dataset = coco_dataset()
    good = {"image_id": 1, "category_id": 3, "bbox": [1, 2, 3, 4], "score": 0.5}
    table = results_table([good, {**good, "score": "0.25"}], dataset)  # a numeric string reads as a number
    assert table.score.tolist() == [0.5, 0.25]
    with pytest.raises(metrics.LibraError, match=r"detections\[1\]: category_id 99 is not a category"):
        results_table([good, {**good, "category_id": 99}, {**good, "image_id": 77}], dataset)
    with pytest.raises(metrics.LibraError, match=r"detections\[0\]: image_id \[1\] is not an image"):
        results_table([{**good, "image_id": [1]}], dataset)
