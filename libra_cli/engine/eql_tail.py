"""The EQL tail of a training set: its tail classes T_λ, its tail ratio TR(λ) and a warning when TR(λ) is far
from the paper's. A run records them in its log's start record and shows them at start."""

from __future__ import annotations

from typing import Any

import torch

from libra_cli.engine.run import eql_frequency_denominator

# The EQL paper's λ = 1.76e-3 gives a tail ratio of 9.08 % on LVIS v0.5 (EQL paper §4). A λ whose TR is
# under a third or over twice that is far from what the paper tuned: the user is warned at start.
PAPER_TAIL_RATIO = 0.0908
TAIL_RATIO_BAND = (PAPER_TAIL_RATIO / 3, 2 * PAPER_TAIL_RATIO)


def tail_ratio_warning(ratio: float, lam: float) -> str | None:
    """A one-line warning when TR(λ) lies outside ``TAIL_RATIO_BAND``, else None.

    λ = 0 is no warning: it is the sigmoid baseline on purpose (no class is a tail class).
    """
    low, high = TAIL_RATIO_BAND
    if lam == 0 or low <= ratio <= high:
        return None
    side = "below" if ratio < low else "above"
    return (
        f"EQL: λ = {lam:g} gives TR(λ) = {100 * ratio:.2f}%, {side} {100 * low:.0f}–{100 * high:.0f}% "
        f"(the paper's λ gives 9.08% on LVIS); choose λ for your dataset from the tail ratio"
    )


def eql_tail_info(lam: float, dataset_info: dict[str, Any], freq_mode: str = "annotated") -> dict[str, Any]:
    """The tail classes T_λ and the tail ratio TR(λ) (Tan et al., CVPR 2020, Sec. 3) of the training set,
    and a warning when TR(λ) is far from the paper's (:func:`tail_ratio_warning`).

    ``freq_mode`` chooses the frequencies' denominator (``libra.eql_freq``, see ``eql_frequency_denominator``).
    """
    from libra_cli.losses import image_frequency, tail_class_mask, tail_ratio

    denominator = eql_frequency_denominator(dataset_info, freq_mode)
    freq = image_frequency(torch.tensor(dataset_info["images_per_class"]), denominator)
    mask = tail_class_mask(freq, lam).tolist()
    names = [name for name, tail in zip(dataset_info["category_names"], mask, strict=True) if tail]
    ratio = tail_ratio(freq, torch.tensor(dataset_info["instances_per_class"]), lam)
    return {
        "eql_lambda": lam,
        "tail_classes": names,
        "tail_ratio": ratio,
        "freq_mode": freq_mode,
        "freq_denominator": denominator,
        "warning": tail_ratio_warning(ratio, lam),
    }
