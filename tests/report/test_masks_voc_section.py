"""The report's box-and-mask table (Mask R-CNN runs keep their mask metrics under "segm") and its Pascal VOC
table, from hand-written metrics files: the cells are the numbers written, means over seeds worked by hand."""

from __future__ import annotations

import json

from libra_cli.report import build_report
from tests.report import make_run, parse_table


def _add_segm(run_dir, summary: dict[str, float]) -> None:
    path = run_dir / "eval" / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics["segm"] = {"format": "coco", "summary": summary, "per_category": []}
    path.write_text(json.dumps(metrics))


def test_box_and_mask_metrics_side_by_side(tmp_path):
    runs = []
    for seed, (box, mask) in enumerate(((0.30, 0.20), (0.34, 0.26))):
        run = make_run(
            tmp_path / "mask",
            f"seed{seed}",
            seed=seed,
            summary={"AP": box, "AP50": 0.5, "AP75": 0.3},
            extra={"model": {"arch": "mask_rcnn"}},
        )
        _add_segm(run, {"AP": mask, "AP50": 0.4, "AP75": 0.2})
        runs.append(run)
    runs.append(make_run(tmp_path, "boxes_only", libra={"bfp": True}, summary={"AP": 0.1, "AP50": 0.2, "AP75": 0.05}))
    markdown = build_report(runs, tmp_path / "report").read_text()
    rows = parse_table(markdown, "### Box and mask AP")
    assert [row["run"] for row in rows] == ["mask"]  # the Faster R-CNN run has no masks
    # Means over the two seeds: box (0.30 + 0.34) / 2 = 0.32 ± 0.028 (sample std √((0.02² + 0.02²) / 1)),
    # mask (0.20 + 0.26) / 2 = 0.23 ± 0.042.
    assert rows[0]["box AP"] == "0.320 ± 0.028" and rows[0]["mask AP"] == "0.230 ± 0.042"
    assert rows[0]["mask AP50"] == "0.400 ± 0.000" and rows[0]["n"] == "2"


def test_voc_runs_get_their_map_table(tmp_path):
    summary = {"AP": 0.41, "AP50": 0.7, "mAP": 0.72, "mAP_07": 0.69}
    runs = [
        make_run(tmp_path, "voc", summary=summary),
        make_run(tmp_path, "coco", libra={"bfp": True}, summary={"AP": 0.2}),
    ]
    markdown = build_report(runs, tmp_path / "report").read_text()
    rows = parse_table(markdown, "### Pascal VOC mAP")
    assert rows == [{"run": "voc", "n": "1", "mAP": "0.720", "mAP_07": "0.690", "AP50": "0.700", "AP": "0.410"}]
    assert "### Box and mask AP" not in markdown
