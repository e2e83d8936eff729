"""RoI samplers: random (torchvision), IoU-balanced negatives and instance-balanced positives.

Libra R-CNN's IoU-balanced sampling splits the negatives' IoU range into K equal bins and draws the same
number from each. Where that range ends is a choice, named ``bins_upper`` in the config:

* ``"max-iou"`` (the default, as in the reference code): the range ends at the largest IoU of any
  proposal in the image. The GT boxes are added to the proposals, so this is normally 1.0. Negatives
  all have IoU below 0.5, so with K = 3 and an upper end of 1.0 the top bin [2/3, 1] is empty: only
  two bins really take part, and the top bin's share is drawn at random from the negatives instead.
* ``"neg-thr"`` (as the paper describes it): the range ends at the negative IoU threshold (0.5), so the
  K bins evenly cover every IoU a negative can have and each bin takes part.

The two give different samples for the same K, so a run's config records which one it used.

Which negatives are binned at all is the second choice, ``floor_thr``: the reference code is built with
−1 (every negative binned, as the paper's Eq. 2 reads) but sets it to 0 during its first call, so it
trains with IoU-0 negatives outside the bins, filling only a shortfall. libra's samplers are stateless;
the reference presets pass ``floor_thr = 0`` and the paper-text preset −1. ``iou_sampling_reading``
names the combination ("reference", "paper", or the two settings). Bins are
half-open, [lo + k·w, lo + (k+1)·w): an IoU on an inner edge goes to the upper bin; the last bin also
includes its upper end.

The samplers hold no state that changes from call to call, and every random draw takes an optional
``torch.Generator`` (None: the global RNG, so a seeded run is reproducible).
"""

from libra_cli.sampling.instance_balanced import sample_positives_per_instance
from libra_cli.sampling.iou_balanced import (
    BINS_UPPER_CHOICES,
    READINGS,
    iou_bin_index,
    iou_sampling_reading,
    sample_negatives_by_iou,
)
from libra_cli.sampling.neg_pos_cap import NegPosCappedSampler, capped_negative_count
from libra_cli.sampling.random import sample_uniformly
from libra_cli.sampling.sampler import IoUBalancedSampler, RandomSampler, hard_negatives

__all__ = [
    "BINS_UPPER_CHOICES",
    "READINGS",
    "IoUBalancedSampler",
    "NegPosCappedSampler",
    "RandomSampler",
    "capped_negative_count",
    "hard_negatives",
    "iou_bin_index",
    "iou_sampling_reading",
    "sample_negatives_by_iou",
    "sample_positives_per_instance",
    "sample_uniformly",
]
