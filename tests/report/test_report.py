"""``build_report`` end to end on hand-written run directories: the printed numbers are the runs' numbers."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from libra_cli.errors import LibraError
from libra_cli.report import build_report
from tests.report import (
    COCO_NAMES,
    FEATURES_ANALYSIS,
    GRADIENTS_ANALYSIS,
    SAMPLING_ANALYSIS,
    coco_summary,
    make_run,
    parse_table,
)

CATEGORIES = [
    {"category_id": 1, "name": "red circle", "AP": 0.61, "AP50": 0.8, "num_gt": 12},
    {"category_id": 7, "name": "blue star", "AP": 0.22, "AP50": 0.4, "num_gt": 9},
]
# Baseline seeds: AP 0.30 / 0.40 / 0.50 → mean 0.400, sample std sqrt((0.01 + 0 + 0.01) / 2) = 0.100.
BASELINE_AP = (0.30, 0.40, 0.50)
# The cumulative components (paper Table 2) with their own AP and metric step (AP50 = AP + step, …).
LIBRA_RUNS = {
    "bl1": ({"iou_sampling": True, "bfp": True, "balanced_l1": True}, 0.52, 0.03),
    "iou": ({"iou_sampling": True}, 0.43, 0.01),
    "bfp": ({"iou_sampling": True, "bfp": True}, 0.4712, 0.02),
}


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, str, dict[str, Path]]:
    root = tmp_path_factory.mktemp("runs")
    runs = {}
    for seed, ap in enumerate(BASELINE_AP):
        runs[f"baseline/seed{seed}"] = make_run(
            root / "baseline", f"seed{seed}", seed=seed, summary=coco_summary(ap), per_category=CATEGORIES
        )
    for name, (libra, ap, step) in LIBRA_RUNS.items():  # given out of the paper's order on purpose
        summary = coco_summary(ap, step)
        if name == "bfp":
            summary["APs"] = None  # nothing to measure: printed "—"
        analyses = {"sampling": SAMPLING_ANALYSIS} if name == "iou" else {}
        if name == "bl1":
            analyses = {"features": FEATURES_ANALYSIS, "gradients": GRADIENTS_ANALYSIS}
        runs[name] = make_run(root, name, libra=libra, summary=summary, per_category=CATEGORIES, analyses=analyses)
    out = tmp_path_factory.mktemp("report") / "table2"
    path = build_report(list(runs.values()), out)
    return path, path.read_text(), runs


def metrics_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "eval" / "metrics.json").read_text())["summary"]


def test_report_is_written_in_the_out_folder(report):
    path, _, _ = report
    assert path.name == "report.md" and path.is_file()


def test_metrics_table_prints_each_runs_metrics_json(report):
    _, markdown, runs = report
    rows = {row["run"]: row for row in parse_table(markdown, "## COCO metrics")}
    assert set(rows) == {"baseline", "iou", "bfp", "bl1"}
    for name in ("iou", "bfp", "bl1"):
        summary = metrics_of(runs[name])
        assert rows[name]["n"] == "1"
        for metric in COCO_NAMES:
            expected = "—" if summary[metric] is None else f"{summary[metric]:.3f} ± —"
            assert rows[name][metric] == expected, (name, metric)
    assert rows["bfp"]["APs"] == "—"
    assert rows["bfp"]["AP"] == "0.471 ± —"  # 0.4712 printed to 3 decimals


def test_seeds_are_grouped_as_mean_and_sample_std(report):
    _, markdown, _ = report
    rows = {row["run"]: row for row in parse_table(markdown, "## COCO metrics")}
    baseline = rows["baseline"]
    assert baseline["n"] == "3"
    assert baseline["AP"] == "0.400 ± 0.100"
    # AP50 = AP + 0.01 in every seed: mean 0.410, same spread.
    assert baseline["AP50"] == "0.410 ± 0.100"
    runs_table = {row["run"]: row for row in parse_table(markdown, "## Runs")}
    assert runs_table["baseline"]["seeds"] == "0, 1, 2"


def test_ablation_rows_follow_table2_with_deltas_from_the_baseline(report):
    _, markdown, _ = report
    rows = parse_table(markdown, "## Ablation (paper Table 2 layout)")
    assert [row["setting"] for row in rows] == [
        "baseline",
        "+ IoU-balanced sampling",
        "+ BFP",
        "+ balanced L1",
    ]
    assert [row["run"] for row in rows] == ["baseline", "iou", "bfp", "bl1"]
    assert rows[0]["ΔAP"] == "—"
    # ΔAP = run AP − mean baseline AP (0.400): 0.43 → +0.030, 0.4712 → +0.071, 0.52 → +0.120.
    assert [row["ΔAP"] for row in rows[1:]] == ["+0.030", "+0.071", "+0.120"]
    # ΔAP50: baseline mean 0.410; runs 0.43 + 0.01, 0.4712 + 0.02, 0.52 + 0.03.
    assert [row["ΔAP50"] for row in rows[1:]] == ["+0.030", "+0.081", "+0.140"]
    # ΔAPl (index 5): baseline 0.400 + 0.05 = 0.450; bl1 0.52 + 5·0.03 = 0.67 → +0.220.
    assert rows[3]["ΔAPl"] == "+0.220"
    assert rows[2]["ΔAPs"] == "—"  # the run has no APs


def test_paper_table2_is_shown_for_reference(report):
    _, markdown, _ = report
    assert "the paper's COCO numbers" in markdown
    paper = parse_table(markdown, "## Ablation (paper Table 2 layout)", index=1)
    assert [row["AP (%)"] for row in paper] == ["35.9", "36.8", "37.7", "38.5"]
    assert [row["ΔAP"] for row in paper] == ["—", "+0.9", "+1.8", "+2.6"]


def test_every_image_link_resolves_in_the_out_folder(report):
    path, markdown, _ = report
    links = [unquote(link) for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)]
    # 4 per-category charts, 2 training figures, 1 sampling + 2 analysis figures (features, gradients).
    assert len(links) == 9
    for link in links:
        assert not Path(link).is_absolute() and "/" not in link
        assert (path.parent / link).is_file(), link
    assert len(set(links)) == len(links)


def test_every_figure_has_a_one_sentence_caption(report):
    _, markdown, _ = report
    lines = markdown.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("!["):
            caption = lines[index + 2]
            assert caption.startswith("*Figure ") and caption.endswith(".*"), caption
            sentence = caption.strip("*").split(". ", 1)[1]  # after "Figure N. "
            # One sentence: no sentence end followed by a capitalised word ("Fig. 2" is not one).
            assert not re.search(r"[.!?] [A-Z]", sentence), caption


def test_training_table_sums_classification_and_regression_terms(report):
    _, markdown, _ = report
    rows = {row["run"]: row for row in parse_table(markdown, "## Training")}
    # Last window of the fixture log: cls 0.4 + 0.1, box-reg 0.2 + 0.05, loss 0.75, peak memory 120 MB.
    assert rows["iou"]["cls terms"] == "0.500 ± —"
    assert rows["iou"]["box-reg terms"] == "0.250 ± —"
    assert rows["iou"]["cls / reg"] == "2.00"
    assert rows["baseline"]["final loss"] == "0.750 ± 0.000"
    assert rows["baseline"]["peak memory (MB)"] == "120"


def test_analysis_tables_show_the_analysis_json(report):
    _, markdown, _ = report
    shares = parse_table(markdown, "### Sample level: IoU of sampled negatives")
    by_method = {row["method"]: row["IoU > 0.05"] for row in shares}
    assert by_method == {"random": "30.0%", "hard": "65.0%", "iou_balanced": "60.0%"}
    histogram = parse_table(markdown, "### Sample level: IoU of sampled negatives", index=1)
    assert histogram[1] == {
        "IoU bin": "[0.05, 0.25)",
        "random": "20.0%",
        "hard": "40.0%",
        "iou_balanced": "35.0%",
    }
    levels = parse_table(markdown, "### Feature level: pyramid statistics")
    assert levels[0]["level"] == "P2" and levels[0]["energy_share"] == "40.0%"
    assert levels[1]["bfp_residual_ratio"] == "0.5" and levels[1]["RoIs assigned"] == "30"
    gradients = {row["loss"]: row for row in parse_table(markdown, "### Objective level: box-regression gradients")}
    assert gradients["smooth_l1"]["inlier / outlier"] == "0.2"
    assert gradients["balanced_l1"]["parameters"] == "alpha 0.5, gamma 1.5, beta 1"
    assert gradients["balanced_l1"]["inlier share"] == "57.0%"


def test_lvis_runs_get_the_lvis_table(tmp_path):
    summary = {
        "AP": 0.2,
        "AP50": 0.35,
        "AP75": 0.18,
        "APs": None,
        "APm": 0.2,
        "APl": 0.3,
        "APr": 0.05,
        "APc": 0.15,
        "APf": 0.3,
        "AR@300": 0.4,
    }
    categories = [
        {"category_id": 3, "name": "rare thing", "frequency": "r", "AP": 0.05, "AP50": 0.1, "num_gt": 2},
        {"category_id": 4, "name": "frequent thing", "frequency": "f", "AP": 0.3, "AP50": 0.5, "num_gt": 40},
    ]
    run = make_run(
        tmp_path, "eql", libra={"eql": True}, summary=summary, per_category=categories, metrics_format="lvis"
    )
    markdown = build_report([run], tmp_path / "out").read_text()
    row = parse_table(markdown, "## LVIS metrics")[0]
    assert (row["APr"], row["APc"], row["APf"], row["AR@300"]) == ("0.050", "0.150", "0.300", "0.400")
    per_category = parse_table(markdown, "## Per-category AP")
    assert [(r["category"], r["freq"], r["eql"]) for r in per_category] == [
        ("frequent thing", "f", "0.300"),
        ("rare thing", "r", "0.050"),
    ]


def test_html_report_escapes_dataset_strings_and_inlines_images(tmp_path):
    categories = [{"category_id": 1, "name": "<b>x</b>&", "AP": 0.5, "AP50": 0.6, "num_gt": 3}]
    run = make_run(
        tmp_path,
        "a<i>run</i>&",
        summary=coco_summary(0.5),
        per_category=categories,
        analyses={"sampling": SAMPLING_ANALYSIS},
    )
    markdown_path = build_report([run], tmp_path / "out", html=True)
    page = (markdown_path.parent / "report.html").read_text()
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;&amp;" in page
    assert "<i>run</i>" not in page and "a&lt;i&gt;run&lt;/i&gt;&amp;" in page
    sources = re.findall(r'<img src="([^"]*)"', page)
    assert sources and all(source.startswith("data:image/png;base64,") for source in sources)
    assert len(sources) == markdown_path.read_text().count("![")
    # The Markdown shows the name literally too: no tag survives.
    markdown = markdown_path.read_text()
    assert "<b>" not in markdown and "&lt;b>x&lt;/b>&" in markdown


def test_a_folder_that_is_not_a_run_is_a_one_line_error(tmp_path):
    good = make_run(tmp_path, "good", summary=coco_summary(0.3))
    (tmp_path / "empty").mkdir()
    with pytest.raises(LibraError, match="not a run directory") as error:
        build_report([good, tmp_path / "empty"], tmp_path / "out")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()  # nothing written before the input is checked


def test_unknown_baseline_names_the_known_labels(tmp_path):
    run = make_run(tmp_path, "only", summary=coco_summary(0.3))
    with pytest.raises(LibraError, match=r"--baseline nope: not one of the reported runs \(labels: only\)"):
        build_report([run], tmp_path / "out", baseline="nope")
