"""Uniform random choice of a fixed number of indices — the building block of every sampler here."""

import torch


def random_permutation(n: int, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random permutation of ``0 .. n-1`` (LongTensor[n]) on ``device``.

    The permutation is drawn on the generator's device (a CPU generator cannot drive a CUDA draw) and
    then moved, so one seeded ``torch.Generator`` reproduces the same choice on any device. With
    ``generator=None`` the global RNG of ``device`` is used, exactly as ``torch.randperm(n, device=...)``.
    """
    if generator is None:
        return torch.randperm(n, device=device)
    return torch.randperm(n, generator=generator, device=generator.device).to(device)


def sample_uniformly(indices: torch.Tensor, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Choose ``num`` distinct elements of ``indices`` uniformly at random (all of them if M <= num).

    Args:
        indices: LongTensor[M], the pool to choose from (its elements are assumed distinct).
        num: how many to choose; ``num <= 0`` gives an empty result.
        generator: source of randomness; None uses the global RNG, so a seeded run is reproducible.

    Returns:
        LongTensor[min(M, max(num, 0))]: the chosen elements, in random order when sampled and in
        their input order when the whole pool is taken (no random number is drawn then).
    """
    num = max(int(num), 0)
    if indices.numel() <= num:
        return indices
    order = random_permutation(indices.numel(), indices.device, generator)
    return indices[order[:num]]
