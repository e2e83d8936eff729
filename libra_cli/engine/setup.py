"""Everything a training run does before its first step (``setup_training``): check the run directory, load
the data, build the detector (with its multi-scale hook) and its step, restore a checkpoint when resuming,
start the run directory and make the batch loader, in that order (the random draws depend on it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from libra_cli.config import RunConfig
from libra_cli.data.build import absolute_paths, build_eval_dataset, build_train_dataset, resolve_data_paths
from libra_cli.data.coco import DetectionDataset, collate
from libra_cli.data.sampler import IterationBatchSampler, aspect_ratio_groups, repeat_factors
from libra_cli.engine.checkpoint import rng_state
from libra_cli.engine.distributed import DistributedContext, init_distributed
from libra_cli.engine.eql_tail import eql_tail_info
from libra_cli.engine.machine import machine_record
from libra_cli.engine.resume import RunFinished, open_checkpoint, restore_checkpoint
from libra_cli.engine.run import dataset_info, eql_frequency_denominator
from libra_cli.engine.schedule import check_resumed_schedule, peak_lr, resolve_schedule, schedule_summary
from libra_cli.engine.step import TrainStep, amp_dtype, seed_everything
from libra_cli.engine.training_run import NoLog, TrainingData, TrainingRun
from libra_cli.errors import LibraError
from libra_cli.io import remove_stale_temporaries
from libra_cli.models.build import build_detector, check_backbone_weights
from libra_cli.rundir import JsonlLog, RunLayout


class TrainTestMinSize:
    """Forward pre-hook of a detector's ``GeneralizedRCNNTransform`` for multi-scale training.

    In training the transform's ``min_size`` is the tuple ``train_sizes`` and torchvision resizes each image
    to a shorter side drawn from it (``torch_choice``: one uniform draw per image from torch's global
    generator, which the transform makes whether or not there is a choice); in evaluation it is
    ``(test_size,)`` (torchvision would otherwise use the tuple's last entry). The global generator's state
    is saved in every checkpoint at a step boundary and each rank seeds its own, so the drawn sizes, like the
    RPN/RoI samples, repeat exactly on resume.
    """

    def __init__(self, train_sizes: tuple[int, ...], test_size: int) -> None:
        self.train_sizes = tuple(train_sizes)
        self.test_size = test_size

    def __call__(self, module: nn.Module, args: Any) -> None:
        module.min_size = self.train_sizes if module.training else (self.test_size,)


def apply_train_min_sizes(model: nn.Module, config: RunConfig) -> nn.Module:
    """Turn on ``model.train_min_sizes`` (multi-scale training) on a built detector; a no-op when unset."""
    sizes = config.model.train_min_sizes
    if sizes is None:
        return model
    transform = getattr(model, "transform", None)
    if transform is None or not hasattr(transform, "min_size"):
        raise LibraError("model.train_min_sizes (--train-min-sizes): this detector has no resizing transform")
    transform.min_size = tuple(sizes) if model.training else (config.model.min_size,)
    transform.register_forward_pre_hook(TrainTestMinSize(tuple(sizes), config.model.min_size))
    return model


def load_training_data(config: RunConfig) -> TrainingData:
    given = resolve_data_paths(config.data)
    # Absolute from here on: the run's files (dataset.json, metrics.json's ann_file) must not depend on the
    # folder training ran in.
    paths = absolute_paths(given)
    train_set = build_train_dataset(config.data, paths, with_masks=config.model.arch == "mask_rcnn")
    val_set = build_eval_dataset(paths.val_ann, paths.val_images, train_set.category_ids, config.data.on_bad_sample)
    # Every image file is checked before any work starts; "skip" drops bad ones and counts them.
    train_set.verify_images()
    val_set.verify_images()
    for name, dataset in (("training", train_set), ("validation", val_set)):
        if len(dataset) == 0:
            raise LibraError(f"{dataset.ann_file}: the {name} set holds no usable images")
    skipped = {
        "train_boxes": train_set.skipped_boxes,
        "train_images": train_set.skipped_images,
        "val_boxes": val_set.skipped_boxes,
        "val_images": val_set.skipped_images,
    }
    return TrainingData(train_set, val_set, dataset_info(paths, train_set, given), skipped)


def build_model_and_step(config: RunConfig, data: TrainingData, ctx: DistributedContext) -> tuple[nn.Module, TrainStep]:
    """The detector on the device, seeded, and its SGD step (optimizer, scaler, autocast, clipping)."""
    tcfg = config.train
    seed_everything(tcfg.seed)
    if tcfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    model = build_detector(
        config,
        data.train_set.num_classes,
        images_per_class=data.train_set.images_per_class(),
        num_images=eql_frequency_denominator(data.info, config.libra.eql_freq),
    )
    apply_train_min_sizes(model, config)
    model.to(ctx.device)
    if ctx.enabled:
        # Identical initial weights on every rank (DDP also broadcasts rank 0's), but each rank draws its
        # own anchor and RoI samples.
        torch.manual_seed(tcfg.seed + 1_000_003 * ctx.rank)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=peak_lr(config), momentum=tcfg.momentum, weight_decay=tcfg.weight_decay)
    dtype = amp_dtype(config, ctx.device)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=dtype == torch.float16)
    return model, TrainStep(model, optimizer, scaler, dtype, tcfg.grad_clip)


def start_run_directory(
    config: RunConfig,
    layout: RunLayout,
    ctx: DistributedContext,
    data: TrainingData,
    model: nn.Module,
    *,
    start_iter: int,
    resume: bool,
    on_start: Callable[[dict[str, Any]], None] | None,
) -> JsonlLog | NoLog:
    """Write the config, dataset info and the log's start record (rank 0); call ``on_start``. Returns the log."""
    log: JsonlLog | NoLog = NoLog()
    start_record: dict[str, Any] = {
        "type": "start",
        "iter": start_iter,
        "components": config.libra.enabled(),
        "world_size": ctx.world_size,
        "skipped": data.skipped,
        "schedule": schedule_summary(config, len(data.train_set)),
        "machine": machine_record(ctx.device),
    }
    if config.libra.eql:
        start_record["eql"] = eql_tail_info(config.libra.eql_lambda, data.info, config.libra.eql_freq)
    if ctx.is_main:
        layout.root.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(layout.checkpoints)
        layout.write_config(config)
        layout.write_dataset_info(data.info)
        log = layout.open_log(resume_from=start_iter if resume else None)
        log.write(start_record)
    if on_start is not None and ctx.is_main:
        on_start(
            {
                **data.info,
                **start_record,
                "device": str(ctx.device),
                "start_iter": start_iter,
                "model": model,
                "num_val_images": len(data.val_set),
            }
        )
    return log


def training_loader(
    config: RunConfig, train_set: DetectionDataset, start_iter: int, ctx: DistributedContext
) -> torch.utils.data.DataLoader:
    """This rank's batches of iterations ``start_iter`` … ``max_iters − 1``: a pure function of the seed.

    ``data.repeat_factor_thr`` turns on repeat-factor sampling (factors from the training set's labels) and
    ``data.aspect_ratio_grouping`` batches of one orientation (from the annotated image sizes); see
    ``libra_cli.data.sampler``.
    """
    tcfg, dcfg = config.train, config.data
    factors = None
    if dcfg.repeat_factor_thr is not None:
        factors = repeat_factors([record.labels for record in train_set.records], dcfg.repeat_factor_thr)
    groups = None
    if dcfg.aspect_ratio_grouping:
        groups = aspect_ratio_groups([(record.width, record.height) for record in train_set.records])
    sampler = IterationBatchSampler(
        len(train_set),
        dcfg.batch_size,
        seed=tcfg.seed,
        start_iter=start_iter,
        max_iters=tcfg.max_iters,
        rank=ctx.rank,
        world_size=ctx.world_size,
        repeat_factors=factors,
        group_ids=groups,
    )
    return torch.utils.data.DataLoader(
        train_set,
        batch_sampler=sampler,
        num_workers=config.data.num_workers,
        collate_fn=collate,
        pin_memory=ctx.device.type == "cuda",
        # Its own generator: creating the loader's iterator must not draw from the global RNG, whose
        # state is restored on resume and drives the RPN/RoI samplers.
        generator=torch.Generator().manual_seed(tcfg.seed),
    )


def setup_training(
    config: RunConfig,
    *,
    resume: bool,
    on_start: Callable[[dict[str, Any]], None] | None,
    extend: bool = False,
) -> TrainingRun:
    """Check the run directory, load the data, build the model and its step, restore a checkpoint when
    resuming and start the run directory: everything before the first step, in that order (the RNG
    draws depend on it). A resumed run keeps its saved schedule (``extend``: see :func:`extended_schedule`);
    one already trained and evaluated raises :class:`RunFinished`."""
    layout = RunLayout(config.train.out)
    ctx = init_distributed(config.train.device)
    if extend and not resume:
        raise LibraError("--extend: continues a run; use it with --resume")
    checkpoint = open_checkpoint(config, layout, ctx, resume)
    check_backbone_weights(config)  # a missing ImageNet file stops the run before the data is read
    data = load_training_data(config)
    # An epoch schedule becomes iterations here, from the training set's size; the run uses and saves that.
    config = resolve_schedule(config, len(data.train_set))
    if checkpoint is not None:
        iteration = int(checkpoint["iteration"])
        config = check_resumed_schedule(config, layout, iteration, extend=extend)
        metrics = layout.read_metrics()
        if iteration >= config.train.max_iters and metrics is not None:
            raise RunFinished(iteration, metrics)
    model, step = build_model_and_step(config, data, ctx)
    start_iter, best_ap, window = 0, -1.0, []
    if checkpoint is not None:
        start_iter, best_ap, window = restore_checkpoint(checkpoint, model, step, ctx, layout)
    step_rng = rng_state()
    if ctx.enabled:
        # The step runs through DDP, which averages gradients over the ranks; checkpoints and evaluation
        # use the module itself.
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        step.model = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    log = start_run_directory(config, layout, ctx, data, model, start_iter=start_iter, resume=resume, on_start=on_start)
    return TrainingRun(
        config=config,
        ctx=ctx,
        layout=layout,
        model=model,
        step=step,
        loader=training_loader(config, data.train_set, start_iter, ctx),
        val_set=data.val_set,
        log=log,
        start_iter=start_iter,
        best_ap=best_ap,
        window=window,
        step_rng=step_rng,
    )
