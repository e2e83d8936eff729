"""An iteration-indexed batch sampler: batch k is a pure function of (seed, k).

Training is counted in iterations, not epochs. The sample at global position p = k·B + j (iteration k,
slot j of a global batch of B) is element ``p mod n`` of epoch ``p div n``'s permutation, which is drawn
from a generator seeded with (seed, epoch). So a run resumed at iteration k sees exactly the batches the
uninterrupted run would have seen, and under data parallelism rank r of W takes the slots j ≡ r (mod W)
of each global batch. Each sample also carries an augmentation seed derived from its position.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


class IterationBatchSampler(torch.utils.data.Sampler):
    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        seed: int,
        start_iter: int,
        max_iters: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if num_samples <= 0:
            raise ValueError("the training set holds no images")
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} is not divisible by the {world_size} processes")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.start_iter = start_iter
        self.max_iters = max_iters
        self.rank = rank
        self.world_size = world_size

    def _permutation(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_samples, generator=generator).tolist()

    def __len__(self) -> int:
        return max(0, self.max_iters - self.start_iter)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        cached_epoch, permutation = -1, []
        for iteration in range(self.start_iter, self.max_iters):
            batch = []
            for slot in range(self.rank, self.batch_size, self.world_size):
                position = iteration * self.batch_size + slot
                epoch, offset = divmod(position, self.num_samples)
                if epoch != cached_epoch:
                    cached_epoch, permutation = epoch, self._permutation(epoch)
                augmentation_seed = (self.seed * 2_654_435_761 + position) % (2**63)
                batch.append((permutation[offset], augmentation_seed))
            yield batch
