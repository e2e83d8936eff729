"""Inference over a dataset and the official COCO / LVIS metrics for it.

``predict`` turns a detector's outputs into COCO results records (image_id, the dataset's own
category_id, bbox [x, y, w, h], score) and, for Mask R-CNN, each detection's mask into a segmentation
record (the same fields with a compressed-RLE ``segmentation`` instead of the box); ``evaluate_model``
writes them to a run's ``eval/detections.json`` (and ``eval/segmentations.json``) and the box metrics (and
the mask metrics, under ``"segm"``) to ``eval/metrics.json``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from torch import nn

from libra_cli.data.coco import DetectionDataset, collate
from libra_cli.engine.distributed import broadcast_object, gather_object, get_rank, get_world_size
from libra_cli.engine.metrics import (
    LVIS_MAX_DETS,
    detect_annotation_format,
    evaluate_coco,
    evaluate_detections,
    evaluate_lvis,
)
from libra_cli.rundir import EvalFiles, RunLayout

MASK_THRESHOLD = 0.5  # a pixel belongs to a detection's mask when its probability exceeds this


def _detections_per_image(model: nn.Module) -> tuple[Any, str]:
    """The module and attribute that cap detections per image (RoI heads or RetinaNet)."""
    roi_heads = getattr(model, "roi_heads", None)
    if roi_heads is not None:
        return roi_heads, "detections_per_img"
    return model, "detections_per_img"


def has_mask_branch(model: nn.Module) -> bool:
    """Whether ``model`` predicts instance masks (a Mask R-CNN's RoI heads)."""
    roi_heads = getattr(model, "roi_heads", None)
    return roi_heads is not None and bool(roi_heads.has_mask())


def encode_masks(probabilities: torch.Tensor) -> list[dict[str, Any]]:
    """Compressed RLEs of the masks ``probabilities`` [N, 1, H, W] (pasted into the image), each thresholded
    at :data:`MASK_THRESHOLD`: ``{"size": [H, W], "counts": str}`` as pycocotools' ``mask.encode`` writes them,
    with the counts decoded to text for JSON."""
    if probabilities.shape[0] == 0:
        return []
    binary = (probabilities[:, 0] > MASK_THRESHOLD).to(torch.uint8).cpu()
    # pycocotools reads column-major [H, W, N] arrays.
    rles = mask_utils.encode(np.asfortranarray(binary.permute(1, 2, 0).numpy()))
    return [{"size": [int(side) for side in rle["size"]], "counts": rle["counts"].decode("ascii")} for rle in rles]


@torch.no_grad()
def predict(
    model: nn.Module,
    dataset: DetectionDataset,
    *,
    device: torch.device,
    batch_size: int = 4,
    num_workers: int = 1,
    max_detections: int | None = None,
    autocast_dtype: torch.dtype | None = None,
    progress: Callable[[int, int], None] | None = None,
    indices: Sequence[int] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """Run ``model`` over ``dataset`` (or its items at ``indices``) and return COCO-format results:
    (detections, segmentations).

    Boxes are in original pixels; the list follows the dataset's order, each image's detections in the
    model's order. ``segmentations`` is None unless the model has a mask branch (Mask R-CNN); then it holds
    one record per detection, in the same order, with the mask as a compressed RLE (:func:`encode_masks`)
    and no box: the evaluators would otherwise take the box's area for the mask's.
    """
    segmentations: list[dict[str, Any]] | None = [] if has_mask_branch(model) else None
    owner, attribute = _detections_per_image(model)
    saved_cap = getattr(owner, attribute)
    if max_detections is not None:
        setattr(owner, attribute, max_detections)
    was_training = model.training
    model.eval()
    items = dataset if indices is None else torch.utils.data.Subset(dataset, list(indices))
    loader = torch.utils.data.DataLoader(
        items,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=device.type == "cuda",
        # Its own generator: an evaluation in the middle of training must not draw from the global RNG,
        # or a run resumed from a checkpoint taken just before it would follow another random stream.
        generator=torch.Generator(),
    )
    results: list[dict[str, Any]] = []
    done = 0
    try:
        for images, targets in loader:
            images = [image.to(device, non_blocking=True) for image in images]
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                outputs = model(images)
            for output, target in zip(outputs, targets, strict=True):
                boxes = output["boxes"].float().cpu()
                xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)
                # Rounded once here so that the file and the metrics computed from it agree exactly.
                xywh = xywh.mul(100).round().div(100).tolist()
                scores = output["scores"].float().cpu().mul(1e5).round().div(1e5).tolist()
                labels = output["labels"].cpu().tolist()
                for box, score, label in zip(xywh, scores, labels, strict=True):
                    results.append(
                        {
                            "image_id": target["image_id"],
                            "category_id": dataset.label_to_category_id(label),
                            "bbox": box,
                            "score": score,
                        }
                    )
                if segmentations is not None:
                    for rle, score, label in zip(encode_masks(output["masks"]), scores, labels, strict=True):
                        segmentations.append(
                            {
                                "image_id": target["image_id"],
                                "category_id": dataset.label_to_category_id(label),
                                "segmentation": rle,
                                "score": score,
                            }
                        )
            done += len(images)
            if progress is not None:
                progress(done, len(items))
    finally:
        setattr(owner, attribute, saved_cap)
        model.train(was_training)
    return results, segmentations


def evaluate_model(
    model: nn.Module,
    dataset: DetectionDataset,
    run: RunLayout | EvalFiles,
    *,
    device: torch.device,
    batch_size: int = 4,
    num_workers: int = 1,
    autocast_dtype: torch.dtype | None = None,
    extra: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    evaluator: str = "auto",
) -> dict[str, Any]:
    """Predict, write ``detections.json`` and ``metrics.json`` into ``run``'s eval folder (a run's own ``eval/``,
    or the :class:`EvalFiles` of another set), return the metrics.
    ``evaluator`` chooses who scores box AP (``libra_cli.engine.metrics.EVALUATORS``; the metrics name it).

    For a model with a mask branch (Mask R-CNN) the masks also go to ``eval/segmentations.json`` and their
    metrics (mask AP, the same structure as the box metrics) into the metrics under ``"segm"``.

    Under torchrun each rank predicts every W-th image (rank r takes r, r + W, …), rank 0 gathers the
    detections back into the dataset's order, scores them and writes the files, and every rank returns
    rank 0's metrics; with one process this is plain prediction over the whole set.
    """
    start = time.perf_counter()
    rank, world_size = get_rank(), get_world_size()
    max_dets = LVIS_MAX_DETS if dataset.format == "lvis" else None
    local = predict(
        model,
        dataset,
        device=device,
        batch_size=batch_size,
        num_workers=num_workers,
        max_detections=max_dets,
        autocast_dtype=autocast_dtype,
        progress=progress,
        indices=None if world_size == 1 else range(rank, len(dataset), world_size),
    )
    gathered = gather_object(local)
    metrics: dict[str, Any] | None = None
    if gathered is not None:
        detections = merge_in_dataset_order([boxes for boxes, _ in gathered], dataset)
        segmentations = None
        if gathered[0][1] is not None:
            segmentations = merge_in_dataset_order([masks for _, masks in gathered], dataset)
        inference_s = time.perf_counter() - start
        run.write_detections(detections)
        metrics = evaluate_detections(dataset.dataset, detections, evaluator=evaluator)
        if segmentations is not None:
            run.write_segmentations(segmentations)
            metrics["segm"] = evaluate_segmentations(dataset.dataset, segmentations)
        metrics.update(
            {
                "ann_file": str(dataset.ann_file),
                "num_images": len(dataset),
                "num_detections": len(detections),
                "inference_s": round(inference_s, 3),
                "images_per_s": round(len(dataset) / max(inference_s, 1e-9), 3),
                **(extra or {}),
            }
        )
        run.write_metrics(metrics)
    return broadcast_object(metrics)


def evaluate_segmentations(gt: dict, segmentations: list[dict[str, Any]]) -> dict[str, Any]:
    """Mask AP of segmentation results: LVIS's protocol for LVIS ground truth, COCO's otherwise (ground truth
    without ``segmentation`` fields, e.g. converted from Pascal VOC boxes, is a one-line LibraError)."""
    if detect_annotation_format(gt) == "lvis":
        return evaluate_lvis(gt, segmentations, iou_type="segm")
    return evaluate_coco(gt, segmentations, iou_type="segm")


def merge_in_dataset_order(per_rank: list[list[dict[str, Any]]], dataset: DetectionDataset) -> list[dict[str, Any]]:
    """One detection list from the ranks' lists, ordered as a single process would have produced it.

    The sort is stable and keyed by each image's position in the dataset, so the detections of one image
    keep the model's order (COCOeval breaks score ties by that order).
    """
    position = {record.image_id: i for i, record in enumerate(dataset.records)}
    merged = [detection for detections in per_rank for detection in detections]
    return sorted(merged, key=lambda detection: position[detection["image_id"]])
