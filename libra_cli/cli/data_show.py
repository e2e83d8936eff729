"""``libra data show ANN --out DIR`` — a dataset's ground truth drawn on its images."""

from __future__ import annotations

from pathlib import Path

import typer

from libra_cli.cli.ui import console, handle_errors
from libra_cli.errors import LibraError
from libra_cli.report.ground_truth import DEFAULT_NUM, show_dataset


@handle_errors
def show_command(
    ann: Path = typer.Argument(
        ..., help="A COCO / LVIS annotation JSON, or Pascal VOC year folder(s) (VOC2007+VOC2012) or an ImageSets list."
    ),
    images: Path = typer.Option(None, "--images", help="Image folder (VOC: default, the folder holding the years)."),
    out: Path = typer.Option(..., "--out", help="Folder for the drawn images."),
    num: int = typer.Option(None, "--num", help=f"Images drawn at random by --seed (default {DEFAULT_NUM})."),
    ids: list[int] = typer.Option(None, "--ids", help="Draw these image ids instead (repeatable)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random choice of images."),
    split: str = typer.Option("trainval", "--split", help="Pascal VOC year folders: the ImageSets/Main list read."),
    force: bool = typer.Option(False, "--force", help="Write into an --out folder that already holds files."),
) -> None:
    """Draw the ground truth (boxes and names, crowd / difficult apart, masks) as training reads it."""
    if num is not None and ids:
        raise LibraError("--num and --ids: give one or the other")
    shown = show_dataset(ann, images, out, num=num, ids=ids, seed=seed, split=split, force=force)
    masks = ", masks overlaid" if shown.masks else ""
    console.print(
        f"{len(shown.drawn)} of {shown.num_images} images of {shown.ann_file} ({shown.format}{masks}) drawn in {out}",
        highlight=False,
        soft_wrap=True,
    )
