"""What `libra train` prints about the switches: components, and the reference's training details apart."""

from __future__ import annotations

from libra_cli.cli.display import describe_components
from libra_cli.config import load_config


def test_every_switch_off_is_the_plain_torchvision_detector():
    # RunConfig's defaults: no component and no reference detail (torchvision's behaviour everywhere).
    assert describe_components(load_config(None, {})) == "off (plain torchvision detector)"


def test_the_reference_details_are_named_when_no_component_is_on():
    # paper_baseline_1x.yaml: no Libra component, but box_head_init reference, rpn_min_pos_iou 0.3,
    # rpn_loss_norm reference and drop_unannotated; iou_last_bin half-open only matters with IoU sampling.
    config = load_config("paper_baseline_1x", {})
    assert describe_components(config) == (
        "off; reference details: box-head init, RPN positives IoU >= 0.3, RPN loss divisor, unannotated images dropped"
    )


def test_components_come_first_then_the_details():
    # libra_1x.yaml adds the RPN cap (5) and the half-open last bin, which IoU-balanced sampling uses.
    text = describe_components(load_config("libra_1x", {}))
    assert text.endswith(
        "; reference details: box-head init, RPN positives IoU >= 0.3, RPN loss divisor, "
        "RPN negatives <= 5 x positives, unannotated images dropped, half-open last IoU bin"
    )
    assert text.startswith("iou_sampling (")
