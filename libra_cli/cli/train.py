"""``libra train [PRESET] [flags]`` — train a detector; flags override the preset.

The flags are generated from the config dataclasses (``config_options.py``): one per field, plus
``--image-size``, ``--resume`` and ``--set SECTION.FIELD=VALUE`` for any field.
"""

from __future__ import annotations

from typing import Any

import typer

from libra_cli.cli.config_options import (
    PANELS,
    config_options,
    overrides_from_options,
    parse_setting,
    with_config_options,
)
from libra_cli.cli.ui import handle_errors
from libra_cli.config import load_config

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
