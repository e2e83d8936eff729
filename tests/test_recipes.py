"""The paper recipes in experiments/: each loads, builds the detector it describes on the CPU (with random
"ImageNet" weights in a temporary torch hub cache) and takes a training step with finite losses."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.models import resnet
from torchvision.ops.misc import FrozenBatchNorm2d

from libra_cli.config import load_config, read_yaml, resolve_preset
from libra_cli.engine.ablate import load_grid
from libra_cli.models.build import build_detector, imagenet_weights_path
from libra_cli.models.roi_heads import LibraRoIHeads

COCO = [
    "coco_faster_rcnn_r50_fpn_1x",
    "coco_libra_faster_rcnn_r50_fpn_1x",
    "coco_retinanet_r50_fpn_1x",
    "coco_libra_retinanet_r50_fpn_1x",
]
LVIS = ["lvis_faster_rcnn_r50_fpn_1x", "lvis_eql_faster_rcnn_r50_fpn_1x"]
NUM_CLASSES = 5
# The recipes' 800 × 1333 images, and 512 RoIs per image through the 12544 → 1024 box head (≈ 80 GFLOP a step),
# would be slow on a CPU; test_recipe_settings checks the recipes' own values of both.
SMALL = {"model": {"min_size": 128, "max_size": 128, "roi_batch_size_per_image": 64}}


@pytest.fixture(scope="module")
def imagenet_hub(tmp_path_factory):
    """A torch hub cache holding a random ResNet-50 under torchvision's ImageNet file name."""
    hub = tmp_path_factory.mktemp("hub")
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(hub))
    try:
        path = imagenet_weights_path("resnet50")
        path.parent.mkdir(parents=True)
        # torchvision's random initialisation, with BatchNorm statistics that are not the identity's.
        torch.manual_seed(0)
        state = resnet.resnet50(weights=None).state_dict()
        for name, value in state.items():
            if name.endswith("running_var"):
                state[name] = torch.rand_like(value) + 0.5
            elif name.endswith("running_mean"):
                state[name] = 0.1 * torch.randn_like(value)
        torch.save(state, path)
        yield hub, torch.load(path, weights_only=True)
    finally:
        torch.hub.set_dir(previous)


@pytest.fixture
def hub(imagenet_hub, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(imagenet_hub[0]))
    monkeypatch.setenv("LIBRA_OFFLINE", "1")  # a test must never download
    return imagenet_hub[1]


def build(preset: str):
    config = load_config(preset, SMALL)
    stats = {"images_per_class": torch.tensor([50, 20, 5, 2, 1]), "num_images": 60} if config.libra.eql else {}
    return config, build_detector(config, NUM_CLASSES, **stats)


def training_step_losses(model, with_masks: bool = False) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 128, 160, generator=generator), torch.rand(3, 112, 128, generator=generator)]
    targets = [
        {"boxes": torch.tensor([[10.0, 12.0, 70.0, 90.0], [60.0, 30.0, 150.0, 110.0]]), "labels": torch.tensor([1, 3])},
        {"boxes": torch.tensor([[5.0, 5.0, 60.0, 40.0]]), "labels": torch.tensor([5])},
    ]
    if with_masks:  # each object's mask: its box filled
        for image, target in zip(images, targets, strict=True):
            masks = torch.zeros(len(target["boxes"]), *image.shape[-2:], dtype=torch.uint8)
            for mask, (x1, y1, x2, y2) in zip(masks, target["boxes"].int().tolist(), strict=True):
                mask[y1:y2, x1:x2] = 1
            target["masks"] = masks
    model.train()
    torch.manual_seed(0)
    losses = model(images, targets)
    sum(losses.values()).backward()
    return losses


@pytest.mark.parametrize("preset", COCO + LVIS)
def test_recipe_settings(preset):
    config = load_config(preset)
    m, t, d = config.model, config.train, config.data
    assert (m.backbone, m.backbone_weights, m.norm, m.frozen_stages) == ("resnet50", "imagenet", "frozen_bn", 1)
    assert (m.fpn_channels, m.min_size, m.max_size) == (256, 800, 1333)
    assert m.anchor_sizes == (32, 64, 128, 256, 512) and m.aspect_ratios == (0.5, 1.0, 2.0)
    assert (d.batch_size, d.hflip_prob, d.train_ann) == (16, 0.5, None)  # data files come from the command line
    assert t.lr == (0.01 if m.arch == "retinanet" else 0.02) and (t.scale_lr, t.reference_batch) == (True, 16)
    assert (t.momentum, t.weight_decay, t.grad_clip) == (0.9, 1e-4, 35.0)
    assert (t.warmup_iters, t.warmup_factor, t.schedule) == (500, pytest.approx(1 / 3), "step")
    assert (t.epochs, t.lr_milestones_epochs) == (12, (8, 11))
    lvis = preset.startswith("lvis")
    assert (m.score_thresh, m.detections_per_image) == ((1e-4, 300) if lvis else (0.05, 100))
    # Batches of one orientation in every recipe (detectron2 and mmdetection both group); the EQL config trains
    # multi-scale (MIN_SIZE_TRAIN 640…800) without repeat-factor sampling.
    assert d.aspect_ratio_grouping is True and d.repeat_factor_thr is None
    assert m.train_min_sizes == ((640, 672, 704, 736, 768, 800) if lvis else None)
    if m.arch == "faster_rcnn":
        assert (m.rpn_pre_nms_top_n_train, m.rpn_post_nms_top_n_train) == (2000, 2000)
        assert (m.rpn_pre_nms_top_n_test, m.rpn_post_nms_top_n_test) == (1000, 1000)
        assert (m.roi_batch_size_per_image, m.roi_positive_fraction, m.roi_sampling_ratio) == (512, 0.25, 2)
        assert m.box_head_dim == 1024
    else:
        assert (m.retinanet_loss_norm, m.retinanet_p6) == ("batch", "c5")
    libra = "libra" in preset
    assert (config.libra.bfp, config.libra.balanced_l1) == (libra, libra)
    assert config.libra.iou_sampling == (libra and m.arch == "faster_rcnn")
    if "eql" in preset:
        assert (config.libra.eql, config.libra.eql_lambda) == (True, 1.76e-3)


def test_every_recipe_names_its_sources_and_the_papers_number():
    for preset in COCO + LVIS + ["coco_table2"]:
        header = resolve_preset(preset).read_text(encoding="utf-8").split("\n\n")[0]
        assert "Source" in header or "sources" in header, preset
        assert "AP" in header, preset


@pytest.mark.parametrize("preset", COCO + LVIS)
def test_recipe_builds_its_model_and_trains_a_step(preset, hub):
    config, model = build(preset)
    fpn = model.backbone.backbone if config.libra.bfp else model.backbone  # BackboneWithBFP wraps the FPN
    body = fpn.body
    # ImageNet weights from the hub cache, the stem and layer1 frozen, every norm layer frozen BatchNorm.
    torch.testing.assert_close(body.conv1.weight, hub["conv1.weight"], rtol=0, atol=0)
    torch.testing.assert_close(body.layer3[0].bn2.running_var, hub["layer3.0.bn2.running_var"], rtol=0, atol=0)
    for name, parameter in body.named_parameters():
        frozen = name.split(".")[0] in ("conv1", "bn1", "layer1")
        assert parameter.requires_grad is not frozen, name
    norms = [module for module in body.modules() if "Norm" in type(module).__name__]
    assert norms and all(isinstance(module, FrozenBatchNorm2d) for module in norms)
    assert model.backbone.out_channels == 256
    if config.model.arch == "faster_rcnn":
        assert model.rpn.anchor_generator.sizes == ((32,), (64,), (128,), (256,), (512,))
        assert model.rpn._pre_nms_top_n == {"training": 2000, "testing": 1000}
        assert model.rpn._post_nms_top_n == {"training": 2000, "testing": 1000}
        assert model.roi_heads.box_roi_pool.sampling_ratio == 2
        assert model.roi_heads.box_head.fc7.out_features == 1024
        assert model.roi_heads.score_thresh == config.model.score_thresh
        assert model.roi_heads.detections_per_img == config.model.detections_per_image
        assert isinstance(model.roi_heads, LibraRoIHeads)  # every recipe: balanced L1, EQL or smooth L1 β = 1
    else:
        assert model.anchor_generator.sizes[0] == (32, 40, 51)  # 32 × 2^(0, 1/3, 2/3), the octave scales
        assert model.anchor_generator.sizes[-1] == (512, 645, 813)
        assert (model.score_thresh, model.detections_per_img) == (0.05, 100)
    losses = training_step_losses(model)
    assert losses and all(math.isfinite(value.item()) for value in losses.values()), losses
    assert body.layer1[0].conv1.weight.grad is None and body.layer2[0].conv1.weight.grad is not None


def test_coco_table2_grid_is_the_cumulative_ablation_on_the_coco_recipe():
    grid = load_grid(resolve_preset("coco_table2"))
    assert list(grid.runs) == ["baseline", "iou_sampling", "bfp", "balanced_l1"]
    assert grid.base == load_config("coco_faster_rcnn_r50_fpn_1x")
    full = load_config("coco_faster_rcnn_r50_fpn_1x", grid.runs["balanced_l1"])
    libra = load_config("coco_libra_faster_rcnn_r50_fpn_1x")
    # The last row is the Libra recipe but for the RoI head's smooth L1 settings, which balanced L1 replaces.
    assert full.libra == libra.libra
    assert read_yaml(resolve_preset("coco_table2"))["base"] == "coco_faster_rcnn_r50_fpn_1x"


@pytest.mark.slow
def test_the_coco_libra_recipe_trains_and_evaluates_end_to_end_on_the_cpu(hub, tiny_benchmark, tmp_path):
    """The recipe's structure (ResNet-50 from the hub cache, frozen stem and layer1, FPN 256, 1024-wide head,
    2000 proposals, Libra components) at 96 px for 2 iterations on the tiny synthetic benchmark."""
    import json

    from typer.testing import CliRunner

    from libra_cli.cli import app
    from libra_cli.data.build import benchmark_paths

    paths = benchmark_paths(tiny_benchmark)
    out = tmp_path / "run"
    args = ["train", "coco_libra_faster_rcnn_r50_fpn_1x", "--out", str(out), "--image-size", "96"]
    args += ["--train-ann", str(paths.train_ann), "--train-images", str(paths.train_images)]
    args += ["--val-ann", str(paths.val_ann), "--val-images", str(paths.val_images)]
    args += ["--device", "cpu", "--batch-size", "2", "--workers", "0", "--roi-batch-size", "64", "--warmup-iters", "1"]
    args += ["--set", "train.epochs=null", "--set", "train.lr_milestones_epochs=null", "--max-iters", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["iteration"] == 2 and metrics["num_images"] == 4  # the tiny benchmark's 4 val images
    saved = load_config(str(out / "config.yaml"))
    assert (saved.model.backbone, saved.model.frozen_stages, saved.model.fpn_channels) == ("resnet50", 1, 256)
    assert saved.libra.enabled() == ["iou_sampling", "bfp", "balanced_l1"]
    # Linear scaling from the reference batch 16 to the run's 2: peak lr 0.02 × 2 / 16 = 0.0025.
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    train_lrs = [record["lr"] for record in records if record.get("type") == "train"]
    assert max(train_lrs) == pytest.approx(0.0025)
