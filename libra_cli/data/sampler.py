"""An iteration-indexed batch sampler: batch k is a pure function of (seed, k).

Training is counted in iterations, not epochs. Epoch e's sample stream is drawn from a generator seeded
with (seed, e) alone, and the run is the concatenation of the epochs' streams. The sample at global position
p = k·B + j (iteration k, slot j of a global batch of B) is element p of that concatenation: element
``p mod n`` of epoch ``p div n``'s permutation of the n images when every epoch has n samples. So a run
resumed at iteration k sees exactly the batches the uninterrupted run would have seen, and under data
parallelism rank r of W takes the slots j ≡ r (mod W) of each global batch. Each sample also carries an
augmentation seed derived from its position k·B + j.

Two options change what an epoch's stream is, never how it is seeded:

- **Repeat-factor sampling** (LVIS, Gupta et al. 2019; detectron2's ``RepeatFactorTrainingSampler``): image i
  has a repeat factor r_i ≥ 1 (:func:`repeat_factors`). Epoch e first draws n uniforms u_i from its
  generator and repeats image i ⌊r_i⌋ times, plus once more when u_i < r_i − ⌊r_i⌋ (so E[count] = r_i),
  then shuffles the repeated list with a permutation from the same generator. Epochs then differ in length;
  the length of every epoch before the one holding position p is recomputed from its own seed, so position
  p still depends only on (seed, p).
- **Aspect-ratio grouping** (torchvision references' ``GroupedBatchSampler``): every global batch holds
  images of one group (landscape, width ≥ height, or portrait). Epoch e's stream is cut into whole batches
  the way GroupedBatchSampler does it: the epoch's samples are dealt in order into one buffer per group, and
  a buffer that reaches B images becomes the next batch; at the epoch's end each group's incomplete buffer
  is filled up by cycling through that group's samples of the epoch from its start, and becomes a batch (so
  no image is ever dropped, and a few repeat). The unit of the concatenated stream is then a batch: iteration
  k takes batch k of the concatenation of the epochs' batch lists, again a pure function of (seed, k), and
  rank r takes that batch's slots j ≡ r (mod W).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch


def repeat_factors(image_labels: Sequence[Sequence[int]], threshold: float) -> list[float]:
    """LVIS repeat factors: r_i = max over the classes c in image i of max(1, √(t / f_c)).

    ``image_labels[i]`` are the labels (any hashable class keys) of image i's boxes; f_c is the fraction of
    the images that hold class c (the number of images, not of boxes). An image without boxes gets r = 1.
    """
    if threshold <= 0:
        raise ValueError(f"the repeat-factor threshold must be positive, got {threshold}")
    num_images = len(image_labels)
    images_with: dict[int, int] = {}
    for labels in image_labels:
        for label in set(labels):
            images_with[label] = images_with.get(label, 0) + 1
    class_factor = {
        label: max(1.0, math.sqrt(threshold / (count / num_images))) for label, count in images_with.items()
    }
    return [max((class_factor[label] for label in set(labels)), default=1.0) for labels in image_labels]


def aspect_ratio_groups(sizes: Sequence[tuple[int, int]]) -> list[int]:
    """Group 0 for a landscape (or square) image, width ≥ height; group 1 for a portrait one."""
    return [0 if width >= height else 1 for width, height in sizes]


class IterationBatchSampler(torch.utils.data.Sampler):
    """Yields, for iterations ``start_iter`` … ``max_iters − 1``, this rank's ``[(index, augmentation_seed)]``.

    ``repeat_factors`` (one float ≥ 1 per image) turns on repeat-factor sampling and ``group_ids`` (one small
    int per image, e.g. :func:`aspect_ratio_groups`) grouped batches; see the module docstring.
    """

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
        repeat_factors: Sequence[float] | None = None,
        group_ids: Sequence[int] | None = None,
    ) -> None:
        if num_samples <= 0:
            raise ValueError("the training set holds no images")
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} is not divisible by the {world_size} processes")
        for name, values in (("repeat_factors", repeat_factors), ("group_ids", group_ids)):
            if values is not None and len(values) != num_samples:
                raise ValueError(f"{name}: {len(values)} values for {num_samples} images")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.start_iter = start_iter
        self.max_iters = max_iters
        self.rank = rank
        self.world_size = world_size
        self.repeat_factors = None
        if repeat_factors is not None:
            factors = torch.tensor(list(repeat_factors), dtype=torch.float64)
            if bool((factors < 1).any()):
                raise ValueError("repeat factors must be >= 1")
            self.repeat_factors = factors
        self.group_ids = list(group_ids) if group_ids is not None else None
        self._lengths: list[int] = []  # units (samples, or batches when grouping) of epochs 0, 1, …
        self._cached: tuple[int, list] = (-1, [])

    def _generator(self, epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)

    def _permutation(self, epoch: int) -> list[int]:
        """Epoch ``epoch``'s sample stream: image indices, each image once (or repeated, see above)."""
        generator = self._generator(epoch)
        if self.repeat_factors is None:
            return torch.randperm(self.num_samples, generator=generator).tolist()
        whole = self.repeat_factors.floor()
        draws = torch.rand(self.num_samples, generator=generator, dtype=torch.float64)
        counts = (whole + (draws < self.repeat_factors - whole).to(torch.float64)).to(torch.int64)
        indices = torch.repeat_interleave(torch.arange(self.num_samples), counts)
        return indices[torch.randperm(len(indices), generator=generator)].tolist()

    def _grouped_batches(self, stream: list[int]) -> list[list[int]]:
        assert self.group_ids is not None
        buffers: dict[int, list[int]] = {}
        members: dict[int, list[int]] = {}
        batches = []
        for index in stream:
            group = self.group_ids[index]
            members.setdefault(group, []).append(index)
            buffer = buffers.setdefault(group, [])
            buffer.append(index)
            if len(buffer) == self.batch_size:
                batches.append(buffer)
                buffers[group] = []
        for group in sorted(buffers):
            buffer = buffers[group]
            if buffer:
                pool = members[group]
                batches.append(buffer + [pool[i % len(pool)] for i in range(self.batch_size - len(buffer))])
        return batches

    def _epoch(self, epoch: int) -> list:
        """Epoch ``epoch``'s units: sample indices, or whole batches when grouping."""
        if self._cached[0] != epoch:
            stream = self._permutation(epoch)
            self._cached = (epoch, stream if self.group_ids is None else self._grouped_batches(stream))
        return self._cached[1]

    def _epoch_length(self, epoch: int) -> int:
        while len(self._lengths) <= epoch:
            if self.repeat_factors is None and self.group_ids is None:
                self._lengths.append(self.num_samples)
            else:
                self._lengths.append(len(self._epoch(len(self._lengths))))
        return self._lengths[epoch]

    def _locate(self, unit: int, hint: tuple[int, int]) -> tuple[int, int, tuple[int, int]]:
        """(epoch, offset) of the unit-th unit of the run, walking on from ``hint`` = (epoch, its first unit)."""
        epoch, start = hint
        if unit < start:
            epoch, start = 0, 0
        while unit >= start + self._epoch_length(epoch):
            start += self._epoch_length(epoch)
            epoch += 1
        return epoch, unit - start, (epoch, start)

    def __len__(self) -> int:
        return max(0, self.max_iters - self.start_iter)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        hint = (0, 0)
        for iteration in range(self.start_iter, self.max_iters):
            batch = []
            if self.group_ids is not None:
                epoch, offset, hint = self._locate(iteration, hint)
                indices = self._epoch(epoch)[offset]
            for slot in range(self.rank, self.batch_size, self.world_size):
                position = iteration * self.batch_size + slot
                if self.group_ids is None:
                    epoch, offset, hint = self._locate(position, hint)
                    index = self._epoch(epoch)[offset]
                else:
                    index = indices[slot]
                augmentation_seed = (self.seed * 2_654_435_761 + position) % (2**63)
                batch.append((index, augmentation_seed))
            yield batch
