"""The component table: one row per component, read by the config, the report and the detector builder."""

from __future__ import annotations

import dataclasses

import pytest

from libra_cli import components
from libra_cli.components import COMPONENTS, SWITCHES
from libra_cli.config import LibraConfig, load_config
from libra_cli.errors import LibraError
from libra_cli.models.parts import PART_BUILDS, DetectorParts, TrainingStats, detector_parts
from libra_cli.report import tables
from libra_cli.sampling import IoUBalancedSampler
from libra_cli.sampling.ohem import OHEMSampler


def test_each_component_is_one_boolean_switch_listed_once_in_the_papers_order():
    assert SWITCHES == ("iou_sampling", "bfp", "balanced_l1", "eql", "ohem")
    fields = {field.name: field for field in dataclasses.fields(LibraConfig)}
    assert all(fields[name].type in ("bool", bool) and fields[name].default is False for name in SWITCHES)
    assert len({component.label for component in COMPONENTS}) == len(COMPONENTS)


def test_every_other_libra_setting_belongs_to_exactly_one_component():
    # LibraConfig's fields that are not switches each tune one component (config.py's comments): the report
    # marks them "(EQL off)" etc. in a run with their component off. OHEM has no setting of its own.
    others = [field.name for field in dataclasses.fields(LibraConfig) if field.name not in SWITCHES]
    owners = {name: [c.switch for c in COMPONENTS if name in c.settings] for name in others}
    assert owners == {
        "iou_bins": ["iou_sampling"], "iou_floor_thr": ["iou_sampling"], "iou_floor_fraction": ["iou_sampling"],
        "iou_bins_upper": ["iou_sampling"], "iou_last_bin": ["iou_sampling"], "pos_balance": ["iou_sampling"],
        "bfp_refine": ["bfp"], "bfp_refine_level": ["bfp"], "bfp_init": ["bfp"],
        "bl1_alpha": ["balanced_l1"], "bl1_gamma": ["balanced_l1"], "bl1_beta": ["balanced_l1"],
        "eql_lambda": ["eql"], "eql_freq": ["eql"], "eql_prior": ["eql"],
    }  # fmt: skip
    assert components.setting_owner("eql_prior").label == "EQL" and components.setting_owner("eql") is None


def test_the_table_describes_and_the_models_layer_builds_each_row_once():
    # components.py imports no implementation; models/parts.py holds one build per switch, in table order,
    # and none for a component the table does not list.
    assert tuple(PART_BUILDS) == SWITCHES


def test_the_config_and_the_report_read_the_table():
    # Turned on in the reverse order, reported in the table's.
    config = load_config(None, {"libra": {"ohem": True, "balanced_l1": True, "bfp": True}})
    assert config.libra.enabled() == ["bfp", "balanced_l1", "ohem"]
    assert tables.COMPONENTS == SWITCHES
    assert tables.COMPONENT_TITLES["ohem"] == "OHEM"
    # Libra R-CNN Table 2's cumulative steps, in its order.
    assert tables.CUMULATIVE_ORDER == ("iou_sampling", "bfp", "balanced_l1")


def test_no_component_on_supplies_no_part():
    # Every part None: build_detector keeps torchvision's own (the parity tests in tests/models).
    assert detector_parts(load_config()) == DetectorParts()


def test_each_component_supplies_its_part():
    config = load_config(
        None,
        {"libra": {"iou_sampling": True, "bfp": True, "balanced_l1": True}, "model": {"roi_batch_size_per_image": 96}},
    )
    parts = detector_parts(config)
    assert isinstance(parts.roi_sampler, IoUBalancedSampler) and parts.roi_sampler.batch_size_per_image == 96
    assert parts.wrap_backbone is not None and parts.roi_box_loss is not None
    assert parts.retinanet_head is None and parts.eql_tail_mask is None
    ohem = detector_parts(load_config(None, {"libra": {"ohem": True}, "model": {"roi_batch_size_per_image": 96}}))
    assert isinstance(ohem.roi_sampler, OHEMSampler) and ohem.roi_sampler.batch_size_per_image == 96
    # Balanced L1 on RetinaNet changes its head, not a RoI head's loss.
    retina = detector_parts(load_config(None, {"libra": {"balanced_l1": True}, "model": {"arch": "retinanet"}}))
    assert retina.retinanet_head is not None and retina.roi_box_loss is None


def test_eql_needs_the_training_set_statistics():
    import torch

    config = load_config(None, {"libra": {"eql": True, "eql_lambda": 0.5}})
    with pytest.raises(LibraError, match="per-class image counts"):
        detector_parts(config)
    # Image frequencies 1.0, 0.1, 0.4 with λ = 0.5: classes 2 and 3 are tail classes.
    parts = detector_parts(config, TrainingStats(torch.tensor([10, 1, 4]), 10))
    assert parts.eql_tail_mask.tolist() == [False, True, True]


def test_two_components_replacing_one_part_are_a_one_line_error():
    with pytest.raises(LibraError) as error:
        load_config(None, {"libra": {"iou_sampling": True, "ohem": True}})
    assert str(error.value) == "libra.iou_sampling and libra.ohem both replace the RoI sampler; switch one off"
    with pytest.raises(LibraError, match="libra.ohem: for --arch faster_rcnn or mask_rcnn only, not retinanet"):
        load_config(None, {"libra": {"ohem": True}, "model": {"arch": "retinanet"}})
    assert components.check_components(load_config(None, {"libra": {"bfp": True, "balanced_l1": True}})) is None


def test_the_ohem_preset_is_the_baseline_with_ohem_on():
    baseline, ohem = load_config("baseline"), load_config("ohem")
    assert ohem.libra.enabled() == ["ohem"]
    libra_off = dataclasses.replace(ohem.libra, ohem=False)
    same_out = dataclasses.replace(ohem.train, out=baseline.train.out)
    assert dataclasses.replace(ohem, libra=libra_off, train=same_out) == baseline
