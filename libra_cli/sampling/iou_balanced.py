"""IoU-balanced negative sampling (Libra R-CNN, Pang et al., CVPR 2019, §3.1; Libra R-CNN §3.1).

Random sampling of negatives picks mostly easy ones (IoU ≈ 0 with every GT box). IoU-balanced sampling
splits the negatives' IoU range into K equal bins and asks each bin for the same number, so that a
negative in bin k is chosen with probability

    p_k = (N / K) · (1 / M_k)

where N is the number of negatives wanted and M_k the number of candidates in bin k.
"""

import torch

from libra_cli.sampling.random import sample_uniformly

BINS_UPPER_CHOICES = ("max-iou", "neg-thr")
# The two named readings of Libra R-CNN §3.1 as (floor_thr, bins_upper); see iou_sampling_reading.
READINGS = {"reference": (0.0, "max-iou"), "paper": (-1.0, "neg-thr")}


def iou_sampling_reading(floor_thr: float, bins_upper: str) -> str:
    """Name the reading of Libra R-CNN §3.1 that a floor threshold and a bins' upper end make up.

    - ``"reference"``: floor_thr = 0 and bins up to the image's largest IoU — what the authors' code
      trains with (it is constructed with floor_thr = −1 but sets it to 0 during its first call, so
      IoU-0 negatives are outside the bins and only fill a shortfall).
    - ``"paper"``: floor_thr < 0 (every negative binned, Eq. 2) and bins up to the negative threshold.
    - anything else is described by its two settings, e.g. ``"floor 0.1, bins to max-iou"``.
    """
    if floor_thr == 0 and bins_upper == "max-iou":
        return "reference"
    if floor_thr < 0 and bins_upper == "neg-thr":
        return "paper"
    floor = "none" if floor_thr < 0 else f"{floor_thr:g}"
    return f"floor {floor}, bins to {bins_upper}"


def validate_iou_balanced_arguments(
    num_bins: int, floor_thr: float, floor_fraction: float, bins_upper: str, neg_iou_thr: float
) -> None:
    """Raise ValueError when an IoU-balanced sampling argument is out of its range."""
    if bins_upper not in BINS_UPPER_CHOICES:
        raise ValueError(f"bins_upper must be one of {BINS_UPPER_CHOICES}, got {bins_upper!r}")
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
        raise ValueError(f"num_bins must be an integer >= 1, got {num_bins!r}")
    if not 0.0 <= floor_fraction <= 1.0:
        raise ValueError(f"floor_fraction must lie in [0, 1], got {floor_fraction!r}")
    if not 0.0 <= neg_iou_thr <= 1.0:
        raise ValueError(f"neg_iou_thr must lie in [0, 1], got {neg_iou_thr!r}")
    if floor_thr >= 1.0:
        raise ValueError(f"floor_thr must be below 1 (use -1 for no floor set), got {floor_thr!r}")


def iou_bin_index(
    ious: torch.Tensor, lo: float, hi: float, num_bins: int, *, last_bin_closed: bool = True
) -> torch.Tensor:
    """The IoU bin of each value: K equal bins of width w = (hi − lo) / K starting at ``lo``.

    Edge rules: bin k covers [lo + k·w, lo + (k+1)·w), so a value equal to an inner edge belongs to
    the upper bin. The last bin is closed, [hi − w, hi], by default, because ``hi`` is often an IoU that
    occurs (the largest IoU in the image) and a candidate holding it should be binned; with
    ``last_bin_closed=False`` it is half-open, [hi − w, hi), as in the reference code. The two differ
    only for a candidate whose IoU equals ``hi``: with the GT boxes among the proposals hi = 1.0 and no
    negative reaches it, so only an image without GT proposals tells them apart. The edges are computed
    in the dtype of ``ious`` so that a value stored at an edge compares equal to it.

    Args:
        ious: Tensor[M] of IoU values.
        lo, hi: the range to split; with hi < lo there is no bin.
        num_bins: K >= 1.
        last_bin_closed: whether a value equal to ``hi`` belongs to the last bin.

    Returns:
        LongTensor[M] with the bin index in [0, K), or −1 for a value outside [lo, hi] ([lo, hi)).
    """
    if hi < lo:
        return torch.full_like(ious, -1, dtype=torch.long)
    edges = torch.tensor(
        [lo + k * (hi - lo) / num_bins for k in range(num_bins)] + [hi], dtype=ious.dtype, device=ious.device
    )
    # The number of edges at or below a value, minus one, is the bin that starts at the last of them:
    # values below lo become −1 and values at or above hi become K. (Comparing against K + 1 edges is
    # also much cheaper on a busy CPU than torch.bucketize, whose thread pool dominates at this size.)
    index = (ious.unsqueeze(-1) >= edges).sum(dim=-1) - 1
    if last_bin_closed:
        index = torch.where(ious == edges[-1], num_bins - 1, index)
    return torch.where((index >= 0) & (index < num_bins), index, -1)


def sample_by_iou_intervals(
    pool: torch.Tensor,
    pool_ious: torch.Tensor,
    num: int,
    lo: float,
    hi: float,
    num_bins: int,
    generator: torch.Generator | None = None,
    *,
    last_bin_closed: bool = True,
) -> torch.Tensor:
    """Libra R-CNN §3.1 step 4: ``num`` elements of ``pool`` drawn bin by bin, the shortfall filled at random.

    Each of the K bins (see :func:`iou_bin_index`) has the quota int(num / K): a bin with more members
    is sampled uniformly down to it, a bin with fewer gives all it has. The remaining
    ``num − taken`` come uniformly from the members of ``pool`` not taken yet (members outside every
    bin included), so the result has exactly min(num, len(pool)) elements.

    Args:
        pool: LongTensor[M] of distinct indices.
        pool_ious: Tensor[M], the IoU of each pool member.
        num, lo, hi, num_bins: the number wanted and the bins' range and count.
        generator: source of randomness; None uses the global RNG.
        last_bin_closed: see :func:`iou_bin_index`.

    Returns:
        LongTensor[min(num, M)], a subset of ``pool``.
    """
    local = torch.arange(pool.numel(), device=pool.device)
    bins = iou_bin_index(pool_ious, lo, hi, num_bins, last_bin_closed=last_bin_closed)
    quota = int(num / num_bins)
    # The loop runs over the K bins only; each bin is selected with a vectorised mask.
    per_bin = [sample_uniformly(local[bins == k], quota, generator) for k in range(num_bins)]
    return pool[_topped_up(torch.cat(per_bin), local, num, generator)]


def _topped_up(
    taken: torch.Tensor, positions: torch.Tensor, num: int, generator: torch.Generator | None
) -> torch.Tensor:
    """``taken`` (distinct elements of ``positions``, which is ``arange(M)``) followed by ``num − len(taken)``
    more drawn uniformly from the positions not taken yet (as many as there are)."""
    shortfall = num - taken.numel()
    if shortfall <= 0:
        return taken
    untaken = torch.ones_like(positions, dtype=torch.bool)
    untaken[taken] = False
    return torch.cat([taken, sample_uniformly(positions[untaken], shortfall, generator)])


def sample_negatives_by_iou(
    max_iou: torch.Tensor,
    candidates: torch.Tensor,
    num_expected: int,
    *,
    num_bins: int = 3,
    floor_thr: float = -1.0,
    floor_fraction: float = 0.0,
    bins_upper: str = "max-iou",
    neg_iou_thr: float = 0.5,
    max_iou_overall: float | None = None,
    generator: torch.Generator | None = None,
    last_bin_closed: bool = True,
) -> torch.Tensor:
    """Choose ``num_expected`` negatives balanced over IoU (Libra R-CNN §3.1; Libra R-CNN §3.1 steps 1–5).

    1. If there are no more candidates than expected, take them all.
    2. Split the candidates: ``floor_thr < 0`` → every candidate is binned (no floor set);
       ``floor_thr = 0`` → floor = {IoU = 0}, binned = {IoU > 0}; ``floor_thr > 0`` →
       floor = {IoU < floor_thr}, binned = {IoU ≥ floor_thr}.
    3. ``n_bin = int(expected × (1 − floor_fraction))``. A binned set larger than ``n_bin`` is sampled
       by IoU intervals (K ≥ 2) or uniformly (K < 2); a smaller one is taken whole.
    4. Interval sampling splits [lo, hi) into K equal bins with quota int(n_bin / K) each and fills
       the shortfall at random from the rest of the binned set (:func:`sample_by_iou_intervals`).
       lo = max(floor_thr, 0); hi: ``"max-iou"`` (reference code, default) the largest IoU of any proposal
       in the image, GT boxes included — normally 1.0, so with K = 3 the bins are [0, 1/3), [1/3, 2/3),
       [2/3, 1] and the top bin, above the negative threshold, is empty, its quota going to the random
       fill; ``"neg-thr"`` (paper text) ``neg_iou_thr``, so the K bins evenly cover the negatives.
    5. The floor set fills ``expected − len(binned sample)`` at random; any remaining gap is filled at
       random from the candidates not chosen yet.

    Nothing is remembered between calls: the same inputs and generator state give the same result on
    the first call and every later one. The reference code switches ``floor_thr`` from −1 to 0 during
    its first call, so what it trains with is ``floor_thr = 0`` (see :func:`iou_sampling_reading`);
    libra's reference presets pass 0, and −1 is the paper text's reading.

    Args:
        max_iou: Tensor[N], each proposal's largest IoU with any GT box of the image.
        candidates: LongTensor[M], distinct indices into ``max_iou`` of the negative proposals.
        num_expected: the number of negatives wanted.
        num_bins: K, the number of IoU bins; K < 2 samples the binned set uniformly.
        floor_thr: the floor threshold of step 2 (−1: no floor set).
        floor_fraction: the share of ``num_expected`` left to the floor set (step 3).
        bins_upper: ``"max-iou"`` or ``"neg-thr"``, the choice of hi above.
        neg_iou_thr: the negative IoU threshold of the assigner, hi for ``"neg-thr"``.
        max_iou_overall: hi for ``"max-iou"``; default ``max_iou.max()``. Pass it when ``max_iou`` does
            not hold every proposal of the image (e.g. the GT boxes added as proposals).
        generator: source of randomness; None uses the global RNG.
        last_bin_closed: the last bin [hi − w, hi] (True) or [hi − w, hi) as the reference code (False).

    Returns:
        LongTensor[min(num_expected, M)]: distinct elements of ``candidates``.
    """
    validate_iou_balanced_arguments(num_bins, floor_thr, floor_fraction, bins_upper, neg_iou_thr)
    num_expected = max(int(num_expected), 0)
    # 1. take all
    if candidates.numel() <= num_expected:
        return candidates

    # Work on positions 0..M-1 within `candidates` so that "not chosen yet" is a plain mask.
    positions = torch.arange(candidates.numel(), device=candidates.device)
    candidate_ious = max_iou[candidates]
    is_binned = _above_floor(candidate_ious, floor_thr)  # 2. floor set / binned set
    binned, floor = positions[is_binned], positions[~is_binned]
    # 3. sample the binned set
    n_bin = int(num_expected * (1 - floor_fraction))
    if binned.numel() <= n_bin:
        binned_sample = binned
    elif num_bins >= 2:  # 4. interval sampling
        lo, hi = _iou_bins_range(max_iou, floor_thr, bins_upper, neg_iou_thr, max_iou_overall)
        binned_sample = sample_by_iou_intervals(
            binned, candidate_ious[binned], n_bin, lo, hi, num_bins, generator, last_bin_closed=last_bin_closed
        )
    else:
        binned_sample = sample_uniformly(binned, n_bin, generator)
    # 5. the floor set, then any negative not chosen yet, fill the rest
    floor_sample = sample_uniformly(floor, num_expected - binned_sample.numel(), generator)
    chosen = _topped_up(torch.cat([binned_sample, floor_sample]), positions, num_expected, generator)
    return candidates[chosen]


def _above_floor(ious: torch.Tensor, floor_thr: float) -> torch.Tensor:
    """Step 2: which candidates are binned (the rest is the floor set): all of them for ``floor_thr < 0``,
    IoU > 0 for ``floor_thr = 0``, IoU ≥ ``floor_thr`` above it."""
    if floor_thr < 0:
        return torch.ones_like(ious, dtype=torch.bool)
    if floor_thr == 0:
        return ious > 0
    return ious >= floor_thr


def _iou_bins_range(
    max_iou: torch.Tensor, floor_thr: float, bins_upper: str, neg_iou_thr: float, max_iou_overall: float | None
) -> tuple[float, float]:
    """Step 4's range [lo, hi] split into the IoU bins: lo = max(floor_thr, 0); hi = ``neg_iou_thr``
    (``bins_upper="neg-thr"``) or the image's largest IoU (``"max-iou"``: ``max_iou_overall``, by default
    ``max_iou.max()``)."""
    lo = max(floor_thr, 0.0)
    if bins_upper == "neg-thr":
        return lo, neg_iou_thr
    return lo, float(max_iou.max()) if max_iou_overall is None else float(max_iou_overall)
