"""Loss functions for balanced learning: each a pure function whose docstring carries its formula.

- ``balanced_l1``: Libra R-CNN's balanced L1 box-regression loss (Libra R-CNN §3.3), with the smooth L1 loss and
  both closed-form gradients for the gradient analysis.
- ``equalization``: the equalization loss for long-tailed sigmoid classifiers (Tan et al., CVPR 2020, Sec. 3)
  and its helpers (image frequencies, tail-class mask, tail ratio, classifier initialisation).
"""

from libra_cli.losses.balanced_l1 import (
    LossArgumentError,
    balanced_l1_b,
    balanced_l1_grad,
    balanced_l1_loss,
    smooth_l1_grad,
    smooth_l1_loss_elementwise,
)
from libra_cli.losses.equalization import (
    count_images_per_class,
    eql_classifier_bias_init,
    equalization_loss,
    image_frequency,
    init_eql_classifier,
    tail_class_mask,
    tail_ratio,
)

__all__ = [
    "LossArgumentError",
    "balanced_l1_b",
    "balanced_l1_grad",
    "balanced_l1_loss",
    "count_images_per_class",
    "eql_classifier_bias_init",
    "equalization_loss",
    "image_frequency",
    "init_eql_classifier",
    "smooth_l1_grad",
    "smooth_l1_loss_elementwise",
    "tail_class_mask",
    "tail_ratio",
]
