"""``libra train [PRESET] [flags]`` — train a detector; flags override the preset.

The flags are generated from the config dataclasses (``config_options.py``): one per field, plus
``--image-size``, ``--resume`` and ``--set SECTION.FIELD=VALUE`` for any field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from libra_cli.cli.config_options import (
    PANELS,
    config_options,
    overrides_from_options,
    parse_setting,
    with_config_options,
)
from libra_cli.cli.ui import console, handle_errors
from libra_cli.config import RunConfig, load_config

# Flag names older than the generated ones, kept because the README and users' scripts use them: each is a
# second name of its field's option (`--workers` and `--num-workers` both set data.num_workers).
FLAG_ALIASES = {
    ("data", "num_workers"): "--workers",
    ("data", "synth_long_tail"): "--long-tail",
    ("model", "roi_batch_size_per_image"): "--roi-batch-size",
}
# One option per config field (see config_options.py); unset options do not override the preset.
CONFIG_OPTIONS = config_options(aliases=FLAG_ALIASES)


def overrides_from_flags(flags: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{section: {field: value}}`` for the flags the user actually gave: the config options by field
    name, then ``image_size`` (model.min_size and max_size), then each ``settings`` entry (``--set``)."""
    overrides = overrides_from_options(CONFIG_OPTIONS, flags)
    if flags.get("image_size") is not None:
        overrides.setdefault("model", {}).update(min_size=flags["image_size"], max_size=flags["image_size"])
    for entry in flags.get("settings") or ():
        section, name, value = parse_setting(entry)
        overrides.setdefault(section, {})[name] = value
    return overrides


def eql_tail_summary(eql: dict[str, Any]) -> str:
    """TR(λ) and the tail classes (EQL paper §3), so users can judge their λ."""
    names = eql["tail_classes"]
    shown = ", ".join(names[:12]) + (f", … ({len(names)} in all)" if len(names) > 12 else "")
    return (
        f"λ = {eql['eql_lambda']:g}: {len(names)} tail classes, tail ratio TR(λ) = "
        f"{100 * eql['tail_ratio']:.2f}% [{shown or 'none'}]"
        + (f"; f_j over {eql['freq_denominator']} {eql['freq_mode']} images" if "freq_mode" in eql else "")
    )


def describe_components(config: RunConfig) -> str:
    """The switched-on components, IoU-balanced sampling with the reading it follows."""
    from libra_cli.sampling import iou_sampling_reading

    lib = config.libra
    names = []
    for name in lib.enabled():
        if name == "iou_sampling":
            name += f" ({iou_sampling_reading(lib.iou_floor_thr, lib.iou_bins_upper)} reading)"
        names.append(name)
    details = reference_details(config)
    if names:
        return ", ".join(names) + (f"; reference details: {', '.join(details)}" if details else "")
    return f"off; reference details: {', '.join(details)}" if details else "off (plain torchvision detector)"


def reference_details(config: RunConfig) -> list[str]:
    """The reference's training details (SPEC §9) that ``config`` switches on, as short names."""
    m, d, lib = config.model, config.data, config.libra
    details = [
        ("box-head init", m.box_head_init == "reference"),
        (f"RPN positives IoU >= {m.rpn_min_pos_iou:g}" if m.rpn_min_pos_iou else "", bool(m.rpn_min_pos_iou)),
        ("RPN loss divisor", m.rpn_loss_norm == "reference"),
        (f"RPN negatives <= {m.rpn_neg_pos_ub} x positives", m.rpn_neg_pos_ub is not None),
        ("unannotated images dropped", d.drop_unannotated),
        ("half-open last IoU bin", lib.iou_sampling and lib.iou_last_bin == "half-open"),
    ]
    return [name for name, on in details if on]


def describe_start(config: RunConfig, info: dict[str, Any]) -> None:
    """Print what is about to happen: data, model, switches, and EQL's tail classes."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("run", config.train.out)
    table.add_row(
        "train",
        f"{info['num_images']} images, {len(info['category_ids'])} classes ({info['format']}) "
        f"from {info['given']['train_ann']}",
    )
    table.add_row("val", f"{info['num_val_images']} images from {info['given']['val_ann']}")
    params = sum(p.numel() for p in info["model"].parameters()) / 1e6
    table.add_row(
        "model",
        f"{config.model.arch} {config.model.backbone}-FPN, {params:.1f} M parameters, "
        f"{config.model.min_size}px, device {info['device']}",
    )
    table.add_row("libra", describe_components(config))
    # The engine's schedule: an epoch schedule resolved into iterations, the lr after linear scaling.
    sched = info.get("schedule") or {"max_iters": config.train.max_iters, "lr": config.train.lr}
    epochs = f" ({sched['epochs']} epochs × {sched['iters_per_epoch']})" if sched.get("epochs") is not None else ""
    lr_text = f"lr {sched['lr']:g}"
    if sched.get("scale_lr"):
        lr_text += f" (= {config.train.lr:g} × {config.data.batch_size} / {config.train.reference_batch})"
    milestones = sched.get("milestone_iters")
    table.add_row(
        "schedule",
        f"{sched['max_iters']} iterations{epochs} × {config.data.batch_size} images"
        + (f" over {info['world_size']} processes" if info.get("world_size", 1) > 1 else "")
        + ", "
        f"{lr_text} ({config.train.schedule}"
        + (f", ×0.1 at {', '.join(map(str, milestones))}" if milestones else "")
        + ")"
        + (f", resuming at {info['start_iter']}" if info["start_iter"] else ""),
    )
    skipped = info.get("skipped", {})
    if any(skipped.values()):
        table.add_row(
            "skipped",
            f"{skipped['train_images']} + {skipped['val_images']} bad images, "
            f"{skipped['train_boxes']} + {skipped['val_boxes']} bad boxes "
            "(train + val, --on-bad-sample skip)",
        )
    if config.libra.eql:
        table.add_row("eql", eql_tail_summary(info["eql"]))
    console.print(table)
    if config.libra.eql and info["eql"].get("warning"):
        console.print(f"[yellow]warning:[/yellow] {escape(info['eql']['warning'])}")


def run_label(config: RunConfig) -> str:
    """A short name for progress output: the run folder with its parent (e.g. ``bfp/seed0``)."""
    out = Path(config.train.out)
    return f"{out.parent.name}/{out.name}" if out.parent.name else out.name


@handle_errors
def train_command(
    preset: str = typer.Argument(None, help="Preset name (baseline, libra, …: libra config --list) or a YAML path."),
    *,
    image_size: int = typer.Option(
        None,
        "--image-size",
        rich_help_panel=PANELS["model"],
        help="Resize images to this size (sets min_size and max_size).",
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        rich_help_panel=PANELS["train"],
        help="Continue the run in --out from its last checkpoint, with its saved schedule (a changed one is refused).",
    ),
    extend: bool = typer.Option(
        False,
        "--extend",
        rich_help_panel=PANELS["train"],
        help="With --resume and a larger --max-iters: train a finished step schedule on; the milestones stay at "
        "the iterations they were, so the added iterations keep the final learning rate.",
    ),
    settings: list[str] = typer.Option(
        None,
        "--set",
        metavar="SECTION.FIELD=VALUE",
        help="Any config field, the value as YAML (true, 0.5, [8, 16], null); repeatable, applied after the flags.",
    ),
    **fields: Any,
) -> None:
    """Train a detector. Without dataset flags it uses the default synthetic benchmark."""
    from libra_cli import workflow
    from libra_cli.cli.display import RichDisplay

    overrides = overrides_from_flags({**fields, "image_size": image_size, "settings": settings})
    config = load_config(preset, overrides)
    workflow.train_run(config, resume=resume, extend=extend, hooks=RichDisplay().training(config))


with_config_options(train_command, CONFIG_OPTIONS)
