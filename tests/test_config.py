"""Config: defaults ← preset ← flags, type checks, contradictions, YAML round trip."""

from __future__ import annotations

import pytest

from libra_cli.config import (
    PRESET_DIR,
    RunConfig,
    apply_overrides,
    load_config,
    load_run_config,
    resolved_component_settings,
    save_config,
)
from libra_cli.errors import LibraError


def test_flags_override_the_preset_and_the_preset_overrides_defaults():
    config = load_config("libra", {"libra": {"bfp": False}, "train": {"max_iters": 7}})
    assert config.libra.iou_sampling is True and config.libra.balanced_l1 is True  # from the preset
    assert config.libra.bfp is False  # the flag wins
    assert config.train.max_iters == 7
    assert config.train.out == "runs/libra"
    assert config.libra.enabled() == ["iou_sampling", "balanced_l1"]


def test_every_shipped_preset_loads():
    presets = sorted(p.stem for p in PRESET_DIR.glob("*.yaml") if not p.stem.startswith("ablation"))
    assert {"baseline", "libra", "libra_retinanet", "eql_lvis"} <= set(presets)
    for name in presets:
        load_config(name)


def test_yaml_round_trip(tmp_path):
    config = load_config("libra_retinanet", {"model": {"anchor_sizes": [8, 16, 32, 64, 128]}})
    (tmp_path / "run").mkdir()
    save_config(config, tmp_path / "run" / "config.yaml")
    assert load_run_config(tmp_path / "run") == config
    assert config.model.anchor_sizes == (8, 16, 32, 64, 128)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"model": {"arch": "yolo"}}, "model.arch: 'yolo' is not one of"),
        ({"model": {"arch": "retinanet"}, "libra": {"eql": True}}, "libra.eql"),
        ({"model": {"arch": "retinanet"}, "libra": {"iou_sampling": True}}, "libra.iou_sampling"),
        ({"train": {"max_iters": 0}}, "train.max_iters: must be positive"),
        ({"train": {"max_iters": "ten"}}, "train.max_iters: expected an integer, got 'ten'"),
        ({"train": {"colour": 1}}, "train.colour is not a known setting"),
        ({"optimizer": {}}, "unknown section 'optimizer'"),
        ({"data": {"train_ann": "a.json"}}, "--train-ann and --train-images must be given together"),
        ({"libra": {"iou_bins_upper": "top"}}, "libra.iou_bins_upper"),
        ({"train": {"device": "tpu"}}, "train.device"),
    ],
)
def test_bad_settings_are_rejected_with_the_key_named(overrides, message):
    with pytest.raises(LibraError, match=message.replace("(", r"\(").replace("[", r"\[")):
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
