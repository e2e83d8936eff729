"""DetectionDataset: torchvision-style targets, sparse-id round trip, crowd handling, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from libra_cli.data.coco import DetectionDataset
from libra_cli.data.sampler import IterationBatchSampler
from libra_cli.data.transforms import TrainAugmentation, hflip
from libra_cli.errors import LibraError


def write_dataset(root: Path, *, annotations, categories, images=None, size=(40, 30)) -> Path:
    (root / "img").mkdir(parents=True, exist_ok=True)
    images = images or [
        {"id": 10, "file_name": "a.png", "width": size[0], "height": size[1]},
        {"id": 20, "file_name": "b.png", "width": size[0], "height": size[1]},
    ]
    for image in images:
        Image.new("RGB", (image["width"], image["height"]), (10, 20, 30)).save(root / "img" / image["file_name"])
    path = root / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


SPARSE_CATEGORIES = [{"id": 12, "name": "c"}, {"id": 3, "name": "a"}, {"id": 7, "name": "b"}]


def test_sparse_category_ids_map_to_contiguous_labels_and_back(tmp_path):
    anns = [
        {"id": 1, "image_id": 10, "category_id": 3, "bbox": [1, 2, 10, 5], "area": 50, "iscrowd": 0},
        {"id": 2, "image_id": 10, "category_id": 12, "bbox": [5, 5, 4, 4], "area": 16, "iscrowd": 0},
        {"id": 3, "image_id": 20, "category_id": 7, "bbox": [0, 0, 8, 8], "area": 64, "iscrowd": 0},
    ]
    ds = DetectionDataset(write_dataset(tmp_path, annotations=anns, categories=SPARSE_CATEGORIES), tmp_path / "img")
    # Sorted ids 3, 7, 12 become labels 1, 2, 3.
    assert ds.category_ids == [3, 7, 12]
    _, target = ds[0]
    assert target["labels"].tolist() == [1, 3]
    # xywh [1, 2, 10, 5] → xyxy [1, 2, 11, 7]
    assert target["boxes"].tolist() == [[1.0, 2.0, 11.0, 7.0], [5.0, 5.0, 9.0, 9.0]]
    assert [ds.label_to_category_id(label) for label in (1, 2, 3)] == [3, 7, 12]
    assert ds.category_names() == ["a", "b", "c"]


def test_crowd_boxes_are_excluded_and_images_without_boxes_are_kept(tmp_path):
    anns = [
        {"id": 1, "image_id": 10, "category_id": 3, "bbox": [1, 2, 10, 5], "area": 50, "iscrowd": 1},
        {"id": 2, "image_id": 10, "category_id": 7, "bbox": [5, 5, 4, 4], "area": 16},  # no iscrowd field
    ]
    ds = DetectionDataset(write_dataset(tmp_path, annotations=anns, categories=SPARSE_CATEGORIES), tmp_path / "img")
    assert len(ds) == 2
    image, target = ds[0]
    assert image.shape == (3, 30, 40) and image.dtype == torch.float32
    assert target["labels"].tolist() == [2]
    _, empty = ds[1]
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)


def test_images_per_class_counts_each_image_once(tmp_path):
    anns = [
        {"id": 1, "image_id": 10, "category_id": 3, "bbox": [1, 1, 4, 4], "iscrowd": 0},
        {"id": 2, "image_id": 10, "category_id": 3, "bbox": [6, 6, 4, 4], "iscrowd": 0},
        {"id": 3, "image_id": 20, "category_id": 3, "bbox": [6, 6, 4, 4], "iscrowd": 0},
        {"id": 4, "image_id": 20, "category_id": 12, "bbox": [6, 6, 4, 4], "iscrowd": 0},
    ]
    ds = DetectionDataset(write_dataset(tmp_path, annotations=anns, categories=SPARSE_CATEGORIES), tmp_path / "img")
    assert ds.images_per_class().tolist() == [2, 0, 1]
    assert ds.instances_per_class().tolist() == [3, 0, 1]


@pytest.mark.parametrize(
    ("annotation", "message"),
    [
        ({"id": 1, "image_id": 10, "category_id": 99, "bbox": [1, 1, 4, 4]}, "unknown category id 99"),
        ({"id": 1, "image_id": 77, "category_id": 3, "bbox": [1, 1, 4, 4]}, "unknown image id 77"),
        ({"id": 1, "image_id": 10, "category_id": 3, "bbox": [1, 1, 0, 4]}, "zero or negative size"),
        ({"id": 1, "image_id": 10, "category_id": 3, "bbox": [100, 100, 4, 4]}, "outside the image"),
        ({"id": 1, "image_id": 10, "category_id": 3}, "missing field 'bbox'"),
    ],
)
def test_bad_annotations_name_the_field_and_value(tmp_path, annotation, message):
    path = write_dataset(tmp_path, annotations=[annotation], categories=SPARSE_CATEGORIES)
    with pytest.raises(LibraError, match=message) as info:
        DetectionDataset(path, tmp_path / "img")
    assert "annotations[0]" in str(info.value) or "unknown" in str(info.value)


def test_skip_mode_drops_degenerate_boxes_and_counts_them(tmp_path):
    anns = [
        {"id": 1, "image_id": 10, "category_id": 3, "bbox": [1, 1, 0, 4]},
        {"id": 2, "image_id": 10, "category_id": 3, "bbox": [1, 1, 5, 4]},
    ]
    path = write_dataset(tmp_path, annotations=anns, categories=SPARSE_CATEGORIES)
    ds = DetectionDataset(path, tmp_path / "img", on_bad_sample="skip")
    assert ds.skipped_boxes == 1
    assert ds[0][1]["labels"].tolist() == [1]


def test_not_json_and_path_escape_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    (tmp_path / "img").mkdir()
    with pytest.raises(LibraError, match="not valid JSON"):
        DetectionDataset(bad, tmp_path / "img")
    images = [{"id": 1, "file_name": "../escape.png", "width": 8, "height": 8}]
    path = tmp_path / "esc.json"
    path.write_text(json.dumps({"images": images, "annotations": [], "categories": SPARSE_CATEGORIES}))
    with pytest.raises(LibraError, match="outside the image folder"):
        DetectionDataset(path, tmp_path / "img")


def test_lvis_v1_images_are_found_through_coco_url(tmp_path):
    images = [
        {
            "id": 5,
            "coco_url": "http://host/train2017/000005.png",
            "width": 16,
            "height": 16,
            "neg_category_ids": [],
            "not_exhaustive_category_ids": [],
        }
    ]
    (tmp_path / "img").mkdir()
    Image.new("RGB", (16, 16)).save(tmp_path / "img" / "000005.png")
    categories = [{"id": 1, "name": "x", "frequency": "r"}]
    path = tmp_path / "lvis.json"
    path.write_text(json.dumps({"images": images, "annotations": [], "categories": categories}))
    ds = DetectionDataset(path, tmp_path / "img")
    assert ds.format == "lvis"
    assert ds.records[0].path.name == "000005.png"


def test_hflip_mirrors_boxes():
    image = torch.arange(2 * 4, dtype=torch.float32).reshape(1, 2, 4).repeat(3, 1, 1)
    boxes = torch.tensor([[0.0, 0.0, 1.0, 2.0]])
    flipped, new_boxes = hflip(image, boxes)
    assert new_boxes.tolist() == [[3.0, 0.0, 4.0, 2.0]]  # x' = W − x with W = 4
    assert flipped[0, 0].tolist() == [3.0, 2.0, 1.0, 0.0]


def test_augmentation_depends_only_on_the_seed():
    image = torch.rand(3, 8, 8)
    target = {"boxes": torch.tensor([[1.0, 1.0, 3.0, 3.0]]), "labels": torch.tensor([1])}
    aug = TrainAugmentation(hflip_prob=0.5)
    first = aug(image, target, torch.Generator().manual_seed(42))
    second = aug(image, target, torch.Generator().manual_seed(42))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1]["boxes"], second[1]["boxes"])


def test_iteration_sampler_resumes_exactly_and_splits_across_ranks():
    full = list(IterationBatchSampler(10, 4, seed=1, start_iter=0, max_iters=7))
    resumed = list(IterationBatchSampler(10, 4, seed=1, start_iter=3, max_iters=7))
    assert resumed == full[3:]
    # Every epoch visits each of the 10 images once: positions 0..9 are the first permutation.
    first_epoch = [index for batch in full for index, _ in batch][:10]
    assert sorted(first_epoch) == list(range(10))
    rank0 = list(IterationBatchSampler(10, 4, seed=1, start_iter=0, max_iters=7, rank=0, world_size=2))
    rank1 = list(IterationBatchSampler(10, 4, seed=1, start_iter=0, max_iters=7, rank=1, world_size=2))
    for k in range(7):
        assert sorted(rank0[k] + rank1[k]) == sorted(full[k])


def test_num_annotated_images_counts_images_with_a_non_crowd_box(tmp_path):
    # Three images: one with two boxes, one with a crowd region only, one with nothing → 1 annotated image
    # (crowd regions are not training targets), the EQL reference's frequency denominator.
    (tmp_path / "img").mkdir()
    images = []
    for index in range(3):
        Image.new("RGB", (20, 20)).save(tmp_path / "img" / f"{index}.png")
        images.append({"id": index + 1, "file_name": f"{index}.png", "width": 20, "height": 20})
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [8, 8, 5, 5], "area": 25, "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 1, "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 1},
    ]
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "a"}]}))
    dataset = DetectionDataset(ann, tmp_path / "img")
    assert (len(dataset), dataset.num_annotated_images()) == (3, 1)


def write_lvis(tmp_path: Path, images: list[dict], name: str = "lvis.json") -> Path:
    categories = [{"id": 1, "name": "x", "frequency": "r"}]
    for image in images:
        image.setdefault("width", 8)
        image.setdefault("height", 6)
        image.setdefault("neg_category_ids", [])
        image.setdefault("not_exhaustive_category_ids", [])
    path = tmp_path / name
    path.write_text(json.dumps({"images": images, "annotations": [], "categories": categories}))
    return path


def save_png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6)).save(path)
    return path


def test_lvis_v1_val_images_resolve_from_the_coco_root_or_either_split_folder(tmp_path):
    # LVIS v1 val: coco_url only, images drawn from both COCO 2017 splits.
    coco = tmp_path / "coco"
    in_train = save_png(coco / "train2017" / "000000000001.png")
    in_val = save_png(coco / "val2017" / "000000000002.png")
    ann = write_lvis(
        tmp_path,
        [
            {"id": 1, "coco_url": "http://images.cocodataset.org/train2017/000000000001.png"},
            {"id": 2, "coco_url": "http://images.cocodataset.org/val2017/000000000002.png"},
        ],
    )
    expected = [in_train.resolve(), in_val.resolve()]
    for root in (coco, coco / "train2017", coco / "val2017"):
        dataset = DetectionDataset(ann, root)
        assert [record.path for record in dataset.records] == expected, root
        dataset.verify_images()
        assert len(dataset) == 2


def test_lvis_v05_coco2014_names_resolve_to_coco2017_files(tmp_path):
    coco = tmp_path / "coco"
    with_url = save_png(coco / "train2017" / "000000397133.png")
    without_url = save_png(coco / "val2017" / "000000000139.png")
    ann = write_lvis(
        tmp_path,
        [
            {
                "id": 1,
                "file_name": "COCO_val2014_000000397133.png",
                "coco_url": "http://images.cocodataset.org/train2017/000000397133.png",
            },
            {"id": 2, "file_name": "COCO_val2014_000000000139.png"},
        ],
    )
    for root in (coco, coco / "val2017"):
        dataset = DetectionDataset(ann, root)
        assert [record.path for record in dataset.records] == [with_url.resolve(), without_url.resolve()]


def test_a_file_named_as_given_wins_and_a_missing_image_names_every_path_tried(tmp_path):
    images = tmp_path / "images"
    direct = save_png(images / "COCO_val2014_000000000007.png")
    save_png(images / "000000000007.png")
    ann = write_lvis(
        tmp_path,
        [
            {"id": 7, "file_name": "COCO_val2014_000000000007.png"},
            {"id": 8, "coco_url": "http://images.cocodataset.org/val2017/000000000008.png"},
        ],
    )
    dataset = DetectionDataset(ann, images)
    assert dataset.records[0].path == direct.resolve()
    with pytest.raises(LibraError) as caught:
        dataset.verify_images()
    message = str(caught.value)
    assert "000000000008.png: image file not found; tried" in message
    assert str(images.resolve() / "val2017" / "000000000008.png") in message
    assert str(tmp_path.resolve() / "val2017" / "000000000008.png") in message
    assert "--on-bad-sample skip" in message
    skipping = DetectionDataset(ann, images, on_bad_sample="skip")
    skipping.verify_images()
    assert (len(skipping), skipping.skipped_images) == (1, 1)


def test_drop_unannotated_leaves_out_images_without_annotations_and_under_32_px(tmp_path):
    # The reference's training set (mmdetection v1 _filter_imgs): an image is kept only if some annotation names
    # it (a crowd one counts) and min(width, height) >= 32. Image 10 (64 × 48, crowd only) stays, 20 (64 × 48,
    # no annotation) goes, 30 (64 × 31, annotated) goes, 40 (32 × 32, annotated) stays: 2 of 4.
    images = [
        {"id": 10, "file_name": "a.png", "width": 64, "height": 48},
        {"id": 20, "file_name": "b.png", "width": 64, "height": 48},
        {"id": 30, "file_name": "c.png", "width": 64, "height": 31},
        {"id": 40, "file_name": "d.png", "width": 32, "height": 32},
    ]
    anns = [
        {"id": 1, "image_id": 10, "category_id": 3, "bbox": [1, 2, 10, 5], "area": 50, "iscrowd": 1},
        {"id": 2, "image_id": 30, "category_id": 3, "bbox": [1, 2, 10, 5], "area": 50, "iscrowd": 0},
        {"id": 3, "image_id": 40, "category_id": 3, "bbox": [1, 2, 10, 5], "area": 50, "iscrowd": 0},
    ]
    ann_file = write_dataset(tmp_path, annotations=anns, categories=SPARSE_CATEGORIES, images=images)
    kept_all = DetectionDataset(ann_file, tmp_path / "img")
    filtered = DetectionDataset(ann_file, tmp_path / "img", drop_unannotated=True)
    assert [r.image_id for r in kept_all.records] == [10, 20, 30, 40]
    assert [r.image_id for r in filtered.records] == [10, 40]
    assert filtered.dropped_images == 2 and kept_all.dropped_images == 0
