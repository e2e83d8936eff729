"""``libra predict``: detections on image files equal ``libra eval``'s, in the files' upright pixels, with the
dataset's ids and names, drawn in the report's colours; bad input is one line and exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageColor
from typer.testing import CliRunner

from libra_cli.api import Detector
from libra_cli.cli import app
from libra_cli.errors import LibraError
from libra_cli.predict import predict_files
from libra_cli.report.plots import PALETTE
from libra_cli.rundir import RunLayout
from libra_cli.workflow import evaluate_run
from tests.runs import SPARSE_IDS, sparse_benchmark, untrained_run

runner = CliRunner()
ARCHS = {
    "faster_rcnn": {},
    "mask_rcnn": {"model__arch": "mask_rcnn"},
    # An untrained RetinaNet scores about its prior, 0.01, under the default 0.05 threshold: keep every box.
    "retinanet": {"model__arch": "retinanet", "model__score_thresh": 0.0},
}


@pytest.fixture(scope="module")
def benchmark(tiny_benchmark, tmp_path_factory) -> Path:
    return sparse_benchmark(tiny_benchmark, tmp_path_factory.mktemp("predict") / "bench")


@pytest.fixture(scope="module")
def runs(benchmark, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("predict_runs")
    return {arch: untrained_run(benchmark, root / arch, seed=1, **options) for arch, options in ARCHS.items()}


def by_file(records: list[dict], keys: tuple[str, ...]) -> dict[str, list[tuple]]:
    grouped: dict[str, list[tuple]] = {}
    for record in records:
        grouped.setdefault(Path(record["file_name"]).name, []).append(tuple(json.dumps(record[k]) for k in keys))
    return grouped


@pytest.mark.parametrize("arch", list(ARCHS))
def test_predict_equals_eval_on_the_validation_images(runs, benchmark, tmp_path, arch):
    run = runs[arch]
    evaluate_run(run)
    layout = RunLayout(run)
    val = json.loads((benchmark / "annotations" / "val.json").read_text())
    file_of = {image["id"]: image["file_name"] for image in val["images"]}
    evaluated = [
        {**record, "file_name": file_of[record["image_id"]]} for record in json.loads(layout.detections.read_text())
    ]
    summary = predict_files(
        Detector.from_run(run), [benchmark / "images" / "val"], tmp_path / "out", score_thr=0.0, batch_size=2
    )
    predicted = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert summary.processed == 4 and summary.skipped == []
    assert len(evaluated) > 0  # something to compare (an untrained detector still proposes boxes)
    keys = ("category_id", "bbox", "score")
    # Same images, same detections in the same order, to the last digit of the file.
    assert by_file(predicted, keys) == by_file(evaluated, keys)
    if arch == "mask_rcnn":
        masks = json.loads(layout.segmentations.read_text())
        masks = [{**record, "file_name": file_of[record["image_id"]]} for record in masks]
        assert by_file(predicted, ("segmentation",)) == by_file(masks, ("segmentation",))


def test_json_ids_and_names_are_the_datasets(runs, benchmark, tmp_path):
    predict_files(Detector.from_run(runs["faster_rcnn"]), [benchmark / "images" / "val"], tmp_path / "out", score_thr=0)
    predicted = json.loads((tmp_path / "out" / "predictions.json").read_text())
    names = {c["id"]: c["name"] for c in json.loads((benchmark / "annotations" / "val.json").read_text())["categories"]}
    # The annotation file's sparse ids (10, 20, 30), never the model's labels 1 … 3, each with the file's name.
    assert {record["category_id"] for record in predicted} <= set(SPARSE_IDS.values())
    assert all(record["category_name"] == names[record["category_id"]] for record in predicted)
    # image_id: the input's position from 1 (files in name order: 000000.png … 000003.png).
    assert {(r["image_id"], Path(r["file_name"]).name) for r in predicted} <= {
        (i + 1, f"{i:06d}.png") for i in range(4)
    }


def test_an_exif_rotated_jpeg_is_read_upright(runs, tmp_path):
    # Stored 64 wide × 40 high with EXIF orientation 6 ("rotate 90° clockwise to view"): upright it is 40 × 64.
    stored = Image.new("RGB", (64, 40), (30, 30, 30))
    stored.paste((200, 40, 40), (4, 4, 30, 24))
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    # The same pixels turned by hand: the JPEG decoded, then rotated 90° clockwise (PIL's ROTATE_270).
    with Image.open(tmp_path / "phone.jpg") as raw:
        upright = raw.convert("RGB").transpose(Image.Transpose.ROTATE_270)
    assert upright.size == (40, 64)
    detector = Detector.from_run(runs["faster_rcnn"])
    (from_file,) = detector.predict(tmp_path / "phone.jpg")
    (by_hand,) = detector.predict(upright)
    assert from_file.size == (40, 64)
    assert len(by_hand.scores) > 0
    torch.testing.assert_close(from_file.boxes, by_hand.boxes, rtol=0, atol=0)
    assert from_file.boxes[:, [0, 2]].max() <= 40 and from_file.boxes[:, [1, 3]].max() <= 64
    predict_files(detector, [tmp_path / "phone.jpg"], tmp_path / "out", score_thr=0.0)
    with Image.open(tmp_path / "out" / "phone.png") as drawn:
        assert drawn.size == (40, 64)


def test_a_drawn_box_edge_has_its_class_colour(runs, benchmark, tmp_path):
    image = benchmark / "images" / "val" / "000001.png"
    predict_files(Detector.from_run(runs["faster_rcnn"]), [image], tmp_path / "out", score_thr=0.0)
    records = json.loads((tmp_path / "out" / "predictions.json").read_text())
    # Boxes are drawn in the records' order, so the last one lies on top of the others.
    last = records[-1]
    x, y, w, h = last["bbox"]
    # torchvision's draw_bounding_boxes takes float32 pixel coordinates and truncates them to integers; a
    # 96-pixel image gets a 1-pixel outline (1 per 200 pixels, at least 1). Its label is written at the top,
    # so the middle of the bottom edge is pure box colour.
    x1, x2, y2 = (int(torch.tensor(v, dtype=torch.float32)) for v in (x, x + w, y + h))
    # Colours follow the sorted category ids through the report's palette: 10 → PALETTE[0], 20 → [1], 30 → [2].
    expected = ImageColor.getrgb(PALETTE[sorted(SPARSE_IDS.values()).index(last["category_id"])])
    with Image.open(tmp_path / "out" / "000001.png") as drawn:
        assert drawn.getpixel(((x1 + x2) // 2, y2)) == expected


def test_unreadable_files_are_skipped_and_counted(runs, benchmark, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image at all")
    inputs = [str(benchmark / "images" / "val" / "000000.png"), str(broken), str(tmp_path / "missing.png")]
    result = runner.invoke(app, ["predict", str(runs["faster_rcnn"]), *inputs, "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert f"skipped {tmp_path / 'missing.png'}: file not found" in result.output
    assert "skipped" in result.output and "broken.jpg: cannot decode image" in result.output
    assert "1 images," in result.output and "; 2 skipped" in result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["000000.png", "predictions.json"]


def test_bad_input_is_one_line_and_exit_2_and_nothing_is_lost(runs, benchmark, tmp_path):
    images = str(benchmark / "images" / "val")
    not_a_run = tmp_path / "folder"
    not_a_run.mkdir()
    cases = [
        (["predict", str(not_a_run), images, "--out", str(tmp_path / "a")], f"{not_a_run}: not a run directory"),
        (
            ["predict", str(runs["faster_rcnn"]), str(tmp_path / "*.webp"), "--out", str(tmp_path / "b")],
            "no image file found",
        ),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], result.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    # An --out folder holding a file: refused before any work, the file untouched.
    held = tmp_path / "held"
    held.mkdir()
    (held / "predictions.json").write_text("[1, 2, 3]")
    result = runner.invoke(app, ["predict", str(runs["faster_rcnn"]), images, "--out", str(held)])
    assert (
        result.exit_code == 2
        and "holds files already (predictions.json); choose another folder or give --force" in result.output
    )
    assert sorted(p.name for p in held.iterdir()) == ["predictions.json"]
    assert (held / "predictions.json").read_text() == "[1, 2, 3]"
    result = runner.invoke(
        app, ["predict", str(runs["faster_rcnn"]), images, "--out", str(held), "--force", "--no-draw"]
    )
    assert result.exit_code == 0 and json.loads((held / "predictions.json").read_text()) != [1, 2, 3]


def test_no_readable_image_is_exit_2_and_writes_nothing(runs, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG truncated")
    with pytest.raises(LibraError, match="no image could be read"):
        predict_files(Detector.from_run(runs["faster_rcnn"]), [broken], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_lvis_run_keeps_lvis_300_detections_per_image_as_eval_does(tiny_lvis_benchmark, tmp_path):
    run = untrained_run(tiny_lvis_benchmark, tmp_path / "run", seed=1, model__score_thresh=0.0)
    evaluate_run(run)
    val = json.loads((tiny_lvis_benchmark / "annotations" / "val.json").read_text())
    file_of = {image["id"]: Path(image.get("file_name") or image["coco_url"]).name for image in val["images"]}
    evaluated = [{**r, "file_name": file_of[r["image_id"]]} for r in json.loads(RunLayout(run).detections.read_text())]
    predict_files(Detector.from_run(run), [tiny_lvis_benchmark / "images" / "val"], tmp_path / "out", score_thr=0.0)
    predicted = json.loads((tmp_path / "out" / "predictions.json").read_text())
    keys = ("category_id", "bbox", "score")
    counts = [len(records) for records in by_file(predicted, keys).values()]
    # The model's own cap is 100 detections an image; LVIS evaluation keeps up to 300, and so does predict.
    assert max(counts) > 100
    assert by_file(predicted, keys) == by_file(evaluated, keys)


def test_bmp_webp_and_rgba_files_give_the_pngs_detections(runs, benchmark, tmp_path):
    source = benchmark / "images" / "val" / "000003.png"
    with Image.open(source) as image:
        rgb = image.convert("RGB")
    rgb.save(tmp_path / "b.bmp")
    rgb.save(tmp_path / "w.webp", lossless=True)
    rgba = rgb.copy()
    rgba.putalpha(128)  # the alpha channel is dropped: the colours are the RGB ones
    rgba.save(tmp_path / "a.png")
    detector = Detector.from_run(runs["faster_rcnn"])
    reference, *others = detector.predict([source, tmp_path / "b.bmp", tmp_path / "w.webp", tmp_path / "a.png"])
    assert len(reference.scores) > 0
    for other in others:  # lossless files of the same pixels: the same detections, bit for bit
        torch.testing.assert_close(other.boxes, reference.boxes, rtol=0, atol=0)
        torch.testing.assert_close(other.scores, reference.scores, rtol=0, atol=0)


def test_retinanet_predicts_a_batch_of_one_small_image(runs):
    # 32 FPN channels in 32 groups and a 96-pixel image: P7 is 1 × 1, so in a batch of one each GroupNorm
    # group of the head holds one value (torch's GroupNorm refuses that). Every image is normalised on its
    # own, so the image alone gets the detections it gets beside a copy of itself.
    detector = Detector.from_run(runs["retinanet"])
    assert detector.config.model.fpn_channels == 32 and detector.config.model.norm == "gn"
    torch.manual_seed(3)
    image = torch.rand(3, 96, 96)
    alone = detector.predict(image, batch_size=1)[0]
    paired = detector.predict([image, image.clone()], batch_size=2)[0]
    assert len(alone.boxes) == len(paired.boxes) > 0
    assert torch.allclose(alone.boxes, paired.boxes, atol=1e-3)
    assert torch.allclose(alone.scores, paired.scores, atol=1e-5)
    assert torch.equal(alone.labels, paired.labels)
