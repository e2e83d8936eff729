"""The detector parts the switched-on components supply, built from the run config.

``libra_cli.components.COMPONENTS`` describes each component (switch, label, the part it replaces);
this module implements them: :data:`PART_BUILDS` maps each switch to a function from the run config
(and the training set's statistics) to the :class:`DetectorParts` it supplies, and
:func:`detector_parts` merges those of the switched-on components for ``build_detector``. With no
component switched on every part is None and the detector is plain torchvision.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from libra_cli.components import NEGATIVE_IOU_THRESHOLD, NUM_PYRAMID_LEVELS, RETINANET, enabled_components
from libra_cli.config import RunConfig, resolved_component_settings
from libra_cli.errors import LibraError
from libra_cli.losses import balanced_l1_loss, image_frequency, tail_class_mask
from libra_cli.models.bfp import BackboneWithBFP
from libra_cli.models.retinanet import use_balanced_l1
from libra_cli.sampling import IoUBalancedSampler
from libra_cli.sampling.ohem import OHEMSampler


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


def iou_sampler_from_config(config: RunConfig) -> IoUBalancedSampler:
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


def _iou_balanced_sampling(config: RunConfig, stats: TrainingStats) -> DetectorParts:
    return DetectorParts(roi_sampler=iou_sampler_from_config(config))


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


def _ohem(config: RunConfig, stats: TrainingStats) -> DetectorParts:
    return DetectorParts(roi_sampler=OHEMSampler(config.model.roi_batch_size_per_image))


# Each component's switch (``components.SWITCHES``) → the part(s) it builds from the run config.
PART_BUILDS: dict[str, Callable[[RunConfig, TrainingStats], DetectorParts]] = {
    "iou_sampling": _iou_balanced_sampling,
    "bfp": _balanced_feature_pyramid,
    "balanced_l1": _balanced_l1,
    "eql": _equalization_loss,
    "ohem": _ohem,
}


def detector_parts(config: RunConfig, stats: TrainingStats | None = None) -> DetectorParts:
    """The parts every switched-on component supplies (none switched on: all None, plain torchvision)."""
    parts = DetectorParts()
    for component in enabled_components(config):
        parts = parts.merged(PART_BUILDS[component.switch](config, stats or TrainingStats()))
    return parts
