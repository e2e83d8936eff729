"""RoIAlign in grid_sample form: equal to torchvision's kernel, forward and backward."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign, roi_align

from libra_cli.models.roi_align import FastMultiScaleRoIAlign, roi_align_grid_sample


def random_rois(generator: torch.Generator, counts: list[int], dtype: torch.dtype, extent: float) -> torch.Tensor:
    """RoIs per image index (counts[i] for image i), some tiny, some reaching outside the image."""
    rows = []
    for image, count in enumerate(counts):
        corner = torch.rand(count, 2, generator=generator, dtype=dtype) * (extent * 1.3) - extent * 0.2
        size = torch.rand(count, 2, generator=generator, dtype=dtype) * extent * 0.7
        size[: max(1, count // 5)] *= 0.01  # sub-pixel boxes exercise the minimum RoI size of 1
        index = torch.full((count, 1), float(image), dtype=dtype)
        rows.append(torch.cat([index, corner, corner + size], dim=1))
    return torch.cat(rows)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("ratio", [1, 2, 3])
def test_equals_torchvision_in_double_precision(aligned, ratio):
    generator = torch.Generator().manual_seed(ratio + 10 * aligned)
    features = torch.randn(3, 4, 11, 19, generator=generator, dtype=torch.float64)
    rois = random_rois(generator, [17, 0, 9], torch.float64, extent=76.0)  # image 1 has no RoI
    output_size = (7, 5)
    ours_in = features.clone().requires_grad_(True)
    theirs_in = features.clone().requires_grad_(True)
    ours = roi_align_grid_sample(ours_in, rois, output_size, 0.25, ratio, aligned)
    theirs = roi_align(theirs_in, rois, output_size, 0.25, ratio, aligned)
    upstream = torch.randn(theirs.shape, generator=generator, dtype=torch.float64)
    ours.backward(upstream)
    theirs.backward(upstream)
    assert ours.shape == (26, 4, 7, 5)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
    torch.testing.assert_close(ours_in.grad, theirs_in.grad, rtol=0, atol=1e-12)
    assert theirs.abs().sum() > 0  # the comparison is not between two zero tensors


def test_out_of_image_points_are_zero_and_border_points_clamp():
    features = torch.arange(16, dtype=torch.float64).reshape(1, 1, 4, 4)
    # A 1×1 output at the RoI centre: (−3, −3) lies beyond −1 → 0; (−0.5, −0.5) clamps to pixel (0, 0);
    # (3.5, 1.0) clamps x to 3 → value at row 1, column 3 = 7.
    rois = torch.tensor(
        [[0, -4.0, -4.0, -2.0, -2.0], [0, -1.0, -1.0, 0.0, 0.0], [0, 3.0, 0.5, 4.0, 1.5]], dtype=torch.float64
    )
    out = roi_align_grid_sample(features, rois, (1, 1), 1.0, 1, aligned=False).flatten().tolist()
    assert out == pytest.approx([0.0, 0.0, 7.0], abs=1e-12)


def test_float32_agrees_to_rounding():
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(2, 8, 32, 32, generator=generator)
    rois = random_rois(generator, [64, 40], torch.float32, extent=128.0)
    ours = roi_align_grid_sample(features, rois, (7, 7), 0.25, 2)
    theirs = roi_align(features, rois, (7, 7), 0.25, 2)
    # Normalising a pixel coordinate p ∈ [0, 31] to [−1, 1] and back costs ≈ 32·2⁻²⁴ ≈ 2e-6 px in float32;
    # times the steepest pixel-to-pixel change of N(0, 1) features (< 8) that bounds the error by ≈ 2e-5.
    torch.testing.assert_close(ours, theirs, rtol=0, atol=5e-5)


def test_rejects_what_it_cannot_compute():
    with pytest.raises(ValueError, match="sampling_ratio"):
        roi_align_grid_sample(torch.zeros(1, 1, 8, 8), torch.zeros(1, 5), (7, 7), 1.0, 0)
    with pytest.raises(ValueError, match="sampling_ratio"):
        roi_align_grid_sample(torch.zeros(1, 1, 1, 8), torch.zeros(1, 5), (7, 7), 1.0, 1)


def multiscale_inputs(dtype: torch.dtype):
    generator = torch.Generator().manual_seed(5)
    sizes = {"0": 64, "1": 32, "2": 16, "3": 8}
    features = {name: torch.randn(2, 3, side, side, generator=generator, dtype=dtype) for name, side in sizes.items()}
    rois = random_rois(generator, [30, 25], dtype, extent=256.0)
    boxes = [rois[rois[:, 0] == image, 1:] for image in range(2)]
    return features, boxes, [(256, 256), (256, 256)]


@pytest.mark.parametrize("ratio", [0, 1, 2])
def test_multiscale_pooler_equals_torchvision(ratio):
    features, boxes, shapes = multiscale_inputs(torch.float64)
    names = ["0", "1", "2", "3"]
    ours = FastMultiScaleRoIAlign(names, 7, ratio, implementation="grid_sample")(features, boxes, shapes)
    theirs = MultiScaleRoIAlign(names, 7, ratio)(features, boxes, shapes)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
    # The boxes span several pyramid levels, so the level loop is exercised.
    levels = MultiScaleRoIAlign(names, 7, ratio)
    levels(features, boxes, shapes)
    assert len(torch.unique(levels.map_levels(boxes))) >= 2


def test_implementation_choice():
    features = torch.zeros(1, 1, 8, 8)
    assert FastMultiScaleRoIAlign(["0"], 7, 1)._uses_grid_sample(features)
    assert not FastMultiScaleRoIAlign(["0"], 7, 0)._uses_grid_sample(features)  # adaptive ratio: torchvision
    assert not FastMultiScaleRoIAlign(["0"], 7, 1, implementation="torchvision")._uses_grid_sample(features)
    on_meta = torch.zeros(1, 1, 8, 8, device="meta")  # any non-CPU device keeps torchvision's kernel in auto
    assert not FastMultiScaleRoIAlign(["0"], 7, 1)._uses_grid_sample(on_meta)
    assert FastMultiScaleRoIAlign(["0"], 7, 1, implementation="grid_sample")._uses_grid_sample(on_meta)
    with pytest.raises(ValueError, match="implementation"):
        FastMultiScaleRoIAlign(["0"], 7, 1, implementation="fast")
