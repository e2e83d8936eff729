"""Inference over a dataset and the official COCO / LVIS metrics for it.

``predict`` turns a detector's outputs into COCO results records (image_id, the dataset's own
category_id, bbox [x, y, w, h], score) and, for Mask R-CNN, each detection's mask into a segmentation
record (the same fields with a compressed-RLE ``segmentation`` instead of the box); ``evaluate_model``
writes them to a run's ``eval/detections.json`` (and ``eval/segmentations.json``) and the box metrics (and
the mask metrics, under ``"segm"``) to ``eval/metrics.json``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
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


@contextlib.contextmanager
def inference_mode(model: nn.Module, max_detections: int | None = None) -> Iterator[nn.Module]:
    """``model`` in eval mode, keeping at most ``max_detections`` per image (None: its own cap) — LVIS
    evaluation keeps 300 — and back to its mode and cap afterwards."""
    owner, attribute = _detections_per_image(model)
    saved_cap, was_training = getattr(owner, attribute), model.training
    if max_detections is not None:
        setattr(owner, attribute, max_detections)
    model.eval()
    try:
        yield model
    finally:
        setattr(owner, attribute, saved_cap)
        model.train(was_training)


def max_detections_for(annotation_format: str) -> int | None:
    """The detections kept per image when scoring against annotations of ``annotation_format``: LVIS's 300,
    else the model's own cap."""
    return LVIS_MAX_DETS if annotation_format == "lvis" else None


def has_mask_branch(model: nn.Module) -> bool:
    """Whether ``model`` predicts instance masks (a Mask R-CNN's RoI heads)."""
    roi_heads = getattr(model, "roi_heads", None)
    return roi_heads is not None and bool(roi_heads.has_mask())


def binary_masks(probabilities: torch.Tensor) -> torch.Tensor:
    """bool [N, H, W]: the masks ``probabilities`` [N, 1, H, W] (pasted into the image) thresholded at
    :data:`MASK_THRESHOLD`."""
    return probabilities[:, 0] > MASK_THRESHOLD


def encode_masks(probabilities: torch.Tensor) -> list[dict[str, Any]]:
    """Compressed RLEs of the masks ``probabilities`` [N, 1, H, W] (pasted into the image), each thresholded
    at :data:`MASK_THRESHOLD`: ``{"size": [H, W], "counts": str}`` as pycocotools' ``mask.encode`` writes them,
    with the counts decoded to text for JSON."""
    return encode_binary_masks(binary_masks(probabilities)) if probabilities.shape[0] else []


def encode_binary_masks(masks: torch.Tensor) -> list[dict[str, Any]]:
    """Compressed RLEs (text counts, for JSON) of 0/1 masks [N, H, W]."""
    if masks.shape[0] == 0:
        return []
    binary = masks.to(torch.uint8).cpu()
    # pycocotools reads column-major [H, W, N] arrays.
    rles = mask_utils.encode(np.asfortranarray(binary.permute(1, 2, 0).numpy()))
    return [{"size": [int(side) for side in rle["size"]], "counts": rle["counts"].decode("ascii")} for rle in rles]


def detect(model: nn.Module, images: list[torch.Tensor], autocast_dtype: torch.dtype | None = None) -> list[dict]:
    """The detector's outputs for ``images`` (float [3, H, W] in [0, 1], on the model's device) on the CPU:
    per image ``boxes`` float32 [N, 4] xyxy in the images' pixels, ``scores`` float32 [N], ``labels`` int64 [N]
    (1 … C, the model's contiguous labels) and, for Mask R-CNN, ``masks`` float32 [N, 1, H, W] probabilities."""
    device = images[0].device if images else torch.device("cpu")
    with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        outputs = model(images)
    return [
        {key: value.float().cpu() if value.is_floating_point() else value.cpu() for key, value in output.items()}
        for output in outputs
    ]


def result_records(
    output: dict[str, torch.Tensor], image_id: int, category_id_of: Callable[[int], int], with_masks: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One image's COCO results: (detections: image_id, category_id, bbox [x, y, w, h], score;
    segmentations: the same with a compressed-RLE ``segmentation`` and no box, empty unless ``with_masks``).

    ``output`` is one of :func:`detect`'s; ``category_id_of`` maps a model label to the dataset's category id.
    Boxes are rounded to 0.01 px and scores to 1e-5 here, once, so that a results file and the metrics
    computed from it agree exactly (and ``libra predict`` writes what ``libra eval`` writes).
    """
    boxes = output["boxes"]
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)
    xywh = xywh.mul(100).round().div(100).tolist()
    scores = output["scores"].mul(1e5).round().div(1e5).tolist()
    category_ids = [category_id_of(label) for label in output["labels"].tolist()]
    detections = [
        {"image_id": image_id, "category_id": category_id, "bbox": box, "score": score}
        for box, score, category_id in zip(xywh, scores, category_ids, strict=True)
    ]
    segmentations = []
    if with_masks:
        rles = encode_masks(output["masks"])
        segmentations = [
            {"image_id": image_id, "category_id": category_id, "segmentation": rle, "score": score}
            for rle, score, category_id in zip(rles, scores, category_ids, strict=True)
        ]
    return detections, segmentations


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
    with inference_mode(model, max_detections):
        for images, targets in loader:
            images = [image.to(device, non_blocking=True) for image in images]
            for output, target in zip(detect(model, images, autocast_dtype), targets, strict=True):
                found, masks = result_records(
                    output, target["image_id"], dataset.label_to_category_id, segmentations is not None
                )
                results += found
                if segmentations is not None:
                    segmentations += masks
            done += len(images)
            if progress is not None:
                progress(done, len(items))
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
    ``evaluator`` chooses who scores box AP (``libra_cli.config.EVALUATORS``).

    For a model with a mask branch (Mask R-CNN) the masks also go to ``eval/segmentations.json`` and their
    metrics (mask AP, the same structure as the box metrics) into the metrics under ``"segm"``.

    Under torchrun each rank predicts every W-th image (rank r takes r, r + W, …), rank 0 gathers the
    detections back into the dataset's order, scores them and writes the files, and every rank returns
    rank 0's metrics; with one process this is plain prediction over the whole set.
    """
    start = time.perf_counter()
    rank, world_size = get_rank(), get_world_size()
    local = predict(
        model,
        dataset,
        device=device,
        batch_size=batch_size,
        num_workers=num_workers,
        max_detections=max_detections_for(dataset.format),
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
