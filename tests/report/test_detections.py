"""Detections drawn in the report: which validation images are chosen, what is drawn on them, and the
report section and CLI options around the figure, on a tiny hand-made dataset."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from libra_cli.cli import app
from libra_cli.errors import LibraError
from libra_cli.report import build_report
from libra_cli.report.collect import load_run
from libra_cli.report.detections import (
    Boxes,
    DetectionOptions,
    choose_images,
    detections_figure,
    draw_panel,
    load_validation,
    missed_objects,
    read_detections,
)
from tests.report import coco_summary, make_run

CATEGORIES = [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}]
# Ground truth, COCO [x, y, w, h] boxes per image id (category 1 or 2); images are 40 × 40.
TRUTH = {
    1: [(1, [0, 0, 10, 10]), (1, [20, 20, 10, 10]), (2, [0, 20, 10, 10])],
    2: [(1, [5, 5, 10, 10])],
    3: [(1, [0, 0, 10, 10]), (1, [20, 0, 10, 10]), (2, [0, 20, 10, 10]), (2, [20, 20, 10, 10])],
    4: [(2, [0, 0, 10, 10]), (2, [20, 20, 10, 10])],
    5: [],
    6: [(1, [0, 0, 10, 10]), (1, [25, 25, 10, 10])],
}
# The reference run's detections and, worked out by hand, the objects it misses at IoU 0.5, score ≥ 0.5:
BASELINE = [
    # image 1: every object found exactly → 0 missed
    {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9},
    {"image_id": 1, "category_id": 1, "bbox": [20, 20, 10, 10], "score": 0.8},
    {"image_id": 1, "category_id": 2, "bbox": [0, 20, 10, 10], "score": 0.7},
    # image 2: the right box with the wrong category → 1 missed
    {"image_id": 2, "category_id": 2, "bbox": [5, 5, 10, 10], "score": 0.9},
    # image 3: one found; one exact but scored 0.3 < 0.5; one shifted by 6 px (IoU 40 / 160 = 0.25) → 3 missed
    {"image_id": 3, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9},
    {"image_id": 3, "category_id": 1, "bbox": [20, 0, 10, 10], "score": 0.3},
    {"image_id": 3, "category_id": 2, "bbox": [6, 20, 10, 10], "score": 0.9},
    # image 4: no detection → 2 missed; image 5: nothing to find → 0 missed
    # image 6: two detections on the first object (one match only), none near the second → 1 missed
    {"image_id": 6, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9},
    {"image_id": 6, "category_id": 1, "bbox": [1, 0, 10, 10], "score": 0.8},
]
MISSED = {1: 0, 2: 1, 3: 3, 4: 2, 5: 0, 6: 1}
OTHER = [{"image_id": 4, "category_id": 2, "bbox": [0, 0, 10, 10], "score": 0.95}]


def write_dataset(root: Path) -> tuple[Path, Path]:
    images = root / "images" / "val"
    images.mkdir(parents=True)
    records, annotations = [], []
    for image_id, objects in TRUTH.items():
        Image.new("RGB", (40, 40), (90, 90, 90)).save(images / f"{image_id:03d}.png")
        records.append({"id": image_id, "file_name": f"{image_id:03d}.png", "width": 40, "height": 40})
        for category_id, bbox in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category_id,
                    "bbox": bbox,
                    "area": bbox[2] * bbox[3],
                    "iscrowd": 0,
                }
            )
    ann = root / "annotations" / "val.json"
    ann.parent.mkdir(parents=True)
    ann.write_text(json.dumps({"images": records, "annotations": annotations, "categories": CATEGORIES}))
    return ann, images


def evaluated_run(root: Path, name: str, detections: list[dict], ann: Path, images: Path, **kwargs) -> Path:
    run = make_run(root, name, summary=coco_summary(0.3), log=[], **kwargs)  # no log: no training figures
    info = json.loads((run / "dataset.json").read_text())
    (run / "dataset.json").write_text(json.dumps({**info, "val_ann": str(ann), "val_images": str(images)}))
    (run / "eval" / "detections.json").write_text(json.dumps(detections))
    return run


@pytest.fixture
def dataset(tmp_path) -> tuple[Path, Path]:
    return write_dataset(tmp_path / "data")


def by_image(detections: list[dict]) -> dict[int, Boxes]:
    grouped: dict[int, list[dict]] = {}
    for item in detections:
        grouped.setdefault(item["image_id"], []).append(item)
    return {
        image_id: Boxes(
            tuple(
                (d["bbox"][0], d["bbox"][1], d["bbox"][0] + d["bbox"][2], d["bbox"][1] + d["bbox"][3]) for d in items
            ),
            tuple(d["category_id"] for d in items),
            tuple(d["score"] for d in items),
        )
        for image_id, items in grouped.items()
    }


def test_missed_objects_per_image_match_the_hand_count(dataset):
    validation = load_validation(*dataset)
    reference = by_image(BASELINE)
    for image_id, image in validation.images.items():
        assert missed_objects(image.truth, reference.get(image_id, Boxes(scores=())), 0.5) == MISSED[image_id]
    # At threshold 0.25 image 3's exact 0.3-scored box counts: 3 → 2 missed.
    assert missed_objects(validation.images[3].truth, reference[3], 0.25) == 2


def test_detections_file_is_read_as_xyxy_boxes_per_image_and_a_bad_box_is_named(tmp_path):
    path = tmp_path / "detections.json"
    path.write_text(json.dumps(BASELINE[3:5]))
    read = read_detections(path)
    assert read == {
        2: Boxes(((5.0, 5.0, 15.0, 15.0),), (2,), (0.9,)),  # [5, 5, 10, 10] → x2 = 5 + 10, y2 = 5 + 10
        3: Boxes(((0.0, 0.0, 10.0, 10.0),), (1,), (0.9,)),
    }
    path.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [0, 0, -2, 4], "score": 0.5}]))
    with pytest.raises(LibraError, match=r"detections\.json: \[0\]\.bbox: width and height must not be negative"):
        read_detections(path)


def test_chosen_images_are_the_most_missed_then_drawn_by_the_seed(dataset):
    validation = load_validation(*dataset)
    chosen = choose_images(validation, by_image(BASELINE), DetectionOptions(seed=7))
    assert [c.image_id for c in chosen[:2]] == [3, 4]  # 3 and 2 missed objects
    assert [c.missed for c in chosen[:2]] == [3, 2]
    assert [c.reason for c in chosen] == ["most missed", "most missed", "seed", "seed"]
    drawn = [c.image_id for c in chosen[2:]]
    assert drawn == random.Random(7).sample([1, 2, 5, 6], 2)  # the rest, in id order, sampled by the seed
    assert len(set(drawn)) == 2 and not set(drawn) & {3, 4}


def test_the_same_seed_gives_the_same_images_and_seeds_differ(dataset):
    validation = load_validation(*dataset)
    reference = by_image(BASELINE)
    picks = {
        seed: [c.image_id for c in choose_images(validation, reference, DetectionOptions(seed=seed))]
        for seed in range(6)
    }
    assert all(picks[seed] == [c.image_id for c in choose_images(validation, reference, DetectionOptions(seed=seed))]
               for seed in picks)  # fmt: skip
    assert all(pick[:2] == [3, 4] for pick in picks.values())
    assert len({tuple(pick[2:]) for pick in picks.values()}) > 1  # 12 ordered pairs: six seeds do not all agree


def test_ties_in_missed_objects_go_to_the_smaller_image_id(dataset):
    validation = load_validation(*dataset)
    chosen = choose_images(validation, by_image(BASELINE), DetectionOptions(num_worst=3, num_random=0))
    assert [c.image_id for c in chosen] == [3, 4, 2]  # images 2 and 6 both miss one object


def test_a_box_is_drawn_in_its_colour_on_its_border_and_not_inside():
    image = torch.zeros(3, 60, 60, dtype=torch.uint8)
    boxes = Boxes(((5.0, 5.0, 50.0, 50.0),), (1,), (0.9,))
    drawn = draw_panel(image, boxes, {1: "a"}, {1: "#ff0000"}, score_thr=0.5)
    red = torch.tensor([255, 0, 0], dtype=torch.uint8)
    for y, x in ((30, 5), (30, 50), (50, 30), (5, 30), (50, 50)):  # left, right, bottom, top, corner
        assert torch.equal(drawn[:, y, x], red), (y, x)
    for y, x in ((40, 40), (30, 52), (55, 30)):  # inside (away from the label), right of and below the box
        assert torch.equal(drawn[:, y, x], torch.zeros(3, dtype=torch.uint8)), (y, x)
    assert image.sum() == 0  # the input is left alone


def test_a_detection_below_the_threshold_is_not_drawn_and_ground_truth_always_is():
    image = torch.zeros(3, 60, 60, dtype=torch.uint8)
    green = torch.tensor([0, 255, 0], dtype=torch.uint8)
    colours, names = {1: "#ff0000", 2: "#00ff00"}, {1: "a", 2: "b"}
    detections = Boxes(((5.0, 5.0, 20.0, 20.0), (30.0, 30.0, 55.0, 55.0)), (1, 2), (0.9, 0.4))
    drawn = draw_panel(image, detections, names, colours, score_thr=0.5)
    is_green = (drawn[0] == 0) & (drawn[1] == 255) & (drawn[2] == 0)
    assert not is_green.any()  # the 0.4 detection is nowhere
    assert torch.equal(drawn[:, 12, 5], torch.tensor([255, 0, 0], dtype=torch.uint8))  # the 0.9 one is
    lower = draw_panel(image, detections, names, colours, score_thr=0.4)  # "≥ threshold" is drawn
    assert torch.equal(lower[:, 55, 40], green)
    truth = Boxes(((30.0, 30.0, 55.0, 55.0),), (2,))  # no scores: drawn at any threshold
    assert torch.equal(draw_panel(image, truth, names, colours, score_thr=1.0)[:, 55, 40], green)


def test_the_figure_is_the_same_for_the_same_seed(tmp_path, dataset):
    ann, images = dataset
    run = load_run(evaluated_run(tmp_path / "runs", "baseline", BASELINE, ann, images))
    options = DetectionOptions(seed=3, num_worst=1, num_random=1)  # two rows keep the test short
    first = detections_figure([run], run, tmp_path / "a.png", options)
    second = detections_figure([run], run, tmp_path / "b.png", options)
    assert first.chosen == second.chosen and first.reference == "baseline" and first.shown == ["baseline"]
    assert first.path.read_bytes() == second.path.read_bytes()


def test_a_missing_image_file_is_an_error_naming_it(tmp_path, dataset):
    ann, images = dataset
    run = load_run(evaluated_run(tmp_path / "runs", "baseline", BASELINE, ann, images))
    (images / "003.png").unlink()  # image 3 is always chosen: it has the most missed objects
    with pytest.raises(LibraError, match=r"003\.png: image file not found \(image id 3"):
        detections_figure([run], run, tmp_path / "out" / "detections.png", DetectionOptions())


def two_runs(tmp_path: Path, dataset: tuple[Path, Path]) -> list[Path]:
    ann, images = dataset
    return [
        evaluated_run(tmp_path / "runs", "baseline", BASELINE, ann, images),
        evaluated_run(tmp_path / "runs", "bl1", OTHER, ann, images, libra={"balanced_l1": True}),
    ]


def test_report_draws_the_figure_with_a_caption_stating_the_rule(tmp_path, dataset):
    runs = two_runs(tmp_path, dataset)
    markdown = build_report(runs, tmp_path / "report", html=True).read_text()
    section = markdown.split("## Detections", 1)[1].split("\n## ", 1)[0]
    html = (tmp_path / "report" / "report.html").read_text()
    assert "<h2>Detections</h2>" in html and 'alt="ground truth and detections on validation images"' in html
    assert "![ground truth and detections on validation images](detections.png)" in section
    assert "score ≥ 0.5" in section and "seed 0" in section
    assert "the 2 images where baseline misses the most objects at IoU 0.5" in section
    with Image.open(tmp_path / "report" / "detections.png") as png:  # 3.2 × 3.4 inch cells at DPI 110
        assert png.size == (round(3 * 3.2 * 110), round(4 * 3.4 * 110))  # truth + 2 runs; 2 + 2 images


def test_a_configuration_over_several_seeds_gets_one_column_its_lowest_seed(tmp_path, dataset):
    ann, images = dataset
    runs = [
        evaluated_run(tmp_path / "runs" / "baseline", f"seed{seed}", BASELINE, ann, images, seed=seed)
        for seed in (0, 1)
    ]
    runs.append(evaluated_run(tmp_path / "runs", "bl1", OTHER, ann, images, libra={"balanced_l1": True}))
    markdown = build_report(runs, tmp_path / "report").read_text()
    assert "each configuration's first run (lowest seed)" in markdown
    with Image.open(tmp_path / "report" / "detections.png") as png:  # truth + 2 configurations, not 3 runs
        assert png.size == (round(3 * 3.2 * 110), round(4 * 3.4 * 110))


def test_report_notes_in_one_line_when_the_images_are_not_available(tmp_path, dataset):
    runs = two_runs(tmp_path, dataset)
    ann, _ = dataset
    ann.unlink()
    markdown = build_report(runs, tmp_path / "report").read_text()
    section = markdown.split("## Detections\n", 1)[1].split("\n## ", 1)[0].strip()
    assert section == f"Not drawn: validation annotations {ann} not found (the validation images of baseline)."
    assert not (tmp_path / "report" / "detections.png").exists()


def test_cli_options_set_threshold_and_seed_or_switch_the_figure_off(tmp_path, dataset):
    runs = [str(path) for path in two_runs(tmp_path, dataset)]
    runner = CliRunner()
    out = tmp_path / "with"
    result = runner.invoke(app, ["report", *runs, "--out", str(out), "--score-thr", "0.25", "--seed", "5"])
    assert result.exit_code == 0, result.output
    markdown = (out / "report.md").read_text()
    assert "score ≥ 0.25" in markdown and "seed 5" in markdown
    out = tmp_path / "without"
    result = runner.invoke(app, ["report", *runs, "--out", str(out), "--no-detections"])
    assert result.exit_code == 0, result.output
    assert "## Detections" not in (out / "report.md").read_text() and not (out / "detections.png").exists()
    result = runner.invoke(app, ["report", *runs, "--out", str(tmp_path / "bad"), "--score-thr", "1.5"])
    assert result.exit_code == 2 and "--score-thr: must lie in [0, 1], got 1.5" in result.output
