"""``libra config [PRESET] [flags] [--diff | --explain]`` and ``libra config --list`` — the presets, and the
resolved config without training.

It takes the flags of ``libra train`` (the generated config options, ``--image-size`` and ``--set``) and
prints the config as YAML exactly as ``libra train`` saves it in ``RUN_DIR/config.yaml``; ``--diff`` prints
only the settings that differ from libra's defaults (``RunConfig()``), itself a preset. An epoch schedule
(``train.epochs``) becomes iterations from the training set's size — the dataset flags' files, or the synthetic
benchmark's (read from its folder, or its spec's image count before it is generated) — so the printed config
holds them as training will save them, and a closing comment gives the schedule in epochs and iterations.
``--explain`` adds a comment to every value saying where it comes from and why: the preset's own comment on
that line, the command line, or libra's default with the field's comment. ``--list`` prints the shipped
presets and grids.
"""

from __future__ import annotations

from typing import Any

import typer
import yaml

from libra_cli.cli.config_options import field_comment, with_config_options
from libra_cli.cli.train import CONFIG_OPTIONS, overrides_from_flags
from libra_cli.cli.ui import handle_errors
from libra_cli.config import (
    SECTIONS,
    RunConfig,
    load_config,
    preset_comments,
    read_yaml,
    resolve_preset,
    shipped_presets,
)
from libra_cli.errors import LibraError

__all__ = ["config_command", "config_diff", "explained_config", "preset_listing"]


def config_diff(config: RunConfig, reference: RunConfig | None = None) -> dict[str, dict[str, Any]]:
    """``{section: {field: value}}`` of the settings where ``config`` differs from ``reference`` (default:
    ``RunConfig()``), in section and field order; sections without a difference are left out."""
    ours, theirs = config.to_dict(), (reference or RunConfig()).to_dict()
    diff: dict[str, dict[str, Any]] = {}
    for section in SECTIONS:
        changed = {key: value for key, value in ours[section].items() if theirs[section][key] != value}
        if changed:
            diff[section] = changed
    return diff


@handle_errors
def config_command(
    preset: str = typer.Argument(None, help="Preset name (baseline, libra, …: libra config --list) or a YAML path."),
    *,
    image_size: int = typer.Option(
        None, "--image-size", help="Resize images to this size (sets min_size and max_size)."
    ),
    settings: list[str] = typer.Option(
        None,
        "--set",
        metavar="SECTION.FIELD=VALUE",
        help="Any config field, the value as YAML (true, 0.5, [8, 16], null); repeatable, applied after the flags.",
    ),
    diff: bool = typer.Option(False, "--diff", help="Print only the settings that differ from libra's defaults."),
    explain: bool = typer.Option(
        False,
        "--explain",
        help="Comment every value with its source: the preset's comment, the command line or the default.",
    ),
    list_presets: bool = typer.Option(False, "--list", help="List the shipped presets and grids, then stop."),
    **fields: Any,
) -> None:
    """Print the config `libra train` would run with the same arguments, as YAML (its config.yaml)."""
    if list_presets:
        typer.echo(preset_listing(), nl=False)
        return
    if diff and explain:
        raise LibraError("--diff and --explain: choose one")
    overrides = overrides_from_flags({**fields, "image_size": image_size, "settings": settings})
    config = load_config(preset, overrides)
    note = None
    if config.train.epochs is not None:
        config, note = _epoch_schedule(config)
    if explain:
        typer.echo(explained_config(config, preset, overrides), nl=False)
    else:
        data = config_diff(config) if diff else config.to_dict()
        typer.echo(yaml.safe_dump(data, sort_keys=False) if data else "{}\n", nl=False)
    if note:
        typer.echo(f"# {note}")


def preset_listing() -> str:
    """The shipped presets, then the grids: one line each, the name and the first line of its header."""
    shipped = shipped_presets()
    width = max((len(info.name) for info in shipped), default=0)
    lines = []
    for title, grids in (("presets (libra train NAME, libra config NAME)", False), ("grids (libra ablate NAME)", True)):
        lines.append(f"{title}:")
        lines += [f"  {info.name:<{width}}  {info.summary}".rstrip() for info in shipped if info.is_grid == grids]
    return "\n".join(lines) + "\n"


def explained_config(config: RunConfig, preset: str | None, overrides: dict[str, dict[str, Any]]) -> str:
    """``config`` as YAML, each value followed by a comment naming its source: ``command line``, ``PRESET.yaml``
    with the comment the preset writes on that line, or ``default`` with the field's comment in config.py.
    The text reads back (YAML) as ``config.to_dict()``."""
    preset_values: dict[str, Any] = {}
    comments: dict[tuple[str, str], str] = {}
    source_name = ""
    if preset:
        path = resolve_preset(preset)
        preset_values, comments, source_name = read_yaml(path), preset_comments(path), path.name
    lines = []
    for section, values in config.to_dict().items():
        lines.append(f"{section}:")
        for name, value in values.items():
            if name in overrides.get(section, {}):
                why = "command line"
            elif name in (preset_values.get(section) or {}):
                why = source_name + (f": {comments[section, name]}" if (section, name) in comments else "")
            else:
                why = f"default: {field_comment(SECTIONS[section], name)}".rstrip(": ")
            lines.append(f"  {name}: {_flow(value)}  # {why}")
    return "\n".join(lines) + "\n"


def _flow(value: Any) -> str:
    """A value as one line of YAML (flow style)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _epoch_schedule(config: RunConfig) -> tuple[RunConfig, str]:
    """The config with its epochs turned into iterations from the training set's size, and a line saying the
    schedule. A synthetic benchmark not generated yet counts its spec's training images (before any
    ``data.drop_unannotated`` filter, which the line then mentions)."""
    from libra_cli.data.build import build_train_dataset, default_synth_spec, resolve_data_paths
    from libra_cli.data.synth import benchmark_exists
    from libra_cli.engine.schedule import resolve_schedule, schedule_summary

    data = config.data
    spec = default_synth_spec(data.synth_long_tail, data.synth_difficulty)
    if data.train_ann is None and not benchmark_exists(data.synth_dir, spec):
        num_images = spec.num_train
        source = f"{num_images} training images of the synthetic benchmark, generated on first use"
        if data.drop_unannotated:
            source += ", before dropping unannotated ones"
    else:
        num_images = len(build_train_dataset(data, resolve_data_paths(data)))
        source = f"{num_images} training images"
    config = resolve_schedule(config, num_images)
    summary = schedule_summary(config, num_images)
    milestones = ", ".join(map(str, summary["milestone_iters"])) or "none"
    return config, (
        f"schedule: {summary['epochs']} epochs × {summary['iters_per_epoch']} iterations "
        f"({source}, global batch {summary['global_batch']}) = {summary['max_iters']} "
        f"iterations; peak lr {summary['lr']:g}, ×0.1 at iterations {milestones}"
    )


with_config_options(config_command, CONFIG_OPTIONS)
