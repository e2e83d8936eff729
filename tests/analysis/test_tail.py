"""Class-level diagnostic: positive vs discouraging gradients per class, plain and with EQL weights."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from libra_cli.analysis.tail import analyze_tail, eql_weights, group_summaries, tail_gradient_sums
from libra_cli.cli import app
from libra_cli.data.build import build_eval_dataset
from libra_cli.engine.train import train
from libra_cli.losses import equalization_loss
from libra_cli.report import build_report
from libra_cli.rundir import RunLayout
from tests.analysis.conftest import make_fresh_run
from tests.conftest import tiny_config
from tests.report import parse_table

runner = CliRunner()

EQL_LAMBDA = 0.3  # on the tiny long-tailed benchmark (12 images), classes in fewer than 3.6 images are tail
ROIS_PER_IMAGE = 64  # tiny_config's roi_batch_size_per_image
POSITIVES_PER_IMAGE = 16  # 64 × 0.25


def logits_of(probabilities: list[list[float]], classifier: str) -> torch.Tensor:
    """Logits whose softmax (rows summing to 1) or sigmoids are the given probabilities."""
    p = torch.tensor(probabilities, dtype=torch.float64)
    return p.log() if classifier == "softmax" else torch.logit(p)


# ---- by hand ------------------------------------------------------------------------------------------------


def test_softmax_sums_by_hand():
    # Softmax over (background, class 1, class 2); |∂L/∂z_j| = |p_j − y_j|.
    logits = logits_of([[0.2, 0.5, 0.3], [0.1, 0.3, 0.6], [0.6, 0.3, 0.1]], "softmax")
    labels = torch.tensor([1, 2, 0])
    sums = tail_gradient_sums(logits, labels, "softmax")
    # Class 1: positive |0.5 − 1| = 0.5 (RoI 0); from class 2's RoI 1: 0.3; from background RoI 2: 0.3.
    # Class 2: positive |0.6 − 1| = 0.4 (RoI 1); from class 1's RoI 0: 0.3; from background RoI 2: 0.1.
    assert sums["positive"].tolist() == pytest.approx([0.5, 0.4])
    assert sums["negative_foreground"].tolist() == pytest.approx([0.3, 0.3])
    assert sums["negative_background"].tolist() == pytest.approx([0.3, 0.1])
    assert sums["positive_rois"].tolist() == [1, 1]
    assert "eql_positive" not in sums  # no tail mask, no weighted sums


def test_softmax_sums_with_eql_weights_by_hand():
    logits = logits_of([[0.2, 0.5, 0.3], [0.1, 0.3, 0.6], [0.6, 0.3, 0.1]], "softmax")
    sums = tail_gradient_sums(logits, torch.tensor([1, 2, 0]), "softmax", torch.tensor([False, True]))
    # Class 2 is tail: the 0.3 it gets from class 1's RoI is dropped, the 0.1 from background stays.
    assert sums["eql_negative_foreground"].tolist() == pytest.approx([0.3, 0.0])
    assert sums["eql_negative_background"].tolist() == pytest.approx([0.3, 0.1])
    assert sums["eql_positive"].tolist() == pytest.approx([0.5, 0.4])


SIGMOID_PROBABILITIES = [[0.9, 0.2], [0.7, 0.4], [0.1, 0.5], [0.3, 0.25]]
SIGMOID_LABELS = [1, 1, 2, 0]


def test_sigmoid_sums_by_hand():
    # |∂L/∂z_j| = |σ(z_j) − y_j| for the two class logits.
    logits = logits_of(SIGMOID_PROBABILITIES, "sigmoid")
    sums = tail_gradient_sums(logits, torch.tensor(SIGMOID_LABELS), "sigmoid")
    # Class 1: positive (1 − 0.9) + (1 − 0.7) = 0.4; from class 2's RoI 2: 0.1; from background RoI 3: 0.3.
    # Class 2: positive 1 − 0.5 = 0.5; from class 1's RoIs 0 and 1: 0.2 + 0.4 = 0.6; from background: 0.25.
    assert sums["positive"].tolist() == pytest.approx([0.4, 0.5])
    assert sums["negative_foreground"].tolist() == pytest.approx([0.1, 0.6])
    assert sums["negative_background"].tolist() == pytest.approx([0.3, 0.25])
    assert sums["positive_rois"].tolist() == [2, 1]


def test_eql_weights_remove_a_tail_class_discouraging_gradient_from_foreground():
    logits = logits_of(SIGMOID_PROBABILITIES, "sigmoid")
    tail = torch.tensor([False, True])
    sums = tail_gradient_sums(logits, torch.tensor(SIGMOID_LABELS), "sigmoid", tail)
    # Class 2 (tail): the 0.6 from class 1's foreground RoIs becomes 0, the 0.25 from background stays,
    # so its ratio rises from 0.5 / 0.85 to 0.5 / 0.25 = 2. Class 1 (not tail) keeps everything: 0.4 / 0.4.
    assert sums["eql_negative_foreground"].tolist() == pytest.approx([0.1, 0.0])
    assert sums["eql_negative_background"].tolist() == pytest.approx([0.3, 0.25])
    assert sums["eql_positive"].tolist() == pytest.approx([0.4, 0.5])
    # w_j = 1 − E(r)·T(f_j)·(1 − y_j): 0 only for the tail class 2 on class 1's RoIs 0 and 1.
    assert eql_weights(torch.tensor(SIGMOID_LABELS), tail).tolist() == [[1, 0], [1, 0], [1, 1], [1, 1]]


def test_sums_match_autograd():
    # Random logits, both classifiers: the analytic |p − y| / w·|σ − y| equal the autograd gradients of the
    # summed training losses (cross-entropy; the equalization loss with a tail mask).
    generator = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 1, 2, 3, 0, 3, 3, 1])
    tail = torch.tensor([False, True, True])
    for classifier, width in (("softmax", 4), ("sigmoid", 3)):
        logits = torch.randn(8, width, generator=generator, dtype=torch.float64, requires_grad=True)
        if classifier == "softmax":
            loss = F.cross_entropy(logits, labels, reduction="sum")
        else:
            loss = equalization_loss(logits, labels, tail, reduction="sum")
        (grad,) = torch.autograd.grad(loss, logits)
        grad = grad[:, 1:].abs() if classifier == "softmax" else grad.abs()
        targets = F.one_hot(labels, 4)[:, 1:].bool()
        foreground = (labels > 0).unsqueeze(1)
        sums = tail_gradient_sums(logits.detach(), labels, classifier, tail)
        prefix = "eql_" if classifier == "sigmoid" else ""  # cross-entropy has no weights: compare the plain sums
        assert sums[f"{prefix}positive"].tolist() == pytest.approx((grad * targets).sum(0).tolist())
        assert sums[f"{prefix}negative_foreground"].tolist() == pytest.approx(
            (grad * (~targets & foreground)).sum(0).tolist()
        )
        assert sums[f"{prefix}negative_background"].tolist() == pytest.approx((grad * ~foreground).sum(0).tolist())


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="classifier"):
        tail_gradient_sums(torch.zeros(2, 3), torch.tensor([0, 1]), "softmax_v2")
    with pytest.raises(ValueError, match=r"0\.\.2"):  # softmax [R, 3] has C = 2 classes
        tail_gradient_sums(torch.zeros(2, 3), torch.tensor([0, 3]), "softmax")
    with pytest.raises(ValueError, match="tail_mask"):
        tail_gradient_sums(torch.zeros(2, 3), torch.tensor([0, 1]), "sigmoid", torch.tensor([True]))


def test_group_summaries_by_hand():
    rows = [
        {"frequency": "f", "tail": False, "positive_rois": 4, "positive": 2.0, "negative": 1.0, "ratio": 2.0},
        {"frequency": "r", "tail": True, "positive_rois": 1, "positive": 0.5, "negative": 5.0, "ratio": 0.1},
        {"frequency": "r", "tail": True, "positive_rois": 0, "positive": 0.0, "negative": 5.0, "ratio": 0.0},
    ]
    for row in rows:
        row["eql_ratio"] = row["ratio"] * (2 if row["tail"] else 1)
    groups = group_summaries(rows)
    assert list(groups) == ["f", "r", "tail", "all"]  # no common class: no "c" group
    # Rare: mean of 0.1 and 0 = 0.05; pooled (0.5 + 0) / (5 + 5) = 0.05; with EQL mean of 0.2 and 0 = 0.1.
    assert groups["r"]["mean_ratio"] == pytest.approx(0.05)
    assert groups["r"]["pooled_ratio"] == pytest.approx(0.05)
    assert groups["r"]["mean_eql_ratio"] == pytest.approx(0.1)
    # All: mean (2 + 0.1 + 0) / 3 = 0.7; pooled 2.5 / 11.
    assert groups["all"]["mean_ratio"] == pytest.approx(0.7)
    assert groups["all"]["pooled_ratio"] == pytest.approx(2.5 / 11)
    assert groups["all"]["positive_rois"] == 5


# ---- end to end -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def eql_run(tiny_lvis_benchmark, tmp_path_factory):
    """EQL Faster R-CNN on the tiny long-tailed LVIS-format benchmark, trained 1 iteration with λ = 0.3,
    plus its untrained weights kept as ``checkpoints/init.pt`` (iteration 0): two points over training."""
    root = tmp_path_factory.mktemp("tail_runs")
    run = root / "eql"
    config = tiny_config(
        tiny_lvis_benchmark, run, train__max_iters=1, train__seed=0, libra__eql=True, libra__eql_lambda=EQL_LAMBDA
    )
    train(config)
    fresh = make_fresh_run(run, root / "eql_fresh", {})
    shutil.copy(RunLayout(fresh).last, RunLayout(run).checkpoints / "init.pt")
    return run


def gt_instances(run, num_images: int) -> list[int]:
    """Per class, the GT boxes in the first ``num_images`` training images (the ones an analysis reads)."""
    info = json.loads(RunLayout(run).dataset.read_text())
    dataset = build_eval_dataset(info["train_ann"], info["train_images"], info["category_ids"], "error")
    counts = [0] * len(info["category_ids"])
    for record in dataset.records[:num_images]:
        for label in record.labels:
            counts[label - 1] += 1
    return counts


@pytest.mark.slow
def test_tail_counts_on_a_trained_softmax_run(tiny_run):
    result = analyze_tail(tiny_run, num_images=4, batch_size=2, checkpoint="last")
    assert result["classifier"] == "softmax" and result["eql"]["trained_with_eql"] is False
    # Every image has more than 64 proposals, so the sampler fills its 64 RoIs per image.
    assert result["num_rois"] == 4 * ROIS_PER_IMAGE
    by_label = {row["label"]: row for row in result["classes"]}
    assert sum(row["positive_rois"] for row in result["classes"]) == result["num_positive_rois"]
    assert result["num_positive_rois"] <= 4 * POSITIVES_PER_IMAGE
    # The GT boxes join the proposals (IoU 1), so each is at least one positive of its class (≤ 3 per image).
    for label, count in enumerate(gt_instances(tiny_run, 4), start=1):
        assert by_label[label]["positive_rois"] >= count
    # Sorted by training images, most first; λ = 1.76e-3 makes no class tail here, so EQL changes nothing.
    images = [row["images"] for row in result["classes"]]
    assert images == sorted(images, reverse=True)
    for row in result["classes"]:
        assert row["tail"] is False and row["eql_ratio"] == row["ratio"]
        assert row["ratio"] == pytest.approx(
            row["positive"] / (row["negative_foreground"] + row["negative_background"])
        )
    # best.pt and last.pt hold iteration 1: one point over training.
    assert [entry["iteration"] for entry in result["over_training"]] == [1]


@pytest.mark.slow
def test_untrained_eql_classifier_gives_the_prior_gradients(eql_run):
    # The EQL classifier starts with every sigmoid at the prior 0.001 (weights N(0, 0.01²)), so each
    # positive RoI gives its class ≈ 1 − 0.001 and every other RoI ≈ 0.001.
    result = analyze_tail(
        eql_run, num_images=4, batch_size=2, checkpoint=str(eql_run / "checkpoints" / "init.pt"), over_training=False
    )
    assert result["checkpoint"]["iteration"] == 0 and result["classifier"] == "sigmoid"
    assert result["num_rois"] == 4 * ROIS_PER_IMAGE
    positives, background = result["num_positive_rois"], result["num_rois"] - result["num_positive_rois"]
    for row in result["classes"]:
        assert row["positive"] == pytest.approx(0.999 * row["positive_rois"], rel=2e-3, abs=1e-9)
        # The features move each logit by about ±0.1 around the bias: σ is 0.001 within some 10–30 %.
        from_foreground = 0.001 * (positives - row["positive_rois"])
        assert row["negative_foreground"] == pytest.approx(from_foreground, rel=0.3, abs=1e-9)
        assert row["negative_background"] == pytest.approx(0.001 * background, rel=0.3)


@pytest.mark.slow
def test_tail_command_on_an_eql_run(eql_run):
    result = runner.invoke(app, ["analyze", "tail", str(eql_run), "--images", "4", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert "rare" in result.output and "tail (f < λ)" in result.output and "lowest ratio" in result.output
    folder = eql_run / "analysis"
    payload = json.loads((folder / "tail.json").read_text())
    assert payload["analysis"] == "tail" and payload["classifier"] == "sigmoid"
    assert payload["eql"]["trained_with_eql"] is True and payload["eql"]["lambda"] == EQL_LAMBDA
    classes = payload["classes"]
    assert len(classes) == 6 and {row["frequency"] for row in classes} <= {"r", "c", "f"}
    tail = [row for row in classes if row["tail"]]
    # The trained mask is T_λ: the classes with f_j < 0.3, and there are some.
    assert tail and all((row["image_frequency"] < EQL_LAMBDA) == row["tail"] for row in classes)
    assert payload["eql"]["tail_classes"] == len(tail)
    for row in classes:
        if row["tail"]:  # EQL drops the discouraging gradient from other classes' foreground, keeps background
            assert row["eql_negative_foreground"] == 0.0 and row["negative_foreground"] > 0
            assert row["eql_negative"] == pytest.approx(row["negative_background"])
        else:
            assert row["eql_ratio"] == row["ratio"]
    assert set(payload["groups"]) >= {"r", "tail", "all"}
    # init.pt (iteration 0) and best/last (iteration 1, measured once): two points, the last the main result.
    history = payload["over_training"]
    assert [entry["iteration"] for entry in history] == [0, 1]
    assert history[1]["ratios"] == [row["ratio"] for row in classes]
    assert len((folder / "tail.csv").read_text().splitlines()) == 1 + 6
    assert len((folder / "tail_checkpoints.csv").read_text().splitlines()) == 1 + 2 * 6
    assert (folder / "tail.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # libra report shows the analysis: one table row per group, and the figure.
    markdown = build_report([eql_run], eql_run.parent / "report").read_text()
    rows = parse_table(markdown, "### Class level: positive vs discouraging gradients")
    assert [row["group"] for row in rows] == [group["title"] for group in payload["groups"].values()]
    mean = payload["groups"]["all"]["mean_ratio"]
    assert rows[-1]["mean ratio"] == f"{mean:.4g}" and rows[-1]["EQL weights"] == "trained"
    assert "tail.png)" in markdown


def test_tail_refuses_retinanet_in_one_line(fresh_retinanet_run):
    result = runner.invoke(app, ["analyze", "tail", str(fresh_retinanet_run), "--images", "1"])
    assert result.exit_code == 2
    assert "no RoI classifier" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1  # one error line (stdout has the progress bar)


def test_tail_refuses_zero_images(tiny_run):
    result = runner.invoke(app, ["analyze", "tail", str(tiny_run), "--images", "0"])
    assert result.exit_code == 2 and "--images" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
