"""How much a run's AP moves from seed to seed, as measured for a preset and schedule.

The paired bootstrap over validation images (``significance.py``) sees which images were drawn, not how
the training went: two runs of one configuration that differ only by seed differ by about as much as a
component's Δ at the synthetic benchmark's scale. A one-run-against-one-run verdict therefore weighs the
seed-to-seed spread of both runs' configurations when it has been measured, and says so plainly when it
has not. ``MEASURED_SEED_SPREADS`` lists the measurements, each naming the committed report it comes from;
a run counts as one of them when its config is the preset's (or the grid row's) with that many iterations,
whatever its seed, output folder, device, benchmark folder and logging.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from libra_cli.config import RunConfig, apply_overrides, load_config
from libra_cli.engine.ablate import load_grid

# Settings that change where and how a run is recorded, not what it trains (section, field).
NOT_TRAINING = {
    ("train", "out"),
    ("train", "seed"),
    ("train", "device"),
    ("train", "log_interval"),
    ("train", "eval_interval"),
    ("train", "checkpoint_interval"),
    ("train", "evaluator"),
    ("train", "max_iters"),
    ("train", "lr_milestones"),  # an epoch schedule records its milestones as fractions of max_iters
    ("data", "synth_dir"),
    ("data", "num_workers"),
}


@dataclass(frozen=True)
class SeedSpread:
    """The sample standard deviation (n − 1) of each metric over ``seeds`` runs of ``preset`` trained
    ``max_iters`` iterations, and the report that holds the runs. With ``row``, ``preset`` names a grid
    (``libra ablate``) and the runs are that row's."""

    preset: str
    max_iters: int
    seeds: int
    std: dict[str, float]  # metric ("AP", "AP50", …) → std over the seeds
    source: str
    row: str = ""

    @property
    def name(self) -> str:
        return f"{self.preset}'s {self.row} row" if self.row else self.preset

    def describe(self, metric: str) -> str:
        std = self.std[metric]
        return f"{self.name} at {self.max_iters} iterations: std {std:.3f} over {self.seeds} seeds ({self.source})"


MEASURED_SEED_SPREADS = (
    # reports/table2_3seeds/: the baseline row (seeds 0, 1, 2: AP 0.501, 0.526, 0.497), the `baseline` preset.
    SeedSpread(
        "baseline", 450, 3, {"AP": 0.016, "AP50": 0.020, "AP75": 0.009, "APs": 0.014, "APm": 0.034, "APl": 0.043},
        "reports/table2_3seeds/, baseline row",
    ),
    # reports/table2_1x_3seeds/: ablation_table2_1x's baseline row, paper_baseline_1x with the RPN cap
    # (seeds 0, 1, 2: AP 0.6052, 0.6038, 0.6031), and its full Libra row (AP 0.6310, 0.6223, 0.6061).
    SeedSpread(
        "ablation_table2_1x", 1500, 3,
        {"AP": 0.0011, "AP50": 0.0068, "AP75": 0.0063, "APs": 0.0019, "APm": 0.0095, "APl": 0.1058},
        "reports/table2_1x_3seeds/, baseline row", row="baseline",
    ),
    SeedSpread(
        "ablation_table2_1x", 1500, 3,
        {"AP": 0.0127, "AP50": 0.0151, "AP75": 0.0161, "APs": 0.0145, "APm": 0.0035, "APl": 0.0321},
        "reports/table2_1x_3seeds/, balanced_l1 row", row="balanced_l1",
    ),
    # reports/table2_1x_3seeds/second_machine/: the IoU-sampling row (seeds 0, 1, 2: AP 0.6087, 0.6104, 0.5967)
    # on another machine than the rows above (FINDINGS.md: the same seed differs between the two).
    SeedSpread(
        "ablation_table2_1x", 1500, 3,
        {"AP": 0.0075, "AP50": 0.0039, "AP75": 0.0109, "APs": 0.0045, "APm": 0.0200, "APl": 0.0189},
        "reports/table2_1x_3seeds/second_machine/, iou_sampling row", row="iou_sampling",
    ),
    # The same report's BFP row (IoU sampling + BFP; seeds 0, 1, 2: AP 0.6066, 0.5929, 0.5881).
    SeedSpread(
        "ablation_table2_1x", 1500, 3,
        {"AP": 0.0096, "AP50": 0.0129, "AP75": 0.0146, "APs": 0.0138, "APm": 0.0075, "APl": 0.0489},
        "reports/table2_1x_3seeds/second_machine/, bfp row", row="bfp",
    ),
)


@functools.cache
def _preset_settings(preset: str, row: str = "") -> dict[tuple[str, str], object]:
    if not row:
        return _training_settings(load_config(preset))
    grid = load_grid(preset)
    return _training_settings(apply_overrides(grid.base, grid.runs[row], f"{preset}: runs.{row}"))


def _training_settings(config: RunConfig) -> dict[tuple[str, str], object]:
    return {
        (section, name): value
        for section, values in config.to_dict().items()
        for name, value in values.items()
        if (section, name) not in NOT_TRAINING
    }


def measured_seed_spread(config: RunConfig, metric: str = "AP") -> SeedSpread | None:
    """The measured seed-to-seed spread of ``metric`` for a run with ``config``, or None when none was
    measured for its preset and schedule."""
    settings = _training_settings(config)
    for spread in MEASURED_SEED_SPREADS:
        if (
            metric in spread.std
            and config.train.max_iters == spread.max_iters
            and settings == _preset_settings(spread.preset, spread.row)
        ):
            return spread
    return None
