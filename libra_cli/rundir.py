"""A run directory is the unit of record; this module knows its layout and does every read and write of
its files, so that the layout is spelled in one place.

RUN_DIR/
  config.yaml           the resolved config (what the run did)
  dataset.json          where the data lives, category ids/names and training-set class statistics
  log.jsonl             one JSON line per logged iteration and per evaluation (what `libra report` reads)
  tb/                   the same scalars as TensorBoard event files: train/<field>, val/<metric> at step = iteration
  checkpoints/last.pt   the latest state (model, optimizer, scaler, RNG, iteration)
  checkpoints/best.pt   the state with the best val AP so far
  eval/detections.json  COCO results of the last evaluation (training's final one or `libra eval`)
  eval/segmentations.json  Mask R-CNN runs: the same detections' masks as COCO results (compressed RLE)
  eval/metrics.json     their metrics (always the run's own val split: what reports and analyses read)
  eval/<set>/           the same three files for an evaluation on another set (`libra eval RUN --ann OTHER`)
  analysis/             <name>.json, .csv and .png of each `libra analyze <name>`

Every file is written atomically (``libra_cli.io``): a crash leaves the old file or the new one. What a
checkpoint holds is ``engine/checkpoint.py``'s concern; where it lives is this module's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from libra_cli.config import RunConfig, apply_overrides, read_yaml, save_config, validate
from libra_cli.errors import LibraError
from libra_cli.io import atomic_write_bytes, atomic_write_text, read_json

# Every entry of a run directory, relative to it.
CONFIG = "config.yaml"
DATASET = "dataset.json"
LOG = "log.jsonl"
TENSORBOARD = "tb"
CHECKPOINTS = "checkpoints"
LAST = f"{CHECKPOINTS}/last.pt"
BEST = f"{CHECKPOINTS}/best.pt"
EVAL = "eval"
# The files of one evaluation, in eval/ (the run's val split) or eval/<set>/ (another set).
DETECTIONS_FILE, SEGMENTATIONS_FILE, METRICS_FILE = "detections.json", "segmentations.json", "metrics.json"
DETECTIONS = f"{EVAL}/{DETECTIONS_FILE}"
SEGMENTATIONS = f"{EVAL}/{SEGMENTATIONS_FILE}"
METRICS = f"{EVAL}/{METRICS_FILE}"
ANALYSIS = "analysis"
# Fields every dataset.json holds; later fields (e.g. num_annotated_images) are read with a fallback.
DATASET_FIELDS = ("category_ids", "images_per_class", "num_images")


def eval_set_name(ann: str | Path) -> str:
    """The folder name of an evaluation on ``ann`` (in ``RUN/eval/``): the annotation file's stem
    (``instances_val2017``), a Pascal VOC list as ``<year>_<split>`` (``VOC2007_test``), a VOC year folder by
    its name, a ``+`` union by its parts joined with ``+``."""
    parts = []
    for part in str(ann).split("+"):
        path = Path(part)
        name = path.stem if path.suffix else path.name
        if path.parent.name == "Main" and path.parent.parent.name == "ImageSets":
            name = f"{path.parent.parent.parent.name}_{name}"
        parts.append(re.sub(r"[^A-Za-z0-9._+-]+", "_", name) or "set")
    return "+".join(parts)


@dataclass(frozen=True)
class RunLayout:
    """One run directory: the paths of its files and every read and write of them."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def dataset(self) -> Path:
        return self.root / DATASET

    @property
    def log(self) -> Path:
        return self.root / LOG

    @property
    def tb_dir(self) -> Path:
        return self.root / TENSORBOARD

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    @property
    def last(self) -> Path:
        return self.root / LAST

    @property
    def best(self) -> Path:
        return self.root / BEST

    @property
    def eval_dir(self) -> Path:
        return self.root / EVAL

    @property
    def detections(self) -> Path:
        return self.root / DETECTIONS

    @property
    def segmentations(self) -> Path:
        return self.root / SEGMENTATIONS

    @property
    def metrics(self) -> Path:
        return self.root / METRICS

    @property
    def analysis_dir(self) -> Path:
        return self.root / ANALYSIS

    # --- config.yaml ---------------------------------------------------------------------------------

    def read_config(self) -> RunConfig:
        """The resolved config the run saved, type-checked and validated like a preset."""
        if not self.config.is_file():
            raise LibraError(f"{self.root}: not a run directory (no {CONFIG})")
        config = apply_overrides(RunConfig(), read_yaml(self.config), str(self.config))
        validate(config)
        return config

    def write_config(self, config: RunConfig) -> None:
        save_config(config, self.config)

    # --- dataset.json --------------------------------------------------------------------------------

    def read_dataset_info(self) -> dict[str, Any]:
        if not self.dataset.is_file():
            raise LibraError(f"{self.root}: not a run directory (no {DATASET})")
        info = _read_json_object(self.dataset)
        for key in DATASET_FIELDS:
            if key not in info:
                raise LibraError(f"{self.dataset}: missing field {key!r}")
        return info

    def write_dataset_info(self, info: dict[str, Any]) -> None:
        """Write the payload of ``engine.run.dataset_info``."""
        atomic_write_text(self.dataset, json.dumps(info, indent=2))

    # --- log.jsonl -----------------------------------------------------------------------------------

    def read_log(self) -> list[dict[str, Any]]:
        """The training log's records; a torn last line (crash while writing) ends it, no file is an
        empty log."""
        if not self.log.is_file():
            return []
        return [record for _, record in _log_lines(self.log) if isinstance(record, dict)]

    def open_log(self, resume_from: int | None) -> JsonlLog:
        """The log to append to: emptied for a new run, cut after ``resume_from`` for a resumed one; its
        scalars are mirrored to TensorBoard event files in ``tb/``. Close it when training ends."""
        return JsonlLog(self.log, resume_from, TensorBoardLog(self.tb_dir, resume_from))

    # --- eval/ ---------------------------------------------------------------------------------------

    def eval_files(self, set_name: str | None = None) -> EvalFiles:
        """Where an evaluation's files go: ``eval/`` for the run's own val split (None), ``eval/<set_name>/``
        for another set, so that evaluating elsewhere never replaces the run's own results."""
        return EvalFiles(self.eval_dir if set_name is None else self.eval_dir / set_name)

    def write_detections(self, detections: list[dict[str, Any]]) -> None:
        self.eval_files().write_detections(detections)

    def write_segmentations(self, segmentations: list[dict[str, Any]]) -> None:
        self.eval_files().write_segmentations(segmentations)

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        self.eval_files().write_metrics(metrics)

    def read_metrics(self) -> dict[str, Any] | None:
        """The last evaluation's metrics on the run's val split, or None when the run has not been evaluated."""
        return self.eval_files().read_metrics()

    # --- analysis/ -----------------------------------------------------------------------------------

    def analysis_json(self, name: str) -> Path:
        return self.analysis_dir / f"{name}.json"

    def has_analysis(self, name: str) -> bool:
        return self.analysis_json(name).is_file()

    def read_analysis(self, name: str) -> dict[str, Any]:
        return _read_json_object(self.analysis_json(name))

    def analysis_figures(self) -> list[Path]:
        """Every PNG in ``analysis/``, sorted by name."""
        return sorted(self.analysis_dir.glob("*.png")) if self.analysis_dir.is_dir() else []

    def write_analysis(
        self, name: str, result: dict[str, Any], tables: dict[str, str], figures: dict[str, bytes]
    ) -> dict[str, Path]:
        """Write ``<name>.json`` (``result``, JSON-ready) plus CSV texts and PNG bytes by file name into
        ``analysis/``; return file name → path of everything written, the JSON first."""
        written = {f"{name}.json": self.analysis_json(name)}
        atomic_write_text(written[f"{name}.json"], json.dumps(result, indent=2))
        for file_name, text in tables.items():
            written[file_name] = self.analysis_dir / file_name
            atomic_write_text(written[file_name], text)
        for file_name, data in figures.items():
            written[file_name] = self.analysis_dir / file_name
            atomic_write_bytes(written[file_name], data)
        return written


@dataclass(frozen=True)
class EvalFiles:
    """The files of one evaluation in ``folder``: detections.json, segmentations.json (Mask R-CNN) and
    metrics.json; what ``engine.evaluate.evaluate_model`` writes."""

    folder: Path

    @property
    def detections(self) -> Path:
        return self.folder / DETECTIONS_FILE

    @property
    def segmentations(self) -> Path:
        return self.folder / SEGMENTATIONS_FILE

    @property
    def metrics(self) -> Path:
        return self.folder / METRICS_FILE

    def write_detections(self, detections: list[dict[str, Any]]) -> None:
        atomic_write_text(self.detections, json.dumps(detections))

    def write_segmentations(self, segmentations: list[dict[str, Any]]) -> None:
        atomic_write_text(self.segmentations, json.dumps(segmentations))

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        atomic_write_text(self.metrics, json.dumps(metrics, indent=2))

    def read_metrics(self) -> dict[str, Any] | None:
        """The metrics, or None when there are none."""
        if not self.metrics.is_file():
            return None
        metrics = _read_json_object(self.metrics)
        if not isinstance(metrics.get("summary"), dict):
            raise LibraError(f"{self.metrics}: missing the 'summary' object")
        return metrics


class JsonlLog:
    """Append-only JSONL log; on resume, lines past the resumed iteration are dropped first. Each record
    is also handed to ``mirror`` (the TensorBoard events) when one is given."""

    def __init__(self, path: Path, resume_from: int | None, mirror: TensorBoardLog | None = None) -> None:
        self.path = path
        self.mirror = mirror
        if resume_from is not None and path.exists():
            kept = [
                line
                for line, record in _log_lines(path)
                if isinstance(record, dict) and record.get("iter", 0) <= resume_from
            ]
            atomic_write_text(path, "".join(f"{line}\n" for line in kept))
        elif resume_from is None:
            atomic_write_text(path, "")

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
        if self.mirror is not None:
            self.mirror.write(record)

    def close(self) -> None:
        if self.mirror is not None:
            self.mirror.close()


# Log records shown in TensorBoard, by type, and the prefix of their scalars' tags.
TENSORBOARD_TAG_PREFIXES = {"train": "train", "eval": "val"}
# Fields of those records that are no scalar to plot.
TENSORBOARD_SKIPPED_FIELDS = ("type", "iter")


class TensorBoardLog:
    """The training log's scalars as TensorBoard event files: each number of a "train" record as
    ``train/<field>`` (``train/loss``, ``train/lr``, …) and of an "eval" record as ``val/<metric>``, at
    step = the record's ``iter``.

    A new run starts from an empty folder. A resumed one appends a new event file that starts with a
    purge at ``resume_from + 1``: TensorBoard then drops the older file's events past the resumed
    iteration, the ones the JSONL log drops too, so nothing shows twice. Events are flushed with every
    record, so a crash loses none that the JSONL log holds.
    """

    def __init__(self, directory: Path, resume_from: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter  # loads tensorboard: only when a run trains

        self.directory = Path(directory)
        if resume_from is None and self.directory.is_dir():
            for stale in self.directory.glob("events.out.tfevents.*"):
                stale.unlink()
        purge_step = None if resume_from is None else resume_from + 1
        self.writer = SummaryWriter(str(self.directory), purge_step=purge_step)

    def write(self, record: dict[str, Any]) -> None:
        prefix = TENSORBOARD_TAG_PREFIXES.get(record.get("type"))
        step = record.get("iter")
        if prefix is None or not isinstance(step, int):
            return
        for name, value in record.items():
            if name in TENSORBOARD_SKIPPED_FIELDS or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            self.writer.add_scalar(f"{prefix}/{name}", value, global_step=step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _log_lines(path: Path) -> Iterator[tuple[str, Any]]:
    """(line, parsed record) of each line of a JSONL log, up to a torn last line left by a crash."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            return
        yield line, record


def _read_json_object(path: Path) -> dict[str, Any]:
    return read_json(path, expected=dict)
