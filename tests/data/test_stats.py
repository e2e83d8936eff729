"""``libra data stats``: counts worked out by hand on small files, and bad input as one line."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from libra_cli.cli import app
from libra_cli.data.stats import dataset_stats, write_stats
from libra_cli.errors import LibraError

runner = CliRunner()


def coco_file(tmp_path):
    """Four images and six annotations; the expected counts below are worked out from these boxes."""
    images = [
        {"id": 1, "width": 100, "height": 100, "file_name": "a.jpg"},
        {"id": 2, "width": 200, "height": 100, "file_name": "b.jpg"},
        {"id": 3, "width": 50, "height": 50, "file_name": "c.jpg"},
        {"id": 4, "width": 100, "height": 100, "file_name": "d.jpg"},
    ]
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "iscrowd": 0},  # 100 px²: small
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40], "iscrowd": 0},  # 1,600: medium
        {"id": 3, "image_id": 1, "category_id": 2, "bbox": [0, 0, 100, 100], "iscrowd": 0},  # 10,000: large
        # 100 wide from x 150 in a 200-wide image: clipped to 50 × 50 = 2,500, medium.
        {"id": 4, "image_id": 2, "category_id": 2, "bbox": [150, 0, 100, 50], "iscrowd": 0},
        {"id": 5, "image_id": 2, "category_id": 1, "bbox": [0, 0, 50, 50], "iscrowd": 1},  # crowd: no box
        {"id": 6, "image_id": 3, "category_id": 2, "bbox": [0, 0, 5, 5], "iscrowd": 1},  # image 3: crowd only
    ]
    categories = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 7, "name": "bird"}]
    path = tmp_path / "coco.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    (tmp_path / "a.jpg").write_bytes(b"")  # only a.jpg exists: three image files are not found
    return path


def test_coco_counts_worked_out_by_hand(tmp_path):
    stats = dataset_stats(coco_file(tmp_path), images=tmp_path)

    assert stats["format"] == "coco"
    assert (stats["images"], stats["annotations"], stats["boxes"], stats["crowd"]) == (4, 6, 4, 2)
    assert stats["images_without_boxes"] == 2  # image 3 holds only a crowd region, image 4 nothing
    assert stats["image_files_missing"] == 3
    # Boxes per image 3, 1, 0, 0: mean 1, median 0.5, max 3.
    assert stats["boxes_per_image"] == {"mean": 1.0, "median": 0.5, "max": 3}
    assert stats["box_sizes"] == {"small": 1, "medium": 2, "large": 1}
    # Sides √area 10, 40, 50, 100 fall in the bins [8, 16), [32, 48), [48, 64) and [96, 128).
    counts = stats["side_histogram"]["counts"]
    assert [i for i, count in enumerate(counts) if count] == [1, 3, 4, 6] and sum(counts) == 4
    assert stats["categories"] == [
        {"id": 1, "name": "cat", "instances": 2, "images": 1},
        {"id": 2, "name": "dog", "instances": 2, "images": 2},
        {"id": 7, "name": "bird", "instances": 0, "images": 0},
    ]
    assert "frequency_groups" not in stats


def test_lvis_groups_worked_out_by_hand(tmp_path):
    images = [{"id": i, "width": 64, "height": 64, "coco_url": f"http://x/val2017/{i}.jpg",
               "neg_category_ids": [], "not_exhaustive_category_ids": []} for i in (1, 2, 3)]  # fmt: skip
    boxes = [(1, 1), (1, 3), (2, 3), (2, 3), (3, 2), (3, 3)]  # (image, category)
    annotations = [
        {"id": k, "image_id": image, "category_id": category, "bbox": [1, 1, 20, 20]}
        for k, (image, category) in enumerate(boxes, start=1)
    ]
    categories = [
        {"id": 1, "name": "a", "frequency": "r"},
        {"id": 2, "name": "b", "frequency": "c"},
        {"id": 3, "name": "c", "frequency": "f"},
        {"id": 4, "name": "d", "frequency": "f"},
    ]
    path = tmp_path / "lvis.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))

    stats = dataset_stats(path)

    assert stats["format"] == "lvis" and stats["image_files_missing"] is None  # no --images: not looked for
    # r: category 1, one box in image 1. c: category 2, one box in image 3. f: categories 3 and 4, four
    # boxes of category 3 in images 1, 2 and 3.
    assert stats["frequency_groups"] == {
        "r": {"categories": 1, "instances": 1, "images": 1},
        "c": {"categories": 1, "instances": 1, "images": 1},
        "f": {"categories": 2, "instances": 4, "images": 3},
    }
    assert [row["frequency"] for row in stats["categories"]] == ["r", "c", "f", "f"]


def test_write_stats_writes_the_json_and_a_png(tmp_path):
    stats = dataset_stats(coco_file(tmp_path))
    written = write_stats(stats, tmp_path / "out")
    assert json.loads(written["json"].read_text()) == stats
    assert written["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_prints_the_tables_and_writes_the_files(tmp_path):
    result = runner.invoke(app, ["data", "stats", str(coco_file(tmp_path)), "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert "crowd regions" in result.output and "instances per category" in result.output
    assert json.loads((tmp_path / "s" / "stats.json").read_text())["boxes"] == 4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["annotations"][0].update(category_id=99), r"annotations\[0\]\.category_id: unknown category id"),
        (lambda d: d["annotations"][1].update(bbox=[0, 0, -4, 5]), r"annotations\[1\]\.bbox: \[0, 0, -4, 5\] has zero"),
        (lambda d: d.pop("categories"), r"missing required list field 'categories'"),
    ],
)
def test_bad_files_are_one_line_and_exit_code_2(tmp_path, change, message):
    path = coco_file(tmp_path)
    dataset = json.loads(path.read_text())
    change(dataset)
    path.write_text(json.dumps(dataset))
    with pytest.raises(LibraError, match=message):
        dataset_stats(path)
    result = runner.invoke(app, ["data", "stats", str(path), "--out", str(tmp_path / "s")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1 and result.output.startswith("error: ")
    assert not (tmp_path / "s").exists()  # nothing written


def test_not_json_is_one_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"images": [')
    result = runner.invoke(app, ["data", "stats", str(path)])
    assert result.exit_code == 2 and "broken.json: not valid JSON" in result.output
    assert len(result.output.strip().splitlines()) == 1
