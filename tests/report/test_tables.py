"""Tables from run groups: mean ± sample std, settings that differ, Δ against the baseline."""

from __future__ import annotations

import pytest

from libra_cli.report.collect import find_baseline, group_runs, load_runs
from libra_cli.report.document import Document
from libra_cli.report.markdown import render_markdown
from libra_cli.report.tables import (
    Stat,
    ablation_table,
    format_stat,
    metrics_table,
    paper_table2,
    runs_table,
    summarize,
)
from tests.report import coco_summary, make_run, parse_table


def rows_of(block) -> list[dict[str, str]]:
    return parse_table(render_markdown(Document("t", [block])), "# t")


def test_summarize_is_mean_and_sample_std():
    # 0.30, 0.40, 0.50: mean 0.40; squared deviations 0.01, 0, 0.01 → / (n − 1 = 2) → std 0.1.
    stat = summarize([0.30, 0.40, 0.50])
    assert stat.n == 3
    assert stat.mean == pytest.approx(0.40)
    assert stat.std == pytest.approx(0.10)
    # Two values 1 and 3: mean 2, sample std sqrt((1 + 1) / 1) = sqrt(2).
    assert summarize([1.0, 3.0]).std == pytest.approx(2**0.5)


def test_summarize_skips_missing_values_and_has_no_spread_for_one():
    assert summarize([0.25, None]) == Stat(0.25, None, 1)
    assert summarize([None, None]) is None


def test_format_stat():
    assert format_stat(Stat(0.4, 0.1, 3), with_std=True) == "0.400 ± 0.100"
    assert format_stat(Stat(0.4567, None, 1), with_std=True) == "0.457 ± —"
    assert format_stat(Stat(0.4567, None, 1), with_std=False) == "0.457"
    assert format_stat(None, with_std=True) == "—"


def test_single_runs_print_plain_values(tmp_path):
    runs = [
        make_run(tmp_path, "a", summary=coco_summary(0.3125)),
        make_run(tmp_path, "b", seed=1, summary=None),
    ]
    # Different seeds but run "b" has no metrics: still one group of n = 2 runs, one of them evaluated.
    groups = group_runs(load_runs(runs))
    assert len(groups) == 1 and len(groups[0].runs) == 2
    row = rows_of(metrics_table(groups))[0]
    assert row["n"] == "1"  # evaluated runs
    assert row["AP"] == "0.312 ± —"  # the group has 2 runs, so the spread column is shown


def test_runs_table_lists_only_the_settings_that_differ(tmp_path):
    runs = [
        make_run(tmp_path, "lr02", summary=coco_summary(0.3)),
        make_run(tmp_path, "lr01", summary=coco_summary(0.2), extra={"train": {"lr": 0.01}}),
        make_run(tmp_path, "bfp", libra={"bfp": True}, summary=coco_summary(0.2)),
    ]
    rows = {row["run"]: row for row in rows_of(runs_table(group_runs(load_runs(runs))))}
    # train.lr differs; train.out always differs and libra.bfp has its own switch column: neither is listed.
    assert rows["lr02"]["train.lr"] == "0.02" and rows["lr01"]["train.lr"] == "0.01"
    assert "train.out" not in rows["lr02"] and "libra.bfp" not in rows["lr02"]
    assert (rows["bfp"]["BFP"], rows["lr02"]["BFP"]) == ("✓", "—")
    assert rows["bfp"]["arch"] == "faster_rcnn resnet18"
    assert rows["bfp"]["iters"] == "40"


def test_explicit_baseline_changes_the_deltas_and_the_row_names(tmp_path):
    runs = [
        make_run(tmp_path, "plain", summary=coco_summary(0.30)),
        make_run(tmp_path, "bfp", libra={"bfp": True}, summary=coco_summary(0.36)),
    ]
    groups = group_runs(load_runs(runs))
    assert find_baseline(groups, None).label == "plain"  # the run with every component off
    baseline = find_baseline(groups, "bfp")
    table, cumulative = ablation_table(groups, baseline)
    rows = rows_of(table)
    # Not the paper's cumulative order (the baseline has BFP on): rows named by their components.
    assert not cumulative
    assert [(row["setting"], row["run"], row["ΔAP"]) for row in rows] == [
        ("baseline (BFP)", "bfp", "—"),
        ("no components", "plain", "-0.060"),
    ]


def test_baseline_by_run_directory(tmp_path):
    runs = [make_run(tmp_path, "a", summary=coco_summary(0.3)), make_run(tmp_path, "b", libra={"bfp": True})]
    groups = group_runs(load_runs(runs))
    assert find_baseline(groups, str(tmp_path / "b")).label == "b"


def test_no_baseline_when_every_run_has_a_component(tmp_path):
    runs = [make_run(tmp_path, "a", libra={"bfp": True}), make_run(tmp_path, "b", libra={"eql": True})]
    assert find_baseline(group_runs(load_runs(runs)), None) is None


def test_paper_table2_numbers_and_deltas():
    rows = rows_of(paper_table2())
    # Libra R-CNN Table 2: APl 46.4 → 48.2 → 49.3 → 50.5, Δ +1.8, +2.9, +4.1 against the baseline.
    assert [row["APl (%)"] for row in rows] == ["46.4", "48.2", "49.3", "50.5"]
    assert [row["ΔAPl"] for row in rows] == ["—", "+1.8", "+2.9", "+4.1"]
    assert rows[1]["ΔAPs"] == "-0.1"  # IoU-balanced sampling: APs 21.2 → 21.1


def test_an_ohem_run_is_labelled_ohem_by_itself(tmp_path):
    runs = [
        make_run(tmp_path, "plain", summary=coco_summary(0.30)),
        make_run(tmp_path, "ohem", libra={"ohem": True}, summary=coco_summary(0.32)),
    ]
    groups = group_runs(load_runs(runs))
    table, cumulative = ablation_table(groups, find_baseline(groups, None))
    # OHEM is no step of the paper's Table 2, so the rows are named by their components: "OHEM" alone.
    assert not cumulative
    assert [(row["setting"], row["run"], row["ΔAP"]) for row in rows_of(table)] == [
        ("baseline (no components)", "plain", "—"),
        ("OHEM", "ohem", "+0.020"),
    ]
    rows = {row["run"]: row for row in rows_of(runs_table(groups))}
    assert (rows["ohem"]["OHEM"], rows["plain"]["OHEM"]) == ("✓", "—")
    assert "libra.ohem" not in rows["ohem"]  # a switch has its own column, not a "setting that differs"
