"""Training-time augmentation for detection samples: horizontal flip and random rescale.

The detector's own transform resizes every image to the configured ``min_size``/``max_size`` and
normalises it; these augmentations act before that, on ``image`` [3, H, W] in [0, 1] and
``target["boxes"]`` [N, 4] in absolute xyxy pixels and, when present, ``target["masks"]`` (uint8 [N, H, W],
one 0/1 mask per box), which move with the image: mirrored with it, resized by nearest neighbour to its new
size. Randomness comes from an explicit generator so a sample's augmentation depends only on its seed, and
the same draws are made with or without masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def hflip(image: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror an image [3, H, W] and its xyxy boxes [N, 4] left–right."""
    width = image.shape[-1]
    flipped = boxes.clone()
    flipped[:, 0] = width - boxes[:, 2]
    flipped[:, 2] = width - boxes[:, 0]
    return image.flip(-1), flipped


def rescale(image: torch.Tensor, boxes: torch.Tensor, factor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize an image [3, H, W] by ``factor`` (bilinear) and scale its xyxy boxes [N, 4] to match."""
    height, width = image.shape[-2:]
    new_h, new_w = max(1, round(height * factor)), max(1, round(width * factor))
    resized = F.interpolate(image[None], size=(new_h, new_w), mode="bilinear", align_corners=False)[0]
    scale = torch.tensor([new_w / width, new_h / height, new_w / width, new_h / height])
    return resized, boxes * scale


def hflip_masks(masks: torch.Tensor) -> torch.Tensor:
    """Mirror masks [N, H, W] left–right, as :func:`hflip` mirrors their image."""
    return masks.flip(-1)


def resize_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize 0/1 masks [N, H, W] to ``size`` (new_h, new_w) by nearest neighbour, so they stay 0/1.

    Pixel centres are aligned ("nearest-exact": output pixel j reads input pixel ⌊(j + ½) · H / new_h⌋), the
    convention under which :func:`rescale`'s box scaling maps a box's pixels onto the resized ones.
    """
    if masks.shape[-2:] == size:
        return masks
    if masks.shape[0] == 0:
        return masks.new_zeros((0, *size))
    return F.interpolate(masks[None], size=size, mode="nearest-exact")[0]


@dataclass(frozen=True)
class TrainAugmentation:
    hflip_prob: float = 0.5  # probability of a horizontal flip
    scale_range: tuple[float, float] | None = None  # uniform rescale factor range, None = off

    def __call__(self, image: torch.Tensor, target: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        boxes, masks = target["boxes"], target.get("masks")
        # Draw both numbers unconditionally so a sample's stream does not depend on which options are on.
        flip_draw, scale_draw = torch.rand(2, generator=generator).tolist()
        if flip_draw < self.hflip_prob:
            image, boxes = hflip(image, boxes)
            masks = None if masks is None else hflip_masks(masks)
        if self.scale_range is not None:
            low, high = self.scale_range
            image, boxes = rescale(image, boxes, low + (high - low) * scale_draw)
            masks = None if masks is None else resize_masks(masks, tuple(image.shape[-2:]))
        augmented = {**target, "boxes": boxes}
        if masks is not None:
            augmented["masks"] = masks
        return image, augmented
