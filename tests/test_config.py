"""Config: defaults ← preset ← flags, type checks, contradictions, YAML round trip."""

from __future__ import annotations

import re

import pytest

from libra_cli.config import (
    PRESET_DIR,
    RunConfig,
    apply_overrides,
    load_config,
    read_yaml,
    resolved_component_settings,
    save_config,
)
from libra_cli.errors import LibraError
from libra_cli.rundir import RunLayout


def test_flags_override_the_preset_and_the_preset_overrides_defaults():
    config = load_config("libra", {"libra": {"bfp": False}, "train": {"max_iters": 7}})
    assert config.libra.iou_sampling is True and config.libra.balanced_l1 is True  # from the preset
    assert config.libra.bfp is False  # the flag wins
    assert config.train.max_iters == 7
    assert config.train.out == "runs/libra"
    assert config.libra.enabled() == ["iou_sampling", "balanced_l1"]


def test_every_shipped_preset_loads():
    # Grid files of `libra ablate` (a `runs:` mapping, e.g. ablation_table2.yaml, eql_study.yaml) are not presets.
    presets = sorted(p.stem for p in PRESET_DIR.glob("*.yaml") if "runs" not in read_yaml(p))
    assert {"baseline", "libra", "libra_retinanet", "eql_lvis"} <= set(presets)
    for name in presets:
        load_config(name)


def test_yaml_round_trip(tmp_path):
    config = load_config("libra_retinanet", {"model": {"anchor_sizes": [8, 16, 32, 64, 128]}})
    (tmp_path / "run").mkdir()
    save_config(config, tmp_path / "run" / "config.yaml")
    assert RunLayout(tmp_path / "run").read_config() == config
    assert config.model.anchor_sizes == (8, 16, 32, 64, 128)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"model": {"arch": "yolo"}},
            "model.arch (--arch): must be one of faster_rcnn, mask_rcnn, retinanet; got 'yolo'",
        ),
        ({"model": {"arch": "retinanet"}, "libra": {"eql": True}}, "libra.eql"),
        ({"model": {"arch": "retinanet"}, "libra": {"iou_sampling": True}}, "libra.iou_sampling"),
        ({"train": {"max_iters": 0}}, "train.max_iters (--max-iters): must be >= 1; got 0"),
        ({"train": {"max_iters": "ten"}}, "train.max_iters: expected an integer, got 'ten'"),
        ({"train": {"colour": 1}}, "train.colour is not a known setting"),
        ({"optimizer": {}}, "unknown section 'optimizer'"),
        ({"data": {"train_ann": "a.json"}}, "--train-ann and --train-images must be given together"),
        ({"libra": {"iou_bins_upper": "top"}}, "libra.iou_bins_upper"),
        ({"train": {"device": "tpu"}}, "train.device"),
    ],
)
def test_bad_settings_are_rejected_with_the_key_named(overrides, message):
    with pytest.raises(LibraError, match=re.escape(message)):
        load_config(None, overrides)


def test_bad_preset_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(LibraError, match="bad.yaml: not valid YAML"):
        load_config(str(bad))
    with pytest.raises(LibraError, match="unknown preset 'nope'"):
        load_config("nope")


def test_yaml_is_read_with_a_safe_loader(tmp_path):
    # A python/object tag must not be constructed (yaml.safe_load refuses it).
    evil = tmp_path / "evil.yaml"
    evil.write_text("train: !!python/object/apply:os.system ['echo unsafe']\n")
    with pytest.raises(LibraError, match="not valid YAML"):
        load_config(str(evil))


def test_architecture_dependent_component_defaults():
    faster = RunConfig()
    retina = apply_overrides(RunConfig(), {"model": {"arch": "retinanet"}}, "test")
    assert resolved_component_settings(faster) == {"bfp_refine_level": 2, "bl1_beta": 1.0}
    assert resolved_component_settings(retina) == {"bfp_refine_level": 1, "bl1_beta": 0.11}


def test_reference_and_paper_presets_name_their_readings():
    from libra_cli.models.parts import iou_sampler_from_config

    libra = load_config("libra")
    assert (libra.libra.iou_floor_thr, libra.libra.iou_bins_upper) == (0.0, "max-iou")
    assert iou_sampler_from_config(libra).reading == "reference"
    assert libra.model.rpn_neg_pos_ub == 5 and libra.libra.bfp_init == "xavier"
    paper = load_config("libra_paper")
    assert iou_sampler_from_config(paper).reading == "paper"
    assert (paper.libra.iou_floor_thr, paper.libra.iou_bins_upper) == (-1.0, "neg-thr")
    # The defaults a bare `--iou-sampling` gets are the reference's too.
    assert iou_sampler_from_config(load_config(None, {"libra": {"iou_sampling": True}})).reading == "reference"


def test_baseline_presets_differ_in_the_roi_box_loss_and_the_reference_details_only():
    torchvision_baseline, paper_baseline = load_config("baseline"), load_config("paper_baseline")
    # The reference's training details of SPEC §9, on in the paper's baseline and off (torchvision) in baseline.
    reference_details = {
        ("data", "drop_unannotated"): (True, False),
        ("model", "box_head_init"): ("reference", "torchvision"),
        ("model", "rpn_min_pos_iou"): (0.3, None),
        ("model", "rpn_loss_norm"): ("reference", "sampled"),
        ("libra", "iou_last_bin"): ("half-open", "closed"),
    }
    for (section, name), (paper_value, torchvision_value) in reference_details.items():
        assert getattr(getattr(paper_baseline, section), name) == paper_value, name
        assert getattr(getattr(torchvision_baseline, section), name) == torchvision_value, name
        setattr(getattr(paper_baseline, section), name, torchvision_value)
    assert (torchvision_baseline.model.roi_box_loss, torchvision_baseline.model.roi_smooth_l1_beta) == (
        "smooth_l1",
        pytest.approx(1 / 9),
    )
    assert (paper_baseline.model.roi_box_loss, paper_baseline.model.roi_smooth_l1_beta) == ("smooth_l1", 1.0)
    paper_baseline.model.roi_smooth_l1_beta = torchvision_baseline.model.roi_smooth_l1_beta
    paper_baseline.train.out = torchvision_baseline.train.out
    assert paper_baseline == torchvision_baseline


REFERENCE_PRESETS = [
    "paper_baseline", "libra", "coco_faster_rcnn_r50_fpn_1x", "coco_libra_faster_rcnn_r50_fpn_1x",
    "coco_mask_rcnn_r50_fpn_1x", "coco_libra_mask_rcnn_r50_fpn_1x", "voc_faster_rcnn_r50_fpn_1x",
    "voc_libra_faster_rcnn_r50_fpn_1x", "lvis_faster_rcnn_r50_fpn_1x", "lvis_eql_faster_rcnn_r50_fpn_1x",
    "lvis_mask_rcnn_r50_fpn_1x", "lvis_eql_mask_rcnn_r50_fpn_1x",
]  # fmt: skip


@pytest.mark.parametrize("preset", REFERENCE_PRESETS)
def test_reference_presets_turn_on_the_reference_training_details(preset):
    # SPEC §9: the reference's box-head init, RPN floor (min_pos_iou 0.3) and loss divisor, the dataset filter
    # and the half-open last IoU bin.
    config = load_config(preset)
    assert config.data.drop_unannotated is True
    assert (config.model.box_head_init, config.model.rpn_min_pos_iou, config.model.rpn_loss_norm) == (
        "reference",
        0.3,
        "reference",
    )
    assert config.libra.iou_last_bin == "half-open"


def test_libra_retinanet_preset_uses_the_reference_normaliser_and_p6():
    retina = load_config("libra_retinanet")
    assert (retina.model.retinanet_loss_norm, retina.model.retinanet_p6) == ("batch", "c5")
    assert load_config("libra_retinanet", {"model": {"retinanet_p6": "p5"}}).model.retinanet_p6 == "p5"


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"model": {"rpn_neg_pos_ub": -1}}, ["--rpn-neg-pos-ub", "must be >= 0", "got -1"]),
        ({"model": {"roi_box_loss": "huber"}}, ["--roi-box-loss", "'huber'"]),
        ({"model": {"roi_smooth_l1_beta": 0.0}}, ["--roi-smooth-l1-beta", "must be > 0; got 0.0"]),
        ({"model": {"retinanet_loss_norm": "anchors"}}, ["--retinanet-loss-norm", "'anchors'"]),
        ({"model": {"retinanet_p6": "p4"}}, ["--retinanet-p6", "'p4'"]),
        ({"libra": {"bfp_init": "kaiming"}}, ["--bfp-init", "'kaiming'"]),
        ({"libra": {"eql_freq": "instances"}}, ["--eql-freq", "'instances'"]),
    ],
)
def test_unknown_mode_names_and_a_negative_cap_are_one_line_errors(overrides, words):
    with pytest.raises(LibraError) as error:
        load_config(None, overrides)
    message = str(error.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)


def test_exponent_notation_without_a_dot_is_a_number(tmp_path):
    # PyYAML reads `1e-3` (no dot) as the string "1e-3"; a float field takes it as 0.001, and 1.76e-3 as 0.00176.
    preset = tmp_path / "lam.yaml"
    preset.write_text("libra:\n  eql_lambda: 1e-3\ntrain:\n  lr: 2E-2\n")
    config = load_config(str(preset))
    assert (config.libra.eql_lambda, config.train.lr) == (0.001, 0.02)
    assert load_config(None, {"libra": {"eql_lambda": "1.76e-3"}}).libra.eql_lambda == 0.00176
    with pytest.raises(LibraError, match="expected a number, got 'e3'"):
        load_config(None, {"libra": {"eql_lambda": "e3"}})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"data": {"repeat_factor_thr": 0}}, "repeat_factor_thr"),
        ({"data": {"repeat_factor_thr": -0.001}}, "repeat_factor_thr"),
        ({"model": {"train_min_sizes": [640, 0]}}, "train_min_sizes"),
        ({"model": {"train_min_sizes": []}}, "train_min_sizes"),
    ],
)
def test_sampling_and_multi_scale_settings_are_checked(overrides, message):
    with pytest.raises(LibraError, match=message):
        load_config(None, overrides)
    config = load_config(
        None,
        {
            "data": {"repeat_factor_thr": "1e-3", "aspect_ratio_grouping": True},
            "model": {"train_min_sizes": [640, 800]},
        },
    )
    assert (config.data.repeat_factor_thr, config.model.train_min_sizes) == (0.001, (640, 800))
