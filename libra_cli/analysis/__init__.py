"""Imbalance diagnostics on a trained (or freshly initialised) run — Libra R-CNN's three levels and EQL's.

- :func:`analyze_sampling` (sample level, paper Fig. 2): the IoU distribution of negatives chosen by
  random, hard (OHEM) and IoU-balanced sampling;
- :func:`analyze_features` (feature level): per pyramid level statistics of the FPN and BFP outputs
  and the pooling level of the sampled RoIs;
- :func:`analyze_gradients` (objective level, paper Fig. 5): how inliers and outliers share the box
  regression gradient under smooth L1 and balanced L1, and classification vs regression;
- :func:`analyze_tail` (class level, EQL paper Fig. 1): per class, the positive vs discouraging gradient
  its logit receives, plain and with EQL's weights;
- :func:`analyze_errors` (detection errors): the COCO error decomposition and TIDE's error kinds of the
  run's ``eval/detections.json`` — the one analysis that reads detections instead of running the model.

Each returns a plain dict (the JSON written to ``RUN_DIR/analysis/<name>.json`` by the matching
``write_*`` function, with a CSV and a PNG beside it). :data:`ANALYSES` lists them once, in the order
commands, the demo and the report use.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from libra_cli.analysis.errors import analyze_errors, write_errors
from libra_cli.analysis.features import analyze_features, write_features
from libra_cli.analysis.gradients import analyze_gradients, write_gradients
from libra_cli.analysis.sampling import analyze_sampling, write_sampling
from libra_cli.analysis.tail import analyze_tail, write_tail


@dataclass(frozen=True)
class Analysis:
    """One diagnostic: ``analyze(run_dir, **options)`` → result dict, ``write(result)`` → {kind: path}."""

    name: str
    level: str  # what it looks at, as the papers name it
    analyze: Callable[..., dict[str, Any]]
    write: Callable[[dict[str, Any]], dict[str, Any]]


ANALYSES = {
    analysis.name: analysis
    for analysis in (
        Analysis("sampling", "sample level (Libra R-CNN Fig. 2)", analyze_sampling, write_sampling),
        Analysis("features", "feature level (Libra R-CNN §3.2)", analyze_features, write_features),
        Analysis("gradients", "objective level (Libra R-CNN Fig. 5)", analyze_gradients, write_gradients),
        Analysis("tail", "class level (EQL Fig. 1)", analyze_tail, write_tail),
        Analysis("errors", "detection errors (COCO analyze, TIDE)", analyze_errors, write_errors),
    )
}

__all__ = [
    "ANALYSES",
    "Analysis",
    "analyze_errors",
    "analyze_features",
    "analyze_gradients",
    "analyze_sampling",
    "analyze_tail",
    "write_errors",
    "write_features",
    "write_gradients",
    "write_sampling",
    "write_tail",
]
