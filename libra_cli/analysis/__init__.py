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

Each is one module ending with its :class:`~libra_cli.analysis.runner.Analysis`: ``analyze`` returns a plain dict
(the JSON written to ``RUN_DIR/analysis/<name>.json`` by ``write``, with CSVs and PNGs beside it), run by the
one runner of :mod:`libra_cli.analysis.runner`. :data:`ANALYSES` lists them once, in the order commands, the
demo and the report use: a new analysis is its module and one line here.
"""

from libra_cli.analysis import errors, features, gradients, sampling, tail
from libra_cli.analysis.errors import analyze_errors, write_errors
from libra_cli.analysis.features import analyze_features, write_features
from libra_cli.analysis.gradients import analyze_gradients, write_gradients
from libra_cli.analysis.runner import Analysis
from libra_cli.analysis.sampling import analyze_sampling, write_sampling
from libra_cli.analysis.tail import analyze_tail, write_tail

ANALYSES: dict[str, Analysis] = {
    analysis.name: analysis
    for analysis in (
        sampling.ANALYSIS,
        features.ANALYSIS,
        gradients.ANALYSIS,
        tail.ANALYSIS,
        errors.ANALYSIS,
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
