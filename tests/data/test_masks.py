"""Instance masks: COCO / LVIS segmentations (polygons, uncompressed and compressed RLE) into mask targets,
their augmentation, bad input, and the synthetic benchmark's exact visible masks."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils
from typer.testing import CliRunner

from libra_cli.cli import app
from libra_cli.data import synth
from libra_cli.data.coco import DetectionDataset
from libra_cli.data.synth import SynthSpec, generate_benchmark
from libra_cli.data.transforms import TrainAugmentation, resize_masks
from libra_cli.errors import LibraError

# pycocotools' decode trips numpy 2's notice about __array__'s copy keyword; the masks are sound.
pytestmark = pytest.mark.filterwarnings("ignore:.*copy keyword:DeprecationWarning")

WIDTH, HEIGHT = 6, 5
CATEGORIES = [{"id": 1, "name": "thing"}]

# The square polygon with corners (1, 1) and (4, 3). pycocotools rasterises a polygon as the pixels whose
# area [x, x + 1) × [y, y + 1) it covers (so mask.area of an integer rectangle is its geometric area): columns
# 1..3 and rows 1..2 of the 6 × 5 image, 3 × 2 = 6 pixels.
SQUARE = [1, 1, 4, 1, 4, 3, 1, 3]
SQUARE_MASK = np.array(
    [
        [0, 0, 0, 0, 0, 0],
        [0, 1, 1, 1, 0, 0],
        [0, 1, 1, 1, 0, 0],
        [0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0],
    ],
    dtype=np.uint8,
)
# Column 0 whole and rows 2..3 of column 3. Read column by column (column-major, as RLE runs are): 0 zeros,
# 5 ones (column 0), 5 + 5 + 2 = 12 zeros (columns 1, 2 and the top of 3), 2 ones, 1 + 5 + 5 = 11 zeros.
RLE_MASK = np.array(
    [
        [1, 0, 0, 0, 0, 0],
        [1, 0, 0, 0, 0, 0],
        [1, 0, 0, 1, 0, 0],
        [1, 0, 0, 1, 0, 0],
        [1, 0, 0, 0, 0, 0],
    ],
    dtype=np.uint8,
)
RLE_COUNTS = [0, 5, 12, 2, 11]
# The same runs compressed by hand (pycocotools' string form): from the fourth run on, each is stored as its
# difference to the run two before it, giving 0, 5, 12, 2 - 5 = -3, 11 - 12 = -1; each value fits one 5-bit
# group (two's complement, so -3 → 29 and -1 → 31) written as the character 48 + group: "0", "5", "<", "M", "O".
RLE_STRING = "05<MO"


def write_dataset(root: Path, annotations: list[dict], *, file_size: tuple[int, int] = (WIDTH, HEIGHT)) -> Path:
    """One 6 × 5 image (``file_size`` on disk), the given annotations, one category."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", file_size, (10, 20, 30)).save(root / "img" / "a.png")
    images = [{"id": 1, "file_name": "a.png", "width": WIDTH, "height": HEIGHT}]
    path = root / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    return path


def ann(segmentation, bbox, *, index: int = 1, **extra) -> dict:
    record = {"id": index, "image_id": 1, "category_id": 1, "bbox": bbox, "iscrowd": 0, **extra}
    if segmentation is not None:
        record["segmentation"] = segmentation
    return record


def masks_of(tmp_path: Path, annotations: list[dict], **kwargs) -> tuple[torch.Tensor, dict]:
    dataset = DetectionDataset(write_dataset(tmp_path, annotations), tmp_path / "img", with_masks=True, **kwargs)
    return dataset[0]


# ---------------------------------------------------------------------------------------- decoding


def test_a_polygon_becomes_the_pixels_pycocotools_rasterises(tmp_path):
    _, target = masks_of(tmp_path, [ann([SQUARE], [1, 1, 3, 2])])
    assert target["masks"].dtype == torch.uint8
    assert target["masks"].shape == (1, HEIGHT, WIDTH)
    assert target["masks"][0].numpy().tolist() == SQUARE_MASK.tolist()


def test_the_parts_of_a_polygon_segmentation_are_united(tmp_path):
    parts = [[0, 0, 2, 0, 2, 2, 0, 2], [4, 3, 6, 3, 6, 5, 4, 5]]  # 2 × 2 squares in opposite corners
    _, target = masks_of(tmp_path, [ann(parts, [0, 0, 6, 5])])
    expected = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    expected[0:2, 0:2] = 1
    expected[3:5, 4:6] = 1
    assert target["masks"][0].numpy().tolist() == expected.tolist()


@pytest.mark.parametrize("counts", [RLE_COUNTS, RLE_STRING], ids=["uncompressed", "compressed"])
def test_an_rle_is_decoded_column_by_column(tmp_path, counts):
    _, target = masks_of(tmp_path, [ann({"size": [HEIGHT, WIDTH], "counts": counts}, [0, 0, 4, 5])])
    assert target["masks"][0].numpy().tolist() == RLE_MASK.tolist()


def test_masks_follow_the_boxes_order_and_leave_out_crowd_regions(tmp_path):
    annotations = [
        ann({"size": [HEIGHT, WIDTH], "counts": RLE_COUNTS}, [0, 0, 4, 5], index=1),
        ann([[0, 0, 6, 0, 6, 5, 0, 5]], [0, 0, 6, 5], index=2, iscrowd=1),  # the whole image, a crowd
        ann([SQUARE], [1, 1, 3, 2], index=3),
    ]
    _, target = masks_of(tmp_path, annotations)
    assert target["boxes"].tolist() == [[0.0, 0.0, 4.0, 5.0], [1.0, 1.0, 4.0, 3.0]]
    assert [m.numpy().tolist() for m in target["masks"]] == [RLE_MASK.tolist(), SQUARE_MASK.tolist()]


def test_an_image_without_boxes_has_an_empty_mask_stack(tmp_path):
    _, target = masks_of(tmp_path, [ann([SQUARE], [1, 1, 3, 2], iscrowd=1)])
    assert target["masks"].shape == (0, HEIGHT, WIDTH) and target["masks"].dtype == torch.uint8


def test_masks_follow_an_image_file_of_another_size(tmp_path):
    # The file is twice the annotated size: boxes double, and every mask pixel becomes a 2 × 2 block.
    path = write_dataset(tmp_path, [ann([SQUARE], [1, 1, 3, 2])], file_size=(2 * WIDTH, 2 * HEIGHT))
    _, target = DetectionDataset(path, tmp_path / "img", with_masks=True)[0]
    assert target["boxes"].tolist() == [[2.0, 2.0, 8.0, 6.0]]
    expected = SQUARE_MASK.repeat(2, axis=0).repeat(2, axis=1)
    assert target["masks"][0].numpy().tolist() == expected.tolist()


def test_without_masks_targets_and_augmentation_are_unchanged(tmp_path):
    path = write_dataset(tmp_path, [ann([SQUARE], [1, 1, 3, 2])])
    augmentation = TrainAugmentation(hflip_prob=0.5, scale_range=(0.5, 2.0))
    plain = DetectionDataset(path, tmp_path / "img", augmentation=augmentation)
    masked = DetectionDataset(path, tmp_path / "img", augmentation=augmentation, with_masks=True)
    for seed in range(6):  # both flip outcomes and several scales
        image, target = plain[(0, seed)]
        masked_image, masked_target = masked[(0, seed)]
        assert "masks" not in target and set(masked_target) == {*target, "masks"}
        assert torch.equal(image, masked_image)
        assert torch.equal(target["boxes"], masked_target["boxes"])
        assert masked_target["masks"].shape[-2:] == image.shape[-2:]


# ---------------------------------------------------------------------------------------- augmentation


def test_a_flip_mirrors_masks_like_boxes(tmp_path):
    path = write_dataset(tmp_path, [ann([SQUARE], [1, 1, 3, 2])])
    dataset = DetectionDataset(path, tmp_path / "img", augmentation=TrainAugmentation(hflip_prob=1.0), with_masks=True)
    _, target = dataset[0]
    # Columns 1..3 of 6 become columns 6 - 1 - 3 .. 6 - 1 - 1 = 2..4; the box [1, 4) becomes [2, 5).
    assert target["boxes"].tolist() == [[2.0, 1.0, 5.0, 3.0]]
    expected = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    expected[1:3, 2:5] = 1
    assert target["masks"][0].numpy().tolist() == expected.tolist()


def test_a_rescale_resizes_masks_like_boxes(tmp_path):
    path = write_dataset(tmp_path, [ann([SQUARE], [1, 1, 3, 2])])
    augmentation = TrainAugmentation(hflip_prob=0.0, scale_range=(3.0, 3.0))
    image, target = DetectionDataset(path, tmp_path / "img", augmentation=augmentation, with_masks=True)[0]
    assert image.shape == (3, 15, 18)
    assert target["boxes"].tolist() == [[3.0, 3.0, 12.0, 9.0]]
    # Three times as large: each pixel a 3 × 3 block, so the mask fills exactly its scaled box.
    expected = np.zeros((15, 18), dtype=np.uint8)
    expected[3:9, 3:12] = 1
    assert target["masks"][0].numpy().tolist() == expected.tolist()


def test_resize_masks_picks_the_nearest_pixel_centre():
    # 4 columns → 2: output column j covers input columns 2j..2j+1 and reads the one under its centre,
    # input position (j + 0.5) · 2 = 1 or 3; rows 2 → 1 read input row ⌊0.5 · 2⌋ = 1.
    masks = torch.tensor([[[1, 1, 0, 0], [0, 1, 0, 1]]], dtype=torch.uint8)
    assert resize_masks(masks, (1, 2)).tolist() == [[[1, 1]]]
    assert resize_masks(torch.zeros((0, 2, 4), dtype=torch.uint8), (1, 2)).shape == (0, 1, 2)


# ---------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("segmentation", "field", "problem"),
    [
        (None, "annotations[0]: missing field 'segmentation'", "needed for masks"),
        ([[1, 1, 4, 1, 4, 3, 1]], "annotations[0].segmentation[0]", "odd number of coordinates (7)"),
        ([[1, 1, 4, 1]], "annotations[0].segmentation[0]", "at least 3 points, got 2"),
        ([[1, 1, 4, "1", 4, 3]], "annotations[0].segmentation[0]", "expected a list of numbers"),
        ([SQUARE, [1, 1, 4, 1, True, 3]], "annotations[0].segmentation[1]", "expected a list of numbers"),
        ([], "annotations[0].segmentation", "no polygon"),
        ({"counts": RLE_COUNTS}, "annotations[0].segmentation", "expected polygons"),
        ({"size": [WIDTH, HEIGHT], "counts": RLE_COUNTS}, "annotations[0].segmentation.size", "[6, 5] differs"),
        ({"size": [HEIGHT, WIDTH], "counts": [0, 5, 12, 2]}, "annotations[0].segmentation.counts", "sum to 19"),
        ({"size": [HEIGHT, WIDTH], "counts": [0, -5, 35]}, "annotations[0].segmentation.counts", "non-negative"),
        ({"size": [HEIGHT, WIDTH], "counts": "05<M~"}, "annotations[0].segmentation.counts", "not a compressed"),
    ],
)
def test_a_bad_segmentation_is_refused_at_load_time(tmp_path, segmentation, field, problem):
    path = write_dataset(tmp_path, [ann(segmentation, [1, 1, 3, 2])])
    with pytest.raises(LibraError) as raised:
        DetectionDataset(path, tmp_path / "img", with_masks=True)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {field}") and problem in message


@pytest.mark.parametrize(
    ("counts", "problem"),
    [
        ("05<", "runs sum to 17, not height × width = 30"),  # runs 0, 5, 12: the string stops early
        ("05<MP", "is no compressed RLE"),  # "P" = 48 + 32: a continued value with nothing after it
    ],
)
def test_a_compressed_rle_that_does_not_cover_the_image_is_refused_when_decoded(tmp_path, counts, problem):
    path = write_dataset(tmp_path, [ann({"size": [HEIGHT, WIDTH], "counts": counts}, [1, 1, 3, 2])])
    dataset = DetectionDataset(path, tmp_path / "img", with_masks=True)
    with pytest.raises(LibraError) as raised:
        dataset[0]
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: annotations[0].segmentation.counts") and problem in message


def test_without_masks_segmentations_are_not_read(tmp_path):
    path = write_dataset(tmp_path, [ann([[1, 1, 4]], [1, 1, 3, 2]), ann(None, [0, 0, 2, 2], index=2)])
    _, target = DetectionDataset(path, tmp_path / "img")[0]
    assert target["boxes"].tolist() == [[1.0, 1.0, 4.0, 3.0], [0.0, 0.0, 2.0, 2.0]]


def test_skip_drops_an_annotation_with_a_bad_segmentation_box_and_all(tmp_path):
    annotations = [ann([[1, 1, 4]], [0, 0, 2, 2], index=1), ann([SQUARE], [1, 1, 3, 2], index=2)]
    dataset = DetectionDataset(
        write_dataset(tmp_path, annotations), tmp_path / "img", with_masks=True, on_bad_sample="skip"
    )
    assert dataset.skipped_boxes == 1
    _, target = dataset[0]
    assert target["boxes"].tolist() == [[1.0, 1.0, 4.0, 3.0]]
    assert [m.numpy().tolist() for m in target["masks"]] == [SQUARE_MASK.tolist()]


def test_mask_rcnn_training_on_a_malformed_polygon_exits_2_with_one_line(tmp_path):
    path = write_dataset(tmp_path, [ann([[1, 1, 4, 1, 4, 3, 1]], [1, 1, 3, 2])])
    images = str(tmp_path / "img")
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--arch",
            "mask_rcnn",
            "--train-ann",
            str(path),
            "--train-images",
            images,
            "--val-ann",
            str(path),
            "--val-images",
            images,
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output
    assert "ann.json: annotations[0].segmentation[0]: odd number of coordinates (7)" in lines[0]


# ---------------------------------------------------------------------------------------- synthetic masks


@contextmanager
def recorded_shapes(monkeypatch):
    """Record, per generated image, the polygons of each labelled object as drawn: a list per image of
    (iscrowd, [(outline, hole), ...]) in drawing order, a crowd region holding all of its tiny shapes."""
    images: list[list[tuple[int, list]]] = []
    state = {"in": None}
    paint, crowd, clutter = synth._paint, synth._draw_crowd, synth._draw_clutter_and_distractors
    draw_image = synth._draw_image

    def spy_paint(canvas, outline, hole, rgb, *args):
        extent = paint(canvas, outline, hole, rgb, *args)
        if extent is not None and state["in"] != "clutter":
            if state["in"] == "crowd":
                images[-1][-1][1].append((outline, hole))
            else:
                images[-1].append((0, [(outline, hole)]))
        return extent

    def spy_crowd(*args):
        images[-1].append((1, []))
        state["in"] = "crowd"
        box = crowd(*args)
        state["in"] = None
        if box is None:
            images[-1].pop()
        return box

    def spy_clutter(*args):
        state["in"] = "clutter"
        clutter(*args)
        state["in"] = None

    def spy_draw_image(*args):
        images.append([])
        return draw_image(*args)

    monkeypatch.setattr(synth, "_paint", spy_paint)
    monkeypatch.setattr(synth, "_draw_crowd", spy_crowd)
    monkeypatch.setattr(synth, "_draw_clutter_and_distractors", spy_clutter)
    monkeypatch.setattr(synth, "_draw_image", spy_draw_image)
    yield images


def redrawn_visible_masks(objects: list[tuple[int, list]], size: int) -> list[np.ndarray]:
    """Each object's shapes drawn alone on a blank image (holes left open), less those of every later object."""
    bodies = []
    for _, shapes in objects:
        body = Image.new("1", (size, size), 0)
        draw = ImageDraw.Draw(body)
        for outline, hole in shapes:
            draw.polygon([tuple(p) for p in outline.tolist()], fill=1)
            if hole is not None:
                draw.polygon([tuple(p) for p in hole.tolist()], fill=0)
        bodies.append(np.asarray(body, dtype=bool))
    visible = []
    for i, body in enumerate(bodies):
        later = np.zeros_like(body)
        for other in bodies[i + 1 :]:
            later |= other
        visible.append(body & ~later)
    return visible


@pytest.mark.parametrize(
    "spec",
    [
        SynthSpec(num_train=4, num_val=0, image_size=96, seed=5),
        SynthSpec(num_train=3, num_val=0, image_size=64, num_classes=6, long_tail=True, val_instances_per_class=0),
    ],
    ids=["coco_with_crowd", "lvis"],
)
def test_synthetic_masks_are_the_exact_visible_pixels(tmp_path, monkeypatch, spec):
    monkeypatch.setattr(synth, "_CROWD_PROBABILITY", 1.0)  # a crowd region in every COCO-format image
    with recorded_shapes(monkeypatch) as drawn:
        generate_benchmark(tmp_path, spec)
    data = json.loads((tmp_path / "annotations" / "train.json").read_text())
    assert len(drawn) == len(data["images"]) == spec.num_train
    checked = {"crowd": 0, "whole": 0, "occluded": 0}
    for image, objects in zip(data["images"], drawn, strict=True):
        annotations = [a for a in data["annotations"] if a["image_id"] == image["id"]]
        assert [a["iscrowd"] for a in annotations] == [iscrowd for iscrowd, _ in objects]
        expected_masks = redrawn_visible_masks(objects, spec.image_size)
        for i, (a, expected) in enumerate(zip(annotations, expected_masks, strict=True)):
            segmentation = a["segmentation"]
            assert segmentation["size"] == [spec.image_size] * 2 and isinstance(segmentation["counts"], str)
            mask = mask_utils.decode(segmentation).astype(bool)
            assert np.array_equal(mask, expected)
            assert mask_utils.area(segmentation) == expected.sum()
            x, y, w, h = (int(v) for v in a["bbox"])
            assert a["area"] == w * h  # the box's area, as before
            outside = mask.copy()
            outside[y : y + h, x : x + w] = False
            assert not outside.any()
            later_boxes = [b["bbox"] for b in annotations[i + 1 :]]
            occluded = any(_overlap(a["bbox"], b) for b in later_boxes)
            if a["iscrowd"]:
                checked["crowd"] += 1
            elif not occluded:
                # Nothing drawn on top: the mask's tight box is the annotated box.
                rows, cols = np.nonzero(mask)
                tight = (cols.min(), rows.min(), cols.max() + 1 - cols.min(), rows.max() + 1 - rows.min())
                assert tight == (x, y, w, h)
                checked["whole"] += 1
            else:
                checked["occluded"] += 1
    assert checked["whole"] > 0 and checked["occluded"] > 0
    assert (checked["crowd"] > 0) == (not spec.long_tail)


def _overlap(a: list[float], b: list[float]) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def test_the_synthetic_benchmark_loads_with_masks_that_fit_their_boxes(tmp_path):
    generate_benchmark(tmp_path, SynthSpec(num_train=3, num_val=0, image_size=64, seed=1))
    dataset = DetectionDataset(tmp_path / "annotations" / "train.json", tmp_path / "images" / "train", with_masks=True)
    for index in range(len(dataset)):
        _, target = dataset[index]
        assert target["masks"].shape == (len(target["boxes"]), 64, 64)
        for box, mask in zip(target["boxes"].int().tolist(), target["masks"], strict=True):
            x0, y0, x1, y1 = box
            assert mask[y0:y1, x0:x1].sum() == mask.sum() > 0
