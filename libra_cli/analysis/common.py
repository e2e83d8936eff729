"""Steps shared by the imbalance diagnostics: a run's model and images, the proposals its RoI head would
see in training, and the files each analysis leaves in ``RUN_DIR/analysis``.

Every analysis follows the same path: load a checkpoint of the run (:func:`load_analysis_inputs`), walk
the first N images of a split in batches (:func:`image_batches`), resize them as the detector does
through the detector's public probe (``inputs.probe``, :class:`libra_cli.models.probe.DetectorProbe`:
the resized batch, the pyramid before and after BFP, the RPN's training-time proposals, their matches,
the sampled RoIs and the box head's outputs), then measure something and write ``<name>.json``, ``<name>.csv`` and
``<name>.png`` (:func:`write_analysis_files`).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from libra_cli.components import TWO_STAGE
from libra_cli.config import RunConfig
from libra_cli.data.build import build_eval_dataset
from libra_cli.data.coco import collate
from libra_cli.engine.run import load_trained_model
from libra_cli.engine.step import seed_everything
from libra_cli.errors import LibraError
from libra_cli.models.probe import DetectorProbe
from libra_cli.rundir import RunLayout

SPLITS = ("train", "val")
# Images per forward pass: large enough to amortise the per-call overhead on a CPU, small enough that the
# pooled features of every negative proposal (~1000 per image) stay well under a gigabyte.
DEFAULT_BATCH_SIZE = 8

Progress = Callable[[int, int], None]


@dataclass
class AnalysisInputs:
    """What every analysis starts from.

    Attributes:
        run_dir: the run directory.
        config: the run's resolved config.
        model: the detector in eval mode on ``device``, weights from the chosen checkpoint.
        dataset_info: the run's ``dataset.json``.
        checkpoint: {"checkpoint": path, "iteration": int} of the weights loaded.
        dataset: the first ``num_images`` images of the split, without augmentation.
        split: "train" or "val".
    """

    run_dir: Path
    config: RunConfig
    model: nn.Module
    dataset_info: dict[str, Any]
    checkpoint: dict[str, Any]
    dataset: Dataset
    split: str

    @property
    def device(self) -> torch.device:
        """Where the model lives, and so where its images go."""
        return next(self.model.parameters()).device

    @property
    def probe(self) -> DetectorProbe:
        """The detector's intermediate results (pyramid, proposals, matches, sampled RoIs, box head)."""
        return DetectorProbe(self.model)

    @property
    def arch(self) -> str:
        return self.config.model.arch

    @property
    def num_images(self) -> int:
        return len(self.dataset)


def load_analysis_inputs(
    run_dir: str | Path,
    *,
    num_images: int,
    split: str = "train",
    checkpoint: str = "best",
    device: str | None = None,
    seed: int = 0,
) -> AnalysisInputs:
    """Load a run's checkpoint and the first ``num_images`` images of its ``split``.

    The images are the first N of the split in file order, the same for every run that shares the data,
    so two runs can be compared on the same images. Training images are read without augmentation.
    Seeds the global RNGs with ``seed`` (the run's RoI sampler draws from them), so an analysis gives the
    same numbers for the same seed.

    Raises:
        LibraError: bad ``split`` or ``num_images``, a missing run, checkpoint or image folder.
    """
    if split not in SPLITS:
        raise LibraError(f"--split: {split!r} is not one of {', '.join(SPLITS)}")
    if num_images < 1:
        raise LibraError(f"--images: must be at least 1, got {num_images}")
    config, model, info, meta = load_trained_model(run_dir, checkpoint, device)
    ann_key, images_key = f"{split}_ann", f"{split}_images"
    if ann_key not in info or images_key not in info:
        raise LibraError(f"{run_dir}: dataset.json does not name the {split} split ({ann_key}, {images_key})")
    dataset = build_eval_dataset(info[ann_key], info[images_key], info["category_ids"], config.data.on_bad_sample)
    if len(dataset) == 0:
        raise LibraError(f"{info[ann_key]}: the {split} split has no images")
    seed_everything(seed)
    return AnalysisInputs(
        run_dir=Path(run_dir),
        config=config,
        model=model,
        dataset_info=info,
        checkpoint=meta,
        dataset=Subset(dataset, range(min(num_images, len(dataset)))),  # the first num_images
        split=split,
    )


def image_batches(
    dataset: Dataset, batch_size: int, device: torch.device
) -> Iterator[tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]]:
    """Batches of (images [3, H, W] in [0, 1], targets {"boxes" xyxy [G, 4], "labels" [G]}) on ``device``."""
    if batch_size < 1:
        raise LibraError(f"--batch-size: must be at least 1, got {batch_size}")
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0, collate_fn=collate)
    for images, targets in loader:
        yield (
            [image.to(device) for image in images],
            [{"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in targets],
        )


def require_faster_rcnn(arch: str, analysis: str, reason: str) -> None:
    """A one-line LibraError unless ``arch`` is a two-stage detector (Faster R-CNN or Mask R-CNN)."""
    if arch not in TWO_STAGE:
        raise LibraError(
            f"libra analyze {analysis}: needs a Faster R-CNN run (or Mask R-CNN); this run is {arch} ({reason})"
        )


def pyramid_level_names(arch: str, num_levels: int) -> list[str]:
    """P2..P6 for Faster / Mask R-CNN (strides 4..64), P3..P7 for RetinaNet (strides 8..128)."""
    first = 2 if arch in TWO_STAGE else 3
    return [f"P{first + index}" for index in range(num_levels)]


def figure_png(figure: Figure, dpi: int = 120) -> bytes:
    """Render a matplotlib figure to PNG bytes with the Agg backend (no display, no pyplot state)."""
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def json_ready(value: Any) -> Any:
    """Replace NaN and ±inf (not valid JSON) by None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(item) for item in value]
    return value


def write_analysis_files(
    run_dir: str | Path,
    name: str,
    result: dict[str, Any],
    tables: dict[str, str],
    figures: dict[str, bytes],
) -> dict[str, Path]:
    """Write ``<name>.json`` (``result`` through :func:`json_ready`) plus the given CSV texts and PNGs into
    ``RUN_DIR/analysis``, each atomically (:meth:`RunLayout.write_analysis`).

    Args:
        tables: file name → CSV text, e.g. {"sampling.csv": ...}.
        figures: file name → PNG bytes.

    Returns:
        File name → path of everything written, the JSON first.
    """
    return RunLayout(run_dir).write_analysis(name, json_ready(result), tables, figures)
