"""The Mask R-CNN and Pascal VOC recipes in experiments/: their settings against the sources named in their
headers, and each builds on the CPU (random "ImageNet" weights in a temporary hub cache) and trains a step."""

from __future__ import annotations

import math

import pytest
import torch

from libra_cli.config import load_config, resolve_preset
from libra_cli.models.roi_heads import LibraRoIHeads
from tests.test_recipes import build, hub, imagenet_hub, training_step_losses  # noqa: F401 (fixtures)

MASK_COCO = ["coco_mask_rcnn_r50_fpn_1x", "coco_libra_mask_rcnn_r50_fpn_1x"]
MASK_LVIS = ["lvis_mask_rcnn_r50_fpn_1x", "lvis_eql_mask_rcnn_r50_fpn_1x"]
VOC = ["voc_faster_rcnn_r50_fpn_1x", "voc_libra_faster_rcnn_r50_fpn_1x"]
ALL = MASK_COCO + MASK_LVIS + VOC


def test_every_recipe_names_its_sources_and_a_reference_number():
    for preset in ALL:
        header = resolve_preset(preset).read_text(encoding="utf-8").split("\ndata:")[0]
        assert "Source" in header, preset
        assert "AP" in header, preset


@pytest.mark.parametrize("preset", MASK_COCO + MASK_LVIS)
def test_mask_rcnn_recipes_are_their_faster_rcnn_recipes_with_the_mask_branch(preset):
    """Every setting but the architecture and the run folder equals the Faster R-CNN recipe it extends."""
    twin = preset.replace("mask_rcnn", "faster_rcnn")
    mask, faster = load_config(preset), load_config(twin)
    assert (mask.model.arch, faster.model.arch) == ("mask_rcnn", "faster_rcnn")
    for section in ("data", "libra"):
        assert getattr(mask, section) == getattr(faster, section), section
    train = {k: v for k, v in vars(mask.train).items() if k != "out"}
    assert train == {k: v for k, v in vars(faster.train).items() if k != "out"}
    model = {k: v for k, v in vars(mask.model).items() if k != "arch"}
    assert model == {k: v for k, v in vars(faster.model).items() if k != "arch"}
    assert mask.train.out == f"runs/{preset}"


@pytest.mark.parametrize("preset", VOC)
def test_voc_recipe_settings(preset):
    """configs/pascal_voc/faster_rcnn_r50_fpn_1x_voc0712.py: img_scale (1000, 600), lr 0.01 for 16 images, no
    warm-up, RepeatDataset ×3 over 4 epochs with the step after epoch 3 = 12 passes stepped after pass 9, the
    RPN's 2000/2000 proposals at test time."""
    config = load_config(preset)
    m, t, d = config.model, config.train, config.data
    assert (d.train_split, d.val_split, d.voc_use_difficult) == ("trainval", "test", False)
    assert (m.min_size, m.max_size) == (600, 1000)
    assert (t.lr, t.scale_lr, t.reference_batch, d.batch_size) == (0.01, True, 16, 16)
    assert (t.warmup_iters, t.epochs, t.lr_milestones_epochs) == (0, 12, (9,))
    assert (t.momentum, t.weight_decay, t.grad_clip) == (0.9, 1e-4, 35.0)
    assert (m.rpn_pre_nms_top_n_test, m.rpn_post_nms_top_n_test) == (2000, 2000)
    assert (m.score_thresh, m.detections_per_image) == (0.05, 100)
    libra = "libra" in preset
    assert (config.libra.iou_sampling, config.libra.bfp, config.libra.balanced_l1) == (libra,) * 3
    assert m.rpn_neg_pos_ub == (5 if libra else None)


@pytest.mark.parametrize("preset", ALL)
def test_recipe_builds_its_model_and_trains_a_step(preset, hub):  # noqa: F811 (fixture)
    config, model = build(preset)
    assert isinstance(model.roi_heads, LibraRoIHeads)  # balanced L1, EQL or smooth L1 β = 1 in every recipe
    assert model.roi_heads.box_roi_pool.sampling_ratio == 2
    if config.model.arch == "mask_rcnn":
        assert model.roi_heads.has_mask()
        # torchvision's mask branch: RoIAlign 14 × 14 (sampling 2), four 256-channel 3 × 3 convolutions, 28 × 28.
        assert model.roi_heads.mask_roi_pool.output_size in ((14, 14), [14, 14], 14)
        assert model.roi_heads.mask_roi_pool.sampling_ratio == 2
        convs = [m for m in model.roi_heads.mask_head.modules() if isinstance(m, torch.nn.Conv2d)]
        assert [(c.out_channels, c.kernel_size) for c in convs] == [(256, (3, 3))] * 4
    else:
        assert not model.roi_heads.has_mask()
    masks = config.model.arch == "mask_rcnn"
    losses = training_step_losses(model, with_masks=masks)
    assert losses and all(math.isfinite(value.item()) for value in losses.values()), losses
    assert ("loss_mask" in losses) == masks
