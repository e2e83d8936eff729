"""``benchmarks/full_size.py`` (full-size files without the pixels) and ``benchmarks/scale.py --smoke``."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np

from benchmarks import scale
from benchmarks.full_size import SETS, ground_truth, object_counts, write_set


def test_object_counts_sum_to_the_released_annotation_count():
    # COCO train2017: 860,001 annotations over 118,287 images, exactly.
    counts = object_counts(118_287, 860_001, seed=0, empty_fraction=0.01)
    assert counts.sum() == 860_001 and len(counts) == 118_287
    # About 1 % empty images (COCO train2017: 1,021 of 118,287 = 0.86 %), and a long tail: some images
    # with over fifty objects, while the median is below the mean of 7.27.
    assert 0.005 < (counts == 0).mean() < 0.05
    assert counts.max() > 50 and np.median(counts) < 860_001 / 118_287


def test_full_size_sets_have_the_released_sizes_at_a_fraction():
    assert (SETS["lvis_val"].images, SETS["lvis_val"].annotations) == (19_809, 244_707)
    lvis = ground_truth("lvis_val", fraction=0.01)  # the first 198 images
    assert len(lvis["images"]) == 198
    assert Counter(category["frequency"] for category in lvis["categories"]) == {"r": 337, "c": 461, "f": 405}
    # LVIS v1 names its images by their COCO URL; every record points to one of the four shared files.
    names = {image["coco_url"].rsplit("/", 1)[-1] for image in lvis["images"]}
    assert names == {f"{i:012d}.jpg" for i in range(4)} and "file_name" not in lvis["images"][0]
    coco = ground_truth("coco_val", fraction=0.02)
    assert {image["file_name"] for image in coco["images"]} == names
    assert any(ann["iscrowd"] for ann in coco["annotations"])


def test_write_set_writes_annotations_results_and_shared_images(tmp_path):
    summary = write_set(tmp_path, "coco_val", fraction=0.002, results=True, quality=0.9)
    assert summary["images"] == 10 and summary["detections"] == 10 * 100  # 100 detections per COCO image
    results = json.loads((tmp_path / "results" / "coco_val.json").read_text())
    assert Counter(record["image_id"] for record in results) == {i: 100 for i in range(1, 11)}
    assert sorted(path.name for path in (tmp_path / "images").iterdir()) == [f"{i:012d}.jpg" for i in range(4)]


def test_smoke_run_scores_and_counts_with_the_commands(tmp_path):
    report = scale.main(
        ["--smoke", "--data", str(tmp_path / "data"), "--steps", "stats", "score", "--out", str(tmp_path / "s.md"),
         "--json", str(tmp_path / "s.json")]
    )  # fmt: skip
    figures = report["figures"]
    assert set(figures) == {"stats_coco_train", "stats_lvis_train", "score_coco_val", "score_lvis_val",
                            "one_pass_coco_val"}  # fmt: skip
    for key, figure in figures.items():
        assert figure["returncode"] == 0, (key, open(figure["log"]).read()[-2000:])
        assert figure["seconds"] > 0 and figure["peak_rss_gib"] > 0.1  # a Python process with numpy
    # The commands wrote their files: libra score's metrics equal the one-pass evaluation's (COCO val).
    scored = json.loads((tmp_path / "data" / "scale" / "score_coco_val" / "metrics.json").read_text())
    one_pass = json.loads((tmp_path / "data" / "scale" / "one_pass.json").read_text())
    assert [scored["summary"][name] for name in ("AP", "AP50", "AR100")] == [
        one_pass["summary"][name] for name in ("AP", "AP50", "AR100")
    ]
    stats = json.loads((tmp_path / "data" / "scale" / "stats_lvis_train" / "stats.json").read_text())
    assert stats["images"] == round(100_170 * scale.SMOKE_FRACTION) and stats["format"] == "lvis"
    markdown = (tmp_path / "s.md").read_text()
    assert "| `libra score` LVIS v1 val size (19,809 × 300) |" in markdown and "not met" not in markdown
