"""The balanced-learning components, each described once: its switch, its label, the part it replaces.

``COMPONENTS`` is a plain table in the order the papers introduce the components. Everything that
lists the components reads it: ``LibraConfig.enabled()``, the report's columns and ablation labels,
the benchmark's switches and the detector builder, whose ``libra_cli.models.parts.PART_BUILDS`` maps
each switch to the function that builds its part::

    parts = detector_parts(config, stats)   # DetectorParts: sampler, box loss, classifier, backbone wrap
    model.roi_heads = LibraRoIHeads.from_plain(..., sampler=parts.roi_sampler, box_loss=parts.roi_box_loss, …)

A component is a :class:`Component`: the ``LibraConfig`` field that switches it on (the field's comment
is its ``--flag`` help), the label reports print, the paper section, the part of the detector it
replaces and the architectures it applies to. Two switched-on components that replace the same part
(``--iou-sampling --ohem``: two RoI samplers) are a one-line error. This table only describes; it
imports no implementation, so the config (one layer up) reads it. Adding a component is one row here,
its file, its ``LibraConfig`` field and its build in ``models/parts.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from libra_cli.errors import LibraError

FASTER_RCNN, MASK_RCNN, RETINANET = "faster_rcnn", "mask_rcnn", "retinanet"
# The two-stage detectors: RPN + RoI heads on P2–P6 (Mask R-CNN is Faster R-CNN plus a mask branch).
TWO_STAGE = (FASTER_RCNN, MASK_RCNN)
BOTH = (*TWO_STAGE, RETINANET)  # every architecture
NEGATIVE_IOU_THRESHOLD = 0.5  # torchvision's RoI head: IoU < 0.5 is background
NUM_PYRAMID_LEVELS = 5  # P2–P6 (Faster / Mask R-CNN) or P3–P7 (RetinaNet)


@dataclass(frozen=True)
class Component:
    """One balanced-learning component: how it is switched on and labelled, and what it replaces."""

    switch: str  # the ``LibraConfig`` field that turns it on (``--iou-sampling`` for ``iou_sampling``)
    label: str  # its name in reports and ablation tables
    paper: str  # where it is defined
    replaces: str  # the detector part it replaces; two switched-on components may not replace the same one
    archs: tuple[str, ...]  # the architectures it applies to
    table2_step: bool = False  # one of the cumulative steps of Libra R-CNN Table 2 (in this order)
    settings: tuple[str, ...] = ()  # the ``LibraConfig`` fields that act on training only while it is on


# fmt: off
COMPONENTS = (
    Component("iou_sampling", "IoU-balanced sampling", "Libra R-CNN §3.1", "RoI sampler", TWO_STAGE,
              table2_step=True, settings=("iou_bins", "iou_floor_thr", "iou_floor_fraction", "iou_bins_upper",
                                          "iou_last_bin", "pos_balance")),
    Component("bfp", "BFP", "Libra R-CNN §3.2", "neck", BOTH, table2_step=True,
              settings=("bfp_refine", "bfp_refine_level", "bfp_init")),
    Component("balanced_l1", "balanced L1", "Libra R-CNN §3.3", "box loss", BOTH, table2_step=True,
              settings=("bl1_alpha", "bl1_gamma", "bl1_beta")),
    Component("eql", "EQL", "EQL paper §3", "classifier", TWO_STAGE,
              settings=("eql_lambda", "eql_freq", "eql_prior")),
    Component("ohem", "OHEM", "Shrivastava et al., CVPR 2016", "RoI sampler", TWO_STAGE),
)
# fmt: on
SWITCHES = tuple(component.switch for component in COMPONENTS)


def setting_owner(name: str) -> Component | None:
    """The component whose ``LibraConfig`` setting ``name`` is (``eql_prior`` → EQL), None for a switch."""
    return next((component for component in COMPONENTS if name in component.settings), None)


def enabled_components(config: Any) -> list[Component]:
    """The switched-on components of a ``RunConfig``, in table order."""
    return [component for component in COMPONENTS if getattr(config.libra, component.switch)]


def check_components(config: Any) -> None:
    """One-line LibraError when a switched-on component of a ``RunConfig`` does not fit the architecture
    or another one."""
    taken: dict[str, Component] = {}
    for component in enabled_components(config):
        if config.model.arch not in component.archs:
            raise LibraError(
                f"libra.{component.switch}: for --arch {' or '.join(component.archs)} only, not {config.model.arch}"
            )
        other = taken.setdefault(component.replaces, component)
        if other is not component:
            raise LibraError(
                f"libra.{other.switch} and libra.{component.switch} both replace the {component.replaces}; "
                "switch one off"
            )
