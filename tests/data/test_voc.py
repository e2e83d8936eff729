"""Pascal VOC as distributed: the reader, the 07+12 union, bad input, the synthetic VOC export, and a tiny
training + evaluation on a VOC tree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from libra_cli.cli import app
from libra_cli.config import load_config
from libra_cli.data.build import build_train_dataset, resolve_data_paths
from libra_cli.data.coco import DetectionDataset, read_annotation_file
from libra_cli.data.synth import SynthSpec, generate_benchmark
from libra_cli.data.voc import VOC_CLASSES, read_voc_spec
from libra_cli.data.voc_export import export_benchmark_to_voc
from libra_cli.errors import LibraError

runner = CliRunner()


def write_year(
    root: Path,
    year: str,
    images: dict[str, tuple[int, int, list[tuple]]],
    splits: dict[str, list[str]],
    classes: list[str] | None = None,
) -> Path:
    """A VOC year folder: ``images`` maps an id to (width, height, objects), each object
    (name, xmin, ymin, xmax, ymax, difficult, truncated) in VOC's 1-based inclusive pixels."""
    folder = root / year
    for sub in ("Annotations", "ImageSets/Main", "JPEGImages"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for stem, (width, height, objects) in images.items():
        Image.new("RGB", (width, height), (90, 90, 90)).save(folder / "JPEGImages" / f"{stem}.jpg")
        parts = [f"<annotation><filename>{stem}.jpg</filename>"]
        parts.append(f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>")
        for name, xmin, ymin, xmax, ymax, difficult, truncated in objects:
            parts.append(
                f"<object><name>{name}</name><truncated>{truncated}</truncated><difficult>{difficult}</difficult>"
                f"<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox>"
                "</object>"
            )
        parts.append("</annotation>")
        (folder / "Annotations" / f"{stem}.xml").write_text("".join(parts))
    for split, stems in splits.items():
        (folder / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{s}\n" for s in stems))
    if classes is not None:
        (folder / "classes.txt").write_text("\n".join(classes) + "\n")
    return folder


VOC07_IMAGES = {
    "000005": (100, 80, [("dog", 1, 1, 100, 80, 0, 1), ("person", 10, 20, 19, 29, 1, 0)]),
    "000007": (50, 40, [("person", 5, 6, 24, 35, 0, 0), ("car", 2, 3, 4, 5, 0, 0)]),
}


@pytest.fixture
def devkit(tmp_path) -> Path:
    """VOCdevkit with VOC2007 (trainval: 000005, 000007; test: 000007) and VOC2012 (trainval: 2008_000002
    and an image also called 000005)."""
    root = tmp_path / "VOCdevkit"
    write_year(root, "VOC2007", VOC07_IMAGES, {"trainval": ["000005", "000007"], "test": ["000007"]})
    write_year(
        root,
        "VOC2012",
        {
            "2008_000002": (60, 60, [("tvmonitor", 31, 1, 60, 30, 0, 0)]),
            "000005": (30, 30, [("person", 1, 1, 30, 30, 1, 0)]),
        },
        {"trainval": ["2008_000002", "000005"]},
    )
    return root


def test_a_year_folder_reads_as_coco_with_the_devkit_box_convention(devkit):
    dataset = read_voc_spec(devkit / "VOC2007", default_split="trainval")
    # The 20 classes in the devkit's order, ids 1..20: dog is the 12th, person the 15th, car the 7th.
    assert [c["name"] for c in dataset["categories"]] == list(VOC_CLASSES)
    assert [c["id"] for c in dataset["categories"]] == list(range(1, 21))
    # Ids: 2007 · 10**10 + the digits of the file stem.
    assert [image["id"] for image in dataset["images"]] == [20070000000005, 20070000000007]
    assert dataset["images"][0] == {
        "id": 20070000000005,
        "file_name": "VOC2007/JPEGImages/000005.jpg",
        "width": 100,
        "height": 80,
        "voc_name": "VOC2007/000005",
    }
    anns = dataset["annotations"]
    # dog (1, 1, 100, 80) covers the whole 100×80 image: x = 1 − 1 = 0, w = 100 − 1 + 1 = 100.
    assert anns[0]["bbox"] == [0.0, 0.0, 100.0, 80.0] and anns[0]["category_id"] == 12
    assert (anns[0]["difficult"], anns[0]["truncated"], anns[0]["iscrowd"]) == (0, 1, 0)
    # person (10, 20, 19, 29): x = 9, y = 19, w = 19 − 10 + 1 = 10, h = 29 − 20 + 1 = 10; difficult → ignore region.
    assert anns[1]["bbox"] == [9.0, 19.0, 10.0, 10.0] and anns[1]["category_id"] == 15
    assert (anns[1]["difficult"], anns[1]["truncated"], anns[1]["iscrowd"]) == (1, 0, 1)
    # car (2, 3, 4, 5): a 3×3 pixel box → [1, 2, 3, 3], area 9.
    assert anns[3]["bbox"] == [1.0, 2.0, 3.0, 3.0] and anns[3]["area"] == 9.0 and anns[3]["category_id"] == 7


def test_difficult_objects_stay_out_of_training_unless_asked_for(devkit):
    spec = devkit / "VOC2007" / "ImageSets" / "Main" / "trainval.txt"
    default = DetectionDataset(spec, devkit)
    # Image 000005 keeps only the dog: the difficult person (9, 19)-(19, 29) is not a target.
    assert default.records[0].boxes == ((0.0, 0.0, 100.0, 80.0),)
    assert default.records[0].labels == (12,)
    assert default.format == "voc"
    with_difficult = DetectionDataset(spec, devkit, voc_use_difficult=True)
    assert with_difficult.records[0].boxes == ((0.0, 0.0, 100.0, 80.0), (9.0, 19.0, 19.0, 29.0))
    assert with_difficult.records[0].labels == (12, 15)
    image, target = with_difficult[0]
    assert image.shape == (3, 80, 100) and target["image_id"] == 20070000000005


def test_the_07_plus_12_union_keeps_ids_unique_and_file_names_resolving(devkit):
    config = load_config(
        None,
        {
            "data": {
                "train_ann": f"{devkit / 'VOC2007'}+{devkit / 'VOC2012'}",
                "val_ann": str(devkit / "VOC2007"),
                "voc_use_difficult": True,
            }
        },
    )
    assert (config.data.train_split, config.data.val_split) == ("trainval", "test")
    paths = resolve_data_paths(config.data)
    # The list-file form records the split; the images live under the folder holding both years.
    lists = [devkit / year / "ImageSets" / "Main" / "trainval.txt" for year in ("VOC2007", "VOC2012")]
    assert str(paths.train_ann) == f"{lists[0]}+{lists[1]}"
    assert paths.train_images == devkit.resolve()
    assert paths.val_ann == devkit / "VOC2007" / "ImageSets" / "Main" / "test.txt"
    train = build_train_dataset(config.data, paths)
    # 000005 of 2007 and of 2012 get different ids; 2008_000002 → 2012 · 10**10 + 2008000002.
    assert [r.image_id for r in train.records] == sorted(
        [20070000000005, 20070000000007, 20122008000002, 20120000000005]
    )
    assert all(record.path.is_file() for record in train.records)
    assert {record.path.parent.parent.name for record in train.records} == {"VOC2007", "VOC2012"}
    # voc_use_difficult: the difficult person of VOC2012/000005 is a target, (1, 1, 30, 30) → (0, 0, 30, 30).
    record = next(r for r in train.records if r.image_id == 20120000000005)
    assert record.boxes == ((0.0, 0.0, 30.0, 30.0),) and record.labels == (15,)


def test_a_class_list_replaces_the_voc_classes(tmp_path):
    root = tmp_path / "devkit"
    write_year(root, "VOC2007", {"1": (20, 20, [("b", 1, 1, 5, 5, 0, 0)])}, {"test": ["1"]}, classes=["a", "b"])
    dataset = read_voc_spec(root / "VOC2007")
    assert dataset["categories"] == [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    assert dataset["annotations"][0]["category_id"] == 2


def bad_year(tmp_path: Path, objects: list[tuple], size: str | None = "<width>50</width><height>40</height>") -> Path:
    """A year folder with one image 000001 whose XML holds ``objects`` given as raw <bndbox> strings."""
    folder = write_year(tmp_path / "devkit", "VOC2007", {}, {"test": ["000001"]})
    body = "".join(
        f"<object><name>{name}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax>"
        "</bndbox></object>"
        for name, a, b, c, d in objects
    )
    size_xml = "" if size is None else f"<size>{size}</size>"
    (folder / "Annotations" / "000001.xml").write_text(f"<annotation>{size_xml}{body}</annotation>")
    return folder


@pytest.mark.parametrize(
    ("objects", "size", "message"),
    [
        ([("dog", 1, 1, 5, 5)], None, r"000001\.xml: missing <size>"),
        (
            [("dog", 1, 1, 51, 5)],
            "<width>50</width><height>40</height>",
            r"000001\.xml: object\[0\]\.bndbox: .*outside",
        ),
        (
            [("dog", 0, 1, 5, 5)],
            "<width>50</width><height>40</height>",
            r"object\[0\]\.bndbox: \(0, 1, 5, 5\).*outside",
        ),
        ([("dog", 1, "1O", 5, 5)], "<width>50</width><height>40</height>", r"object\[0\]\.bndbox\.ymin: '1O'"),
        ([("dog", 1, 1, 5, 5)], "<width>5x</width><height>40</height>", r"size\.width: '5x' is not a number"),
        ([("dragon", 1, 1, 5, 5)], "<width>50</width><height>40</height>", r"object\[0\]\.name: .*'dragon'"),
    ],
)
def test_bad_xml_is_one_line_naming_file_and_field(tmp_path, objects, size, message):
    folder = bad_year(tmp_path, objects, size)
    with pytest.raises(LibraError, match=message) as caught:
        read_voc_spec(folder)
    assert "\n" not in str(caught.value)


def test_a_missing_list_or_xml_names_the_expected_path(devkit):
    with pytest.raises(LibraError) as caught:
        read_voc_spec(devkit / "VOC2007", default_split="val")
    assert str(devkit / "VOC2007" / "ImageSets" / "Main" / "val.txt") in str(caught.value)
    (devkit / "VOC2007" / "Annotations" / "000007.xml").unlink()
    with pytest.raises(LibraError, match=r"test\.txt: image id '000007' has no annotation file .*000007\.xml"):
        read_annotation_file(devkit / "VOC2007")  # a bare year folder reads its test split


def test_cli_refuses_bad_voc_input_in_one_line_before_writing(devkit, tmp_path):
    run = tmp_path / "run"
    common = ["--val-ann", str(devkit / "VOC2007"), "--out", str(run), "--max-iters", "1"]
    missing = runner.invoke(app, ["train", "--train-ann", str(devkit / "VOC2007"), "--train-split", "nosuch", *common])
    assert missing.exit_code == 2
    assert len(missing.output.strip().splitlines()) == 1
    assert "nosuch.txt: ImageSets list not found" in missing.output.replace("\n", "")
    (devkit / "VOC2012" / "classes.txt").write_text("cat\n")  # VOC2012 now knows no tvmonitor
    voc2012 = str(devkit / "VOC2012")
    unknown = runner.invoke(app, ["train", "--train-ann", voc2012, "--train-split", "trainval", *common])
    assert unknown.exit_code == 2
    assert len(unknown.output.strip().splitlines()) == 1
    assert "unknown class 'tvmonitor'" in unknown.output
    assert not run.exists()


def test_synth_voc_export_reads_back_the_same_boxes_labels_and_crowd_flags(tmp_path):
    benchmark = tmp_path / "coco"
    generate_benchmark(benchmark, SynthSpec(num_train=4, num_val=2, image_size=64, num_classes=3, max_objects=3))
    train_json = benchmark / "annotations" / "train.json"
    coco = json.loads(train_json.read_text())
    coco["annotations"][0]["iscrowd"] = 1  # a crowd region for certain, whatever the generator drew
    train_json.write_text(json.dumps(coco))
    summary = export_benchmark_to_voc(benchmark, tmp_path / "out")
    year = Path(summary["year_dir"])
    assert year == tmp_path / "out" / "VOCdevkit" / "VOC2007"
    voc = read_voc_spec(year, default_split="trainval")
    # Train images become 000001… in order; a whole-pixel COCO box [x, y, w, h] is written as xmin = x + 1,
    # xmax = x + w and read back as [xmin − 1, ymin − 1, xmax − xmin + 1, ymax − ymin + 1] = [x, y, w, h].
    name_of = {c["id"]: c["name"] for c in coco["categories"]}
    position = {image["id"]: i for i, image in enumerate(coco["images"])}
    expected = [
        (position[a["image_id"]], name_of[a["category_id"]], a["bbox"], a["iscrowd"]) for a in coco["annotations"]
    ]
    voc_name = {c["id"]: c["name"] for c in voc["categories"]}
    voc_position = {image["id"]: i for i, image in enumerate(voc["images"])}
    got = [
        (voc_position[a["image_id"]], voc_name[a["category_id"]], a["bbox"], a["difficult"]) for a in voc["annotations"]
    ]
    assert got == expected
    assert [c["name"] for c in voc["categories"]] == [name_of[i] for i in sorted(name_of)]
    assert [image["voc_name"] for image in voc["images"]] == [
        "VOC2007/000001",
        "VOC2007/000002",
        "VOC2007/000003",
        "VOC2007/000004",
    ]
    test = read_voc_spec(year, default_split="test")
    assert [image["voc_name"] for image in test["images"]] == ["VOC2007/000005", "VOC2007/000006"]
    assert all((year / "JPEGImages" / f"{i:06d}.jpg").is_file() for i in range(1, 7))


def test_synth_format_voc_refuses_a_long_tail_and_an_existing_devkit(tmp_path):
    long_tail = runner.invoke(app, ["data", "synth", str(tmp_path / "lt"), "--format", "voc", "--long-tail"])
    assert long_tail.exit_code == 2 and "--format voc" in long_tail.output
    assert not (tmp_path / "lt").exists()
    (tmp_path / "old" / "VOCdevkit").mkdir(parents=True)
    again = runner.invoke(app, ["data", "synth", str(tmp_path / "old"), "--format", "voc", "--num-train", "2"])
    assert again.exit_code == 2 and "already exists" in again.output
    assert list((tmp_path / "old" / "VOCdevkit").iterdir()) == []


@pytest.mark.slow
def test_train_and_eval_on_a_synthetic_voc_tree_reports_map(tmp_path):
    out = tmp_path / "synth"
    options = ["--num-train", "4", "--num-val", "2", "--image-size", "64", "--num-classes", "2", "--seed", "1"]
    made = runner.invoke(app, ["data", "synth", str(out), "--format", "voc", *options])
    assert made.exit_code == 0, made.output
    year = out / "VOCdevkit" / "VOC2007"
    preset = tmp_path / "tiny.yaml"
    preset.write_text(
        "model: {fpn_channels: 32, box_head_dim: 64, roi_batch_size_per_image: 64,"
        " rpn_pre_nms_top_n_train: 300, rpn_post_nms_top_n_train: 100}\n"
        "data: {num_workers: 0, batch_size: 2}\n"
    )
    run = tmp_path / "run"
    trained = runner.invoke(
        app,
        ["train", str(preset), "--train-ann", str(year), "--val-ann", str(year), "--out", str(run)]
        + ["--max-iters", "2", "--image-size", "64"],
    )
    assert trained.exit_code == 0, trained.output
    evaluated = runner.invoke(app, ["eval", str(run), "--checkpoint", "last"])
    assert evaluated.exit_code == 0, evaluated.output
    assert "mAP@0.5" in evaluated.output and "mAP_07" in evaluated.output
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["format"] == "voc" and metrics["num_images"] == 2
    summary = metrics["summary"]
    assert {"AP", "AP50", "mAP", "mAP_07"} <= set(summary)
    # num_gt per class counts the test split's non-difficult objects, counted here from the XML files.
    names = (year / "classes.txt").read_text().split("\n")[:2]
    counts = dict.fromkeys(names, 0)
    for stem in (year / "ImageSets" / "Main" / "test.txt").read_text().split():
        xml = (year / "Annotations" / f"{stem}.xml").read_text()
        for name in names:
            counts[name] += xml.count(
                f"<name>{name}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0"
            )
    assert {row["name"]: row["num_gt"] for row in metrics["per_category"]} == counts
    # mAP is the mean of the classes' AP (those with ground truth), each in [0, 1].
    aps = [row["AP_voc"] for row in metrics["per_category"] if row["AP_voc"] is not None]
    assert summary["mAP"] == pytest.approx(sum(aps) / len(aps)) and all(0 <= ap <= 1 for ap in aps)


def test_split_names_are_checked_and_only_voc_may_leave_out_its_image_folder(devkit, tmp_path):
    with pytest.raises(LibraError, match=r"data\.train_split: 'Main/trainval' is not a split name"):
        load_config(None, {"data": {"train_split": "Main/trainval"}})
    # A VOC year folder finds its own images; a JSON file still needs its image folder.
    voc = load_config(None, {"data": {"train_ann": str(devkit / "VOC2007"), "val_ann": str(devkit / "VOC2007")}})
    assert voc.data.train_images is None
    (tmp_path / "ann.json").write_text("{}")
    with pytest.raises(LibraError, match="--train-ann and --train-images must be given together"):
        load_config(None, {"data": {"train_ann": str(tmp_path / "ann.json"), "val_ann": str(devkit / "VOC2007")}})


def test_the_devkit_root_is_refused_naming_its_year_folders_and_the_union(devkit):
    with pytest.raises(LibraError) as error:
        load_config(None, {"data": {"train_ann": str(devkit), "val_ann": str(devkit / "VOC2007")}})
    # The devkit fixture holds VOC2007 and VOC2012; images may be left out for VOC, so no "given together".
    assert str(error.value) == (
        f"data.train_ann (--train-ann): VOCdevkit holds VOC2007, VOC2012: pass a year folder, or "
        f"{devkit / 'VOC2007'}+{devkit / 'VOC2012'} for their union; got {str(devkit)!r}"
    )


@pytest.mark.parametrize("inner", ["Annotations", "JPEGImages", "ImageSets", "ImageSets/Main"])
def test_a_folder_inside_a_year_folder_is_refused_naming_the_year_folder(devkit, inner):
    with pytest.raises(LibraError) as error:
        load_config(None, {"data": {"train_ann": str(devkit / "VOC2007"), "val_ann": str(devkit / "VOC2007" / inner)}})
    message = str(error.value)
    assert message.startswith(f"data.val_ann (--val-ann): {inner} is a folder inside the year folder VOC2007: ")
    assert f"pass {devkit / 'VOC2007'} " in message and "\n" not in message


def test_train_and_eval_say_what_a_devkit_root_holds(devkit, tmp_path):
    result = CliRunner().invoke(
        app, ["train", "--train-ann", str(devkit), "--val-ann", str(devkit / "VOC2007"), "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "VOCdevkit holds VOC2007, VOC2012: pass a year folder" in lines[0]
    assert "must be given together" not in result.output and "not found" not in result.output
    # `libra eval RUN --ann DEVKIT` reads its annotations through the same reader.
    with pytest.raises(LibraError, match="VOCdevkit holds VOC2007, VOC2012: pass a year folder"):
        read_annotation_file(devkit)
