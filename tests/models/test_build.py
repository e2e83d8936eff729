"""build_detector: all switches off is the plain torchvision model; every switch combination trains."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from torchvision.models.detection.roi_heads import RoIHeads

from libra_cli.engine.train import train
from libra_cli.models.bfp import BackboneWithBFP
from libra_cli.models.build import build_detector
from libra_cli.models.reference import torchvision_faster_rcnn, torchvision_retinanet
from libra_cli.models.roi_heads import EQLPredictor, LibraRoIHeads
from tests.conftest import tiny_config


def inputs(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, 96, 96, generator=generator) for _ in range(2)]
    targets = [
        {"boxes": torch.tensor([[10.0, 12.0, 50.0, 60.0], [40.0, 30.0, 90.0, 80.0]]), "labels": torch.tensor([1, 3])},
        {"boxes": torch.tensor([[5.0, 5.0, 30.0, 20.0]]), "labels": torch.tensor([2])},
    ]
    return images, targets


def ours_and_torchvision(config, arch: str = "faster_rcnn"):
    """libra's detector and torchvision's with the same weights, and their training losses on the same
    inputs and random draws."""
    ours = build_detector(config, num_classes=3)
    reference = (torchvision_faster_rcnn if arch == "faster_rcnn" else torchvision_retinanet)(config, 3)
    reference.load_state_dict(ours.state_dict())  # identical architecture: every key matches
    images, targets = inputs()
    ours.train()
    reference.train()
    torch.manual_seed(7)
    our_losses = ours(images, targets)
    torch.manual_seed(7)
    reference_losses = reference(images, targets)
    assert our_losses.keys() == reference_losses.keys()
    return ours, reference, our_losses, reference_losses


@pytest.mark.parametrize("arch", ["faster_rcnn", "retinanet"])
def test_all_switches_off_gives_torchvision_losses(tmp_path, arch):
    config = tiny_config(tmp_path, tmp_path / "run", model__arch=arch, model__roi_align="torchvision")
    ours, _, our_losses, reference_losses = ours_and_torchvision(config, arch)
    if arch == "faster_rcnn":
        assert type(ours.roi_heads) is RoIHeads  # not the Libra subclass
    for name in our_losses:
        torch.testing.assert_close(our_losses[name], reference_losses[name], rtol=0, atol=0)


def test_default_cpu_roi_align_gives_torchvision_losses_to_rounding(tmp_path):
    """The default ``model.roi_align: auto`` pools with the grid_sample form on the CPU: same losses and
    gradients as torchvision's detector up to float32 rounding."""
    config = tiny_config(tmp_path, tmp_path / "run")
    assert config.model.roi_align == "auto"
    ours, reference, our_losses, reference_losses = ours_and_torchvision(config)
    for name in our_losses:
        torch.testing.assert_close(our_losses[name], reference_losses[name], rtol=1e-5, atol=1e-6)
    sum(our_losses.values()).backward()
    sum(reference_losses.values()).backward()
    ours_grads = dict(ours.named_parameters())
    # The pooled features differ from torchvision's by float32 rounding (≈1e-7 relative); summed over
    # thousands of RoIs and carried back through the backbone, small gradient entries differ more.
    for name, parameter in reference.named_parameters():
        if parameter.grad is not None:
            torch.testing.assert_close(ours_grads[name].grad, parameter.grad, rtol=1e-3, atol=1e-6)


def test_switches_select_the_libra_parts(tmp_path):
    config = tiny_config(
        tmp_path,
        tmp_path / "run",
        libra__iou_sampling=True,
        libra__bfp=True,
        libra__balanced_l1=True,
        libra__eql=True,
        libra__eql_lambda=0.5,
    )
    model = build_detector(config, 3, images_per_class=torch.tensor([10, 1, 4]), num_images=10)
    assert isinstance(model.backbone, BackboneWithBFP)
    assert model.backbone.bfp.refine_level == 2  # P4 of P2–P6 by default for Faster R-CNN
    assert isinstance(model.roi_heads, LibraRoIHeads)
    assert isinstance(model.roi_heads.box_predictor, EQLPredictor)
    # image frequencies 1.0, 0.1, 0.4 with λ = 0.5 → classes 2 and 3 are tail classes
    assert model.roi_heads.eql_tail_mask.tolist() == [False, True, True]
    # every sigmoid starts at the reference's prior 0.001: bias = −log(0.999 / 0.001) = −6.906755
    assert model.roi_heads.box_predictor.cls_score.bias.tolist() == pytest.approx([-6.906755] * 3, abs=1e-5)
    prior_config = tiny_config(tmp_path, tmp_path / "p", libra__eql=True, libra__eql_lambda=0.5, libra__eql_prior=0.01)
    prior_model = build_detector(prior_config, 3, images_per_class=torch.tensor([10, 1, 4]), num_images=10)
    # prior 0.01: bias = −log(0.99 / 0.01) = −log 99 = −4.595120
    assert prior_model.roi_heads.box_predictor.cls_score.bias.tolist() == pytest.approx([-4.595120] * 3, abs=1e-5)
    retina = tiny_config(tmp_path, tmp_path / "r", model__arch="retinanet", libra__bfp=True)
    assert build_detector(retina, 3).backbone.bfp.refine_level == 1  # P4 of P3–P7 for RetinaNet


FASTER_SWITCHES = ("iou_sampling", "bfp", "balanced_l1", "eql")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("arch", "switches"),
    [
        ("faster_rcnn", combo)
        for r in range(len(FASTER_SWITCHES) + 1)
        for combo in itertools.combinations(FASTER_SWITCHES, r)
    ]
    + [("retinanet", combo) for r in range(3) for combo in itertools.combinations(("bfp", "balanced_l1"), r)],
)
def test_every_switch_combination_trains(tiny_benchmark, tmp_path, arch, switches):
    overrides = {f"libra__{name}": True for name in switches}
    config = tiny_config(
        tiny_benchmark,
        tmp_path / "run",
        model__arch=arch,
        train__max_iters=2,
        train__checkpoint_interval=10,
        libra__eql_lambda=0.9,
        **overrides,
    )
    result = train(config)
    assert result.iterations == 2
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    train_lines = [r for r in log if r["type"] == "train"]
    assert [r["iter"] for r in train_lines] == [1, 2]
    expected_terms = (
        {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
        if arch == "faster_rcnn"
        else {"classification", "bbox_regression"}
    )
    assert expected_terms <= set(train_lines[-1])
    assert all(torch.isfinite(torch.tensor(train_lines[-1][k])) for k in expected_terms)
    # The resolved config records which components were on.
    saved = (tmp_path / "run" / "config.yaml").read_text()
    for name in FASTER_SWITCHES:
        assert f"  {name}: {'true' if name in switches else 'false'}" in saved


def test_reference_options_select_their_parts(tmp_path):
    from torchvision.models.detection._utils import BalancedPositiveNegativeSampler
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    from libra_cli.models.retinanet import BatchNormalisedClassificationHead, P6FromC5P7NoReLU
    from libra_cli.sampling import NegPosCappedSampler

    plain = build_detector(tiny_config(tmp_path, tmp_path / "run"), 3)
    assert type(plain.rpn.fg_bg_sampler) is BalancedPositiveNegativeSampler
    assert type(plain.roi_heads) is RoIHeads

    capped = build_detector(tiny_config(tmp_path, tmp_path / "run", model__rpn_neg_pos_ub=5), 3)
    assert isinstance(capped.rpn.fg_bg_sampler, NegPosCappedSampler)
    assert (capped.rpn.fg_bg_sampler.neg_pos_ub, capped.rpn.fg_bg_sampler.batch_size_per_image) == (5, 256)
    assert type(capped.roi_heads) is RoIHeads  # the RPN cap alone leaves torchvision's RoI head

    # The paper's baseline: smooth L1 with β = 1.0 in the RoI head, nothing else changed.
    paper = build_detector(tiny_config(tmp_path, tmp_path / "run", model__roi_smooth_l1_beta=1.0), 3)
    assert isinstance(paper.roi_heads, LibraRoIHeads)
    assert paper.roi_heads.iou_sampler is None and paper.roi_heads.eql_tail_mask is None
    assert paper.roi_heads.box_loss.keywords == {"beta": 1.0, "reduction": "sum"}

    retina = build_detector(
        tiny_config(
            tmp_path,
            tmp_path / "r",
            model__arch="retinanet",
            model__retinanet_p6="c5",
            model__retinanet_loss_norm="batch",
        ),
        3,
    )
    extra = retina.backbone.fpn.extra_blocks
    assert isinstance(extra, P6FromC5P7NoReLU)
    assert (extra.p6.in_channels, extra.p6.out_channels) == (512, 32)  # C5 of ResNet-18 → the FPN's 32
    assert isinstance(retina.head.classification_head, BatchNormalisedClassificationHead)
    default_retina = build_detector(tiny_config(tmp_path, tmp_path / "r", model__arch="retinanet"), 3)
    assert type(default_retina.backbone.fpn.extra_blocks) is LastLevelP6P7


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        {"model__rpn_neg_pos_ub": 5, "model__roi_box_loss": "l1", "libra__iou_sampling": True},
        {"model__rpn_neg_pos_ub": 0, "model__roi_smooth_l1_beta": 1.0, "libra__bfp": True, "libra__bfp_refine": "conv"},
        {
            "model__arch": "retinanet",
            "model__retinanet_p6": "c5",
            "model__retinanet_loss_norm": "batch",
            "libra__bfp": True,
            "libra__balanced_l1": True,
        },
        {
            "model__box_head_init": "reference",
            "model__rpn_min_pos_iou": 0.3,
            "model__rpn_loss_norm": "reference",
            "data__drop_unannotated": True,
            "libra__iou_sampling": True,
            "libra__iou_last_bin": "half-open",
        },
    ],
    ids=["rpn-cap-l1-iou", "no-rpn-negatives-paper-beta-conv-bfp", "libra-retinanet-reference", "reference-details"],
)
def test_reference_options_train(tiny_benchmark, tmp_path, overrides):
    config = tiny_config(
        tiny_benchmark, tmp_path / "run", train__max_iters=2, train__checkpoint_interval=10, **overrides
    )
    assert train(config).iterations == 2
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    last = [r for r in log if r["type"] == "train"][-1]
    terms = {k: v for k, v in last.items() if k.startswith(("loss_", "classification", "bbox_regression"))}
    assert len(terms) in (2, 4), terms  # RetinaNet's two terms or Faster R-CNN's four
    assert all(torch.isfinite(torch.tensor(v)) for v in terms.values())
