"""Pascal VOC sources as paths: which path names a year folder, a split's list file or their union.

A year folder (``VOCdevkit/VOC2007``) holds ``Annotations/<id>.xml``, ``ImageSets/Main/<split>.txt`` and
``JPEGImages/<id>.jpg``. A *VOC source* names one year folder and one split, written either as the folder
plus a split (``data.train_split`` / ``data.val_split``) or as the split's list file; sources joined with
``+`` are read as their union (the papers' 07+12 protocol). This module only looks at paths: the config
checks a setting with it before any work starts, and :mod:`libra_cli.data.voc` reads the files it names.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from libra_cli.errors import LibraError

CLASSES_FILE = "classes.txt"  # optional, in a year folder: the class names in id order, one per line
ANNOTATIONS_DIR = "Annotations"
LISTS_DIR = Path("ImageSets") / "Main"
IMAGES_DIR = "JPEGImages"
IMAGE_SUFFIX = ".jpg"
SOURCE_SEPARATOR = "+"


@dataclass(frozen=True)
class VocSource:
    """One split of one year folder."""

    year_dir: Path
    split: str

    @property
    def list_file(self) -> Path:
        return self.year_dir / LISTS_DIR / f"{self.split}.txt"


def _is_list_file(path: Path) -> bool:
    """``.../ImageSets/Main/<split>.txt``: a split named by its list file."""
    return (
        path.suffix == ".txt"
        and path.parent.name == LISTS_DIR.name
        and path.parent.parent.name == LISTS_DIR.parent.name
    )


def _is_year_folder(path: Path) -> bool:
    return path.is_dir() and (path / ANNOTATIONS_DIR).is_dir()


def voc_path_problem(spec: str | Path | None) -> str | None:
    """What is wrong with a folder given where a VOC source goes, when it is the devkit root or a folder
    inside a year folder, saying what to pass instead, e.g. "VOCdevkit holds VOC2007, VOC2012: pass a year
    folder, or VOCdevkit/VOC2007+VOCdevkit/VOC2012"; None for anything else (a year folder, a file)."""
    if spec is None or SOURCE_SEPARATOR in str(spec):
        return None
    path = Path(spec)
    if not path.is_dir() or _is_year_folder(path):
        return None
    years = sorted(child.name for child in path.iterdir() if _is_year_folder(child))
    if len(years) == 1:
        return f"{path.name} holds {years[0]}: pass the year folder {path / years[0]}"
    if years:
        union = SOURCE_SEPARATOR.join(str(path / year) for year in years)
        return f"{path.name} holds {', '.join(years)}: pass a year folder, or {union} for their union"
    for year_dir in (path.parent, path.parent.parent):  # Annotations/, JPEGImages/, ImageSets/; ImageSets/Main/
        if _is_year_folder(year_dir):
            return (
                f"{path.relative_to(year_dir)} is a folder inside the year folder {year_dir.name}: pass {year_dir} "
                "(its split set by --train-split / --val-split) or one of its ImageSets/Main/<split>.txt lists"
            )
    return None


def parse_voc_sources(spec: str | Path, default_split: str) -> list[VocSource] | None:
    """The VOC sources ``spec`` names, or None when it names none (a COCO / LVIS JSON file).

    Each ``+``-separated part is a year folder (a directory holding ``Annotations/``), read with
    ``default_split``, or a ``.../ImageSets/Main/<split>.txt`` list file. A union whose parts are not all VOC
    sources is an error naming the odd part; a path with a ``+`` none of whose parts is VOC is left alone.
    """
    parts = str(spec).split(SOURCE_SEPARATOR)
    sources: list[VocSource | None] = []
    for part in parts:
        path = Path(part)
        if _is_list_file(path):
            sources.append(VocSource(path.parent.parent.parent, path.stem))
        elif _is_year_folder(path):
            sources.append(VocSource(path, default_split))
        else:
            sources.append(None)
    if all(source is None for source in sources):
        return None
    for part, source in zip(parts, sources, strict=True):
        if source is None:
            raise LibraError(
                f"{spec}: {part!r} is not a VOC year folder (a folder with {ANNOTATIONS_DIR}/ and "
                f"{LISTS_DIR}/) nor an {LISTS_DIR}/<split>.txt list"
            )
    return [source for source in sources if source is not None]


def is_voc_source(spec: str | Path | None) -> bool:
    """Whether ``spec`` names VOC sources (see :func:`parse_voc_sources`); a malformed union counts as VOC,
    so that reading it reports what is wrong."""
    if spec is None:
        return False
    try:
        return parse_voc_sources(spec, "test") is not None
    except LibraError:
        return True


def voc_spec(sources: Sequence[VocSource]) -> Path:
    """The list-file form of ``sources`` (``.../VOC2007/ImageSets/Main/trainval.txt+...``), which reads back
    as the same sources whatever the default split."""
    return Path(SOURCE_SEPARATOR.join(str(source.list_file) for source in sources))


def voc_image_root(sources: Sequence[VocSource]) -> Path:
    """The folder every source's year folder lies in (VOCdevkit); image file names are relative to it."""
    parents = [str(source.year_dir.resolve().parent) for source in sources]
    return Path(os.path.commonpath(parents))


def check_split_name(where: str, split: str) -> None:
    """A split names a list file in ``ImageSets/Main``: a plain file stem such as ``trainval``."""
    if not split or split in (".", "..") or any(char in split for char in "/\\+") or split.endswith(".txt"):
        raise LibraError(f"{where}: {split!r} is not a split name such as trainval, test or val")


def check_split_lists(sources: Sequence[VocSource], setting: str) -> None:
    """Raise LibraError naming the expected path of the first missing ImageSets list."""
    for source in sources:
        if not source.list_file.is_file():
            raise LibraError(f"{source.list_file}: ImageSets list not found ({setting} split {source.split!r})")
