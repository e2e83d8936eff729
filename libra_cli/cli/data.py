"""``libra data synth OUT`` — generate the synthetic COCO / LVIS-format benchmark (or, with ``--format voc``,
the same benchmark as a Pascal VOC tree ``OUT/VOCdevkit/VOC2007``)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer
from rich.table import Table

from libra_cli.cli import data_show, data_stats
from libra_cli.cli.ui import console, count_progress, handle_errors, progress_callback
from libra_cli.data.build import benchmark_train_flags
from libra_cli.data.synth import (
    LONG_TAIL_NUM_CLASSES,
    SynthSpec,
    difficulty_settings,
    generate_benchmark,
    read_benchmark_spec,
    spec_differences,
    split_image_counts,
)
from libra_cli.data.voc_export import export_benchmark_to_voc, voc_year_dir
from libra_cli.errors import LibraError

app = typer.Typer(
    help="Datasets: generate the synthetic benchmark, draw a dataset's ground truth, count what a file holds.",
    no_args_is_help=True,
)
app.command("show")(data_show.show_command)
DEFAULTS = SynthSpec()


NUM_VAL = typer.Option(
    None,
    "--num-val",
    help=f"Validation images (default {DEFAULTS.num_val}; not with --long-tail, see --val-per-class).",
)
VAL_PER_CLASS = typer.Option(
    None,
    "--val-per-class",
    help=f"With --long-tail: validation instances of every class, a class-balanced val split "
    f"(default {DEFAULTS.val_instances_per_class}).",
)
DIFFICULTY = typer.Option(
    "default",
    "--difficulty",
    help="Named knob settings: default (the demo's benchmark), coco-like (4-15 objects, a quarter forced "
    "small, up to 10 look-alikes, 3× clutter, 20 classes) or coco-hard (6-20 objects, half small, up to 16 "
    "look-alikes, 4× clutter, 40 classes); the options below override single knobs.",
)
FORMAT = typer.Option(
    "coco",
    "--format",
    help="coco: COCO / LVIS JSON files; voc: a Pascal VOC tree OUT/VOCdevkit/VOC2007 (splits trainval "
    "and test, crowd regions as difficult objects, the class names in classes.txt).",
)


@app.command("synth")
@handle_errors
def synth_command(
    out: Path = typer.Argument(..., help="Output folder (images/, annotations/, benchmark.json)."),
    num_train: int = typer.Option(DEFAULTS.num_train, "--num-train", help="Training images."),
    num_val: int = NUM_VAL,
    val_per_class: int = VAL_PER_CLASS,
    image_size: int = typer.Option(DEFAULTS.image_size, "--image-size", help="Square image side in pixels."),
    num_classes: int = typer.Option(
        None,
        "--num-classes",
        help=f"Categories (default {DEFAULTS.num_classes}; {LONG_TAIL_NUM_CLASSES} with --long-tail).",
    ),
    long_tail: bool = typer.Option(False, "--long-tail", help="Zipf-like class frequency, LVIS-format files."),
    sparse_ids: bool = typer.Option(False, "--sparse-ids", help="Non-contiguous category ids."),
    distractors: bool = typer.Option(True, "--distractors/--no-distractors", help="Look-alike hard negatives."),
    difficulty: str = DIFFICULTY,
    min_objects: int = typer.Option(
        None, "--min-objects", help=f"Fewest labelled objects per image (default {DEFAULTS.min_objects})."
    ),
    max_objects: int = typer.Option(
        None, "--max-objects", help=f"Most labelled objects per image (default {DEFAULTS.max_objects})."
    ),
    small_fraction: float = typer.Option(
        None, "--small-fraction", help="Share of labelled objects drawn small, side 10-32 px (default 0)."
    ),
    max_distractors: int = typer.Option(
        None,
        "--max-distractors",
        help=f"Most look-alike hard negatives per image (default {DEFAULTS.max_distractors}).",
    ),
    clutter_factor: int = typer.Option(
        None, "--clutter-factor", help="Clutter lines and blobs per image, times the default's (default 1)."
    ),
    seed: int = typer.Option(DEFAULTS.seed, "--seed", help="Same seed, same bytes."),
    force: bool = typer.Option(
        False, "--force", help="Replace a benchmark that OUT holds with other settings (refused without it)."
    ),
    data_format: str = FORMAT,
) -> None:
    """Generate a deterministic detection benchmark in real COCO (or LVIS) format."""
    given = {
        "num_classes": num_classes,
        "min_objects": min_objects,
        "max_objects": max_objects,
        "small_fraction": small_fraction,
        "max_distractors": max_distractors,
        "clutter_factor": clutter_factor,
    }
    knobs = difficulty_settings(difficulty, long_tail=long_tail)
    knobs.update({name: value for name, value in given.items() if value is not None})
    knobs.setdefault("num_classes", LONG_TAIL_NUM_CLASSES if long_tail else DEFAULTS.num_classes)
    check_synth_flags(out, data_format, long_tail=long_tail, num_val=num_val, val_per_class=val_per_class)
    spec = SynthSpec(
        num_train=num_train,
        num_val=DEFAULTS.num_val if num_val is None else num_val,
        val_instances_per_class=DEFAULTS.val_instances_per_class if val_per_class is None else val_per_class,
        image_size=image_size,
        long_tail=long_tail,
        sparse_ids=sparse_ids,
        distractors=distractors,
        seed=seed,
        **knobs,
    )
    if data_format == "voc":
        write_voc_benchmark(out, spec)
    else:
        write_coco_benchmark(out, spec, force=force)


def check_synth_flags(
    out: Path, data_format: str, *, long_tail: bool, num_val: int | None, val_per_class: int | None
) -> None:
    """A LibraError (one line naming the flag) for flags that do not go together, before anything is made."""
    # The long-tailed val split is sized per class, the COCO one in images: refuse the option that would do nothing.
    if long_tail and num_val is not None:
        raise LibraError("--num-val: a --long-tail val split is class-balanced; size it with --val-per-class")
    if not long_tail and val_per_class is not None:
        raise LibraError("--val-per-class: only a --long-tail benchmark has a class-balanced val split")
    if data_format not in ("coco", "voc"):
        raise LibraError(f"--format: {data_format!r} is not one of coco, voc")
    if data_format == "voc" and long_tail:
        raise LibraError("--format voc: a --long-tail benchmark is LVIS (federated labels), which VOC cannot hold")
    if data_format == "voc" and voc_year_dir(out).parent.exists():
        raise LibraError(f"{voc_year_dir(out).parent}: already exists; choose an empty or new output folder")


def write_coco_benchmark(out: Path, spec: SynthSpec, *, force: bool) -> dict:
    """Generate the benchmark in ``out`` (refused where ``out`` holds one made with other settings, unless
    ``force``) and print its splits and the flags to train on it."""
    existing = read_benchmark_spec(out)
    if existing is not None and existing != spec and not force:
        differences = ", ".join(spec_differences(existing, spec))
        raise LibraError(
            f"{out}: holds a synthetic benchmark made with other settings ({differences}); "
            "pass --force to replace it, or choose another folder"
        )
    with count_progress("synth") as progress:
        total = sum(split_image_counts(spec).values())
        summary = generate_benchmark(out, spec, progress=progress_callback(progress, "images", total))
    table = Table(title=f"synthetic benchmark ({summary['format']}) in {out}")
    for column in ("split", "images", "annotations", "crowd", "annotation file"):
        table.add_column(column)
    for split, info in summary["splits"].items():
        table.add_row(split, str(info["images"]), str(info["annotations"]), str(info["crowd"]), info["annotation_file"])
    console.print(table)
    line = f"train on it: libra train {benchmark_train_flags(out)}"
    console.print(line, highlight=False, soft_wrap=True, markup=False)  # one line to copy, never wrapped
    return summary


def write_voc_benchmark(out: Path, spec: SynthSpec) -> dict:
    """Generate the COCO-format benchmark in a temporary folder and write it as ``OUT/VOCdevkit/VOC2007``."""
    with tempfile.TemporaryDirectory(prefix="libra-synth-") as scratch, count_progress("synth") as progress:
        total = sum(split_image_counts(spec).values())
        generate_benchmark(scratch, spec, progress=progress_callback(progress, "images", total))
        summary = export_benchmark_to_voc(scratch, out)
    table = Table(title=f"synthetic benchmark (voc format) in {summary['year_dir']}")
    for column in ("split", "images", "objects", "difficult"):
        table.add_column(column)
    for split, info in summary["splits"].items():
        table.add_row(split, str(info["images"]), str(info["objects"]), str(info["difficult"]))
    console.print(table)
    return summary


app.command("stats")(data_stats.stats_command)
