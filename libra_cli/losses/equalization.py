"""Equalization loss (EQL) for long-tailed detection (Tan et al., CVPR 2020, Sec. 3).

In a sigmoid classifier every foreground RoI of a frequent class is a negative for every other class, so
rare classes receive almost only "discouraging" gradients. EQL drops those: for a foreground RoI it
removes the negative term of every tail class other than the RoI's own class. Background RoIs keep every
gradient. For an RoI r with one-hot target y over the C foreground classes:

    L = − Σ_j w_j · [ y_j·log σ(z_j) + (1 − y_j)·log(1 − σ(z_j)) ]
    w_j = 1 − E(r) · T_λ(f_j) · (1 − y_j)

E(r) = 1 for a foreground RoI, 0 for background; f_j = (images containing class j) / (images);
T_λ(f) = 1 if f < λ else 0. The paper uses λ = 1.76e-3 on LVIS v0.5; λ must be chosen per dataset, and
the tail ratio TR(λ) is what to report when choosing it.
"""

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from libra_cli.losses.balanced_l1 import LossArgumentError, check_reduction


def equalization_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    tail_mask: torch.Tensor,
    reduction: str = "mean",
) -> torch.Tensor:
    """Equalization loss of a sigmoid classifier's logits (Tan et al., CVPR 2020, Sec. 3).

        L_r = − Σ_j w_j · [ y_j·log σ(z_j) + (1 − y_j)·log(1 − σ(z_j)) ]
        w_j = 1 − E(r) · T_λ(f_j) · (1 − y_j)

    Computed with ``binary_cross_entropy_with_logits`` and ``w`` as its weight, so large logits stay
    finite. With an all-False ``tail_mask`` (λ = 0) this is plain sigmoid binary cross-entropy summed
    over classes.

    Args:
        logits: [R, C] classification logits of R RoIs over the C foreground classes; there is no
            background logit.
        labels: [R] int64 in 0..C, torchvision's convention: 0 is background, k >= 1 is foreground class
            k, whose logit is column k − 1.
        tail_mask: [C] bool, T_λ(f_j) for each foreground class (see ``tail_class_mask``).
        reduction: "none" gives the per-RoI loss [R] (summed over classes); "mean" averages it over the
            R RoIs; "sum" sums it.

    Returns:
        The loss in ``logits``' dtype promoted to at least float32. With R = 0, "mean" and "sum" return
        a zero that is still connected to ``logits``.

    Raises:
        LossArgumentError (a LibraError and a ValueError): unknown reduction, shapes that do not match,
            or a label outside 0..C.
    """
    check_reduction(reduction)
    if logits.dim() != 2:
        raise LossArgumentError(f"EQL: logits must be [R, C]; got shape {tuple(logits.shape)}")
    num_rois, num_classes = logits.shape
    if labels.shape != (num_rois,):
        raise LossArgumentError(f"EQL: labels must be [{num_rois}]; got shape {tuple(labels.shape)}")
    if tail_mask.shape != (num_classes,):
        raise LossArgumentError(f"EQL: tail_mask must be [{num_classes}]; got shape {tuple(tail_mask.shape)}")
    if num_rois > 0 and (int(labels.min()) < 0 or int(labels.max()) > num_classes):
        raise LossArgumentError(
            f"EQL: labels must lie in 0..{num_classes} (0 = background); got {int(labels.min())}..{int(labels.max())}"
        )

    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    labels = labels.long()
    # One-hot over background + C classes, then drop the background column: a background RoI's
    # target is all zeros.
    targets = F.one_hot(labels, num_classes + 1)[:, 1:].to(logits.dtype)
    is_foreground = (labels > 0).to(logits.dtype).unsqueeze(1)  # E(r), [R, 1]
    is_tail = tail_mask.to(device=logits.device, dtype=logits.dtype).unsqueeze(0)  # T_λ(f_j), [1, C]
    weights = 1 - is_foreground * is_tail * (1 - targets)  # w_j, [R, C]

    per_class = F.binary_cross_entropy_with_logits(logits, targets, weight=weights, reduction="none")
    per_roi = per_class.sum(dim=1)
    if reduction == "none":
        return per_roi
    if reduction == "sum":
        return per_roi.sum()
    if num_rois == 0:
        return per_roi.sum()  # an empty batch contributes zero loss, not the NaN of an empty mean
    return per_roi.mean()


def count_images_per_class(labels_per_image: Iterable[Iterable[int]], num_classes: int) -> torch.Tensor:
    """Number of images that contain each foreground class, counting a class once per image.

    Args:
        labels_per_image: for each training image, the labels of its annotated objects, in
            torchvision's convention 1..C (0 = background is not an object label).
        num_classes: C, the number of foreground classes.

    Returns:
        [C] int64: entry k − 1 is the number of images with at least one object of class k.

    Raises:
        LossArgumentError: a label outside 1..C.
    """
    counts = torch.zeros(num_classes, dtype=torch.int64)
    for image_index, labels in enumerate(labels_per_image):
        present = set(int(label) for label in labels)
        for label in present:
            if not 1 <= label <= num_classes:
                raise LossArgumentError(f"image {image_index}: object label {label} is outside 1..{num_classes}")
            counts[label - 1] += 1
    return counts


def image_frequency(images_per_class: torch.Tensor, num_images: int) -> torch.Tensor:
    """f_j = (number of training images that contain class j) / (number of training images).

    Args:
        images_per_class: [C] counts (see ``count_images_per_class``), each in 0..num_images.
        num_images: number of training images, > 0.

    Returns:
        [C] float64 frequencies in [0, 1].
    """
    if num_images <= 0:
        raise LossArgumentError(f"image frequency needs at least one training image; got {num_images}")
    counts = torch.as_tensor(images_per_class)
    if counts.dim() != 1:
        raise LossArgumentError(f"images_per_class must be [C]; got shape {tuple(counts.shape)}")
    if bool((counts < 0).any()) or bool((counts > num_images).any()):
        raise LossArgumentError(f"images_per_class must lie in 0..{num_images}")
    return counts.to(torch.float64) / num_images


def _check_lambda(lam: float) -> None:
    if not (math.isfinite(lam) and lam >= 0):
        raise LossArgumentError(f"EQL lambda must be a finite number >= 0; got {lam}")


def tail_class_mask(freq: torch.Tensor, lam: float) -> torch.Tensor:
    """T_λ(f_j): True for the tail classes, those whose image frequency f_j is below λ.

    Args:
        freq: [C] image frequencies f_j (see ``image_frequency``).
        lam: λ >= 0; λ = 0 marks no class as tail and EQL becomes plain sigmoid cross-entropy.

    Returns:
        [C] bool.
    """
    _check_lambda(lam)
    return torch.as_tensor(freq) < lam


def tail_ratio(freq: torch.Tensor, instance_counts: torch.Tensor, lam: float) -> float:
    """TR(λ) = Σ_j T_λ(f_j)·N_j / Σ_j N_j: the share of training instances that belong to tail classes.

    The paper's λ = 1.76e-3 gives TR = 9.08% on LVIS v0.5; reporting TR(λ) lets users pick λ for their
    own dataset.

    Args:
        freq: [C] image frequencies f_j.
        instance_counts: [C] N_j, the number of annotated instances of each class.
        lam: λ >= 0.

    Returns:
        TR(λ) in [0, 1].

    Raises:
        LossArgumentError: shapes differ, negative counts, or no instances at all (TR is undefined).
    """
    freq = torch.as_tensor(freq)
    counts = torch.as_tensor(instance_counts).to(torch.float64)
    if freq.shape != counts.shape or freq.dim() != 1:
        raise LossArgumentError(
            f"tail ratio: freq and instance_counts must both be [C]; got {tuple(freq.shape)} and {tuple(counts.shape)}"
        )
    if bool((counts < 0).any()):
        raise LossArgumentError("tail ratio: instance counts must be >= 0")
    total = float(counts.sum())
    if total == 0:
        raise LossArgumentError("tail ratio is undefined without any annotated instance")
    tail = tail_class_mask(freq, lam)
    return float(counts[tail].sum()) / total


def eql_classifier_bias_init(prior: float = 0.001) -> float:
    """Initial bias of each sigmoid logit so that every class starts at probability ``prior``.

    b = −log((1 − p)/p), so σ(b) = p; the EQL reference uses p = 0.001, b ≈ −6.9068. Without it the
    C negative terms of an untrained classifier (σ = 0.5) would swamp the loss at the start.
    """
    if not (0 < prior < 1):
        raise LossArgumentError(f"classifier prior probability must lie in (0, 1); got {prior}")
    return -math.log((1 - prior) / prior)


def init_eql_classifier(classifier: nn.Linear, prior: float = 0.001, weight_std: float = 0.01) -> None:
    """Initialise a sigmoid classifier's linear layer as the EQL reference does (in place).

    Weights ~ N(0, weight_std²) with weight_std = 0.01; every bias = ``eql_classifier_bias_init(prior)``.
    """
    bias = eql_classifier_bias_init(prior)
    with torch.no_grad():
        nn.init.normal_(classifier.weight, mean=0.0, std=weight_std)
        if classifier.bias is not None:
            nn.init.constant_(classifier.bias, bias)
