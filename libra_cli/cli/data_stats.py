"""``libra data stats ANN`` — what an annotation file holds, counted as training reads it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from libra_cli.cli.ui import console, handle_errors
from libra_cli.data.stats import FREQUENCY_GROUPS, dataset_stats, write_stats
from libra_cli.errors import LibraError


@handle_errors
def stats_command(
    ann: Path = typer.Argument(..., help="A COCO or LVIS annotation JSON (or a Pascal VOC source)."),
    images: Path = typer.Option(
        None, "--images", help="Image folder, to count image files not found (no pixel is read)."
    ),
    out: Path = typer.Option(None, "--out", help="Folder for stats.json and stats.png (default: ANN_STEM-stats)."),
    on_bad_sample: str = typer.Option(
        "error", "--on-bad-sample", help="error: stop at a degenerate box, as training does; skip: drop and count it."
    ),
    top: int = typer.Option(10, "--top", help="Categories shown with the most and with the fewest instances."),
) -> None:
    """Images, boxes, crowd regions, box sizes and instances per category (LVIS: per r / c / f group)."""
    if on_bad_sample not in ("error", "skip"):
        raise LibraError(f"--on-bad-sample: {on_bad_sample!r} is not one of error, skip")
    with console.status(f"reading {ann}"):
        stats = dataset_stats(ann, images, on_bad_sample)
    for table in stats_tables(stats, top):
        console.print(table)
    written = write_stats(stats, out if out is not None else Path(f"{Path(ann).stem}-stats"))
    console.print(f"written: {written['json']}, {written['png']}")


def stats_tables(stats: dict[str, Any], top: int = 10) -> list[Table]:
    """The overview, the box sizes, the LVIS groups (for LVIS) and the categories at both ends."""
    overview = Table(title=f"{stats['ann_file']} ({stats['format'].upper()})", show_header=False)
    overview.add_column()
    overview.add_column(justify="right")
    per_image = stats["boxes_per_image"]
    rows = [
        ("images", stats["images"]),
        ("annotations in the file", stats["annotations"]),
        ("training boxes (crowd excluded)", stats["boxes"]),
        ("crowd regions", stats["crowd"]),
        ("images without a box", stats["images_without_boxes"]),
        ("boxes skipped (--on-bad-sample skip)", stats["skipped_boxes"]),
        ("boxes per image: mean / median / max", _per_image(per_image)),
        ("categories", len(stats["categories"])),
    ]
    if stats["image_files_missing"] is not None:
        rows.append(("image files not found", stats["image_files_missing"]))
    for name, value in rows:
        overview.add_row(name, value if isinstance(value, str) else f"{value:,}")
    tables = [overview]

    sizes = Table(title="box sizes (COCO's area ranges of w × h)")
    for column in ("small < 32²", "medium", "large > 96²"):
        sizes.add_column(column, justify="right")
    total = max(stats["boxes"], 1)
    sizes.add_row(*(f"{count:,} ({100 * count / total:.1f} %)" for count in stats["box_sizes"].values()))
    tables.append(sizes)

    if "frequency_groups" in stats:
        groups = Table(title="LVIS frequency groups")
        for column in ("group", "categories", "instances", "images"):
            groups.add_column(column, justify="right" if column != "group" else "left")
        for key, group in stats["frequency_groups"].items():
            groups.add_row(
                f"{key} ({FREQUENCY_GROUPS[key]})", f"{group['categories']:,}", f"{group['instances']:,}",
                f"{group['images']:,}",
            )  # fmt: skip
        tables.append(groups)

    ranked = sorted(stats["categories"], key=lambda row: (-row["instances"], str(row["id"])))
    shown = ranked if len(ranked) <= 2 * top else ranked[:top] + ranked[-top:]
    title = "instances per category" + ("" if len(ranked) <= 2 * top else f" (the {top} most and {top} fewest)")
    categories = Table(title=title)
    lvis = stats["format"] == "lvis"
    for column in ("category", "id", *(("freq",) if lvis else ()), "instances", "images"):
        categories.add_column(column, justify="left" if column == "category" else "right")
    for row in shown:
        cells = [row["name"], str(row["id"]), *((str(row.get("frequency")),) if lvis else ())]
        categories.add_row(*cells, f"{row['instances']:,}", f"{row['images']:,}")
    tables.append(categories)
    return tables


def _per_image(per_image: dict[str, Any]) -> str:
    if per_image["mean"] is None:
        return "—"
    return f"{per_image['mean']:.2f} / {per_image['median']:g} / {per_image['max']:,}"
