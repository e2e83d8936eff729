"""The training loop on a tiny config: the loss falls, checkpoints resume exactly, eval matches COCOeval."""

from __future__ import annotations

import json

import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from libra_cli.engine.checkpoint import load_checkpoint
from libra_cli.engine.machine import machine_record
from libra_cli.engine.schedule import learning_rate
from libra_cli.engine.setup import apply_train_min_sizes
from libra_cli.engine.train import train
from libra_cli.errors import LibraError
from libra_cli.models.build import build_detector
from libra_cli.workflow import evaluate_run
from tests.conftest import tiny_config


def read_log(run_dir):
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_learning_rate_warmup_and_steps():

    from libra_cli.config import TrainConfig

    train_cfg = TrainConfig(lr=0.1, warmup_iters=10, warmup_factor=0.001, max_iters=100, lr_milestones=(0.5, 0.8))
    assert learning_rate(train_cfg, 0) == pytest.approx(0.1 * 0.001)
    assert learning_rate(train_cfg, 5) == pytest.approx(0.1 * (0.001 * 0.5 + 0.5))
    assert learning_rate(train_cfg, 10) == pytest.approx(0.1)
    assert learning_rate(train_cfg, 50) == pytest.approx(0.01)
    assert learning_rate(train_cfg, 80) == pytest.approx(0.001)
    cosine = TrainConfig(lr=0.1, warmup_iters=0, max_iters=100, schedule="cosine")
    assert learning_rate(cosine, 50) == pytest.approx(0.05)


def test_resume_is_exact_with_repeat_factors_grouping_and_multi_scale(tiny_lvis_benchmark, tmp_path):
    # The data order (repeat factors, grouped batches) and the drawn image sizes survive an interruption.
    options = {
        "data__repeat_factor_thr": 0.3,
        "data__aspect_ratio_grouping": True,
        "model__train_min_sizes": (64, 80, 96),
        "train__max_iters": 5,
        "train__checkpoint_interval": 100,
    }
    full_dir, part_dir = tmp_path / "full", tmp_path / "part"
    train(tiny_config(tiny_lvis_benchmark, full_dir, **options))
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(tiny_lvis_benchmark, part_dir, **options), progress=InterruptAt(2))
    train(tiny_config(tiny_lvis_benchmark, part_dir, **options), resume=True)
    full_log = [r for r in read_log(full_dir) if r["type"] == "train"]
    part_log = [r for r in read_log(part_dir) if r["type"] == "train"]
    assert [r["iter"] for r in part_log] == [1, 2, 3, 4, 5]
    for a, b in zip(full_log, part_log, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
    # Each start, the first and the resume, names the machine it ran on: this one, torch's threads included.
    starts = [r for r in read_log(part_dir) if r["type"] == "start"]
    assert [r["iter"] for r in starts] == [0, 2]
    here = {"device": "cpu", "threads": torch.get_num_threads(), "torch": torch.__version__}
    for start in starts:
        assert {key: start["machine"][key] for key in here} == here
        assert start["machine"] == machine_record(torch.device("cpu"))
    # Another sampling setting would change the data order: a resume with it is refused.
    for changed in ({"data__repeat_factor_thr": 0.5}, {"data__aspect_ratio_grouping": False}):
        with pytest.raises(LibraError, match="the data order depends on it"):
            train(tiny_config(tiny_lvis_benchmark, part_dir, **{**options, **changed}), resume=True)


def test_multi_scale_training_draws_from_the_list_and_evaluates_at_min_size(tiny_benchmark, tmp_path):
    config = tiny_config(
        tiny_benchmark, tmp_path, model__train_min_sizes=(64, 80), model__min_size=96, model__max_size=200
    )
    model = apply_train_min_sizes(build_detector(config, 3), config)
    assert model.transform.min_size == (64, 80)
    images = [torch.rand(3, 60, 90) for _ in range(16)]
    model.transform.train()
    torch.manual_seed(0)
    shorter = {min(size) for size in model.transform(images)[0].image_sizes}
    assert shorter == {64, 80}  # each image draws its own size
    model.transform.eval()
    assert {min(size) for size in model.transform(images)[0].image_sizes} == {96}
    model.transform.train()
    model.transform(images[:1])
    assert model.transform.min_size == (64, 80)
    plain = tiny_config(tiny_benchmark, tmp_path)
    assert apply_train_min_sizes(build_detector(plain, 3), plain).transform.min_size == (96,)


@pytest.mark.slow
def test_tiny_training_lowers_the_loss(tiny_benchmark, tmp_path):
    # Overfit 4 images for 40 iterations: the mean loss of the last 5 must be well below the first 5.
    config = tiny_config(
        tiny_benchmark,
        tmp_path / "run",
        train__max_iters=40,
        train__lr=0.01,
        train__checkpoint_interval=100,
        data__hflip_prob=0.0,
    )
    result = train(config)
    losses = [r["loss"] for r in read_log(tmp_path / "run") if r["type"] == "train"]
    assert len(losses) == 40
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.7 * first, (first, last)
    assert result.iterations == 40
    assert (tmp_path / "run" / "checkpoints" / "best.pt").is_file()


class InterruptAt:
    """A progress sink that presses Ctrl-C once training has completed ``iteration`` steps."""

    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    def start(self, total, completed):
        pass

    def update(self, iteration, record):
        if iteration == self.iteration:
            raise KeyboardInterrupt

    def stop(self):
        pass


@pytest.mark.slow
def test_resumed_run_continues_from_its_checkpoint(tiny_benchmark, tmp_path):
    # A 6-iteration run interrupted (Ctrl-C) after 3 steps and resumed must match the uninterrupted run.
    full_dir, part_dir = tmp_path / "full", tmp_path / "part"
    train(tiny_config(tiny_benchmark, full_dir, train__max_iters=6, train__checkpoint_interval=100))
    with pytest.raises(KeyboardInterrupt):
        train(
            tiny_config(tiny_benchmark, part_dir, train__max_iters=6, train__checkpoint_interval=100),
            progress=InterruptAt(3),
        )
    assert load_checkpoint(part_dir / "checkpoints" / "last.pt")["iteration"] == 3
    with pytest.raises(LibraError, match="already holds a run"):
        train(tiny_config(tiny_benchmark, part_dir, train__max_iters=6))
    result = train(
        tiny_config(tiny_benchmark, part_dir, train__max_iters=6, train__checkpoint_interval=100), resume=True
    )
    assert result.iterations == 6
    full_log = [r for r in read_log(full_dir) if r["type"] == "train"]
    part_log = [r for r in read_log(part_dir) if r["type"] == "train"]
    assert [r["iter"] for r in part_log] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(full_log, part_log, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
    full_state = load_checkpoint(full_dir / "checkpoints" / "last.pt")["model"]
    part_state = load_checkpoint(part_dir / "checkpoints" / "last.pt")["model"]
    for key in full_state:
        torch.testing.assert_close(full_state[key], part_state[key], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_eval_metrics_equal_cocoeval_on_the_written_detections(tiny_benchmark, tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_config(tiny_benchmark, run_dir, train__max_iters=4, model__score_thresh=0.0))
    metrics = evaluate_run(run_dir, checkpoint="last")
    detections = json.loads((run_dir / "eval" / "detections.json").read_text())
    assert len(detections) > 0
    ann = str(tiny_benchmark / "annotations" / "val.json")
    gt = COCO(ann)
    dt = gt.loadRes(str(run_dir / "eval" / "detections.json"))
    evaluator = COCOeval(gt, dt, iouType="bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    names = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
    for name, value in zip(names, evaluator.stats, strict=True):
        expected = None if value < 0 else float(value)
        if expected is None:
            assert metrics["summary"][name] is None
        else:
            assert metrics["summary"][name] == pytest.approx(expected, abs=1e-12)
    # Detections use the dataset's own category ids.
    valid = {c["id"] for c in json.loads(open(ann).read())["categories"]}
    assert {d["category_id"] for d in detections} <= valid
    assert json.loads((run_dir / "eval" / "metrics.json").read_text())["summary"] == metrics["summary"]


@pytest.mark.slow
def test_lvis_run_is_evaluated_with_lvis_metrics_and_logs_eql_tail_classes(tiny_lvis_benchmark, tmp_path):
    run_dir = tmp_path / "run"
    config = tiny_config(
        tiny_lvis_benchmark,
        run_dir,
        train__max_iters=2,
        libra__eql=True,
        libra__eql_lambda=0.5,
        model__score_thresh=0.0001,
    )
    result = train(config)
    assert result.metrics["format"] == "lvis"
    assert {"AP", "APr", "APc", "APf"} <= set(result.metrics["summary"])
    start = read_log(run_dir)[0]
    assert start["type"] == "start" and start["components"] == ["eql"]
    # Tail classes are those whose image frequency is below λ = 0.5, counted from dataset.json; by default
    # (the reference) the frequencies are over the training images that hold a box.
    info = json.loads((run_dir / "dataset.json").read_text())
    assert start["eql"]["freq_mode"] == "annotated"
    assert start["eql"]["freq_denominator"] == info["num_annotated_images"]
    expected = [
        name
        for name, count in zip(info["category_names"], info["images_per_class"], strict=True)
        if count / info["num_annotated_images"] < 0.5
    ]
    assert start["eql"]["tail_classes"] == expected
    tail = [n for name, n in zip(info["category_names"], info["instances_per_class"], strict=True) if name in expected]
    assert start["eql"]["tail_ratio"] == pytest.approx(sum(tail) / sum(info["instances_per_class"]))
    # The start record warns exactly when TR(λ) lies outside 3.03–18.16 % (a third to twice the paper's).
    outside = not 0.0908 / 3 <= start["eql"]["tail_ratio"] <= 2 * 0.0908
    assert (start["eql"]["warning"] is not None) == outside


def test_tail_ratio_warning_band():
    # The paper's λ gives TR = 9.08 %; a TR under a third (3.03 %) or over twice (18.16 %) of that warns.
    from libra_cli.engine.eql_tail import tail_ratio_warning

    assert tail_ratio_warning(0.0853, 0.035) is None
    assert tail_ratio_warning(0.1609, 0.05) is None
    low = tail_ratio_warning(0.0176, 0.02)
    assert low is not None and "TR(λ) = 1.76%, below 3–18%" in low
    high = tail_ratio_warning(0.3878, 0.2)
    assert high is not None and "TR(λ) = 38.78%, above 3–18%" in high
    assert tail_ratio_warning(0.0, 0.0) is None  # λ = 0 is the sigmoid baseline on purpose
