"""``libra train [PRESET] [flags]`` — train a detector; flags override the preset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from libra_cli.cli.ui import TrainProgress, category_table, console, handle_errors, metrics_table
from libra_cli.config import RunConfig, load_config
from libra_cli.engine.distributed import is_main_process
from libra_cli.engine.train import TrainResult, train

DATA = "Data"
MODEL = "Model"
OPTIM = "Schedule"
LIBRA = "Libra components"


def opt(*names: str, panel: str, help: str, **kwargs: Any) -> Any:
    return typer.Option(None, *names, help=help, rich_help_panel=panel, **kwargs)


# Command-line option → (config section, field). Options left unset do not override the preset.
FLAG_FIELDS = {
    "train_ann": ("data", "train_ann"),
    "train_images": ("data", "train_images"),
    "val_ann": ("data", "val_ann"),
    "val_images": ("data", "val_images"),
    "synth_dir": ("data", "synth_dir"),
    "long_tail": ("data", "synth_long_tail"),
    "batch_size": ("data", "batch_size"),
    "workers": ("data", "num_workers"),
    "on_bad_sample": ("data", "on_bad_sample"),
    "arch": ("model", "arch"),
    "backbone": ("model", "backbone"),
    "norm": ("model", "norm"),
    "weights": ("model", "weights"),
    "backbone_weights": ("model", "backbone_weights"),
    "roi_batch_size": ("model", "roi_batch_size_per_image"),
    "roi_align": ("model", "roi_align"),
    "rpn_neg_pos_ub": ("model", "rpn_neg_pos_ub"),
    "roi_box_loss": ("model", "roi_box_loss"),
    "roi_smooth_l1_beta": ("model", "roi_smooth_l1_beta"),
    "retinanet_loss_norm": ("model", "retinanet_loss_norm"),
    "retinanet_p6": ("model", "retinanet_p6"),
    "out": ("train", "out"),
    "max_iters": ("train", "max_iters"),
    "lr": ("train", "lr"),
    "schedule": ("train", "schedule"),
    "warmup_iters": ("train", "warmup_iters"),
    "device": ("train", "device"),
    "amp": ("train", "amp"),
    "seed": ("train", "seed"),
    "log_interval": ("train", "log_interval"),
    "eval_interval": ("train", "eval_interval"),
    "checkpoint_interval": ("train", "checkpoint_interval"),
    "iou_sampling": ("libra", "iou_sampling"),
    "iou_bins": ("libra", "iou_bins"),
    "iou_floor_thr": ("libra", "iou_floor_thr"),
    "iou_floor_fraction": ("libra", "iou_floor_fraction"),
    "iou_bins_upper": ("libra", "iou_bins_upper"),
    "pos_balance": ("libra", "pos_balance"),
    "bfp": ("libra", "bfp"),
    "bfp_refine": ("libra", "bfp_refine"),
    "bfp_refine_level": ("libra", "bfp_refine_level"),
    "bfp_init": ("libra", "bfp_init"),
    "balanced_l1": ("libra", "balanced_l1"),
    "bl1_alpha": ("libra", "bl1_alpha"),
    "bl1_gamma": ("libra", "bl1_gamma"),
    "bl1_beta": ("libra", "bl1_beta"),
    "eql": ("libra", "eql"),
    "eql_lambda": ("libra", "eql_lambda"),
    "eql_freq": ("libra", "eql_freq"),
}


def overrides_from_flags(flags: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{section: {field: value}}`` for the flags the user actually gave."""
    overrides: dict[str, dict[str, Any]] = {}
    for flag, value in flags.items():
        if value is None or flag not in FLAG_FIELDS:
            continue
        section, field = FLAG_FIELDS[flag]
        overrides.setdefault(section, {})[field] = str(value) if isinstance(value, Path) else value
    if flags.get("image_size") is not None:
        overrides.setdefault("model", {}).update(min_size=flags["image_size"], max_size=flags["image_size"])
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
    return ", ".join(names) or "off (plain torchvision detector)"


def describe_start(config: RunConfig, info: dict[str, Any]) -> None:
    """Print what is about to happen: data, model, switches, and EQL's tail classes."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("run", config.train.out)
    table.add_row(
        "train",
        f"{info['num_images']} images, {len(info['category_ids'])} classes ({info['format']}) from {info['train_ann']}",
    )
    table.add_row("val", f"{info['num_val_images']} images from {info['val_ann']}")
    params = sum(p.numel() for p in info["model"].parameters()) / 1e6
    table.add_row(
        "model",
        f"{config.model.arch} {config.model.backbone}-FPN, {params:.1f} M parameters, "
        f"{config.model.min_size}px, device {info['device']}",
    )
    table.add_row("libra", describe_components(config))
    table.add_row(
        "schedule",
        f"{config.train.max_iters} iterations × {config.data.batch_size} images"
        + (f" over {info['world_size']} processes" if info.get("world_size", 1) > 1 else "")
        + ", "
        f"lr {config.train.lr} ({config.train.schedule})"
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


def run_training(config: RunConfig, *, resume: bool = False, show: bool = True) -> TrainResult:
    """Train with progress output and print the final metrics; shared by `train`, `demo` and `ablate`."""
    result = train(
        config,
        resume=resume,
        on_start=(lambda info: describe_start(config, info)) if show else None,
        progress=TrainProgress(run_label(config)) if show else None,
    )
    if show and result.metrics is not None and is_main_process():
        console.print(metrics_table(result.metrics, title=f"{run_label(config)} @ {result.iterations}"))
        console.print(category_table(result.metrics))
        console.print(f"trained {result.iterations} iterations in {result.wall_s / 60:.1f} min → {result.run_dir}")
    return result


@handle_errors
def train_command(
    preset: str = typer.Argument(None, help="Preset name in experiments/ (e.g. baseline, libra) or a YAML path."),
    train_ann: Path = opt("--train-ann", panel=DATA, help="Training annotations (COCO or LVIS JSON)."),
    train_images: Path = opt("--train-images", panel=DATA, help="Folder of the training images."),
    val_ann: Path = opt("--val-ann", panel=DATA, help="Validation annotations."),
    val_images: Path = opt("--val-images", panel=DATA, help="Folder of the validation images."),
    synth_dir: Path = opt("--synth-dir", panel=DATA, help="Where the default synthetic benchmark lives."),
    long_tail: bool = opt("--long-tail/--no-long-tail", panel=DATA, help="Long-tailed (LVIS) synthetic data."),
    batch_size: int = opt("--batch-size", panel=DATA, help="Images per iteration."),
    workers: int = opt("--workers", panel=DATA, help="DataLoader worker processes."),
    on_bad_sample: str = opt("--on-bad-sample", panel=DATA, help="error | skip bad images and boxes."),
    arch: str = opt("--arch", panel=MODEL, help="faster_rcnn | retinanet."),
    backbone: str = opt("--backbone", panel=MODEL, help="resnet18 | resnet34 | resnet50."),
    norm: str = opt("--norm", panel=MODEL, help="gn | bn | frozen_bn (backbone normalisation)."),
    weights: Path = opt("--weights", panel=MODEL, help="Local detector state_dict to start from."),
    backbone_weights: Path = opt("--backbone-weights", panel=MODEL, help="Local ImageNet ResNet weights."),
    image_size: int = opt("--image-size", panel=MODEL, help="Resize images to this size (min and max side)."),
    roi_batch_size: int = opt("--roi-batch-size", panel=MODEL, help="RoIs sampled per image."),
    roi_align: str = opt("--roi-align", panel=MODEL, help="auto | grid_sample | torchvision RoIAlign kernel."),
    rpn_neg_pos_ub: int = opt(
        "--rpn-neg-pos-ub", panel=MODEL, help="Cap the RPN's negatives at N × positives (reference Libra: 5)."
    ),
    roi_box_loss: str = opt(
        "--roi-box-loss", panel=MODEL, help="smooth_l1 | l1: RoI-head box loss when balanced L1 is off."
    ),
    roi_smooth_l1_beta: float = opt(
        "--roi-smooth-l1-beta", panel=MODEL, help="RoI-head smooth L1 β (torchvision 1/9, paper baseline 1.0)."
    ),
    retinanet_loss_norm: str = opt(
        "--retinanet-loss-norm", panel=MODEL, help="image (torchvision) | batch (reference): RetinaNet loss divisor."
    ),
    retinanet_p6: str = opt(
        "--retinanet-p6", panel=MODEL, help="p5 (torchvision, ReLU before P7) | c5 (reference, no ReLU)."
    ),
    out: Path = opt("--out", panel=OPTIM, help="Run directory."),
    max_iters: int = opt("--max-iters", panel=OPTIM, help="Number of iterations."),
    lr: float = opt("--lr", panel=OPTIM, help="Peak learning rate."),
    schedule: str = opt("--schedule", panel=OPTIM, help="step | cosine."),
    warmup_iters: int = opt("--warmup-iters", panel=OPTIM, help="Linear warm-up iterations."),
    device: str = opt("--device", panel=OPTIM, help="cpu | cuda | cuda:N."),
    amp: bool = opt("--amp/--no-amp", panel=OPTIM, help="Mixed precision on CUDA."),
    seed: int = opt("--seed", panel=OPTIM, help="Random seed."),
    log_interval: int = opt("--log-interval", panel=OPTIM, help="Iterations per log line."),
    eval_interval: int = opt("--eval-interval", panel=OPTIM, help="Iterations between evaluations (0: end)."),
    checkpoint_interval: int = opt("--checkpoint-interval", panel=OPTIM, help="Iterations between checkpoints."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    iou_sampling: bool = opt("--iou-sampling/--no-iou-sampling", panel=LIBRA, help="IoU-balanced RoI sampling."),
    iou_bins: int = opt("--iou-bins", panel=LIBRA, help="Number of IoU intervals K (3)."),
    iou_floor_thr: float = opt(
        "--iou-floor-thr",
        panel=LIBRA,
        help="0: reference (IoU-0 negatives only fill a shortfall, default); −1: paper text (all binned).",
    ),
    iou_floor_fraction: float = opt("--iou-floor-fraction", panel=LIBRA, help="Share from the floor set (0)."),
    iou_bins_upper: str = opt("--iou-bins-upper", panel=LIBRA, help="max-iou (reference) | neg-thr (paper)."),
    pos_balance: bool = opt("--pos-balance/--no-pos-balance", panel=LIBRA, help="Instance-balanced positives."),
    bfp: bool = opt("--bfp/--no-bfp", panel=LIBRA, help="Balanced Feature Pyramid."),
    bfp_refine: str = opt("--bfp-refine", panel=LIBRA, help="non_local | conv | none."),
    bfp_refine_level: int = opt("--bfp-refine-level", panel=LIBRA, help="Level to integrate at."),
    bfp_init: str = opt(
        "--bfp-init", panel=LIBRA, help="xavier (reference, default) | identity (non-local starts as identity)."
    ),
    balanced_l1: bool = opt("--balanced-l1/--no-balanced-l1", panel=LIBRA, help="Balanced L1 box loss."),
    bl1_alpha: float = opt("--bl1-alpha", panel=LIBRA, help="Balanced L1 α (0.5)."),
    bl1_gamma: float = opt("--bl1-gamma", panel=LIBRA, help="Balanced L1 γ (1.5)."),
    bl1_beta: float = opt("--bl1-beta", panel=LIBRA, help="Balanced L1 β (1.0; 0.11 RetinaNet)."),
    eql: bool = opt("--eql/--no-eql", panel=LIBRA, help="Equalization loss (Faster R-CNN)."),
    eql_lambda: float = opt("--eql-lambda", panel=LIBRA, help="EQL tail threshold λ on image frequency."),
    eql_freq: str = opt(
        "--eql-freq",
        panel=LIBRA,
        help="annotated (reference, default: images with a box) | all (paper text): EQL frequency denominator.",
    ),
) -> None:
    """Train a detector. Without dataset flags it uses the default synthetic benchmark."""
    flags = dict(locals())
    config = load_config(preset, overrides_from_flags(flags))
    run_training(config, resume=resume)
