"""From a run config to datasets: the user's files, or the default synthetic benchmark."""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from libra_cli.config import DataConfig
from libra_cli.data.coco import DetectionDataset
from libra_cli.data.synth import (
    LONG_TAIL_NUM_CLASSES,
    SynthSpec,
    benchmark_exists,
    difficulty_settings,
    generate_benchmark,
    read_benchmark_spec,
    spec_differences,
)
from libra_cli.data.transforms import TrainAugmentation
from libra_cli.errors import LibraError
from libra_cli.voc_sources import check_split_lists, is_voc_source, parse_voc_sources, voc_image_root, voc_spec


@dataclass(frozen=True)
class DataPaths:
    train_ann: Path
    train_images: Path
    val_ann: Path
    val_images: Path


def default_synth_spec(long_tail: bool = False, difficulty: str = "default") -> SynthSpec:
    """The benchmark ``libra demo`` uses; the long-tailed variant has 40 Zipf-distributed classes. A named
    ``difficulty`` (``DIFFICULTIES`` of ``libra_cli.data.synth``) changes its knobs, "default" none."""
    base = SynthSpec(long_tail=True, num_classes=LONG_TAIL_NUM_CLASSES) if long_tail else SynthSpec()
    return dataclasses.replace(base, **difficulty_settings(difficulty, long_tail=long_tail))


def benchmark_paths(root: str | Path) -> DataPaths:
    root = Path(root)
    return DataPaths(
        train_ann=root / "annotations" / "train.json",
        train_images=root / "images" / "train",
        val_ann=root / "annotations" / "val.json",
        val_images=root / "images" / "val",
    )


def benchmark_train_flags(root: str | Path) -> str:
    """The `libra train` flags that train on the benchmark in ``root`` as on any COCO / LVIS files."""
    paths = benchmark_paths(root)
    return " ".join(
        f"--{name.replace('_', '-')} {shlex.quote(str(getattr(paths, name)))}"
        for name in ("train_ann", "train_images", "val_ann", "val_images")
    )


def ensure_benchmark(
    root: str | Path, spec: SynthSpec, progress: Callable[[int, int], None] | None = None
) -> tuple[DataPaths, bool]:
    """Generate the benchmark into ``root`` unless it is already there with this spec.

    Returns the paths and whether it was generated now. A complete benchmark made with other settings (by
    ``libra data synth``) is never replaced: LibraError names the settings that differ and the flags that
    train on it. (An interrupted or outdated one is generated again; a folder holding anything else is
    refused by the generator.)
    """
    if benchmark_exists(root, spec):
        return benchmark_paths(root), False
    existing = read_benchmark_spec(root)
    if existing is not None:
        raise LibraError(
            f"{root}: holds a synthetic benchmark made with other settings "
            f"({', '.join(spec_differences(existing, spec))}); "
            f"to train on it pass {benchmark_train_flags(root)}, or choose another --synth-dir"
        )
    generate_benchmark(root, spec, progress=progress)
    return benchmark_paths(root), True


def resolve_data_paths(data: DataConfig, progress: Callable[[int, int], None] | None = None) -> DataPaths:
    if data.train_ann is None:
        spec = default_synth_spec(data.synth_long_tail, data.synth_difficulty)
        paths, _ = ensure_benchmark(data.synth_dir, spec, progress)
        return paths
    assert data.val_ann is not None
    train_ann, train_images = split_files(data.train_ann, data.train_images, data.train_split, "data.train_split")
    val_ann, val_images = split_files(data.val_ann, data.val_images, data.val_split, "data.val_split")
    paths = DataPaths(train_ann, train_images, val_ann, val_images)
    for name in ("train_ann", "val_ann"):
        if not is_voc_source(getattr(paths, name)) and not getattr(paths, name).is_file():
            raise LibraError(f"{getattr(paths, name)}: annotation file not found (data.{name})")
    for name in ("train_images", "val_images"):
        if not getattr(paths, name).is_dir():
            raise LibraError(f"{getattr(paths, name)}: image folder not found (data.{name})")
    return paths


def absolute_paths(paths: DataPaths) -> DataPaths:
    """``paths`` made absolute (each part of a ``+``-joined VOC union), as a run directory records them, so
    that evaluation, analyses and reports find the data from any working directory."""

    def absolute(path: Path) -> Path:
        if not is_voc_source(path):
            return path.absolute()
        return Path("+".join(str(Path(part).absolute()) for part in str(path).split("+")))

    return DataPaths(*(absolute(getattr(paths, item.name)) for item in dataclasses.fields(DataPaths)))


def split_files(ann: str | Path, images: str | Path | None, split: str, where: str) -> tuple[Path, Path]:
    """(annotations, image folder) of a split. Pascal VOC year folders become their list-file form, which
    records the split (see ``libra_cli.data.voc``), and without an image folder the folder holding them;
    ``where`` names the split's setting in errors. A COCO / LVIS file needs its image folder."""
    sources = parse_voc_sources(ann, split)
    if sources is None:
        if images is None:
            raise LibraError(f"{ann}: a COCO / LVIS annotation file needs its image folder (--images)")
        return Path(ann), Path(images)
    check_split_lists(sources, where)
    return voc_spec(sources), Path(images) if images is not None else voc_image_root(sources)


def build_train_dataset(data: DataConfig, paths: DataPaths, *, with_masks: bool = False) -> DetectionDataset:
    """The training split with its augmentation; ``with_masks`` adds instance masks to the targets."""
    augmentation = TrainAugmentation(hflip_prob=data.hflip_prob, scale_range=data.scale_jitter)
    return DetectionDataset(
        paths.train_ann,
        paths.train_images,
        augmentation=augmentation,
        on_bad_sample=data.on_bad_sample,
        with_masks=with_masks,
        voc_use_difficult=data.voc_use_difficult,
        drop_unannotated=data.drop_unannotated,
    )


def build_eval_dataset(
    ann: str | Path, images: str | Path, category_ids: list[int], on_bad_sample: str = "error"
) -> DetectionDataset:
    """An evaluation split whose labels follow the trained model's category order."""
    return DetectionDataset(ann, images, category_ids=category_ids, on_bad_sample=on_bad_sample)
