"""The report's "Where the errors go" section from hand-written ``analysis/errors.json`` files: the curve
areas, the error-kind gaps between successive curves, TIDE's ΔAP and each kind's change against the
baseline, all worked out by hand below; and the same tables and figures in the HTML report."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from libra_cli.report import build_report
from tests.report import make_run, parse_table

HEADING = "## Where the errors go"
CURVES = ("C75", "C50", "Loc", "Sim", "Oth", "BG", "FN")


def errors_json(curves: tuple, tide: dict[str, float], note: str | None = None) -> dict:
    overall = dict(zip(CURVES, curves, strict=True))
    return {
        "analysis": "errors",
        "run": "x",
        "ann": "val.json",
        "format": "coco",
        "num_images": 4,
        "num_detections": 40,
        "note": note,
        "coco": {"kinds": list(CURVES), "overall": overall, "per_category": [], "recall": [], "curves": {}},
        "tide": {
            "ap50": curves[1],
            "delta_ap": {"both": 0.01, "dupe": 0.0, **tide},
            "counts": {"cls": 1, "loc": 2, "both": 0, "dupe": 0, "bkg": 3, "miss": 4},
        },
    }


BASELINE_SEED0 = errors_json(
    (0.30, 0.50, 0.60, 0.62, 0.66, 0.80, 1.0), {"cls": 0.04, "loc": 0.08, "bkg": 0.10, "miss": 0.15}
)
BASELINE_SEED1 = errors_json(
    (0.28, 0.50, 0.60, 0.62, 0.66, 0.80, 1.0), {"cls": 0.04, "loc": 0.10, "bkg": 0.10, "miss": 0.15}
)
BL1_CURVES = (0.38, 0.54, 0.62, 0.64, 0.68, 0.84, 1.0)
TIDE = {"cls": 0.05, "loc": 0.05, "bkg": 0.09, "miss": 0.14}
BL1 = errors_json(BL1_CURVES, TIDE)
# No supercategories: Sim is undefined.
EQL = errors_json(
    (0.30, 0.50, 0.60, None, 0.63, 0.80, 1.0), {"cls": 0.02, "loc": 0.08, "bkg": 0.10, "miss": 0.15}, "LVIS note"
)  # fmt: skip


def make_runs(root: Path, with_baseline: bool = True) -> list[Path]:
    runs = []
    if with_baseline:
        for seed, data in enumerate((BASELINE_SEED0, BASELINE_SEED1)):
            runs.append(make_run(root / "baseline", f"seed{seed}", seed=seed, log=[], analyses={"errors": data}))
    runs.append(make_run(root, "bl1", libra={"balanced_l1": True}, log=[], analyses={"errors": BL1}))
    runs.append(make_run(root, "eql", libra={"eql": True}, log=[], analyses={"errors": EQL}))
    runs.append(make_run(root, "plain", libra={"bfp": True}, log=[]))  # no errors.json: not listed
    return runs


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[str, str, list[Path], Path]:
    root = tmp_path_factory.mktemp("runs")
    runs = make_runs(root)
    out = tmp_path_factory.mktemp("report")
    path = build_report(runs, out, html=True)
    return path.read_text(), (out / "report.html").read_text(), runs, out


def number(cell: str) -> float | None:
    """A table cell's value: the mean of "mean ± std" cells (configurations over seeds)."""
    mean = cell.split(" ± ")[0]
    return None if mean == "—" else float(mean)


def test_curve_areas_are_printed_per_run(report):
    markdown, _, _, _ = report
    rows = {row["run"]: row for row in parse_table(markdown, HEADING, 0)}
    assert list(rows) == ["baseline", "bl1", "eql"]  # one row per configuration, over its seeds
    # bl1 is one run among configurations with seeds: its std is "—".
    assert [rows["bl1"][kind] for kind in CURVES] == [
        f"{value} ± —" for value in ("0.380", "0.540", "0.620", "0.640", "0.680", "0.840", "1.000")
    ]
    # The baseline's two seeds: C75 0.30 and 0.28 → mean 0.29, sample std √(2 × 0.01²) = 0.0141; C50 0.50 twice.
    assert (rows["baseline"]["n"], rows["baseline"]["C75"], rows["baseline"]["C50"]) == (
        "2",
        "0.290 ± 0.014",
        "0.500 ± 0.000",
    )
    assert rows["eql"]["Sim"] == "—"


def test_error_kind_gaps_are_the_differences_of_successive_curves(report):
    markdown, _, _, _ = report
    rows = {row["run"]: row for row in parse_table(markdown, HEADING, 1)}
    columns = [
        "localisation at strict IoU: C50 − C75",
        "poor localisation: Loc − C50",
        "confusion with similar classes: Sim − Loc",
        "confusion with other classes: Oth − Sim",
        "background false positives: BG − Oth",
        "missed objects: FN − BG",
    ]
    # bl1: .54 − .38, .62 − .54, .64 − .62, .68 − .64, .84 − .68, 1 − .84
    assert [number(rows["bl1"][column]) for column in columns] == pytest.approx([0.16, 0.08, 0.02, 0.04, 0.16, 0.16])
    # eql has no Sim: Sim − Loc is "—" and Oth − Sim falls back to Oth − Loc = .63 − .60
    eql = [number(rows["eql"][column]) for column in columns]
    assert eql[2] is None
    assert [eql[0], eql[1], eql[3], eql[4], eql[5]] == pytest.approx([0.20, 0.10, 0.03, 0.17, 0.20])
    assert "Oth − Sim is Oth − Loc, all class confusion" in markdown


def test_tide_delta_ap_is_printed_per_run(report):
    markdown, _, _, _ = report
    rows = {row["run"]: row for row in parse_table(markdown, HEADING, 2)}
    assert rows["bl1"]["TIDE AP50"] == "0.540 ± —"
    kinds = ("cls", "loc", "both", "dupe", "bkg", "miss")
    assert [number(rows["bl1"][f"ΔAP {kind}"]) for kind in kinds] == [0.05, 0.05, 0.01, 0.0, 0.09, 0.14]
    # The baseline's TIDE loc over its seeds: 0.08 and 0.10 → 0.090 ± 0.014.
    assert rows["baseline"]["ΔAP loc"] == "0.090 ± 0.014"


def test_change_against_the_baseline_mean(report):
    markdown, _, _, _ = report
    rows = {row["run"]: row for row in parse_table(markdown, HEADING, 3)}
    assert list(rows) == ["bl1", "eql"]  # the baseline's own runs are the reference, not rows
    columns = [
        "Δ localisation (Loc − C75)",
        "Δ TIDE loc",
        "Δ class confusion (Oth − Loc)",
        "Δ TIDE cls",
        "Δ background (BG − Oth)",
        "Δ TIDE bkg",
        "Δ missed (FN − BG)",
        "Δ TIDE miss",
    ]
    # Baseline means over its two seeds: Loc − C75 (.30 + .32) / 2 = .31, TIDE loc (.08 + .10) / 2 = .09,
    # Oth − Loc .06, TIDE cls .04, BG − Oth .14, TIDE bkg .10, FN − BG .20, TIDE miss .15.
    # bl1: Loc − C75 = .24, Oth − Loc = .06, BG − Oth = .16, FN − BG = .16.
    expected_bl1 = [-0.07, -0.04, 0.0, 0.01, 0.02, -0.01, -0.04, -0.01]
    # eql: Loc − C75 = .30, Oth − Loc = .03, BG − Oth = .17, FN − BG = .20.
    expected_eql = [-0.01, -0.01, -0.03, -0.02, 0.03, 0.0, 0.0, 0.0]
    assert [number(rows["bl1"][column]) for column in columns] == pytest.approx(expected_bl1, abs=5e-4)
    assert [number(rows["eql"][column]) for column in columns] == pytest.approx(expected_eql, abs=5e-4)
    assert rows["bl1"]["its components target"] == "localisation"
    assert rows["eql"]["its components target"] == "class confusion (rare classes)"
    section = markdown.split(HEADING, 1)[1].split("\n## ", 1)[0]
    for expectation in (
        "balanced L1 should shrink the localisation error",
        "IoU-balanced sampling the background (hard negative) error",
        "BFP helps objects of every size",
        "EQL should reduce class confusion on the rare classes",
    ):
        assert expectation in section
    assert "eql: LVIS note" in section


def test_a_note_shared_by_several_runs_is_printed_once(tmp_path):
    # Three LVIS runs carry the same note and one carries another: the shared note once, naming its runs; with
    # every run sharing it, "Every run".
    lvis, other = "LVIS scored with the COCO protocol", "another note"
    runs = [
        make_run(tmp_path, name, log=[], analyses={"errors": errors_json(BL1_CURVES, TIDE, note)})
        for name, note in (("a", lvis), ("b", lvis), ("c", lvis), ("d", other))
    ]
    section = build_report(runs, tmp_path / "mixed").read_text().split(HEADING, 1)[1].split("\n## ", 1)[0]
    assert section.count(lvis) == 1 and f"a, b, c: {lvis}" in section and f"d: {other}" in section
    shared = build_report(runs[:3], tmp_path / "shared").read_text().split(HEADING, 1)[1].split("\n## ", 1)[0]
    assert shared.count(lvis) == 1 and f"Every run: {lvis}" in shared


def test_each_configurations_errors_figure_is_copied_once(report):
    markdown, _, runs, out = report
    # One figure per configuration, its lowest seed's: baseline/seed1's is neither copied nor shown elsewhere.
    for run, label in zip(runs, ("baseline-seed0", "baseline-seed1", "bl1", "eql"), strict=False):
        copied = out / f"{label}_errors.png"
        if label == "baseline-seed1":
            assert not copied.exists() and f"({label}_errors.png)" not in markdown
            continue
        assert copied.read_bytes() == (run / "analysis" / "errors.png").read_bytes()
        assert markdown.count(f"({label}_errors.png)") == 1
    assert "## Analyses" not in markdown  # the errors figure is not shown again among "other" figures


def test_html_shows_the_same_tables_and_figures(report):
    _, html, runs, _ = report
    assert "<h2>Where the errors go</h2>" in html
    for header in ("C75", "ΔAP bkg", "missed objects: FN − BG", "Δ localisation (Loc − C75)", "Δ TIDE cls"):
        assert f"<th>{header}</th>" in html
    png = base64.b64encode((runs[2] / "analysis" / "errors.png").read_bytes()).decode("ascii")
    assert f'src="data:image/png;base64,{png}" alt="errors of bl1"' in html


def test_without_a_baseline_there_is_no_change_table(tmp_path):
    markdown = build_report(make_runs(tmp_path / "runs", with_baseline=False), tmp_path / "out").read_text()
    section = markdown.split(HEADING, 1)[1].split("\n## ", 1)[0]
    assert section.count("| run | n |") == 3 and "against the baseline" not in section


def test_a_broken_errors_file_is_a_note_not_a_failure(tmp_path):
    broken = {key: value for key, value in BL1.items() if key != "tide"}
    good = make_run(tmp_path, "good", log=[], analyses={"errors": BASELINE_SEED0})
    bad = make_run(tmp_path, "bad", libra={"bfp": True}, log=[], analyses={"errors": broken})
    markdown = build_report([good, bad], tmp_path / "out").read_text()
    where = bad / "analysis" / "errors.json"
    assert f"bad: errors analysis skipped: {where}: missing the 'tide.delta_ap' object" in markdown
    assert [row["run"] for row in parse_table(markdown, HEADING, 0)] == ["good"]
