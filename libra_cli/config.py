"""Run configuration: typed dataclasses per concern, loaded from and saved to YAML.

A run is described by four sections — ``data``, ``model``, ``libra`` (the balanced-learning switches)
and ``train`` — each a dataclass whose fields carry a comment saying what they do. Presets in
``libra_cli/presets/*.yaml`` set any subset of fields; command-line flags override the preset; the resolved
config is saved as ``RUN_DIR/config.yaml`` so that every run records exactly what it did.

Components never read this object: ``build_detector`` and the engine pass plain keyword arguments on.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NewType, get_args, get_origin, get_type_hints

import yaml

from libra_cli.components import SWITCHES, check_components
from libra_cli.errors import LibraError
from libra_cli.io import atomic_write_text
from libra_cli.voc_sources import check_split_name, is_voc_source, voc_path_problem

# Where the default synthetic benchmark lives (relative to the working directory) unless told otherwise.
DEFAULT_SYNTH_DIR = "data/synth"
# A number in exponent notation, such as 1e-3 or 1.76E-3, which PyYAML leaves as a string without a dot.
SCIENTIFIC_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
# Box losses of the RoI head when balanced L1 is off.
ROI_BOX_LOSSES = ("smooth_l1", "l1")
# The presets and grids shipped inside the package (package data, found with any install from any working
# directory); a preset may also be given as a path to any YAML file. The source tree's ``experiments/`` is a
# link to this folder.
PRESET_DIR = Path(str(importlib.resources.files("libra_cli") / "presets"))
# A setting that names a file or folder: a string in YAML, a path on the command line.
PathStr = NewType("PathStr", str)


@dataclass
class DataConfig:
    # COCO/LVIS annotation JSON, or Pascal VOC year folder(s) (see train_split); None → the default synthetic benchmark
    train_ann: PathStr | None = None
    # folder the train file names are relative to; for COCO/LVIS files also the COCO folder holding train2017/, val2017/
    train_images: PathStr | None = None
    val_ann: PathStr | None = None  # annotation JSON (or VOC year folder: val_split) for periodic and final evaluation
    val_images: PathStr | None = None  # folder the val file names are relative to (as train_images)
    synth_dir: PathStr = DEFAULT_SYNTH_DIR  # where the default benchmark is generated when no files are given
    synth_long_tail: bool = False  # default benchmark with a Zipf-like class frequency (LVIS format)
    # the synthetic benchmark's difficulty: "default" (the demo's), "coco-like" (more, smaller objects, more hard
    # negatives and classes) or "coco-hard" (more of each again; see libra_cli/data/synth.py DIFFICULTIES); give
    # each its own synth_dir
    synth_difficulty: str = "default"
    hflip_prob: float = 0.5  # horizontal-flip probability during training
    scale_jitter: tuple[float, float] | None = None  # random resize of train images by a factor in range
    batch_size: int = 4  # images per iteration (global batch)
    num_workers: int = 1  # DataLoader worker processes
    on_bad_sample: str = "error"  # "error" stops at a broken image, "skip" drops it and counts it
    # repeat-factor sampling (LVIS): an image recurs on average max(1, √(t / f_c)) times per epoch, c its rarest class,
    # f_c = share of training images holding c; LVIS uses t = 0.001; null: off
    repeat_factor_thr: float | None = None
    aspect_ratio_grouping: bool = False  # batches of one orientation only (width ≥ height, or not), as detectron2
    # Pascal VOC: the ImageSets/Main list read from a train_ann that names VOC year folders (e.g.
    # VOCdevkit/VOC2007+VOCdevkit/VOC2012, their union); train_images may then be left out
    train_split: str = "trainval"
    val_split: str = "test"  # Pascal VOC: the ImageSets/Main list read from a val_ann that names VOC year folders
    voc_use_difficult: bool = False  # Pascal VOC: train on objects marked difficult too (evaluation ignores them)
    # drop training images without any annotation or under 32 px on a side, as the reference's dataset does
    # (mmdetection v1 ``_filter_imgs``); false keeps them all (torchvision's references keep them too)
    drop_unannotated: bool = False


@dataclass
class ModelConfig:
    arch: str = "faster_rcnn"  # "faster_rcnn", "mask_rcnn" (Faster R-CNN plus a mask branch) or "retinanet"
    backbone: str = "resnet18"  # resnet18 | resnet34 | resnet50, always with an FPN
    norm: str = "gn"  # backbone normalisation: "gn" (from scratch), "bn", or "frozen_bn" (pretrained)
    fpn_channels: int = 64  # channels of every pyramid level
    weights: PathStr | None = None  # local file with a full detector state_dict (optional)
    # ImageNet ResNet weights: a local state_dict file, or "imagenet" for torchvision's IMAGENET1K_V1 from the
    # torch hub cache (TORCH_HOME/hub/checkpoints; fetched only when missing, see README)
    backbone_weights: PathStr | None = None
    # ResNet parts kept fixed (requires_grad off): 0 none, 1 the stem and layer1 (the reference's frozen_stages=1),
    # k ≤ 4 the stem and layer1 … layerk
    frozen_stages: int = 0
    min_size: int = 256  # images are resized so the shorter side is min_size …
    max_size: int = 256  # … and the longer side at most max_size
    # multi-scale training: each training image's shorter side is drawn from this list (EQL: 640,672,…,800);
    # evaluation keeps min_size; null: always min_size
    train_min_sizes: tuple[int, ...] | None = None
    anchor_sizes: tuple[int, ...] = (16, 32, 64, 128, 256)  # one anchor size per pyramid level
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)  # anchor height/width ratios, the same at every level
    rpn_batch_size_per_image: int = 256  # anchors sampled per image for the RPN loss
    # RPN sampler: at most this many negatives per positive (reference Libra configs: 5); null: no cap (torchvision)
    rpn_neg_pos_ub: int | None = None
    rpn_pre_nms_top_n_train: int = 1000  # RPN proposals kept per pyramid level before NMS, in training
    rpn_post_nms_top_n_train: int = 1000  # RPN proposals kept per image after NMS, in training
    rpn_pre_nms_top_n_test: int = 1000  # RPN proposals kept per pyramid level before NMS, at inference
    rpn_post_nms_top_n_test: int = 500  # RPN proposals kept per image after NMS, at inference
    roi_batch_size_per_image: int = 512  # RoIs sampled per image for the box head (Libra: 512)
    roi_positive_fraction: float = 0.25  # at most this share of the sampled RoIs are positives
    roi_sampling_ratio: int = 1  # RoIAlign sampling points per bin side (torchvision's default is 2)
    # RoIAlign kernel: "auto" (the grid_sample form on CPU, torchvision's on CUDA), "grid_sample" or "torchvision"
    roi_align: str = "auto"
    box_head_dim: int = 256  # width of the two-layer MLP box head (torchvision's default is 1024)
    # box head initialisation: "torchvision" (nn.Linear's default, Kaiming-uniform a = √5) or "reference"
    # (mmdetection v1's BBoxHead: FCs Xavier-uniform, classifier N(0, 0.01²), box regressor N(0, 0.001²), biases 0)
    box_head_init: str = "torchvision"
    # RPN: a ground truth's best anchor is positive only if its IoU is at least this (reference: 0.3);
    # null: every GT's best anchor is positive, however low (torchvision's low-quality matches); in [0, 1]
    rpn_min_pos_iou: float | None = None
    # RPN loss divisor: "sampled" (torchvision: Σᵢ (posᵢ + negᵢ), the batch's sampled anchors) or
    # "reference" (Σᵢ max(1, posᵢ) + Σᵢ max(1, negᵢ), mmdetection v1's anchor_target)
    rpn_loss_norm: str = "sampled"
    roi_box_loss: str = "smooth_l1"  # RoI-head box loss unless --balanced-l1: "smooth_l1" (β below) or "l1"
    roi_smooth_l1_beta: float = 1 / 9  # smooth L1's β in the RoI head: 1/9 torchvision, 1.0 the paper's baseline
    # RetinaNet loss divisor: "image" (torchvision: each image by its positives, then the mean) or "batch"
    # (reference: the batch's summed loss by Σᵢ max(1, positivesᵢ))
    retinanet_loss_norm: str = "image"
    retinanet_p6: str = "p5"  # "p5" (torchvision: P6 from P5, ReLU before P7) or "c5" (reference: from C5, no ReLU)
    score_thresh: float = 0.05  # detections below this score are dropped at inference
    detections_per_image: int = 100  # 300 is used automatically for LVIS evaluation


@dataclass
class LibraConfig:
    """The balanced-learning switches (Libra R-CNN §3 and the EQL paper). All off = the plain torchvision detector."""

    iou_sampling: bool = False  # IoU-balanced negatives (+ instance-balanced positives) in the RoI head
    iou_bins: int = 3  # K, number of IoU intervals
    # Which negatives are binned: 0 → IoU-0 negatives only fill a shortfall (what the reference code trains
    # with); −1 → every negative is binned (the paper text, Eq. 2); > 0 → IoU < thr is the floor set
    iou_floor_thr: float = 0.0
    iou_floor_fraction: float = 0.0  # share of negatives drawn from the floor set
    iou_bins_upper: str = "max-iou"  # "max-iou" (reference code) or "neg-thr" (paper text)
    # the last IoU bin: "closed" [hi − w, hi] (a candidate at the upper end is binned) or "half-open"
    # [hi − w, hi) (the reference code; differs only when no GT box is among the proposals)
    iou_last_bin: str = "closed"
    pos_balance: bool = True  # instance-balanced positives together with IoU sampling
    bfp: bool = False  # Balanced Feature Pyramid after the FPN
    bfp_refine: str = "non_local"  # "non_local", "conv" or "none"
    bfp_refine_level: int | None = None  # None → 2 (P4) for Faster R-CNN, 1 (P4) for RetinaNet
    # BFP conv init: "xavier" on every conv, the non-local output included (the authors' BFP); "identity":
    # the non-local block's output conv starts at zero, so the block starts as the identity (mmcv)
    bfp_init: str = "xavier"
    balanced_l1: bool = False  # balanced L1 loss for box regression
    bl1_alpha: float = 0.5  # balanced L1 α: a smaller α promotes the inliers' gradient more (Libra R-CNN §3.3)
    bl1_gamma: float = 1.5  # balanced L1 γ: the upper bound of the regression error's gradient
    bl1_beta: float | None = None  # None → 1.0 for Faster R-CNN, 0.11 for RetinaNet
    eql: bool = False  # equalization loss with a sigmoid classifier (Faster R-CNN only)
    eql_lambda: float = 1.76e-3  # tail threshold on image frequency; choose per dataset (see TR(λ))
    # f_j's denominator: "annotated" = images with at least one box (the EQL authors' code, so the default)
    # or "all" training images (the paper text's "entire dataset")
    eql_freq: str = "annotated"
    # initial probability of every sigmoid class (bias = −log((1 − p)/p)); 0.001 is the EQL authors' code
    eql_prior: float = 0.001
    ohem: bool = False  # online hard example mining: the RoI head trains on its highest-loss RoIs (CVPR 2016)

    def enabled(self) -> list[str]:
        """Switches of the components turned on, in the table's (the papers') order, e.g. ['iou_sampling', 'bfp']."""
        return [name for name in SWITCHES if getattr(self, name)]


@dataclass
class TrainConfig:
    out: PathStr = "runs/default"  # the run directory: config, log, checkpoints, metrics, analyses
    max_iters: int = 450  # optimisation steps (derived from epochs when epochs is set)
    # training length in passes over the training set: max_iters = epochs × ceil(train images / batch_size)
    epochs: int | None = None
    lr: float = 0.02  # peak learning rate for the global batch (for reference_batch images when scale_lr)
    scale_lr: bool = False  # linear scaling rule: peak lr = lr × batch_size / reference_batch
    reference_batch: int = 16  # the global batch that lr is meant for when scale_lr is on
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 1e-4  # SGD weight decay (L2)
    warmup_iters: int = 100  # linear warm-up from lr × warmup_factor
    warmup_factor: float = 0.001  # the warm-up's first learning rate, as a fraction of lr
    schedule: str = "step"  # "step" (×0.1 at each milestone) or "cosine"
    lr_milestones: tuple[float, ...] = (0.75, 0.92)  # step schedule milestones, as fractions of max_iters
    # step schedule milestones in epochs (needs epochs), e.g. 8,11: ×0.1 after epochs 8 and 11; replaces lr_milestones
    lr_milestones_epochs: tuple[int, ...] | None = None
    grad_clip: float | None = 35.0  # max gradient norm; None disables clipping
    amp: bool = True  # mixed precision on CUDA (ignored on CPU)
    amp_dtype: str = "bf16"  # "bf16" or "fp16" (fp16 uses a gradient scaler)
    device: str = "cpu"  # "cpu", "cuda" or "cuda:N"
    seed: int = 0  # random seed of the initial weights, the data order and the samplers
    log_interval: int = 20  # iterations between JSONL log lines and progress updates
    eval_interval: int = 0  # iterations between evaluations on the val split (0: only at the end)
    # who computes COCO / LVIS box AP: "official" (pycocotools, lvis), "faster" (faster-coco-eval, the same
    # numbers in a fraction of the time) or "auto" (faster where it gives the official numbers, else official)
    evaluator: str = "auto"
    checkpoint_interval: int = 200  # iterations between `last` checkpoints
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower on CUDA)


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    libra: LibraConfig = field(default_factory=LibraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))


SECTIONS = {"data": DataConfig, "model": ModelConfig, "libra": LibraConfig, "train": TrainConfig}


def _plain(value: Any) -> Any:
    """Tuples → lists so YAML stays plain (safe_load can read it back)."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check ``value`` against a field's type annotation and convert lists to tuples."""
    if isinstance(annotation, NewType):  # PathStr is checked as the str it is
        annotation = annotation.__supertype__
    origin = get_origin(annotation)
    args = get_args(annotation)
    if value is None:
        if type(None) in args:
            return None
        raise LibraError(f"{where}: must not be null")
    if origin is not None and type(None) in args:  # Optional[X] / X | None
        inner = [arg for arg in args if arg is not type(None)]
        return _coerce(value, inner[0], where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise LibraError(f"{where}: expected a list, got {value!r}")
        item_type = args[0] if args else Any
        return tuple(_coerce(item, item_type, f"{where}[{i}]") for i, item in enumerate(value))
    if annotation is bool:
        if not isinstance(value, bool):
            raise LibraError(f"{where}: expected true/false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise LibraError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, str) and SCIENTIFIC_NUMBER.fullmatch(value.strip()):
            # YAML 1.1 (PyYAML) reads 1e-3 without a dot as a string; it is a number here.
            return float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise LibraError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise LibraError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def apply_overrides(config: RunConfig, overrides: dict[str, dict[str, Any]], source: str) -> RunConfig:
    """Return a copy of ``config`` with ``{section: {field: value}}`` applied and type-checked.

    Unknown sections or fields raise LibraError naming ``source`` (a file name or "command line").
    """
    if not isinstance(overrides, dict):
        raise LibraError(f"{source}: expected a mapping of sections (data, model, libra, train)")
    sections = {name: dataclasses.replace(getattr(config, name)) for name in SECTIONS}
    for section_name, values in overrides.items():
        if section_name not in SECTIONS:
            known = ", ".join(SECTIONS)
            raise LibraError(f"{source}: unknown section {section_name!r} (known: {known})")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise LibraError(f"{source}: section {section_name!r} must be a mapping")
        cls = SECTIONS[section_name]
        hints = get_type_hints(cls)
        section = sections[section_name]
        for key, value in values.items():
            if key not in hints:
                raise LibraError(f"{source}: {section_name}.{key} is not a known setting")
            setattr(section, key, _coerce(value, hints[key], f"{source}: {section_name}.{key}"))
    return RunConfig(**sections)


@dataclass(frozen=True)
class PresetInfo:
    """A YAML file shipped in :data:`PRESET_DIR`: a preset (config sections) or a grid (``base`` + ``runs``)."""

    name: str  # the file's stem, what ``libra train NAME`` / ``libra ablate NAME`` take
    path: Path
    summary: str  # the first line of the file's header comment ("" without one)
    is_grid: bool


def header_summary(text: str) -> str:
    """The first line of a YAML file's leading ``#`` comment, without the ``#`` ("" when it has none)."""
    for line in text.splitlines():
        if not line.strip():
            continue
        return line.strip().lstrip("#").strip() if line.lstrip().startswith("#") else ""
    return ""


def is_grid(data: Any) -> bool:
    """Whether a YAML file's content is an ablation grid (``runs:`` at the top) rather than a preset."""
    return isinstance(data, dict) and "runs" in data


def shipped_presets() -> list[PresetInfo]:
    """Every preset and grid shipped with libra, by name."""
    paths = sorted(PRESET_DIR.glob("*.yaml")) if PRESET_DIR.is_dir() else []
    return [
        PresetInfo(path.stem, path, header_summary(path.read_text(encoding="utf-8")), is_grid(read_yaml(path)))
        for path in paths
    ]


def resolve_preset(preset: str, kind: str = "preset") -> Path:
    """A preset (or, with ``kind="grid"``, a grid) is a YAML path, or a name among the shipped ones
    (``baseline`` → libra_cli/presets/baseline.yaml). An unknown name is a LibraError suggesting the nearest
    names of that kind."""
    path = Path(preset)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise LibraError(f"{preset}: {kind} file not found")
        return path
    candidate = PRESET_DIR / f"{preset}.yaml"
    if candidate.is_file():
        return candidate
    names = [info.name for info in shipped_presets() if info.is_grid == (kind == "grid")]
    near = difflib.get_close_matches(preset, names, n=3, cutoff=0.5)
    alternatives = f"{', '.join(near[:-1])} or {near[-1]}" if len(near) > 1 else "".join(near)
    hint = f"did you mean {alternatives}? " if near else ""
    listing = "libra config --list" if names else "none shipped"
    raise LibraError(f"unknown {kind} {preset!r} ({hint}{kind}s: {listing})")


def preset_comments(path: Path) -> dict[tuple[str, str], str]:
    """(section, field) → the comment written after that field's value in a preset file, for fields set in
    block style (``  field: value   # why``); ``libra config --explain`` shows them."""
    comments: dict[tuple[str, str], str] = {}
    section = None
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        top = re.match(r"^(\w+):\s*(#.*)?$", line)
        if top:
            section = top.group(1)
            continue
        entry = re.match(r"^\s+(\w+):[^#]*#\s?(.*)$", line)
        if section is not None and entry:
            comments[section, entry.group(1)] = entry.group(2).strip()
    return comments


def read_yaml(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.safe_load(handle) or {}
    except OSError as exc:
        raise LibraError(f"{path}: cannot read ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise LibraError(f"{path}: not valid YAML{where}") from exc


def load_config(preset: str | None = None, overrides: dict[str, dict[str, Any]] | None = None) -> RunConfig:
    """Defaults ← preset file ← command-line overrides."""
    config = RunConfig()
    if preset:
        path = resolve_preset(preset)
        data = read_yaml(path)
        if is_grid(data):
            raise LibraError(f"{path}: is an ablation grid, not a preset (run it with `libra ablate {preset}`)")
        config = apply_overrides(config, data, str(path))
    if overrides:
        config = apply_overrides(config, overrides, "command line")
    validate(config)
    return config


def save_config(config: RunConfig, path: str | Path) -> None:
    """Write ``config`` as YAML that ``apply_overrides(RunConfig(), read_yaml(path), ...)`` reads back."""
    text = yaml.safe_dump(config.to_dict(), sort_keys=False)
    atomic_write_text(Path(path), text)


# --- validation ------------------------------------------------------------------------------------------
# Every command validates a config the same way (:func:`validate`), and says what is wrong in one wording:
# ``section.field (--flag): problem; got VALUE``. What a single field may hold is declared once, in FIELD_RULES
# below; a new field gets checked by adding its line there. Checks across fields follow in ``validate``.


@dataclass(frozen=True)
class Range:
    """A number (or each number of a list) between ``low`` and ``high``; ``None`` bounds nothing, and an
    open end excludes its bound. A None value (an optional setting left out) is always accepted."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def problem(self, value: Any) -> str | None:
        items = value if isinstance(value, tuple) else (value,)
        inside = all(
            (self.low is None or (item > self.low if self.low_open else item >= self.low))
            and (self.high is None or (item < self.high if self.high_open else item <= self.high))
            for item in items
        )
        if inside:
            return None
        prefix = "every value must" if isinstance(value, tuple) else "must"
        if self.high is None:
            return f"{prefix} be {'>' if self.low_open else '>='} {self.low:g}"
        if self.low is None:
            return f"{prefix} be {'<' if self.high_open else '<='} {self.high:g}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"{prefix} lie in {left}{self.low:g}, {self.high:g}{right}"


@dataclass(frozen=True)
class OneOf:
    """One of ``choices``."""

    choices: tuple[Any, ...]

    def problem(self, value: Any) -> str | None:
        return None if value in self.choices else f"must be one of {', '.join(map(str, self.choices))}"


# Who computes the numbers (engine/metrics.py): "official" (pycocotools, lvis), "faster" (faster-coco-eval's
# C++ COCOeval_faster, checked to give the official box AP to 1e-6, tests/engine/test_evaluators.py) or "auto"
# (faster wherever it reproduces the official numbers: box AP with integer ids and, for LVIS, no 'ignore'
# flags; else official).
EVALUATORS = ("auto", "official", "faster")


# The synthetic benchmark's named difficulties (data/synth.py DIFFICULTIES, one floor up; a test keeps them equal).
SYNTH_DIFFICULTIES = ("default", "coco-like", "coco-hard")

PROBABILITY = Range(0, 1)  # a probability or share: [0, 1]
COUNT = Range(1)  # something counted that must happen at least once: iterations, images, channels
NON_NEGATIVE = Range(0)  # a count that may be zero (0 turns the thing off), a seed
POSITIVE = Range(0, low_open=True)  # a real quantity > 0: a rate, a scale, a loss parameter

# (section, field) → what the field may hold. Fields not listed take any value of their type.
FIELD_RULES: dict[tuple[str, str], Range | OneOf] = {
    ("data", "hflip_prob"): PROBABILITY,
    ("data", "scale_jitter"): POSITIVE,
    ("data", "batch_size"): COUNT,
    ("data", "num_workers"): NON_NEGATIVE,
    ("data", "on_bad_sample"): OneOf(("error", "skip")),
    ("data", "repeat_factor_thr"): POSITIVE,
    ("data", "synth_difficulty"): OneOf(SYNTH_DIFFICULTIES),
    ("model", "arch"): OneOf(("faster_rcnn", "mask_rcnn", "retinanet")),
    ("model", "backbone"): OneOf(("resnet18", "resnet34", "resnet50")),
    ("model", "norm"): OneOf(("gn", "bn", "frozen_bn")),
    ("model", "fpn_channels"): COUNT,
    ("model", "frozen_stages"): Range(0, 4),
    ("model", "min_size"): COUNT,
    ("model", "max_size"): COUNT,
    ("model", "train_min_sizes"): COUNT,
    ("model", "anchor_sizes"): COUNT,
    ("model", "aspect_ratios"): POSITIVE,
    ("model", "rpn_batch_size_per_image"): COUNT,
    ("model", "rpn_neg_pos_ub"): NON_NEGATIVE,
    ("model", "rpn_min_pos_iou"): PROBABILITY,
    ("model", "rpn_loss_norm"): OneOf(("sampled", "reference")),
    ("model", "rpn_pre_nms_top_n_train"): COUNT,
    ("model", "rpn_post_nms_top_n_train"): COUNT,
    ("model", "rpn_pre_nms_top_n_test"): COUNT,
    ("model", "rpn_post_nms_top_n_test"): COUNT,
    ("model", "roi_batch_size_per_image"): COUNT,
    ("model", "roi_positive_fraction"): Range(0, 1, low_open=True),
    ("model", "roi_sampling_ratio"): NON_NEGATIVE,
    ("model", "roi_align"): OneOf(("auto", "grid_sample", "torchvision")),
    ("model", "box_head_dim"): COUNT,
    ("model", "box_head_init"): OneOf(("torchvision", "reference")),
    ("model", "roi_box_loss"): OneOf(ROI_BOX_LOSSES),
    ("model", "roi_smooth_l1_beta"): POSITIVE,
    ("model", "retinanet_loss_norm"): OneOf(("image", "batch")),
    ("model", "retinanet_p6"): OneOf(("p5", "c5")),
    ("model", "score_thresh"): PROBABILITY,
    ("model", "detections_per_image"): COUNT,
    ("libra", "iou_bins"): COUNT,
    ("libra", "iou_floor_thr"): Range(-1, 1, high_open=True),
    ("libra", "iou_floor_fraction"): PROBABILITY,
    ("libra", "iou_bins_upper"): OneOf(("max-iou", "neg-thr")),
    ("libra", "iou_last_bin"): OneOf(("closed", "half-open")),
    ("libra", "bfp_refine"): OneOf(("non_local", "conv", "none")),
    ("libra", "bfp_refine_level"): Range(0, 4),
    ("libra", "bfp_init"): OneOf(("xavier", "identity")),
    ("libra", "bl1_alpha"): POSITIVE,
    ("libra", "bl1_gamma"): POSITIVE,
    ("libra", "bl1_beta"): POSITIVE,
    ("libra", "eql_lambda"): PROBABILITY,
    ("libra", "eql_freq"): OneOf(("annotated", "all")),
    ("libra", "eql_prior"): Range(0, 1, low_open=True, high_open=True),
    ("train", "max_iters"): COUNT,
    ("train", "epochs"): COUNT,
    ("train", "lr"): POSITIVE,
    ("train", "reference_batch"): COUNT,
    ("train", "momentum"): PROBABILITY,
    ("train", "weight_decay"): NON_NEGATIVE,
    ("train", "warmup_iters"): NON_NEGATIVE,
    ("train", "warmup_factor"): PROBABILITY,
    ("train", "schedule"): OneOf(("step", "cosine")),
    ("train", "lr_milestones"): Range(0, 1, low_open=True, high_open=True),
    ("train", "lr_milestones_epochs"): COUNT,
    ("train", "grad_clip"): POSITIVE,
    ("train", "amp_dtype"): OneOf(("bf16", "fp16")),
    ("train", "seed"): NON_NEGATIVE,
    ("train", "log_interval"): COUNT,
    ("train", "eval_interval"): NON_NEGATIVE,
    ("train", "evaluator"): OneOf(EVALUATORS),
    ("train", "checkpoint_interval"): COUNT,
}


def flag_of(name: str) -> str:
    """The command-line flag of a config field (``max_iters`` → ``--max-iters``), as ``cli/config_options.py``
    derives it."""
    return "--" + name.replace("_", "-")


def invalid(section: str, name: str, problem: str, value: Any) -> LibraError:
    """The one wording of a bad setting: ``section.field (--flag): problem; got VALUE``."""
    shown = list(value) if isinstance(value, tuple) else value
    return LibraError(f"{section}.{name} ({flag_of(name)}): {problem}; got {shown!r}")


def check_field_rules(config: RunConfig) -> None:
    """Raise :func:`invalid` for the first field that breaks its FIELD_RULES entry."""
    for (section, name), rule in FIELD_RULES.items():
        value = getattr(getattr(config, section), name)
        problem = None if value is None else rule.problem(value)
        if problem is not None:
            raise invalid(section, name, problem, value)


def validate(config: RunConfig) -> None:
    """Reject out-of-range and contradictory settings before any work starts: each field against its rule
    (FIELD_RULES), then the settings that must agree with each other."""
    m, d, t, lib = config.model, config.data, config.train, config.libra
    check_field_rules(config)
    if m.train_min_sizes is not None and not m.train_min_sizes:
        raise invalid("model", "train_min_sizes", "needs at least one size (or null)", m.train_min_sizes)
    if m.max_size < m.min_size:
        raise invalid("model", "max_size", f"must be at least model.min_size ({m.min_size})", m.max_size)
    if len(m.anchor_sizes) != 5:
        raise invalid("model", "anchor_sizes", "needs one size per pyramid level (5)", m.anchor_sizes)
    if not (t.device == "cpu" or t.device == "cuda" or t.device.startswith("cuda:")):
        raise invalid("train", "device", "must be cpu, cuda or cuda:N", t.device)
    if t.lr_milestones_epochs is not None:
        if t.epochs is None:
            raise invalid("train", "lr_milestones_epochs", "needs train.epochs (--epochs)", t.lr_milestones_epochs)
        if any(not 0 < e < t.epochs for e in t.lr_milestones_epochs):
            raise invalid(
                "train", "lr_milestones_epochs", f"epochs must lie in (0, {t.epochs})", t.lr_milestones_epochs
            )
    if d.scale_jitter is not None and (len(d.scale_jitter) != 2 or not d.scale_jitter[0] <= d.scale_jitter[1]):
        raise invalid("data", "scale_jitter", "expected [low, high] with 0 < low <= high", d.scale_jitter)
    # Contradictions between switches and the architecture.
    if m.arch == "retinanet":
        if lib.eql:
            raise LibraError("libra.eql: the equalization loss needs the Faster / Mask R-CNN RoI head, not RetinaNet")
        if lib.iou_sampling:
            raise LibraError("libra.iou_sampling: RetinaNet has no RoI sampler; use --arch faster_rcnn or mask_rcnn")
    check_components(config)
    for name in ("train_split", "val_split"):
        check_split_name(f"data.{name}", getattr(d, name))
    for name in ("train_ann", "val_ann"):  # a VOCdevkit root or its Annotations/ folder: say what to pass
        problem = voc_path_problem(getattr(d, name))
        if problem is not None:
            raise invalid("data", name, problem, getattr(d, name))
    # A VOC year folder locates its own JPEGImages, so its image folder is optional.
    if (d.train_ann is None) != (d.train_images is None) and not is_voc_source(d.train_ann):
        raise LibraError("data: --train-ann and --train-images must be given together")
    if (d.val_ann is None) != (d.val_images is None) and not is_voc_source(d.val_ann):
        raise LibraError("data: --val-ann and --val-images must be given together")
    if d.train_ann is not None and d.val_ann is None:
        raise LibraError("data: a custom --train-ann needs --val-ann/--val-images for evaluation")


def resolved_component_settings(config: RunConfig) -> dict[str, Any]:
    """Architecture-dependent defaults of the Libra components made explicit (Libra R-CNN §3.2, §4)."""
    lib = config.libra
    retina = config.model.arch == "retinanet"
    return {
        "bfp_refine_level": lib.bfp_refine_level if lib.bfp_refine_level is not None else (1 if retina else 2),
        "bl1_beta": lib.bl1_beta if lib.bl1_beta is not None else (0.11 if retina else 1.0),
    }
