"""``libra config [PRESET] [flags] [--diff]`` — print the resolved config without training.

It takes the flags of ``libra train`` (the generated config options, ``--image-size`` and ``--set``) and
prints the config as YAML exactly as ``libra train`` saves it in ``RUN_DIR/config.yaml``; ``--diff`` prints
only the settings that differ from libra's defaults (``RunConfig()``), itself a preset. An epoch schedule
(``train.epochs``) becomes iterations from the training set's size — the dataset flags' files, or the synthetic
benchmark's (read from its folder, or its spec's image count before it is generated) — so the printed config
holds them as training will save them, and a closing comment gives the schedule in epochs and iterations.
"""

from __future__ import annotations

from typing import Any

import typer
import yaml

from libra_cli.cli.config_options import with_config_options
from libra_cli.cli.train import CONFIG_OPTIONS, overrides_from_flags
from libra_cli.cli.ui import handle_errors
from libra_cli.config import SECTIONS, RunConfig, load_config

__all__ = ["config_command", "config_diff"]


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
    **fields: Any,
) -> None:
    """Print the config `libra train` would run with the same arguments, as YAML (its config.yaml)."""
    config = load_config(preset, overrides_from_flags({**fields, "image_size": image_size, "settings": settings}))
    note = None
    if config.train.epochs is not None:
        config, note = _epoch_schedule(config)
    data = config_diff(config) if diff else config.to_dict()
    typer.echo(yaml.safe_dump(data, sort_keys=False) if data else "{}\n", nl=False)
    if note:
        typer.echo(f"# {note}")


def _epoch_schedule(config: RunConfig) -> tuple[RunConfig, str]:
    """The config with its epochs turned into iterations from the training set's size, and a line saying the
    schedule. A synthetic benchmark not generated yet counts its spec's training images (before any
    ``data.drop_unannotated`` filter, which the line then mentions)."""
    from libra_cli.data.build import build_train_dataset, default_synth_spec, resolve_data_paths
    from libra_cli.data.synth import benchmark_exists
    from libra_cli.engine.train import resolve_schedule, schedule_summary

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
