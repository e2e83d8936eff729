"""libra from Python: a trained detector on new images, and a detector from a preset for your own loop.

    from libra_cli.api import Detector

    det = Detector.from_run("runs/libra", checkpoint="best", device="cpu")  # or Detector.from_file("libra-1a2b3c4d.pt")
    for found in det.predict(["street.jpg", "dog.png"], score_thr=0.5):
        for box, score, name in zip(found.boxes.tolist(), found.scores.tolist(), found.category_names):
            print(name, round(score, 2), box)  # box: [x1, y1, x2, y2] in the image file's pixels

What the detector is given is what training and ``libra eval`` give it: the image upright by its EXIF
orientation, as 8-bit RGB scaled to [0, 1] (``libra_cli.images``); the detector resizes it to the run's
``model.min_size`` / ``max_size`` and normalises it itself, and returns boxes in the pixels it was given.
The model's labels are 1 … C (0 is the background); label k is the dataset's category ``category_ids[k - 1]``,
in the order ``dataset.json`` records (the annotation file's ids sorted), named ``category_names[k - 1]``.

For a training loop of your own, :func:`build_model` builds the detector of a preset (with any overrides)
as a torchvision module: ``losses = model(images, targets)`` in train mode, detections in eval mode.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from libra_cli.config import RunConfig, load_config
from libra_cli.engine.evaluate import binary_masks, detect, inference_mode, max_detections_for
from libra_cli.engine.weights import LoadedDetector, load_detector
from libra_cli.errors import LibraError
from libra_cli.images import image_tensor, open_rgb

__all__ = ["Detector", "Prediction", "build_model"]

ImageInput = str | Path | Image.Image | torch.Tensor


@dataclass
class Prediction:
    """The detections on one image, sorted by decreasing score (the detector's order).

    ``boxes`` float32 [N, 4] xyxy in the input's pixels; ``scores`` float32 [N]; ``labels`` int64 [N] the
    model's labels (1 … C); ``category_ids`` / ``category_names`` the dataset's, one per detection;
    ``masks`` bool [N, H, W] for a Mask R-CNN (None otherwise); ``size`` (width, height) of the input.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    category_ids: list[int]
    category_names: list[str]
    masks: torch.Tensor | None
    size: tuple[int, int]


class Detector:
    """A trained libra detector ready for inference; build it with :meth:`from_run` or :meth:`from_file`."""

    def __init__(self, loaded: LoadedDetector) -> None:
        self.config: RunConfig = loaded.config
        self.model: nn.Module = loaded.model
        self.category_ids: list[int] = loaded.category_ids
        self.category_names: list[str] = loaded.category_names
        self.source: str = loaded.source  # the checkpoint or weights file read
        self.iteration: int = loaded.iteration
        # Detections kept per image: as `libra eval` keeps them (LVIS: 300; else the model's own cap).
        self.max_detections: int | None = max_detections_for(loaded.annotation_format)

    @classmethod
    def from_run(cls, run_dir: str | Path, checkpoint: str = "best", device: str | None = None) -> Detector:
        """A run directory's detector: ``checkpoint`` "best", "last" or a checkpoint path; ``device`` "cpu",
        "cuda", … (default: where it was trained; the CPU when that was CUDA and this machine has none)."""
        if not Path(run_dir).is_dir():
            raise LibraError(f"{run_dir}: run directory not found")
        return cls(load_detector(run_dir, checkpoint, device))

    @classmethod
    def from_file(cls, path: str | Path, device: str | None = None) -> Detector:
        """The detector of a weights file written by ``libra export``."""
        if Path(path).is_dir():
            raise LibraError(f"{path}: is a folder; Detector.from_file takes a weights file (from_run a run)")
        return cls(load_detector(path, device=device))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def category_id_of(self, label: int) -> int:
        """The dataset's category id of model label ``label`` (1 … C)."""
        return self.category_ids[label - 1]

    @torch.no_grad()
    def predict(
        self,
        images: ImageInput | Iterable[ImageInput],
        *,
        score_thr: float = 0.0,
        batch_size: int = 4,
        amp: bool | None = None,
    ) -> list[Prediction]:
        """Detections on ``images``: file paths, PIL images or float [3, H, W] tensors in [0, 1] (uint8
        tensors are scaled by 1/255), one :class:`Prediction` each, in order. Only detections with score ≥
        ``score_thr`` are kept. ``amp`` (default: the run's ``train.amp``) runs the model under autocast on CUDA.
        """
        items = [images] if isinstance(images, str | Path | Image.Image | torch.Tensor) else list(images)
        found: list[Prediction] = []
        for start in range(0, len(items), max(1, batch_size)):
            batch = [self._tensor(item) for item in items[start : start + max(1, batch_size)]]  # read per batch
            outputs = self.detect(batch, amp)
            found += [self.to_prediction(output, image) for output, image in zip(outputs, batch, strict=True)]
        return [self._above(prediction, score_thr) for prediction in found]

    @torch.no_grad()
    def detect(self, images: Sequence[torch.Tensor], amp: bool | None = None) -> list[dict[str, torch.Tensor]]:
        """The model's raw outputs (``libra_cli.engine.evaluate.detect``) for float [3, H, W] tensors."""
        from libra_cli.engine.step import amp_dtype

        device = self.device
        config = self.config if amp is None else replace(self.config, train=replace(self.config.train, amp=amp))
        with inference_mode(self.model, self.max_detections):
            return detect(self.model, [image.to(device) for image in images], amp_dtype(config, device))

    def to_prediction(self, output: dict[str, torch.Tensor], image: torch.Tensor) -> Prediction:
        labels = output["labels"]
        return Prediction(
            boxes=output["boxes"],
            scores=output["scores"],
            labels=labels,
            category_ids=[self.category_id_of(label) for label in labels.tolist()],
            category_names=[self.category_names[label - 1] for label in labels.tolist()],
            masks=binary_masks(output["masks"]) if "masks" in output else None,
            size=(int(image.shape[-1]), int(image.shape[-2])),
        )

    @staticmethod
    def _above(prediction: Prediction, score_thr: float) -> Prediction:
        keep = (prediction.scores >= score_thr).nonzero().flatten().tolist()
        return Prediction(
            boxes=prediction.boxes[keep],
            scores=prediction.scores[keep],
            labels=prediction.labels[keep],
            category_ids=[prediction.category_ids[i] for i in keep],
            category_names=[prediction.category_names[i] for i in keep],
            masks=None if prediction.masks is None else prediction.masks[keep],
            size=prediction.size,
        )

    @staticmethod
    def _tensor(item: Any) -> torch.Tensor:
        if isinstance(item, str | Path):
            return image_tensor(open_rgb(item))
        if isinstance(item, Image.Image):
            return image_tensor(item)
        if isinstance(item, torch.Tensor):
            if item.dim() != 3 or item.shape[0] != 3:
                raise LibraError(f"image tensor: expected [3, H, W], got {list(item.shape)}")
            return item.float().div(255.0) if item.dtype == torch.uint8 else item.float()
        raise LibraError(f"image: expected a path, a PIL image or a [3, H, W] tensor, got {type(item).__name__}")


def build_model(
    preset: str | None,
    num_classes: int,
    overrides: dict[str, dict[str, Any]] | None = None,
    *,
    images_per_class: Sequence[int] | None = None,
    num_images: int | None = None,
) -> nn.Module:
    """The detector of ``preset`` (a shipped name, a YAML path or None for the defaults) with ``overrides``
    (``{section: {field: value}}``) for ``num_classes`` foreground classes, in train mode: a torchvision
    ``FasterRCNN`` / ``MaskRCNN`` / ``RetinaNet`` with the preset's components. Targets take labels 1 … C.
    ``images_per_class`` [C] and ``num_images`` (training images per class and in all) are needed for EQL."""
    from libra_cli.models.build import build_detector

    config = load_config(preset, overrides)
    counts = None if images_per_class is None else torch.tensor(list(images_per_class))
    return build_detector(config, num_classes, images_per_class=counts, num_images=num_images).train()
