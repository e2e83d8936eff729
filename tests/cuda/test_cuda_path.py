"""The CUDA path: training steps in every precision, CUDA against CPU, RoIAlign, samplers, evaluation.

Every test is marked ``cuda`` and skipped without a CUDA device. Run them on a GPU machine with
``pytest -m cuda`` (``benchmarks/gpu_check.py`` does, as its first stage).
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torchvision.ops import roi_align

from benchmarks.sampler import realistic_roi_assignment
from libra_cli.engine.step import TrainStep, forward_backward
from libra_cli.models.build import build_detector
from libra_cli.models.roi_align import FastMultiScaleRoIAlign
from libra_cli.sampling import IoUBalancedSampler
from libra_cli.sampling.iou_balanced import iou_bin_index
from tests.conftest import tiny_config

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

NUM_CLASSES = 3
# CUDA and CPU fp32 losses of the same weights and inputs: cuDNN and the CPU kernels sum in different
# orders (and TF32 is off below), so they agree to float32 rounding accumulated over the network.
CUDA_CPU_RTOL = 1e-3
CUDA_CPU_ATOL = 1e-4

SAMPLERS = ({}, {"iou_sampling": True}, {"ohem": True})
BFPS = (
    {},
    {"bfp": True, "bfp_refine": "non_local"},
    {"bfp": True, "bfp_refine": "conv"},
    {"bfp": True, "bfp_refine": "none"},
)
FASTER_RCNN = [
    {**s, **b, **bl1, **eql}
    for s, b, bl1, eql in itertools.product(
        SAMPLERS, BFPS, ({}, {"balanced_l1": True}), ({}, {"eql": True, "eql_lambda": 0.5})
    )
]
RETINANET = [{**b, **bl1} for b, bl1 in itertools.product(BFPS, ({}, {"balanced_l1": True}))]
CASES = [("faster_rcnn", s) for s in FASTER_RCNN] + [("retinanet", s) for s in RETINANET]
PRECISIONS = ("fp32", "bf16", "fp16")


def _label(case) -> str:
    arch, switches = case
    names = [f"{k}={v}" if not isinstance(v, bool) else k for k, v in switches.items() if k != "eql_lambda"]
    return arch + "[" + (",".join(names) or "off") + "]"


def _inputs(device):
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 96, 96, generator=generator).to(device) for _ in range(2)]
    targets = [
        {"boxes": torch.tensor([[6.0, 8.0, 44.0, 60.0], [30.0, 18.0, 90.0, 88.0]]), "labels": torch.tensor([1, 2])},
        {"boxes": torch.tensor([[3.0, 36.0, 40.0, 90.0]]), "labels": torch.tensor([3])},
    ]
    return images, [{k: v.to(device) for k, v in t.items()} for t in targets]


def _detector(benchmark, out, arch, switches):
    overrides = {f"libra__{k}": v for k, v in switches.items()}
    config = tiny_config(benchmark, out, model__arch=arch, **overrides)
    torch.manual_seed(0)
    return build_detector(config, NUM_CLASSES, images_per_class=torch.tensor([8, 3, 1]), num_images=8)


def _step(model, precision: str) -> TrainStep:
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    return TrainStep(model.train(), optimizer, scaler, dtype)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("case", CASES, ids=[_label(c) for c in CASES])
def test_training_step_on_cuda(tiny_benchmark, tmp_path, case, precision) -> None:
    """fp32, bf16 autocast and fp16 autocast with GradScaler: finite losses and (unscaled) gradients."""
    arch, switches = case
    model = _detector(tiny_benchmark, tmp_path, arch, switches).cuda()
    step = _step(model, precision)
    images, targets = _inputs("cuda")
    torch.manual_seed(1)
    losses = forward_backward(step, images, targets)
    for name, value in losses.items():
        assert value.dtype == torch.float32, name
        assert math.isfinite(float(value.detach())), name
    step.scaler.unscale_(step.optimizer)
    for name, parameter in model.named_parameters():
        if parameter.grad is not None:
            assert bool(torch.isfinite(parameter.grad).all()), f"non-finite gradient of {name}"


def _cpu_and_cuda_models(benchmark, out, arch, switches):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    cpu_model = _detector(benchmark, out, arch, switches)
    cuda_model = _detector(benchmark, out, arch, switches).cuda()
    cuda_model.load_state_dict(cpu_model.state_dict())
    return cpu_model, cuda_model


@pytest.mark.parametrize("switches", [{}, {"bfp": True, "balanced_l1": True}], ids=["off", "bfp+balanced_l1"])
def test_retinanet_cuda_and_cpu_fp32_losses_agree(tiny_benchmark, tmp_path, switches) -> None:
    """RetinaNet draws nothing at random in training: the same weights and inputs give the same losses,
    to the tolerance CUDA_CPU_RTOL / CUDA_CPU_ATOL (float32, TF32 off)."""
    cpu_model, cuda_model = _cpu_and_cuda_models(tiny_benchmark, tmp_path, "retinanet", switches)
    images, targets = _inputs("cpu")
    cuda_images, cuda_targets = _inputs("cuda")
    with torch.no_grad():
        cpu_losses = cpu_model.train()(images, targets)
        cuda_losses = cuda_model.train()(cuda_images, cuda_targets)
    for name, value in cpu_losses.items():
        assert math.isclose(
            float(value), float(cuda_losses[name].cpu()), rel_tol=CUDA_CPU_RTOL, abs_tol=CUDA_CPU_ATOL
        ), (name, float(value), float(cuda_losses[name]))


@pytest.mark.parametrize("switches", [{}, {"bfp": True}], ids=["off", "bfp"])
def test_faster_rcnn_cuda_and_cpu_fp32_features_agree(tiny_benchmark, tmp_path, switches) -> None:
    """Faster R-CNN samples anchors and RoIs with each device's RNG, so its losses differ by the draws;
    the pyramid it computes from the same weights and images agrees to the same tolerance."""
    cpu_model, cuda_model = _cpu_and_cuda_models(tiny_benchmark, tmp_path, "faster_rcnn", switches)
    images, _ = _inputs("cpu")
    with torch.no_grad():
        batch, _ = cpu_model.eval().transform(images)
        cpu_features = cpu_model.backbone(batch.tensors)
        cuda_features = cuda_model.eval().backbone(batch.tensors.cuda())
    for name, value in cpu_features.items():
        torch.testing.assert_close(cuda_features[name].cpu(), value, rtol=CUDA_CPU_RTOL, atol=CUDA_CPU_ATOL)


def test_roi_align_on_cuda_is_torchvisions_kernel() -> None:
    pooler = FastMultiScaleRoIAlign(["0"], output_size=7, sampling_ratio=2, implementation="auto")
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(1, 8, 32, 32, generator=generator).cuda()
    boxes = torch.tensor([[2.0, 3.0, 60.0, 50.0], [10.5, 4.25, 100.0, 120.0]]).cuda()
    assert not pooler._uses_grid_sample(features)
    ours = pooler({"0": features}, [boxes], [(128, 128)])
    theirs = roi_align(features, [boxes], output_size=7, spatial_scale=0.25, sampling_ratio=2, aligned=False)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_iou_balanced_sampler_quotas_on_cuda_equal_cpu() -> None:
    """A CUDA generator draws different RoIs than a CPU one, but the same number per class and IoU bin."""
    sampler = IoUBalancedSampler(batch_size_per_image=512, positive_fraction=0.25, num_bins=3, floor_thr=0.0)
    labels, max_iou, matched = realistic_roi_assignment(torch.Generator().manual_seed(0))

    def quotas(device, generator):
        pos, neg = sampler([labels.to(device)], [max_iou.to(device)], [matched.to(device)], generator=generator)
        negative_ious = max_iou.to(device)[neg[0]]
        bins = iou_bin_index(negative_ious[negative_ious > 0], 0.0, float(max_iou.max()), 3)
        return int(pos[0].sum()), int(neg[0].sum()), torch.bincount(bins.cpu(), minlength=3).tolist()

    on_cpu = quotas("cpu", torch.Generator().manual_seed(1))
    on_cuda = quotas("cuda", torch.Generator(device="cuda").manual_seed(1))
    assert on_cuda == on_cpu


@pytest.mark.parametrize("precision", ("fp32", "bf16"))
def test_evaluation_on_cuda(tiny_benchmark, tmp_path, precision) -> None:
    model = _detector(tiny_benchmark, tmp_path, "faster_rcnn", {"bfp": True}).cuda().eval()
    images, _ = _inputs("cuda")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    with torch.no_grad(), torch.autocast("cuda", dtype=dtype, enabled=precision == "bf16"):
        detections = model(images)
    for found in detections:
        assert found["boxes"].is_cuda
        assert found["boxes"].dtype == found["scores"].dtype == torch.float32
        assert bool(torch.isfinite(found["boxes"]).all()) and bool(torch.isfinite(found["scores"]).all())
