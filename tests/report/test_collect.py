"""Reading run directories: labels, seed groups, loss terms, broken inputs as one-line errors."""

from __future__ import annotations

import pytest

from libra_cli.errors import LibraError
from libra_cli.report.collect import (
    flatten_config,
    group_label,
    group_runs,
    load_run,
    load_runs,
    run_label,
    split_loss_terms,
)
from libra_cli.rundir import RunLayout
from tests.report import coco_summary, make_run


def test_flatten_config_uses_dotted_names_and_tuples():
    flat = flatten_config({"model": {"arch": "retinanet", "anchor_sizes": [16, 32]}, "train": {"seed": 3}})
    assert flat == {"model.arch": "retinanet", "model.anchor_sizes": (16, 32), "train.seed": 3}


def test_labels_of_ablate_run_dirs(tmp_path):
    assert run_label(tmp_path / "grid" / "bfp" / "seed2") == "bfp/seed2"
    assert run_label(tmp_path / "runs" / "libra") == "libra"
    assert group_label(["bfp/seed0", "bfp/seed1", "bfp/seed2"]) == "bfp"
    assert group_label(["bfp/seed0"]) == "bfp"
    assert group_label(["seed0"]) == "seed0"
    assert group_label(["libra_s0", "libra_s1"]) == "libra_s"
    assert group_label(["x", "y"]) == "x+y"


def test_runs_differing_only_by_seed_form_one_group(tmp_path):
    dirs = [make_run(tmp_path / "base", f"seed{seed}", seed=seed, summary=coco_summary(0.3)) for seed in (2, 0, 1)]
    dirs.append(make_run(tmp_path, "other_lr", extra={"train": {"lr": 0.01}}))
    dirs.append(make_run(tmp_path, "bfp", libra={"bfp": True}))
    groups = group_runs(load_runs(dirs))
    assert [(group.label, group.seeds) for group in groups] == [
        ("base", [0, 1, 2]),
        ("other_lr", [0]),
        ("bfp", [0]),
    ]


def test_same_folder_names_are_made_unique(tmp_path):
    dirs = [make_run(tmp_path / "x", "run"), make_run(tmp_path / "y", "run", extra={"train": {"lr": 0.01}})]
    assert [run.label for run in load_runs(dirs)] == ["x/run", "y/run"]


def test_loss_terms_split_into_classification_and_regression():
    faster = {
        "type": "train",
        "iter": 5,
        "lr": 0.1,
        "loss": 1.0,
        "loss_classifier": 0.5,
        "loss_box_reg": 0.2,
        "loss_objectness": 0.25,
        "loss_rpn_box_reg": 0.05,
        "time_per_iter": 1.0,
        "memory_mb": 3.0,
    }
    assert split_loss_terms(faster) == (
        {"loss_classifier": 0.5, "loss_objectness": 0.25},
        {"loss_box_reg": 0.2, "loss_rpn_box_reg": 0.05},
    )
    retina = {"type": "train", "iter": 5, "loss": 0.9, "classification": 0.7, "bbox_regression": 0.2}
    assert split_loss_terms(retina) == ({"classification": 0.7}, {"bbox_regression": 0.2})


def test_a_torn_last_log_line_ends_the_log(tmp_path):
    layout = RunLayout(tmp_path)
    layout.log.write_text('{"type": "train", "iter": 1}\n{"type": "train", "iter": 2}\n{"type": "tr')
    assert [record["iter"] for record in layout.read_log()] == [1, 2]
    assert RunLayout(tmp_path / "missing").read_log() == []


def test_not_a_run_directory(tmp_path):
    with pytest.raises(LibraError, match="folder not found"):
        load_run(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LibraError, match=r"empty: not a run directory \(no config.yaml\)"):
        load_run(tmp_path / "empty")
    with pytest.raises(LibraError, match="no run directories"):
        load_runs([])


def test_broken_metrics_is_a_one_line_error_and_broken_analysis_is_skipped(tmp_path):
    run_dir = make_run(tmp_path, "r", summary=coco_summary(0.3))
    (run_dir / "analysis").mkdir()
    (run_dir / "analysis" / "features.json").write_text("{not json")
    record = load_run(run_dir)
    assert record.analyses == {} and "features.json: not valid JSON" in record.analysis_errors["features"]
    (run_dir / "eval" / "metrics.json").write_text("[1, 2]")
    with pytest.raises(LibraError, match="metrics.json: expected a JSON object") as error:
        load_run(run_dir)
    assert "\n" not in str(error.value)


# --- unstable training ----------------------------------------------------------------------------------


def _train_log(losses: list[float]) -> list[dict]:
    return [{"type": "train", "iter": 20 * (index + 1), "lr": 0.02, "loss": loss} for index, loss in enumerate(losses)]


def test_a_loss_ten_times_the_median_marks_the_run_unstable_and_the_report_says_so(tmp_path):
    from libra_cli.report import build_report
    from libra_cli.report.collect import LossSpike, load_run, loss_spike

    # Losses 2.0, 1.0, 1.0, 83.9, 0.9, 0.9, 0.9: the median is 1.0, and 83.9 ≥ 10 × 1.0 at iteration 80.
    diverged = make_run(
        tmp_path, "diverged", seed=1, summary=coco_summary(0.0), log=_train_log([2.0, 1.0, 1.0, 83.9, 0.9, 0.9, 0.9])
    )
    assert loss_spike(load_run(diverged)) == LossSpike(iteration=80, loss=83.9, median=1.0)
    # A warm-up start 2.6 × the median (2.4 against 0.92) is no spike.
    healthy = make_run(tmp_path, "healthy", summary=coco_summary(0.5), log=_train_log([2.4, 1.0, 0.92, 0.9, 0.8]))
    assert loss_spike(load_run(healthy)) is None

    markdown = build_report([healthy, diverged], tmp_path / "report").read_text()
    assert "diverged: training went unstable." in markdown
    assert "reached 83.9 at iteration 80, at least 10× its median 1; it ended at AP 0.000" in markdown
    assert "healthy: training went unstable" not in markdown
