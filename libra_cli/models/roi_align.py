"""RoIAlign computed with ``grid_sample``: torchvision's operator, vectorised for the CPU.

torchvision's CPU kernel for ``roi_align`` runs on one thread and, in the backward pass, recomputes the
bilinear weights of every sampling point once per channel. On the demo's configuration it was the
second-largest cost of a training step (about a quarter of it, see ``benchmarks/RESULTS.md``). The same
operator can be written as one bilinear ``grid_sample`` call per feature level, whose CPU kernels
compute each point's weights once, vectorise over points and run in parallel over the images of a
batch.

What is computed is torchvision's RoIAlign (Mask R-CNN's definition as implemented there), point for
point. For a RoI (x1, y1, x2, y2) on a level with spatial scale s, output size (h_o, w_o) and sampling
ratio r (points per bin side):

* the RoI in feature coordinates starts at x1·s − o and is w = x2·s − x1·s wide (o = 0.5 if
  ``aligned`` else 0; without ``aligned`` the width and height are at least 1);
* bin j ∈ [0, w_o) has r sampling points at x = x1·s − o + (j + (i + ½)/r)·w/w_o, i ∈ [0, r);
* each point's value is the bilinear interpolation of the feature map, where a point with
  x < −1 or x > W (or y < −1 or y > H) contributes 0 and coordinates are otherwise clamped to
  [0, W − 1] × [0, H − 1];
* a bin's output is the mean of its r × r points.

``grid_sample`` with ``align_corners=True`` and ``padding_mode="border"`` performs exactly the
clamped bilinear interpolation; the zero rule is a mask, the mean an average pool. The results agree
with torchvision's kernel to float rounding (≈1e-6 relative), forward and backward; the RoIs
receive no gradient, as in torchvision.

Cases the formulation does not cover fall back to torchvision's kernel: CUDA tensors (its GPU kernel
is already parallel), an adaptive sampling ratio (r ≤ 0, the number of points then varies per RoI),
and feature maps with a side shorter than 2 pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import MultiScaleRoIAlign, roi_align
from torchvision.ops.poolers import _convert_to_roi_format, _filter_input, _setup_scales

IMPLEMENTATIONS = ("auto", "grid_sample", "torchvision")


def grid_sample_applies(features: Tensor, sampling_ratio: int) -> bool:
    """Whether :func:`roi_align_grid_sample` can compute this call (see the module doc)."""
    height, width = features.shape[-2:]
    return sampling_ratio > 0 and height >= 2 and width >= 2 and features.is_floating_point()


def _sample_points(start: Tensor, length: Tensor, bins: int, ratio: int) -> Tensor:
    """(K, bins·ratio) sampling coordinates along one axis for RoIs starting at ``start``."""
    steps = (torch.arange(bins * ratio, dtype=start.dtype, device=start.device) + 0.5) / ratio
    return start[:, None] + steps[None, :] * (length / bins)[:, None]


def roi_align_grid_sample(
    features: Tensor,
    rois: Tensor,
    output_size: tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool = False,
) -> Tensor:
    """torchvision's ``roi_align(features, rois, …)`` for rois (K, 5) = (batch index, x1, y1, x2, y2).

    Returns (K, C, h_o, w_o). Requires ``sampling_ratio ≥ 1`` and feature maps of at least 2 × 2.
    """
    if not grid_sample_applies(features, sampling_ratio):
        raise ValueError("roi_align_grid_sample needs sampling_ratio >= 1 and a feature map of at least 2x2")
    num_images, channels, height, width = features.shape
    out_h, out_w = output_size
    num_rois = rois.shape[0]
    if num_rois == 0:
        return features.new_zeros((0, channels, out_h, out_w))
    ratio = sampling_ratio
    with torch.no_grad():
        boxes = rois[:, 1:].to(features.dtype) * spatial_scale
        if aligned:
            boxes = boxes - 0.5
        roi_w = boxes[:, 2] - boxes[:, 0]
        roi_h = boxes[:, 3] - boxes[:, 1]
        if not aligned:
            roi_w = roi_w.clamp(min=1.0)
            roi_h = roi_h.clamp(min=1.0)
        xs = _sample_points(boxes[:, 0], roi_w, out_w, ratio)  # (K, w_o·r)
        ys = _sample_points(boxes[:, 1], roi_h, out_h, ratio)  # (K, h_o·r)
        inside = ((ys >= -1.0) & (ys <= height))[:, :, None] & ((xs >= -1.0) & (xs <= width))[:, None, :]
        # Normalised coordinates of the clamped points: pixel p ↦ 2p/(L − 1) − 1 (align_corners=True).
        gx = xs.clamp(0, width - 1) * (2.0 / (width - 1)) - 1.0
        gy = ys.clamp(0, height - 1) * (2.0 / (height - 1)) - 1.0
        points_h, points_w = out_h * ratio, out_w * ratio
        grid = torch.stack(
            (gx[:, None, :].expand(num_rois, points_h, points_w), gy[:, :, None].expand(num_rois, points_h, points_w)),
            dim=-1,
        )
        # grid_sample pairs grid n with image n: lay the RoIs of each image side by side, padded to the
        # largest count (padding points sample pixel (0, 0) and are discarded).
        image_index = rois[:, 0].long()
        counts = torch.bincount(image_index, minlength=num_images)
        per_image = int(counts.max())
        order = torch.argsort(image_index, stable=True)
        first_of_image = torch.cumsum(counts, 0) - counts
        rank = torch.empty_like(order)
        rank[order] = torch.arange(num_rois, device=rois.device) - first_of_image[image_index[order]]
        slot = image_index * per_image + rank
        padded = grid.new_full((num_images * per_image, points_h, points_w, 2), -1.0)
        padded[slot] = grid
        padded = padded.view(num_images, per_image * points_h, points_w, 2)
    sampled = F.grid_sample(features, padded, mode="bilinear", padding_mode="border", align_corners=True)
    sampled = sampled.view(num_images, channels, per_image, points_h, points_w).transpose(1, 2)
    sampled = sampled.reshape(num_images * per_image, channels, points_h, points_w)[slot]
    sampled = sampled * inside[:, None].to(sampled.dtype)
    if ratio > 1:
        sampled = F.avg_pool2d(sampled, kernel_size=ratio, stride=ratio)
    return sampled


class FastMultiScaleRoIAlign(MultiScaleRoIAlign):
    """torchvision's ``MultiScaleRoIAlign`` (same levels, same mapping of boxes to levels, same output)
    with the per-level RoIAlign taken from :func:`roi_align_grid_sample` where it applies.

    ``implementation``: ``"auto"`` uses the ``grid_sample`` form for CPU tensors and torchvision's kernel
    on CUDA; ``"grid_sample"`` uses it wherever it applies; ``"torchvision"`` never does.
    """

    def __init__(self, *args, implementation: str = "auto", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"implementation must be one of {', '.join(IMPLEMENTATIONS)}, got {implementation!r}")
        self.implementation = implementation

    def _uses_grid_sample(self, features: Tensor) -> bool:
        if self.implementation == "torchvision":
            return False
        if self.implementation == "auto" and features.device.type != "cpu":
            return False
        return grid_sample_applies(features, self.sampling_ratio)

    def _align(self, features: Tensor, rois: Tensor, scale: float) -> Tensor:
        if self._uses_grid_sample(features):
            return roi_align_grid_sample(features, rois, self.output_size, scale, self.sampling_ratio)
        return roi_align(features, rois, self.output_size, scale, self.sampling_ratio)

    def forward(self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]) -> Tensor:
        x_filtered = _filter_input(x, self.featmap_names)
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _setup_scales(
                x_filtered, image_shapes, self.canonical_scale, self.canonical_level
            )
        rois = _convert_to_roi_format(boxes)
        if len(x_filtered) == 1:
            return self._align(x_filtered[0], rois, self.scales[0])
        levels = self.map_levels(boxes)
        first = x_filtered[0]
        result = first.new_zeros((rois.shape[0], first.shape[1], *self.output_size))
        for level, (features, scale) in enumerate(zip(x_filtered, self.scales, strict=True)):
            index = torch.where(levels == level)[0]
            if index.numel() == 0:
                continue
            result[index] = self._align(features, rois[index], scale).to(result.dtype)
        return result
