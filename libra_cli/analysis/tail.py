"""Class-level imbalance: positive vs discouraging gradients of each class's logit (EQL paper §3, Fig. 1).

In a long-tailed dataset the foreground RoIs of frequent classes are negatives for every other class, so
the logit of a rare class is pushed down far more often than it is pulled up. The EQL paper (Tan et al.,
CVPR 2020, §3 and Fig. 1) shows it by accumulating, for each class j over the RoIs seen in training, the
gradient magnitude |∂L_r/∂z_j| its logit receives from RoIs labelled j (positive) and from all other RoIs
(discouraging), and plotting positive / discouraging with the classes sorted by frequency: the ratio
falls towards the tail, and the equalization loss lifts it by dropping the discouraging gradient that
tail classes receive from other classes' foreground RoIs.

Per RoI r with label y_r (0 background, k >= 1 class k) the gradient magnitudes are analytic:

- softmax cross-entropy (logits [R, C + 1], column 0 background, class k at column k):
  ∂L_r/∂z_j = p_j − 1[y_r = j], with p = softmax(z_r);
- sigmoid binary cross-entropy (logits [R, C], class k at column k − 1), summed over classes:
  ∂L_r/∂z_j = w_j · (σ(z_j) − 1[y_r = j]), with w_j = 1 for plain BCE and, under EQL,
  w_j = 1 − E(r)·T_λ(f_j)·(1 − 1[y_r = j]) (E(r) = 1 for a foreground RoI, T_λ(f_j) = 1 for a tail class).

The gradient is that of each RoI's own loss L_r (not of the batch mean, which only divides by R), so
sums over batches of different sizes add up consistently. For class j the discouraging gradient is split
into the part from other classes' foreground RoIs and the part from background RoIs; EQL weights zero
the first part for tail classes and keep the second.

The analysis runs the run's detector on N images as in training (RPN training top-n, GT boxes added,
the run's own RoI sampler), takes the class logits of the sampled RoIs and accumulates these sums. The
EQL-weighted sums use the run's tail mask: the trained one for an EQL run (its RoI heads' buffer
``eql_tail_mask``), otherwise the mask EQL would use at the run's configured λ — for a softmax
classifier that shows which discouraging gradient EQL would remove, not a gradient the run trained with.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from libra_cli.analysis.common import AnalysisInputs, Progress, csv_text, figure_png
from libra_cli.analysis.runner import Analysis, Files, ImageRun, ModelAnalysis, Option
from libra_cli.engine.run import eql_frequency_denominator
from libra_cli.errors import LibraError
from libra_cli.losses import image_frequency, tail_class_mask, tail_ratio
from libra_cli.report.plots import (
    FREQUENCY_COLOURS,
    FREQUENCY_NAMES,
    MAX_LABELLED_CATEGORIES,
    PLAIN_COLOUR,
    literal,
)
from libra_cli.rundir import RunLayout

CLASSIFIERS = ("softmax", "sigmoid")
SUM_KEYS = ("positive", "negative_foreground", "negative_background")
FREQUENCY_ORDER = ("f", "c", "r")  # LVIS groups, frequent first as on the paper's x axis
GROUP_STYLES = {"tail": ("black", "--"), "all": ("grey", ":")}  # (colour, line) of the non-LVIS groups
GROUP_TITLES = {**FREQUENCY_NAMES, "tail": "tail (f < λ)", "all": "all"}


# ---- pure functions on logits and labels ------------------------------------------------------------------


def eql_weights(labels: torch.Tensor, tail_mask: torch.Tensor) -> torch.Tensor:
    """EQL's per-RoI, per-class weights w_j = 1 − E(r)·T_λ(f_j)·(1 − y_j) (EQL paper §3, Eq. 3).

    Args:
        labels: Int64Tensor[R] in 0..C (0 background, k class k).
        tail_mask: BoolTensor[C], T_λ(f_j) per foreground class.

    Returns:
        Tensor[R, C] float64 of 0s and 1s: 0 exactly where a foreground RoI meets a tail class that is
        not its own.
    """
    num_classes = tail_mask.shape[0]
    targets = F.one_hot(labels, num_classes + 1)[:, 1:].double()
    foreground = (labels > 0).double().unsqueeze(1)
    tail = tail_mask.to(device=labels.device, dtype=torch.float64).unsqueeze(0)
    return 1 - foreground * tail * (1 - targets)


def logit_gradients(logits: torch.Tensor, labels: torch.Tensor, classifier: str) -> torch.Tensor:
    """|∂L_r/∂z_j| of each RoI's own classification loss for the C foreground classes' logits.

    Softmax cross-entropy: |p_j − 1[y_r = j]| with p = softmax(z_r) over background + C classes;
    sigmoid BCE (no EQL weights): |σ(z_j) − 1[y_r = j]|.

    Args:
        logits: [R, C + 1] (softmax, background at column 0) or [R, C] (sigmoid, class k at column k − 1).
        labels: Int64Tensor[R] in 0..C.
        classifier: "softmax" or "sigmoid".

    Returns:
        Tensor[R, C] float64; column k − 1 is class k (the softmax background column is dropped).
    """
    logits = logits.double()
    if classifier == "softmax":
        probabilities = logits.softmax(dim=1)[:, 1:]
    else:
        probabilities = logits.sigmoid()
    targets = F.one_hot(labels, probabilities.shape[1] + 1)[:, 1:].double()
    return (probabilities - targets).abs()


def _check_inputs(logits: torch.Tensor, labels: torch.Tensor, classifier: str) -> int:
    """The number of foreground classes C; ValueError for a bad classifier, shape or label."""
    if classifier not in CLASSIFIERS:
        raise ValueError(f"classifier must be one of {', '.join(CLASSIFIERS)}; got {classifier!r}")
    if logits.dim() != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"expected logits [R, K] and labels [R]; got {tuple(logits.shape)} and {tuple(labels.shape)}")
    num_classes = logits.shape[1] - 1 if classifier == "softmax" else logits.shape[1]
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes} (0 = background)")
    return num_classes


def tail_gradient_sums(
    logits: torch.Tensor,
    labels: torch.Tensor,
    classifier: str = "softmax",
    tail_mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Per class, the positive and the discouraging gradient its logit receives (EQL paper §3, Fig. 1).

    With g_rj = |∂L_r/∂z_j| (see :func:`logit_gradients`), for each foreground class j:

        positive_j            = Σ_{r: y_r = j}        g_rj
        negative_foreground_j = Σ_{r: y_r ∉ {0, j}}   g_rj     (other classes' foreground RoIs)
        negative_background_j = Σ_{r: y_r = 0}        g_rj
        positive_rois_j       = #{r: y_r = j}

    With ``tail_mask`` the same three sums are also given with EQL's weights applied, g_rj · w_rj
    (:func:`eql_weights`), as ``eql_positive``, ``eql_negative_foreground`` and ``eql_negative_background``:
    w = 1 on positives and on background RoIs, so only ``eql_negative_foreground`` of a tail class
    differs — it is 0.

    Args:
        logits: [R, C + 1] softmax logits (column 0 background) or [R, C] sigmoid logits.
        labels: Int64Tensor[R] in 0..C, 0 background, k class k.
        classifier: "softmax" or "sigmoid".
        tail_mask: optional BoolTensor[C], T_λ(f_j).

    Returns:
        Name → Tensor[C] (float64 sums on the CPU; ``positive_rois`` int64); index k − 1 is class k.

    Raises:
        ValueError: unknown classifier, shapes that do not match, or a label outside 0..C.
    """
    num_classes = _check_inputs(logits, labels, classifier)
    labels = labels.long()
    gradients = logit_gradients(logits, labels, classifier)
    targets = F.one_hot(labels, num_classes + 1)[:, 1:].double()
    foreground = (labels > 0).double().unsqueeze(1)
    parts = {
        "positive": targets,
        "negative_foreground": foreground * (1 - targets),
        "negative_background": (1 - foreground).expand_as(targets),
    }
    sums = {name: (gradients * mask).sum(dim=0).cpu() for name, mask in parts.items()}
    sums["positive_rois"] = targets.sum(dim=0).long().cpu()
    if tail_mask is not None:
        if tail_mask.shape != (num_classes,):
            raise ValueError(f"tail_mask must be [{num_classes}]; got {tuple(tail_mask.shape)}")
        weighted = gradients * eql_weights(labels, tail_mask)
        sums.update({f"eql_{name}": (weighted * mask).sum(dim=0).cpu() for name, mask in parts.items()})
    return sums


def add_sums(total: dict[str, torch.Tensor] | None, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The element-wise sum of two results of :func:`tail_gradient_sums` (``total`` None: ``sums``)."""
    if total is None:
        return dict(sums)
    return {name: total[name] + sums[name] for name in total}


def gradient_ratio(positive: float, negative: float) -> float | None:
    """positive / negative; None when there is no discouraging gradient to compare with."""
    return positive / negative if negative > 0 else None


# ---- per-class table ----------------------------------------------------------------------------------------


def class_rows(
    sums: dict[str, torch.Tensor],
    dataset_info: dict[str, Any],
    lvis_groups: Sequence[str | None],
    image_freq: torch.Tensor,
    tail_mask: torch.Tensor,
) -> list[dict[str, Any]]:
    """One dict per foreground class, sorted by training images (most first, as the paper's x axis).

    Args:
        sums: accumulated :func:`tail_gradient_sums` with the EQL sums.
        dataset_info: the run's ``dataset.json`` (category ids and names, ``images_per_class``).
        lvis_groups: per class the LVIS frequency group "r" | "c" | "f", or None.
        image_freq: Tensor[C], f_j as EQL computes it for the run.
        tail_mask: BoolTensor[C], the T_λ used for the EQL sums.
    """
    images = dataset_info["images_per_class"]
    rows = []
    for index, category_id in enumerate(dataset_info["category_ids"]):
        values = {name: float(sums[name][index]) for name in SUM_KEYS}
        eql = {name: float(sums[f"eql_{name}"][index]) for name in SUM_KEYS}
        negative = values["negative_foreground"] + values["negative_background"]
        eql_negative = eql["negative_foreground"] + eql["negative_background"]
        rows.append(
            {
                "label": index + 1,
                "category_id": category_id,
                "name": dataset_info["category_names"][index],
                "frequency": lvis_groups[index],
                "images": images[index],
                "image_frequency": float(image_freq[index]),
                "tail": bool(tail_mask[index]),
                "positive_rois": int(sums["positive_rois"][index]),
                **values,
                "negative": negative,
                "ratio": gradient_ratio(values["positive"], negative),
                "eql_negative_foreground": eql["negative_foreground"],
                "eql_negative": eql_negative,
                "eql_ratio": gradient_ratio(eql["positive"], eql_negative),
            }
        )
    return sorted(rows, key=lambda row: (-row["images"], row["label"]))


def _mean(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return sum(present) / len(present) if present else None


def group_summaries(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per LVIS frequency group present, the tail classes (T_λ, if any) and all classes together.

    Each: {"title", "classes", "positive_rois", "mean_ratio", "mean_eql_ratio" (means of the per-class ratios,
    classes without discouraging gradient left out), "pooled_ratio" (Σ positive / Σ negative)}.
    """
    members = {key: [row for row in rows if row["frequency"] == key] for key in FREQUENCY_ORDER}
    members["tail"] = [row for row in rows if row["tail"]]
    members = {key: group for key, group in members.items() if group}
    members["all"] = rows
    summaries = {}
    for key, group in members.items():
        summaries[key] = {
            "title": GROUP_TITLES[key],
            "classes": len(group),
            "positive_rois": sum(row["positive_rois"] for row in group),
            "mean_ratio": _mean([row["ratio"] for row in group]),
            "mean_eql_ratio": _mean([row["eql_ratio"] for row in group]),
            "pooled_ratio": gradient_ratio(
                sum(row["positive"] for row in group), sum(row["negative"] for row in group)
            ),
        }
    return summaries


# ---- collection on a run ---------------------------------------------------------------------------------------


def roi_classifier(heads: torch.nn.Module) -> str:
    """The RoI classifier: "sigmoid" for an EQL head (it carries ``eql_tail_mask``), else "softmax"."""
    return "sigmoid" if getattr(heads, "eql_tail_mask", None) is not None else "softmax"


def run_image_frequency(inputs: AnalysisInputs) -> torch.Tensor:
    """f_j of every class as the run's EQL computes it (denominator chosen by ``libra.eql_freq``), [C]."""
    info = inputs.dataset_info
    denominator = eql_frequency_denominator(info, inputs.config.libra.eql_freq)
    return image_frequency(torch.tensor(info["images_per_class"]), denominator)


def run_tail_mask(inputs: AnalysisInputs) -> torch.Tensor:
    """T_λ of the run: the EQL head's trained mask, else the one EQL would use at the configured λ."""
    trained = getattr(inputs.model.roi_heads, "eql_tail_mask", None)
    if trained is not None:
        return trained.detach().cpu()
    return tail_class_mask(run_image_frequency(inputs), inputs.config.libra.eql_lambda)


def lvis_frequency_groups(inputs: AnalysisInputs) -> list[str | None]:
    """Each class's LVIS ``frequency`` ("r" | "c" | "f") from the annotation file, None where absent."""
    dataset = getattr(inputs.dataset, "dataset", inputs.dataset)  # the split behind the Subset
    categories = getattr(dataset, "categories", {})
    return [categories.get(category_id, {}).get("frequency") for category_id in inputs.dataset_info["category_ids"]]


def collect_tail_sums(
    run: ImageRun,
    inputs: AnalysisInputs,
    tail_mask: torch.Tensor,
    on_images: Callable[[int], None] | None = None,
) -> tuple[dict[str, torch.Tensor] | None, int]:
    """Accumulate :func:`tail_gradient_sums` over the RoIs the run's sampler picks on ``inputs.dataset``
    (one checkpoint of ``run``).

    Returns:
        (the summed dict, or None when no RoI was sampled; the number of RoIs). ``on_images(done)`` is
        called after each batch with the images done so far.
    """
    heads, probe = inputs.model.roi_heads, inputs.probe
    classifier = roi_classifier(heads)
    total, num_rois = None, 0
    with torch.inference_mode():
        for images, targets in run.batches(inputs, on_images):
            batch = probe.forward_to_proposals(images, targets)
            rois = probe.sample(batch.proposals, batch.targets)
            _, class_logits, _ = probe.box_head(batch, rois.boxes)
            labels = torch.cat(rois.labels)
            total = add_sums(total, tail_gradient_sums(class_logits, labels, classifier, tail_mask))
            num_rois += labels.numel()
    return total, num_rois


def checkpoint_files(run_dir: str | Path) -> list[Path]:
    """The run's checkpoints (``checkpoints/*.pt``: last and best, plus any others kept)."""
    folder = RunLayout(Path(run_dir)).checkpoints
    return sorted(folder.glob("*.pt")) if folder.is_dir() else []


class PassProgress:
    """Reports progress over several passes through the same images as one count of images."""

    def __init__(self, progress: Progress | None, images: int, passes: int) -> None:
        self.progress, self.images, self.passes, self.finished = progress, images, passes, 0

    def __call__(self, done: int) -> None:
        """``done`` images of the current pass."""
        if self.progress is not None:
            self.progress(self.finished + done, self.passes * self.images)

    def end_pass(self) -> None:
        self.finished += self.images

    def skip_pass(self) -> None:
        self.passes -= 1
        self(0)


def measure_tail(
    run: ImageRun,
    inputs: AnalysisInputs,
    tail_mask: torch.Tensor,
    progress: PassProgress | None = None,
) -> dict[str, Any]:
    """One checkpoint's per-class rows and group summaries (see :func:`measure_tail_gradients`)."""
    sums, num_rois = collect_tail_sums(run, inputs, tail_mask, progress)
    if sums is None:
        raise LibraError(f"{inputs.run_dir}: no RoI was sampled on the {inputs.num_images} images")
    if progress is not None:
        progress.end_pass()
    groups = lvis_frequency_groups(inputs)
    rows = class_rows(sums, inputs.dataset_info, groups, run_image_frequency(inputs), tail_mask)
    return {
        "checkpoint": inputs.checkpoint,
        "num_rois": num_rois,
        "num_positive_rois": int(sums["positive_rois"].sum()),
        "classes": rows,
        "groups": group_summaries(rows),
    }


def training_entry(measurement: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's compact record: per class (in the order of ``classes``) its ratios, and the groups."""
    return {
        "checkpoint": measurement["checkpoint"]["checkpoint"],
        "iteration": measurement["checkpoint"]["iteration"],
        "num_rois": measurement["num_rois"],
        "ratios": [row["ratio"] for row in measurement["classes"]],
        "eql_ratios": [row["eql_ratio"] for row in measurement["classes"]],
        "groups": measurement["groups"],
    }


def eql_summary(inputs: AnalysisInputs, tail_mask: torch.Tensor) -> dict[str, Any]:
    """Whether the run trained with EQL, its λ, the number of tail classes and the tail ratio TR(λ)."""
    info, lam = inputs.dataset_info, inputs.config.libra.eql_lambda
    instances = torch.tensor(info.get("instances_per_class") or [0])
    freq = run_image_frequency(inputs)
    has_instances = instances.shape == freq.shape and int(instances.sum()) > 0
    return {
        "trained_with_eql": roi_classifier(inputs.model.roi_heads) == "sigmoid",
        "lambda": lam,
        "tail_classes": int(tail_mask.sum()),
        "tail_ratio": tail_ratio(freq, instances, lam) if has_instances else None,
    }


def measure_tail_gradients(run: ImageRun) -> dict[str, Any]:
    """Per class: positive vs discouraging gradient of its logit, plain and with EQL's weights (EQL Fig. 1).

    With the option ``over_training`` the ratios are also measured at each of the run's other checkpoints
    (each loaded and seeded with the seed like the analysed one); a checkpoint at an iteration already
    measured is skipped (best.pt and last.pt of a finished run usually coincide).

    Returns the ``tail.json`` fields after the runner's: {"classifier", "eql": {"trained_with_eql",
    "lambda", "tail_classes", "tail_ratio"}, "num_rois", "num_positive_rois", "classes": [per class
    {label, category_id, name, frequency, images, image_frequency, tail, positive_rois, positive,
    negative_foreground, negative_background, negative, ratio, eql_negative_foreground, eql_negative,
    eql_ratio}, most training images first], "groups", "over_training": [{checkpoint, iteration, num_rois,
    ratios, eql_ratios, groups}, oldest first; empty without ``over_training``], "checkpoint", "seed"}.
    """
    inputs, over_training = run.inputs, run.options["over_training"]
    tail_mask = run_tail_mask(inputs)
    analysed = Path(inputs.checkpoint["checkpoint"]).resolve()
    others = [path for path in checkpoint_files(run.run_dir) if path.resolve() != analysed] if over_training else []
    bar = PassProgress(run.progress, inputs.num_images, 1 + len(others))

    main = measure_tail(run, inputs, tail_mask, bar)
    history = {main["checkpoint"]["iteration"]: training_entry(main)}
    for path in others:
        other = run.load(str(path))
        if other.checkpoint["iteration"] in history:
            bar.skip_pass()
            continue
        history[other.checkpoint["iteration"]] = training_entry(measure_tail(run, other, tail_mask, bar))
    return {
        "classifier": roi_classifier(inputs.model.roi_heads),
        "eql": eql_summary(inputs, tail_mask),
        "num_rois": main["num_rois"],
        "num_positive_rois": main["num_positive_rois"],
        "classes": main["classes"],
        "groups": main["groups"],
        "over_training": [history[iteration] for iteration in sorted(history)] if over_training else [],
        "checkpoint": main["checkpoint"],
        "seed": run.seed,
    }


OVER_TRAINING = Option(
    "over_training",
    "--over-training/--no-over-training",
    True,
    "Also measure the run's other checkpoints.",
    bool,
)
# Other checkpoints are loaded between the walks, so each walk opens inference mode itself.
analyze_tail = ModelAnalysis(
    "tail",
    measure_tail_gradients,
    needs_roi_head="RetinaNet has no RoI classifier",
    inference=False,
    options=(OVER_TRAINING,),
)


# ---- files ------------------------------------------------------------------------------------------------------

CLASS_COLUMNS = (
    "label",
    "category_id",
    "name",
    "frequency",
    "images",
    "image_frequency",
    "tail",
    "positive_rois",
    "positive",
    "negative_foreground",
    "negative_background",
    "negative",
    "ratio",
    "eql_negative_foreground",
    "eql_negative",
    "eql_ratio",
)


def tail_csv(result: dict[str, Any]) -> str:
    """One row per class, most training images first."""
    rows = [[row[column] for column in CLASS_COLUMNS] for row in result["classes"]]
    return csv_text(["rank", *CLASS_COLUMNS], [[rank, *row] for rank, row in enumerate(rows, start=1)])


def tail_checkpoints_csv(result: dict[str, Any]) -> str:
    """One row per (checkpoint, class): the ratios over training."""
    header = ["iteration", "checkpoint", "category_id", "name", "ratio", "eql_ratio"]
    rows = []
    for entry in result["over_training"]:
        for row, ratio, eql_ratio in zip(result["classes"], entry["ratios"], entry["eql_ratios"], strict=True):
            rows.append([entry["iteration"], entry["checkpoint"], row["category_id"], row["name"], ratio, eql_ratio])
    return csv_text(header, rows)


def _positive_or_nan(value: float | None) -> float:
    return value if value is not None and value > 0 else math.nan


def _ratio_axes(axes, result: dict[str, Any]) -> None:
    """Bars of the plain ratio per class (frequent first, coloured by r/c/f), ticks at the EQL-weighted ratio."""
    rows = result["classes"]
    positions = list(range(len(rows)))
    colours = [FREQUENCY_COLOURS.get(row["frequency"] or "", PLAIN_COLOUR) for row in rows]
    axes.bar(positions, [_positive_or_nan(row["ratio"]) for row in rows], color=colours, width=0.8)
    # EQL's weights change only the tail classes' ratios: mark those.
    tail = [index for index, row in enumerate(rows) if row["tail"]]
    eql_ratios = [_positive_or_nan(rows[index]["eql_ratio"]) for index in tail]
    axes.scatter(tail, eql_ratios, color="black", marker="_", s=150, zorder=3)
    axes.set_yscale("log")
    if len(rows) <= MAX_LABELLED_CATEGORIES:
        axes.set_xticks(positions, [literal(row["name"]) for row in rows], rotation=90, fontsize=7)
    axes.set_xlabel(f"classes sorted by training images ({len(rows)})")
    axes.set_ylabel("positive / discouraging gradient")
    groups = [key for key in FREQUENCY_ORDER if any(row["frequency"] == key for row in rows)]
    handles = [Patch(color=FREQUENCY_COLOURS[key], label=FREQUENCY_NAMES[key]) for key in groups]
    if tail:
        eql = result["eql"]
        weights = "with EQL weights" if eql["trained_with_eql"] else f"if EQL weights applied (λ={eql['lambda']:g})"
        handles.append(Line2D([], [], color="black", marker="_", linestyle="", label=f"tail classes {weights}"))
    if handles:  # the tail's bars are the low ones on the right
        axes.legend(handles=handles, fontsize=8, loc="upper right")
    axes.grid(axis="y", alpha=0.3)


def _training_axes(axes, result: dict[str, Any]) -> None:
    """Mean ratio of each group against the checkpoint's iteration."""
    history = result["over_training"]
    iterations = [entry["iteration"] for entry in history]
    for key in history[-1]["groups"]:
        means = [_positive_or_nan(entry["groups"].get(key, {}).get("mean_ratio")) for entry in history]
        colour, line = GROUP_STYLES.get(key, (FREQUENCY_COLOURS.get(key), "-"))
        axes.plot(iterations, means, marker="o", color=colour, linestyle=line, label=GROUP_TITLES[key])
    axes.set_yscale("log")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("iteration")
    axes.set_ylabel("mean ratio")
    axes.set_title("over training", fontsize=10)
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)


def tail_figure(result: dict[str, Any]) -> bytes:
    """The paper's Fig. 1 view: ratio per class, frequent to rare, log scale; plus the ratio over training (PNG)."""
    with_history = len(result["over_training"]) > 1
    figure = Figure(figsize=(11.0 if with_history else 8.0, 4.5), layout="constrained")
    if with_history:
        ratio_axes, training_axes = figure.subplots(1, 2, width_ratios=[2.5, 1])
        _training_axes(training_axes, result)
    else:
        ratio_axes = figure.add_subplot()
    _ratio_axes(ratio_axes, result)
    zero = sum(row["ratio"] == 0 for row in result["classes"])
    note = f"\n{zero} classes without positive RoIs (ratio 0) not drawn" if zero else ""
    ratio_axes.set_title(
        f"Positive / discouraging gradient ({result['classifier']}) — {literal(Path(result['run']).name)}, "
        f"{result['images']} {result['split']} images{note}",
        fontsize=10,
    )
    return figure_png(figure)


write_tail = Files(
    "tail",
    {
        "tail.csv": tail_csv,
        "tail_checkpoints.csv": lambda result: tail_checkpoints_csv(result) if result["over_training"] else None,
    },
    {"tail.png": tail_figure},
)

ANALYSIS = Analysis(
    "tail",
    "class level (EQL Fig. 1)",
    "Per class: positive vs discouraging gradient of its logit, plain and with EQL weights (EQL paper Fig. 1).",
    analyze_tail,
    write_tail,
)
