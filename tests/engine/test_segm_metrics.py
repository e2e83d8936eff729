"""Mask AP: compressed-RLE segmentation results, COCO / LVIS ``iou_type="segm"``, and a Mask R-CNN run's
``eval/segmentations.json`` and ``"segm"`` metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from typer.testing import CliRunner

from libra_cli.cli import app
from libra_cli.engine.evaluate import encode_masks
from libra_cli.engine.metrics import evaluate_coco, evaluate_detections, evaluate_lvis
from libra_cli.errors import LibraError
from tests.conftest import tiny_config

# Two 40×40 images. Image 1: a 10×10 square (category 1, as a polygon) and an L-shape (category 2, as an
# uncompressed RLE); image 2: a triangle (category 1, as a polygon).
H = W = 40


def _l_shape() -> np.ndarray:
    """The L: rows 20–29 of columns 0–5 plus rows 27–29 of columns 6–9 → 60 + 12 = 72 pixels in a 10×10 box."""
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[20:30, 0:6] = 1
    mask[27:30, 6:10] = 1
    return mask


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE (column-major run lengths, starting with a run of zeros)."""
    flat = mask.flatten(order="F")
    counts, current, run = [], 0, 0
    for value in flat:
        if value == current:
            run += 1
        else:
            counts.append(run)
            current, run = value, 1
    counts.append(run)
    return {"size": [H, W], "counts": counts}


def ground_truth(lvis: bool = False) -> dict:
    categories = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    if lvis:
        categories = [{**c, "frequency": "f"} for c in categories]
    images = [{"id": 1, "width": W, "height": H, "file_name": "1.png"}, {"id": 2, "width": W, "height": H}]
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10], "area": 100.0,
         "segmentation": [[2, 2, 12, 2, 12, 12, 2, 12]], "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [0, 20, 10, 10], "area": 72.0,
         "segmentation": _uncompressed_rle(_l_shape()), "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 200.0,
         "segmentation": [[10, 10, 30, 30, 10, 30]], "iscrowd": 0},
    ]  # fmt: skip
    if lvis:
        images = [{**image, "neg_category_ids": [], "not_exhaustive_category_ids": []} for image in images]
    return {"images": images, "annotations": annotations, "categories": categories}


def gt_masks(gt: dict) -> list[np.ndarray]:
    """Each annotation's mask, decoded with pycocotools from its polygons or RLE."""
    masks = []
    for ann in gt["annotations"]:
        segmentation = ann["segmentation"]
        rles = mask_utils.frPyObjects(segmentation, H, W)
        masks.append(mask_utils.decode(mask_utils.merge(rles) if isinstance(rles, list) else rles))
    return masks


def as_results(gt: dict, masks: list[np.ndarray]) -> list[dict]:
    """Segmentation results: one per annotation, with ``masks`` as probabilities through ``encode_masks``."""
    results = []
    for ann, mask in zip(gt["annotations"], masks, strict=True):
        (rle,) = encode_masks(torch.from_numpy(mask).float()[None, None])
        results.append(
            {"image_id": ann["image_id"], "category_id": ann["category_id"], "segmentation": rle, "score": 1.0}
        )
    return results


def test_masks_round_trip_through_compressed_rle():
    probabilities = torch.zeros(2, 1, 6, 5)
    probabilities[0, 0, 1:4, 2:5] = 0.9  # a 3×3 block
    probabilities[0, 0, 5, 0] = 0.5  # exactly 0.5 is not above the threshold
    probabilities[1, 0, :, 0] = 0.51  # the first column
    rles = encode_masks(probabilities)
    assert [rle["size"] for rle in rles] == [[6, 5], [6, 5]]
    assert all(isinstance(rle["counts"], str) for rle in rles)
    decoded = [
        mask_utils.decode({"size": r["size"], "counts": r["counts"].encode()}) for r in json.loads(json.dumps(rles))
    ]
    expected = np.zeros((2, 6, 5), dtype=np.uint8)
    expected[0, 1:4, 2:5] = 1
    expected[1, :, 0] = 1
    np.testing.assert_array_equal(np.stack(decoded), expected)
    # column-major runs of the first column: 6 ones then 24 zeros (COCO's RLE starts with a zero run)
    assert mask_utils.area({"size": [6, 5], "counts": rles[1]["counts"].encode()}) == 6
    assert encode_masks(torch.zeros(0, 1, 6, 5)) == []


def test_perfect_mask_detections_score_mask_ap_one():
    gt = ground_truth()
    metrics = evaluate_coco(gt, as_results(gt, gt_masks(gt)), iou_type="segm")
    assert metrics["summary"]["AP"] == pytest.approx(1.0)
    assert [row["AP"] for row in metrics["per_category"]] == pytest.approx([1.0, 1.0])
    lvis = ground_truth(lvis=True)
    lvis_metrics = evaluate_lvis(lvis, as_results(lvis, gt_masks(lvis)), iou_type="segm")
    assert lvis_metrics["summary"]["AP"] == pytest.approx(1.0)
    assert lvis_metrics["summary"]["APf"] == pytest.approx(1.0)
    via_dispatch = evaluate_detections(gt, as_results(gt, gt_masks(gt)), iou_type="segm")
    assert via_dispatch["summary"] == metrics["summary"]


def test_mask_ap_matches_by_mask_iou_not_by_box():
    """Each detection is its GT's box filled in. Box IoU would be 1; mask IoU is 100/100 for the square,
    72/100 for the L and about 1/2 (the triangle's share of its box, measured below) for the triangle."""
    gt = ground_truth()
    masks = gt_masks(gt)
    filled = []
    for ann in gt["annotations"]:
        x, y, w, h = ann["bbox"]
        box = np.zeros((H, W), dtype=np.uint8)
        box[y : y + h, x : x + w] = 1
        filled.append(box)
    ious = [float((m & f).sum()) / float((m | f).sum()) for m, f in zip(masks, filled, strict=True)]
    assert ious[0] == 1.0 and ious[1] == 0.72
    metrics = evaluate_coco(gt, as_results(gt, filled), iou_type="segm")
    per_category = {row["category_id"]: row for row in metrics["per_category"]}
    # Category 2 (the L, IoU 0.72): matched at the thresholds 0.50 … 0.70 (5 of 10) with precision 1.
    assert per_category[2]["AP"] == pytest.approx(5 / 10)
    assert per_category[2]["AP50"] == pytest.approx(1.0)
    # Category 1: the square matches at every threshold, the triangle at those up to its IoU; where it
    # does not, one of the two GT masks is found first (image 1 precedes image 2 at equal scores):
    # precision 1 up to recall 0.5, then nothing — 51 of the 101 recall points.
    thresholds = [0.5 + 0.05 * k for k in range(10)]
    matched = sum(1 for t in thresholds if ious[2] >= t + 1e-9)
    assert 0.5 < ious[2] < 0.6 and 1 <= matched <= 2
    assert per_category[1]["AP"] == pytest.approx((matched * 1.0 + (10 - matched) * 51 / 101) / 10)
    box_metrics = evaluate_coco(
        gt,
        [
            {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
            for a in gt["annotations"]
        ],
    )
    assert box_metrics["summary"]["AP"] == pytest.approx(1.0)


def test_mask_ap_of_no_detections_is_zero_and_missing_segmentation_is_an_error():
    gt = ground_truth()
    assert evaluate_coco(gt, [], iou_type="segm")["summary"]["AP"] == 0.0
    assert evaluate_lvis(ground_truth(lvis=True), [], iou_type="segm")["summary"]["AP"] == 0.0
    del gt["annotations"][1]["segmentation"]
    with pytest.raises(LibraError, match=r"annotations\[1\]: mask AP needs a 'segmentation'"):
        evaluate_coco(gt, [], iou_type="segm")
    with pytest.raises(LibraError, match=r"detections\[0\]: segmentation must be a compressed RLE"):
        evaluate_coco(
            ground_truth(), [{"image_id": 1, "category_id": 1, "segmentation": [[0, 0]], "score": 1}], iou_type="segm"
        )


@pytest.mark.slow
def test_libra_eval_reports_the_mask_ap_of_its_segmentations_file(tiny_benchmark, tmp_path, monkeypatch):
    """Train a tiny Mask R-CNN two iterations, then `libra eval`: its "segm" metrics are COCOeval's on
    the ``segmentations.json`` it wrote (pycocotools run directly), next to the unchanged box metrics."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from libra_cli.data.build import benchmark_paths
    from libra_cli.engine.train import train

    # Two 16-channel mask convolutions instead of torchvision's four of 256: the same code path, faster.
    monkeypatch.setattr("libra_cli.models.build.MASK_HEAD_LAYERS", (16, 16))
    monkeypatch.setattr("libra_cli.models.build.MASK_PREDICTOR_CHANNELS", 16)
    run_dir = tmp_path / "run"
    config = tiny_config(
        tiny_benchmark,
        run_dir,
        model__arch="mask_rcnn",
        model__score_thresh=0.0,
        train__max_iters=2,
        train__checkpoint_interval=10,
    )
    train(config)
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    last = [record for record in log if record["type"] == "train"][-1]
    assert np.isfinite(last["loss_mask"])
    trained = json.loads((run_dir / "eval" / "metrics.json").read_text())  # training's final evaluation
    assert trained["segm"]["format"] == "coco" and len(trained["segm"]["summary"]) == 12
    assert set(trained["summary"]) == set(trained["segm"]["summary"])

    result = CliRunner().invoke(app, ["eval", str(run_dir), "--checkpoint", "last"])
    assert result.exit_code == 0, result.output
    assert "masks" in result.output
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert metrics["format"] == "coco" and len(metrics["summary"]) == 12  # the box metrics where they were
    segmentations = json.loads((run_dir / "eval" / "segmentations.json").read_text())
    detections = json.loads((run_dir / "eval" / "detections.json").read_text())
    assert len(segmentations) == len(detections) > 0
    assert [(s["image_id"], s["category_id"], s["score"]) for s in segmentations] == [
        (d["image_id"], d["category_id"], d["score"]) for d in detections
    ]

    gt = COCO(str(benchmark_paths(tiny_benchmark).val_ann))
    evaluator = COCOeval(gt, gt.loadRes(segmentations), iouType="segm")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    names = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
    expected = {
        name: (None if value == -1 else float(value)) for name, value in zip(names, evaluator.stats, strict=True)
    }
    assert metrics["segm"]["summary"] == pytest.approx(expected)
