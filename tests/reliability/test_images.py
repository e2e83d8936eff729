"""Item 1, per image: every PIL mode becomes 8-bit RGB, and unusable files follow ``--on-bad-sample``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from libra_cli.data.coco import DetectionDataset
from libra_cli.engine.train import train
from libra_cli.errors import LibraError
from libra_cli.images import to_rgb8
from tests.conftest import tiny_config
from tests.reliability.helpers import CATEGORIES, read_log, write_split


def test_16_bit_grayscale_png_is_scaled_to_8_bits(tmp_path):
    # v ↦ round(v · 255 / 65535) = round(v / 257): 0 → 0, 257 → 1, 25700 → 100, 32768 → 127.5 → 128,
    # 65535 → 255. Converting without scaling would clip everything above 255 to white.
    values = np.array([[0, 257, 25700, 32768, 65535]], dtype=np.uint16)
    (tmp_path / "img").mkdir()
    Image.fromarray(values).save(tmp_path / "img" / "deep.png")
    with Image.open(tmp_path / "img" / "deep.png") as pil:
        assert pil.mode.startswith("I;16")
    images = [{"id": 1, "file_name": "deep.png", "width": 5, "height": 1}]
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": images, "annotations": [], "categories": CATEGORIES}))
    image, _ = DetectionDataset(ann, tmp_path / "img")[0]
    expected = torch.tensor([0, 1, 100, 128, 255], dtype=torch.float32) / 255
    assert image.shape == (3, 1, 5)
    for channel in range(3):
        torch.testing.assert_close(image[channel, 0], expected, rtol=0, atol=0)


def test_32_bit_integer_mode_holding_16_bit_values_is_scaled_the_same_way():
    pil = Image.fromarray(np.array([[0, 257, 65535, 70000]], dtype=np.int32))
    assert pil.mode == "I"
    assert np.asarray(to_rgb8(pil))[0, :, 0].tolist() == [0, 1, 255, 255]  # 70000 is clipped


@pytest.mark.parametrize(
    ("mode", "colour", "rgb"),
    [
        ("L", 100, (100, 100, 100)),  # grayscale is replicated into the three channels
        ("RGBA", (10, 20, 30, 0), (10, 20, 30)),  # alpha is dropped, the colour kept
        ("LA", (70, 255), (70, 70, 70)),
        ("1", 1, (255, 255, 255)),  # bilevel white
    ],
)
def test_other_modes_become_rgb(mode, colour, rgb):
    converted = to_rgb8(Image.new(mode, (2, 2), colour))
    assert converted.mode == "RGB"
    assert converted.getpixel((1, 1)) == rgb


def test_palette_image_becomes_its_palette_colour():
    pil = Image.new("P", (2, 2), 3)
    pil.putpalette([0, 0, 0] * 3 + [12, 34, 56] + [0, 0, 0] * 252)
    assert to_rgb8(pil).getpixel((0, 0)) == (12, 34, 56)


def broken_split(root):
    """Four train images: 000 fine, 001 truncated, 002 missing, 003 fine with one degenerate box."""
    ann, folder = write_split(root, "train", 4)
    data = (folder / "001.png").read_bytes()
    (folder / "001.png").write_bytes(data[: len(data) // 2])
    (folder / "002.png").unlink()
    records = json.loads(ann.read_text())
    records["annotations"].append({"id": 99, "image_id": 4, "category_id": 1, "bbox": [3, 3, 0, 5], "iscrowd": 0})
    ann.write_text(json.dumps(records))
    return ann, folder


def test_skip_drops_missing_and_truncated_images_with_their_annotations(tmp_path):
    ann, folder = broken_split(tmp_path)
    dataset = DetectionDataset(ann, folder, on_bad_sample="skip")
    assert dataset.skipped_boxes == 1
    dataset.verify_images()
    assert dataset.skipped_images == 2
    assert [record.image_id for record in dataset.records] == [1, 4]
    # Evaluation reads `dataset.dataset`: the dropped images and their boxes are gone from it too.
    assert [image["id"] for image in dataset.dataset["images"]] == [1, 4]
    assert {a["image_id"] for a in dataset.dataset["annotations"]} == {1, 4}
    assert len(dataset.dataset["annotations"]) == 5  # 2 + 2 drawn boxes, plus the skipped one (not a target)


def test_error_mode_names_the_first_bad_image_and_the_count(tmp_path):
    ann, folder = broken_split(tmp_path)
    dataset = DetectionDataset(ann, folder, on_bad_sample="skip")  # boxes skipped, images checked below
    dataset.on_bad_sample = "error"
    with pytest.raises(LibraError) as error:
        dataset.verify_images()
    message = str(error.value)
    assert "001.png: cannot decode image" in message and "image id 2" in message
    assert "2 bad image(s) in all" in message and "--on-bad-sample skip" in message
    assert "\n" not in message


@pytest.mark.slow
def test_a_skipping_run_logs_its_counts_and_evaluates_only_the_images_it_kept(tmp_path):
    broken_split(tmp_path / "data")
    _, val_folder = write_split(tmp_path / "data", "val", 3)
    (val_folder / "000.png").unlink()
    config = tiny_config(tmp_path / "data", tmp_path / "run", data__on_bad_sample="skip", train__max_iters=1)
    train(config)
    start = read_log(tmp_path / "run")[0]
    assert start["type"] == "start"
    assert start["skipped"] == {"train_boxes": 1, "train_images": 2, "val_boxes": 0, "val_images": 1}
    assert json.loads((tmp_path / "run" / "dataset.json").read_text())["num_images"] == 2
    assert json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())["num_images"] == 2


def write_exif_rotated_jpeg(root, *, declared_width=160, declared_height=200):
    """A phone-style JPEG: 200 × 160 pixels stored, EXIF orientation 6 (turn 90° clockwise to view), so it is
    160 wide and 200 tall upright. Its left 40 stored columns are white, the rest black: upright (rotated
    clockwise) the white band lies along the top, rows 0..39. One box is annotated on it."""
    folder = root / "img"
    folder.mkdir(parents=True)
    stored = np.zeros((160, 200, 3), dtype=np.uint8)  # height 160, width 200 as stored
    stored[:, :40] = 255
    pil = Image.fromarray(stored)
    exif = pil.getexif()
    exif[0x0112] = 6
    pil.save(folder / "phone.jpg", exif=exif.tobytes(), quality=95)
    images = [{"id": 1, "file_name": "phone.jpg", "width": declared_width, "height": declared_height}]
    annotations = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 50, 100, 100], "iscrowd": 0}]
    ann = root / "ann.json"
    ann.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    return ann, folder


def test_an_exif_rotated_jpeg_loads_upright_and_passes_the_size_check(tmp_path):
    ann, folder = write_exif_rotated_jpeg(tmp_path)
    dataset = DetectionDataset(ann, folder)
    dataset.verify_images()  # declared 160 × 200 = the upright size: no complaint
    image, target = dataset[0]
    # Upright the image is 160 wide, 200 tall: [3, 200, 160]; the stored pixels would be [3, 160, 200].
    assert image.shape == (3, 200, 160)
    # The white stored columns 0..39 become the top rows 0..39 once turned clockwise (JPEG blurs the edge).
    assert image[:, :35].mean() > 0.95 and image[:, 45:].mean() < 0.05
    # The box stays where it was annotated: no rescaling, since sizes agree.
    assert target["boxes"].tolist() == [[10.0, 50.0, 110.0, 150.0]]


def test_a_declared_size_that_differs_from_the_image_is_refused_in_one_line(tmp_path):
    ann, folder = write_exif_rotated_jpeg(tmp_path, declared_width=999)
    dataset = DetectionDataset(ann, folder)
    with pytest.raises(LibraError) as error:
        dataset.verify_images()
    message = str(error.value)
    assert "\n" not in message
    assert "phone.jpg" in message
    # Declared 999 × 200; upright the image is 160 × 200 (stored 200 × 160, orientation 6 swaps them).
    assert "declared 999 × 200 (width × height), the image is 160 × 200 upright (EXIF orientation 6)" in message
    assert "--on-bad-sample skip" in message


def test_a_stored_size_declared_for_a_rotated_jpeg_is_a_mismatch(tmp_path):
    # Annotated as stored (200 × 160) although the image is viewed upright as 160 × 200: the boxes of such a
    # file were drawn on other pixels, so it is refused rather than silently rescaled.
    ann, folder = write_exif_rotated_jpeg(tmp_path, declared_width=200, declared_height=160)
    with pytest.raises(LibraError, match=r"declared 200 × 160 \(width × height\), the image is 160 × 200"):
        DetectionDataset(ann, folder).verify_images()


def test_skip_drops_an_image_whose_declared_size_is_wrong(tmp_path):
    ann, folder = write_exif_rotated_jpeg(tmp_path, declared_width=999)
    dataset = DetectionDataset(ann, folder, on_bad_sample="skip")
    dataset.verify_images()
    assert dataset.skipped_images == 1  # the one image, with its one box
    assert dataset.records == [] and dataset.dataset["annotations"] == []
