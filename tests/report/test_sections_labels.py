"""Ablation row labels that name every component a row adds, and settings shown as the run resolved them."""

from __future__ import annotations

import pytest

from libra_cli.config import RunConfig, apply_overrides
from libra_cli.report.collect import find_baseline, group_runs, load_runs
from libra_cli.report.document import Document
from libra_cli.report.markdown import render_markdown
from libra_cli.report.sections import add_ablation
from libra_cli.report.tables import resolved_setting, runs_table
from tests.report import coco_summary, make_run, parse_table
from tests.report.test_tables import rows_of

IOU = {"iou_sampling": True}
IOU_BFP = {"iou_sampling": True, "bfp": True}
FULL = {"iou_sampling": True, "bfp": True, "balanced_l1": True}


def ablation_settings(tmp_path, runs: dict[str, dict]) -> list[tuple[str, str]]:
    """(setting, run) of each row of the report's ablation section for runs named → libra switches."""
    paths = [make_run(tmp_path, name, libra=libra, summary=coco_summary(0.3)) for name, libra in runs.items()]
    groups = group_runs(load_runs(paths))
    document = Document("t")
    add_ablation(document, groups, find_baseline(groups, None))
    rows = parse_table(render_markdown(document), "## Ablation (paper Table 2 layout)")
    return [(row["setting"], row["run"]) for row in rows]


def test_full_libra_against_the_baseline_names_all_three_components(tmp_path):
    assert ablation_settings(tmp_path, {"plain": {}, "libra": FULL}) == [
        ("baseline", "plain"),
        ("+ IoU-balanced sampling + BFP + balanced L1", "libra"),
    ]


def test_a_skipped_step_is_named_with_the_next_one(tmp_path):
    # Rows: baseline, IoU sampling, full Libra: the last row adds BFP and balanced L1 to the row above.
    assert ablation_settings(tmp_path, {"full": FULL, "plain": {}, "iou": IOU}) == [
        ("baseline", "plain"),
        ("+ IoU-balanced sampling", "iou"),
        ("+ BFP + balanced L1", "full"),
    ]
    # Baseline and IoU sampling + BFP only.
    assert ablation_settings(tmp_path / "b", {"plain": {}, "bfp": IOU_BFP}) == [
        ("baseline", "plain"),
        ("+ IoU-balanced sampling + BFP", "bfp"),
    ]


def test_every_step_present_keeps_the_papers_names(tmp_path):
    runs = {"plain": {}, "iou": IOU, "bfp": IOU_BFP, "full": FULL}
    assert [setting for setting, _ in ablation_settings(tmp_path, runs)] == [
        "baseline",
        "+ IoU-balanced sampling",
        "+ BFP",
        "+ balanced L1",
    ]


def config(arch: str = "faster_rcnn", **libra) -> RunConfig:
    return apply_overrides(RunConfig(), {"model": {"arch": arch}, "libra": libra}, "test")


@pytest.mark.parametrize(
    ("arch", "libra", "key", "expected"),
    [
        # config.py: bfp_refine_level None → 2 (P4) for Faster R-CNN (P2–P6), 1 (P4) for RetinaNet (P3–P7).
        ("faster_rcnn", {"bfp": True}, "libra.bfp_refine_level", "2 (P4, default)"),
        ("retinanet", {"bfp": True}, "libra.bfp_refine_level", "1 (P4, default)"),
        ("faster_rcnn", {"bfp": True, "bfp_refine_level": 3}, "libra.bfp_refine_level", "3 (P5)"),
        ("retinanet", {"bfp": True, "bfp_refine_level": 0}, "libra.bfp_refine_level", "0 (P3)"),
        # bl1_beta None → 1.0 for Faster R-CNN, 0.11 for RetinaNet.
        ("faster_rcnn", {"balanced_l1": True}, "libra.bl1_beta", "1 (default)"),
        ("retinanet", {"balanced_l1": True}, "libra.bl1_beta", "0.11 (default)"),
        ("retinanet", {"balanced_l1": True, "bl1_beta": 0.5}, "libra.bl1_beta", "0.5"),
        # A component's setting in a run with the component off did not act on training, and says so.
        ("faster_rcnn", {"eql_lambda": 0.035}, "libra.eql_lambda", "0.035 (EQL off)"),
        ("faster_rcnn", {"eql": True, "eql_lambda": 0.035}, "libra.eql_lambda", "0.035"),
        ("retinanet", {}, "libra.bl1_beta", "0.11 (default) (balanced L1 off)"),
        ("faster_rcnn", {"bfp": False}, "libra.bfp_refine_level", "2 (P4, default) (BFP off)"),
        ("faster_rcnn", {"iou_sampling": False}, "libra.pos_balance", "True (IoU-balanced sampling off)"),
        # train_ann None → the default synthetic benchmark, generated in data.synth_dir.
        ("faster_rcnn", {}, "data.train_ann", "synthetic benchmark in data/synth (default)"),
        # Everything else prints as saved.
        ("faster_rcnn", {}, "train.lr", "0.02"),
        ("faster_rcnn", {}, "model.anchor_sizes", "[16, 32, 64, 128, 256]"),
        ("faster_rcnn", {}, "model.rpn_neg_pos_ub", "null"),
    ],
)
def test_resolved_setting(arch, libra, key, expected):
    assert resolved_setting(config(arch, **libra), key) == expected


def test_runs_table_shows_the_resolved_refine_level(tmp_path):
    runs = [
        make_run(tmp_path, "default", libra={"bfp": True}),
        make_run(tmp_path, "p5", libra={"bfp": True, "bfp_refine_level": 3}),
    ]
    rows = {row["run"]: row for row in rows_of(runs_table(group_runs(load_runs(runs))))}
    assert rows["default"]["libra.bfp_refine_level"] == "2 (P4, default)"  # saved as null
    assert rows["p5"]["libra.bfp_refine_level"] == "3 (P5)"
