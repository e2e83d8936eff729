"""The balanced-learning components, each described once: its switch, its label, the part it builds.

``COMPONENTS`` is a plain table in the order the papers introduce the components. Everything that
lists the components reads it: ``LibraConfig.enabled()``, the report's columns and ablation labels,
the benchmark's switches and ``build_detector``, which starts from torchvision's parts and lets each
switched-on component supply its own::

    parts = detector_parts(config, stats)   # DetectorParts: sampler, box loss, classifier, backbone wrap
    model.roi_heads = LibraRoIHeads.from_plain(..., sampler=parts.roi_sampler, box_loss=parts.roi_box_loss, …)

A component is a :class:`Component`: the ``LibraConfig`` field that switches it on (the field's comment
is its ``--flag`` help), the label reports print, the paper section, the part of the detector it
replaces and a ``build`` function from the run config to that part. Two switched-on components that
replace the same part (``--iou-sampling --ohem``: two RoI samplers) are a one-line error. Adding a
component is one row here plus its file and its ``LibraConfig`` field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from libra_cli.config import RunConfig, resolved_component_settings
from libra_cli.errors import LibraError
from libra_cli.losses import balanced_l1_loss, image_frequency, tail_class_mask
from libra_cli.models.bfp import BackboneWithBFP
from libra_cli.models.retinanet import use_balanced_l1
from libra_cli.sampling import IoUBalancedSampler
from libra_cli.sampling.ohem import OHEMSampler

FASTER_RCNN, MASK_RCNN, RETINANET = "faster_rcnn", "mask_rcnn", "retinanet"
# The two-stage detectors: RPN + RoI heads on P2–P6 (Mask R-CNN is Faster R-CNN plus a mask branch).
TWO_STAGE = (FASTER_RCNN, MASK_RCNN)
BOTH = (*TWO_STAGE, RETINANET)  # every architecture
NEGATIVE_IOU_THRESHOLD = 0.5  # torchvision's RoI head: IoU < 0.5 is background
NUM_PYRAMID_LEVELS = 5  # P2–P6 (Faster / Mask R-CNN) or P3–P7 (RetinaNet)


@dataclass(frozen=True)
class TrainingStats:
    """What a component may need from the training set: ``images_per_class`` [C] and the denominator of
    the image frequencies (``libra.eql_freq`` chooses it); both None where unknown."""

    images_per_class: torch.Tensor | None = None
    num_images: int | None = None


@dataclass(frozen=True)
class DetectorParts:
    """The detector parts the switched-on components supply; None keeps torchvision's (or the model
    config's) own."""

    wrap_backbone: Callable[[torch.nn.Module], torch.nn.Module] | None = None  # backbone+FPN → new backbone
    roi_sampler: Any = None  # chooses each image's RoIs: ``sampler(labels, max_ious, matched_gt)`` → masks
    roi_box_loss: Callable[..., torch.Tensor] | None = None  # ``loss(pred [P, 4], target [P, 4])`` → summed
    eql_tail_mask: torch.Tensor | None = None  # [C] bool: the RoI classifier becomes EQL's sigmoid classifier
    eql_prior: float | None = None  # that classifier's initial probability per class (None → 0.001)
    retinanet_head: Callable[[torch.nn.Module], None] | None = None  # changes a RetinaNetHead in place

    def merged(self, other: DetectorParts) -> DetectorParts:
        """These parts with every part ``other`` supplies put in."""
        supplied = {f.name: getattr(other, f.name) for f in dataclasses.fields(other)}
        return dataclasses.replace(self, **{name: part for name, part in supplied.items() if part is not None})


@dataclass(frozen=True)
class Component:
    """One balanced-learning component: how it is switched on, labelled and built."""

    switch: str  # the ``LibraConfig`` field that turns it on (``--iou-sampling`` for ``iou_sampling``)
    label: str  # its name in reports and ablation tables
    paper: str  # where it is defined
    replaces: str  # the detector part it replaces; two switched-on components may not replace the same one
    archs: tuple[str, ...]  # the architectures it applies to
    build: Callable[[RunConfig, TrainingStats], DetectorParts]  # the part(s), from the run config
    table2_step: bool = False  # one of the cumulative steps of Libra R-CNN Table 2 (in this order)


def iou_balanced_sampler(config: RunConfig):
    """The IoU-balanced RoI sampler of a run's ``model`` and ``libra`` settings (Libra R-CNN §3.1)."""
    lib, model_cfg = config.libra, config.model
    try:
        return IoUBalancedSampler(
            batch_size_per_image=model_cfg.roi_batch_size_per_image,
            positive_fraction=model_cfg.roi_positive_fraction,
            num_bins=lib.iou_bins,
            floor_thr=lib.iou_floor_thr,
            floor_fraction=lib.iou_floor_fraction,
            bins_upper=lib.iou_bins_upper,
            neg_iou_thr=NEGATIVE_IOU_THRESHOLD,
            pos_balance=lib.pos_balance,
            last_bin_closed=lib.iou_last_bin == "closed",
        )
    except ValueError as exc:
        raise LibraError(f"libra: invalid IoU-balanced sampling settings ({exc})") from exc


def _balanced_feature_pyramid(config: RunConfig, stats: TrainingStats) -> DetectorParts:
    refine_level = resolved_component_settings(config)["bfp_refine_level"]
    if not 0 <= refine_level < NUM_PYRAMID_LEVELS:
        raise LibraError(f"libra.bfp_refine_level: must be in 0..4 for 5 pyramid levels, got {refine_level}")
    lib = config.libra
    wrap = partial(
        BackboneWithBFP,
        num_levels=NUM_PYRAMID_LEVELS,
        refine_level=refine_level,
        refine_type=lib.bfp_refine,
        init=lib.bfp_init,
    )
    return DetectorParts(wrap_backbone=wrap)


def _balanced_l1(config: RunConfig, stats: TrainingStats) -> DetectorParts:
    lib = config.libra
    settings = dict(alpha=lib.bl1_alpha, gamma=lib.bl1_gamma, beta=resolved_component_settings(config)["bl1_beta"])
    if config.model.arch == RETINANET:
        return DetectorParts(retinanet_head=partial(use_balanced_l1, **settings))
    loss = partial(balanced_l1_loss, **settings, reduction="sum")
    loss(torch.zeros(0), torch.zeros(0))  # raises a one-line error on α, γ, β <= 0 now, not at step one
    return DetectorParts(roi_box_loss=loss)


def _equalization_loss(config: RunConfig, stats: TrainingStats) -> DetectorParts:
    if stats.images_per_class is None or not stats.num_images:
        raise LibraError("libra.eql: needs the training set's per-class image counts")
    frequency = image_frequency(stats.images_per_class, stats.num_images)
    return DetectorParts(
        eql_tail_mask=tail_class_mask(frequency, config.libra.eql_lambda), eql_prior=config.libra.eql_prior
    )


# fmt: off
COMPONENTS = (
    Component("iou_sampling", "IoU-balanced sampling", "Libra R-CNN §3.1", "RoI sampler", TWO_STAGE,
              lambda config, stats: DetectorParts(roi_sampler=iou_balanced_sampler(config)), table2_step=True),
    Component("bfp", "BFP", "Libra R-CNN §3.2", "neck", BOTH, _balanced_feature_pyramid, table2_step=True),
    Component("balanced_l1", "balanced L1", "Libra R-CNN §3.3", "box loss", BOTH, _balanced_l1, table2_step=True),
    Component("eql", "EQL", "EQL paper §3", "classifier", TWO_STAGE, _equalization_loss),
    Component("ohem", "OHEM", "Shrivastava et al., CVPR 2016", "RoI sampler", TWO_STAGE,
              lambda config, stats: DetectorParts(roi_sampler=OHEMSampler(config.model.roi_batch_size_per_image))),
)
# fmt: on
SWITCHES = tuple(component.switch for component in COMPONENTS)


def enabled_components(config: RunConfig) -> list[Component]:
    """The switched-on components, in table order."""
    return [component for component in COMPONENTS if getattr(config.libra, component.switch)]


def check_components(config: RunConfig) -> None:
    """One-line LibraError when a switched-on component does not fit the architecture or another one."""
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


def detector_parts(config: RunConfig, stats: TrainingStats | None = None) -> DetectorParts:
    """The parts every switched-on component supplies (none switched on: all None, plain torchvision)."""
    parts = DetectorParts()
    for component in enabled_components(config):
        parts = parts.merged(component.build(config, stats or TrainingStats()))
    return parts
