"""``libra data show``: ground truth drawn in the report's colours, crowd regions and VOC difficult objects
apart, masks overlaid; images chosen by seed or id; bad input one line and exit code 2."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image, ImageColor
from typer.testing import CliRunner

from libra_cli.cli import app
from libra_cli.data.coco import DetectionDataset
from libra_cli.data.voc_export import export_benchmark_to_voc
from libra_cli.report.detections import IGNORED_COLOUR, MASK_ALPHA
from libra_cli.report.ground_truth import choose_image_ids, show_dataset
from libra_cli.report.plots import PALETTE

runner = CliRunner()
WHITE = (255, 255, 255)


@pytest.fixture
def hand_made(tmp_path) -> tuple[Path, Path]:
    """One white 64 × 48 image with two objects of categories 7 and 9 and a crowd region of category 9."""
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (64, 48), WHITE).save(images / "a.png")
    ann = {
        "images": [{"id": 5, "file_name": "a.png", "width": 64, "height": 48}],
        "categories": [{"id": 9, "name": "dog"}, {"id": 7, "name": "cat"}],
        "annotations": [
            {"id": 1, "image_id": 5, "category_id": 7, "bbox": [5, 5, 20, 15], "area": 300, "iscrowd": 0},
            {"id": 2, "image_id": 5, "category_id": 9, "bbox": [30, 26, 20, 15], "area": 300, "iscrowd": 0},
            {"id": 3, "image_id": 5, "category_id": 9, "bbox": [40, 1, 20, 22], "area": 440, "iscrowd": 1},
        ],
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(ann))
    return path, images


def test_boxes_have_their_class_colour_and_crowd_regions_are_apart(hand_made, tmp_path):
    ann, images = hand_made
    result = runner.invoke(app, ["data", "show", str(ann), "--images", str(images), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "out" / "a.png") as drawn:
        assert drawn.size == (64, 48)
        # Colours follow the sorted category ids through the report's palette: 7 → PALETTE[0], 9 → PALETTE[1].
        # A 64-pixel image gets 1-pixel outlines; names are written at a box's top, so the middle of the bottom
        # edge (y = y + h) is the pure outline colour.
        assert drawn.getpixel((15, 20)) == ImageColor.getrgb(PALETTE[0])  # cat [5, 5, 20, 15]: bottom y = 20
        assert drawn.getpixel((40, 41)) == ImageColor.getrgb(PALETTE[1])  # dog [30, 26, 20, 15]: bottom y = 41
        assert drawn.getpixel((50, 23)) == ImageColor.getrgb(IGNORED_COLOUR)  # the crowd region: bottom y = 23
        assert drawn.getpixel((2, 46)) == WHITE  # outside every box the image is untouched


def test_masks_are_overlaid_in_the_class_colour(tiny_benchmark, tmp_path):
    ann = tiny_benchmark / "annotations" / "val.json"
    shown = show_dataset(ann, tiny_benchmark / "images" / "val", tmp_path / "out", ids=[1])
    assert shown.masks and shown.format == "coco" and [i for i, _ in shown.drawn] == [1]
    dataset = DetectionDataset(ann, tiny_benchmark / "images" / "val", with_masks=True)
    record = dataset.records[0]
    masks = dataset.load_masks(record).bool()
    # A pixel of exactly one mask and at least 3 pixels from every box edge: original · (1 − α) + colour · α.
    covered = masks.sum(0) == 1
    for x1, y1, x2, y2 in record.boxes:
        for x in range(int(x1) - 2, int(x2) + 3):
            for y in (*range(int(y1) - 2, int(y1) + 3), *range(int(y2) - 2, int(y2) + 3)):
                if 0 <= x < 96 and 0 <= y < 96:
                    covered[y, x] = False
        for y in range(int(y1) - 2, int(y2) + 3):
            for x in (*range(int(x1) - 2, int(x1) + 3), *range(int(x2) - 2, int(x2) + 3)):
                if 0 <= x < 96 and 0 <= y < 96:
                    covered[y, x] = False
    ys, xs = covered.nonzero(as_tuple=True)
    y, x = int(ys[len(ys) // 2]), int(xs[len(xs) // 2])
    owner = int(masks[:, y, x].nonzero()[0])
    colour = ImageColor.getrgb(
        PALETTE[sorted(dataset.category_ids).index(dataset.label_to_category_id(record.labels[owner]))]
    )
    with Image.open(record.path) as original, Image.open(shown.drawn[0][1]) as drawn:
        before, after = original.convert("RGB").getpixel((x, y)), drawn.getpixel((x, y))
    expected = [b * (1 - MASK_ALPHA) + c * MASK_ALPHA for b, c in zip(before, colour, strict=True)]
    assert all(abs(a - e) <= 1 for a, e in zip(after, expected, strict=True)), (before, after, expected)


def test_voc_difficult_objects_are_drawn_apart(tiny_benchmark, tmp_path):
    export_benchmark_to_voc(tiny_benchmark, tmp_path / "voc")
    year = tmp_path / "voc" / "VOCdevkit" / "VOC2007"
    xml = sorted((year / "Annotations").glob("*.xml"))[0]
    xml.write_text(re.sub(r"<difficult>0</difficult>", "<difficult>1</difficult>", xml.read_text(), count=1))
    stem = xml.stem
    split = next(
        s for s in ("trainval", "test") if stem in (year / "ImageSets" / "Main" / f"{s}.txt").read_text().split()
    )
    result = runner.invoke(
        app, ["data", "show", str(year), "--split", split, "--out", str(tmp_path / "out"), "--num", "99"]
    )
    assert result.exit_code == 0, result.output
    assert "(voc)" in result.output
    dataset = DetectionDataset(year / "ImageSets" / "Main" / f"{split}.txt", year.parent)
    (difficult,) = [a for a in dataset.dataset["annotations"] if a.get("difficult")]
    x, y, w, h = difficult["bbox"]
    with Image.open(tmp_path / "out" / f"{stem}.png") as drawn:
        # Ignored boxes are drawn after the others, so the difficult one's bottom edge is on top.
        assert drawn.getpixel((int(x + w / 2), int(y + h))) == ImageColor.getrgb(IGNORED_COLOUR)


def test_images_are_chosen_by_seed_or_by_id():
    # random.Random(0).sample(range(1, 11), 3) is [7, 10, 1] (Python's Mersenne Twister); shown in id order.
    assert choose_image_ids(list(range(1, 11)), 3, None, 0) == [1, 7, 10]
    assert choose_image_ids(list(range(1, 11)), None, [4, 2, 4], 0) == [4, 2]


def test_bad_input_is_one_line_and_exit_2(hand_made, tmp_path):
    ann, images = hand_made
    held = tmp_path / "held"
    held.mkdir()
    (held / "keep.png").write_bytes(b"mine")
    cases = [
        (["--images", str(images), "--out", str(held)], "holds files already (keep.png)"),
        (["--images", str(images), "--out", str(tmp_path / "o"), "--ids", "6"], "--ids: image id 6 is not in"),
        (["--out", str(tmp_path / "o")], "needs its image folder (--images)"),
        (["--images", str(images), "--out", str(tmp_path / "o"), "--num", "0"], "--num: must be at least 1, got 0"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["data", "show", str(ann), *args])
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], result.output
    assert (held / "keep.png").read_bytes() == b"mine"
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
