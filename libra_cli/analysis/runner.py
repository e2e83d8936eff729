"""One runner for every analysis: read and check its inputs, measure with a progress count, write its files.

An analysis is one module that ends with its :class:`Analysis` (name, the level it looks at, the command's
help, its own options) and one line in :data:`libra_cli.analysis.ANALYSES`; the ``libra analyze`` commands,
the workflow, the demo and the report all take it from there.

Its ``analyze`` is a :class:`Runner`: ``load(run_dir, **options)`` reads and checks everything first, so
that bad input fails in one line before any work is shown, and ``measure(inputs, progress)`` does the work.
An analysis that runs the detector is a :class:`ModelAnalysis`: the runner loads the run's checkpoint and
the first N images of a split (:func:`~libra_cli.analysis.common.load_analysis_inputs`), walks them in
batches (:meth:`ImageRun.batches`, which counts the progress) and puts the result under the fields every
analysis JSON starts with. ``write`` is a :class:`Files`: the JSON plus the CSV tables and PNG figures made
from the result, written by :func:`~libra_cli.analysis.common.write_analysis_files`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from libra_cli.analysis.common import (
    DEFAULT_BATCH_SIZE,
    AnalysisInputs,
    Progress,
    image_batches,
    load_analysis_inputs,
    require_faster_rcnn,
    write_analysis_files,
)
from libra_cli.errors import LibraError


@dataclass(frozen=True)
class Option:
    """A setting of an analysis: the keyword of its ``analyze``, the command's flag, default and help."""

    keyword: str
    flags: str  # "--reading", or "--over-training/--no-over-training" for a switch
    default: Any
    help: str
    type: type = str
    choices: tuple[str, ...] = ()  # when given, any other value is refused before the run is read

    def check(self, value: Any) -> None:
        if self.choices and value is not None and value not in self.choices:
            raise LibraError(f"{self.flags}: {value!r} is not one of {', '.join(self.choices)}")


# The settings of every analysis that runs the detector (the keywords of ModelAnalysis.__call__).
MODEL_OPTIONS = (
    Option("num_images", "--images", 50, "Number of images (the first N of the split).", int),
    Option("split", "--split", "train", "train | val."),
    Option("checkpoint", "--checkpoint", "best", "best | last | a checkpoint path (e.g. an untrained one)."),
    Option("device", "--device", None, "cpu | cuda (default: the run's device)."),
    Option("seed", "--seed", 0, "Seed of the samplers' random draws (same seed, same numbers).", int),
    Option("batch_size", "--batch-size", DEFAULT_BATCH_SIZE, "Images per forward pass.", int),
)


class Runner:
    """``analyze(run_dir, progress=None, **options)``: ``measure(load(run_dir, **options), progress)``.

    Args:
        load: reads and checks the inputs; raises LibraError (one line) before any work.
        measure: ``measure(inputs, progress)`` → the analysis JSON as a dict; ``progress(done, total)``.
        total: how many steps ``measure`` counts, for a progress bar opened before it starts.
        describe: a line naming what was read, printed by the command before the work (None: nothing).
        options: the keywords of ``load`` as the command's flags.
    """

    def __init__(
        self,
        load: Callable[..., Any],
        measure: Callable[[Any, Progress | None], dict[str, Any]],
        total: Callable[[Any], int] = lambda inputs: 0,
        describe: Callable[[Any], str | None] = lambda inputs: None,
        options: tuple[Option, ...] = (),
    ) -> None:
        self.load, self.measure, self.total, self.describe = load, measure, total, describe
        self.options = options

    def __call__(self, run_dir: str | Path, *, progress: Progress | None = None, **options: Any) -> dict[str, Any]:
        return self.measure(self.load(run_dir, **options), progress)


@dataclass
class ImageRun:
    """What a model analysis measures on: the loaded run and the settings of this call."""

    run_dir: str  # as the caller named it (the JSON's "run")
    inputs: AnalysisInputs
    batch_size: int
    settings: dict[str, Any]  # num_images, split, device, seed: to load another checkpoint alike
    options: dict[str, Any]  # the analysis's own options (see ModelAnalysis.options)
    progress: Progress | None = None

    @property
    def seed(self) -> int:
        return self.settings["seed"]

    def batches(
        self, inputs: AnalysisInputs | None = None, progress: Callable[[int], None] | None = None
    ) -> Iterator[tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]]:
        """The images of ``inputs`` (default: the run's) in batches on its device; after each batch the
        images done so far are counted, by ``progress(done)`` when given, else ``self.progress(done, N)``."""
        inputs = inputs or self.inputs
        done = 0
        for images, targets in image_batches(inputs.dataset, self.batch_size, inputs.device):
            yield images, targets
            done += len(images)
            if progress is not None:
                progress(done)
            elif self.progress is not None:
                self.progress(done, inputs.num_images)

    def load(self, checkpoint: str) -> AnalysisInputs:
        """Another checkpoint of the run, with the same images and seed."""
        return load_analysis_inputs(self.run_dir, checkpoint=checkpoint, **self.settings)


class ModelAnalysis(Runner):
    """An analysis that runs the detector on the first N images of a run's split.

    ``measure(run: ImageRun)`` returns the fields of the JSON after "analysis", "run", "images" and "split"
    (ending with "checkpoint"). ``needs_roi_head`` is why a RetinaNet run is refused (None: any detector).
    ``inference`` runs the walk under ``torch.inference_mode`` (an analysis that takes gradients says False).
    ``options`` are its own settings, beside :data:`MODEL_OPTIONS` (``ImageRun.options`` holds their values).
    """

    def __init__(
        self,
        name: str,
        measure: Callable[[ImageRun], dict[str, Any]],
        *,
        needs_roi_head: str | None = None,
        inference: bool = True,
        options: tuple[Option, ...] = (),
    ) -> None:
        super().__init__(self._load, self._measure, total=lambda run: run.inputs.num_images, options=options)
        self.name, self.measure_run, self.needs_roi_head, self.inference = name, measure, needs_roi_head, inference

    def __call__(  # the settings spelled out: they are the keywords callers and benchmarks pass
        self,
        run_dir: str | Path,
        *,
        num_images: int = 50,
        split: str = "train",
        checkpoint: str = "best",
        device: str | None = None,
        seed: int = 0,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: Progress | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        settings = {"num_images": num_images, "split": split, "checkpoint": checkpoint, "device": device}
        return self._measure(self._load(run_dir, seed=seed, batch_size=batch_size, **settings, **options), progress)

    def _load(self, run_dir: str | Path, **options: Any) -> ImageRun:
        every = (*MODEL_OPTIONS, *self.options)
        unknown = options.keys() - {option.keyword for option in every}
        if unknown:
            raise TypeError(f"analysis {self.name}: no option {', '.join(sorted(unknown))}")
        values = {option.keyword: options.get(option.keyword, option.default) for option in every}
        for option in self.options:
            option.check(values[option.keyword])
        own = {option.keyword: values.pop(option.keyword) for option in self.options}
        batch_size = values.pop("batch_size")
        inputs = load_analysis_inputs(run_dir, **values)  # num_images, split, checkpoint, device, seed
        if self.needs_roi_head is not None:
            require_faster_rcnn(inputs.arch, self.name, self.needs_roi_head)
        del values["checkpoint"]
        return ImageRun(str(run_dir), inputs, batch_size, values, own)

    def _measure(self, run: ImageRun, progress: Progress | None) -> dict[str, Any]:
        run.progress = progress
        with torch.inference_mode() if self.inference else contextlib.nullcontext():
            body = self.measure_run(run)
        header = {"analysis": self.name, "run": run.run_dir, "images": run.inputs.num_images, "split": run.inputs.split}
        return {**header, **body}


@dataclass(frozen=True)
class Files:
    """``write(result)``: ``<name>.json`` and the CSV tables and PNG figures made from the result, in
    ``RUN_DIR/analysis`` (``result["run"]``); returns {file name: path}, the JSON first.

    Args:
        tables: file name → function of the result giving the CSV text (None: no such file for it).
        figures: file name → function of the result giving the PNG bytes.
    """

    name: str
    tables: dict[str, Callable[[dict[str, Any]], str | None]] = field(default_factory=dict)
    figures: dict[str, Callable[[dict[str, Any]], bytes]] = field(default_factory=dict)

    def __call__(self, result: dict[str, Any]) -> dict[str, Path]:
        tables = {file: text for file, make in self.tables.items() if (text := make(result)) is not None}
        figures = {file: make(result) for file, make in self.figures.items()}
        return write_analysis_files(result["run"], self.name, result, tables, figures)


@dataclass(frozen=True)
class Analysis:
    """One diagnostic, listed once in :data:`libra_cli.analysis.ANALYSES`.

    ``analyze(run_dir, progress=None, **options)`` → result dict (a :class:`Runner`), ``write(result)`` →
    {file name: path}. ``help`` is its command's help (first line: what ``libra analyze --help`` lists);
    ``notes(result)`` lines the command prints under its tables.
    """

    name: str
    level: str  # what it looks at, as the papers name it
    help: str
    analyze: Runner
    write: Callable[[dict[str, Any]], dict[str, Path]]
    notes: Callable[[dict[str, Any]], list[str]] = lambda result: []

    @property
    def reads_model(self) -> bool:
        """Whether it runs the detector, and so takes :data:`MODEL_OPTIONS`."""
        return isinstance(self.analyze, ModelAnalysis)

    @property
    def options(self) -> tuple[Option, ...]:
        """Its own settings, beside :data:`MODEL_OPTIONS` where it ``reads_model``."""
        return self.analyze.options
