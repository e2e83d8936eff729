"""Item 1: bad input stops ``libra train`` before any work with one line naming file, field and value.

Each case starts from a valid two-split dataset, breaks one thing, and runs the CLI: the exit code must be
2, stderr must be exactly one line holding the expected words, there is no traceback, and the run
directory was never created (nothing was written before the input was checked).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from libra_cli.cli import app
from tests.reliability.helpers import write_split

runner = CliRunner()


def dataset_flags(root: Path) -> list[str]:
    return [
        "--train-ann",
        str(root / "annotations" / "train.json"),
        "--train-images",
        str(root / "images" / "train"),
        "--val-ann",
        str(root / "annotations" / "val.json"),
        "--val-images",
        str(root / "images" / "val"),
    ]


def edit_json(path: Path, change: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def train_ann(root: Path) -> Path:
    return root / "annotations" / "train.json"


def set_first_bbox(bbox):
    def change(data):
        data["annotations"][0]["bbox"] = bbox

    return change


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


# (case id, breakage applied to the dataset root → extra CLI flags, words the error line must hold)
CASES: list[tuple[str, Callable[[Path], list[str]], list[str]]] = [
    ("not-json", lambda r: [train_ann(r).write_text("{not json"), []][1], ["train.json", "not valid JSON"]),
    (
        "not-an-object",
        lambda r: [train_ann(r).write_text("[1, 2]"), []][1],
        ["train.json", "expected a JSON object"],
    ),
    (
        "missing-images-field",
        lambda r: [edit_json(train_ann(r), lambda d: d.pop("images")), []][1],
        ["train.json", "missing required list field 'images'"],
    ),
    (
        "missing-width",
        lambda r: [edit_json(train_ann(r), lambda d: d["images"][0].pop("width")), []][1],
        ["train.json", "images[0]", "missing field 'width'"],
    ),
    (
        "zero-size-box",
        lambda r: [edit_json(train_ann(r), set_first_bbox([4, 4, 0, 10])), []][1],
        ["train.json", "annotations[0].bbox", "[4, 4, 0, 10]", "zero or negative size"],
    ),
    (
        "negative-size-box",
        lambda r: [edit_json(train_ann(r), set_first_bbox([4, 4, 5, -3])), []][1],
        ["annotations[0].bbox", "[4, 4, 5, -3]", "zero or negative size"],
    ),
    (
        "box-outside-image",
        lambda r: [edit_json(train_ann(r), set_first_bbox([40, 40, 5, 5])), []][1],
        ["annotations[0].bbox", "[40, 40, 5, 5]", "outside the image"],
    ),
    (
        "box-not-numbers",
        lambda r: [edit_json(train_ann(r), set_first_bbox(["a", 1, 2, 3])), []][1],
        ["annotations[0].bbox", "numbers, got ['a', 1, 2, 3]"],
    ),
    (
        "unknown-category",
        lambda r: [edit_json(train_ann(r), lambda d: d["annotations"][0].update(category_id=99)), []][1],
        ["annotations[0].category_id", "unknown category id 99"],
    ),
    (
        "val-category-unknown-to-the-model",
        lambda r: [
            edit_json(r / "annotations" / "val.json", lambda d: d["categories"].append({"id": 7, "name": "extra"})),
            [],
        ][1],
        ["val.json", "category ids [7] are unknown to the model"],
    ),
    (
        "duplicate-image-id",
        lambda r: [edit_json(train_ann(r), lambda d: d["images"][1].update(id=1)), []][1],
        ["images[1].id", "duplicate image id 1"],
    ),
    (
        "path-escapes-image-root",
        lambda r: [
            edit_json(train_ann(r), lambda d: d["images"][0].update(file_name="../../secret.png")),
            [],
        ][1],
        ["file_name", "'../../secret.png'", "outside the image folder"],
    ),
    (
        "missing-image-file",
        lambda r: [(r / "images" / "train" / "001.png").unlink(), []][1],
        ["001.png", "image file not found", "image id 2"],
    ),
    (
        "truncated-image",
        lambda r: [truncate(r / "images" / "train" / "000.png"), []][1],
        ["000.png", "cannot decode image", "image id 1"],
    ),
    (
        "not-an-image",
        lambda r: [(r / "images" / "val" / "001.png").write_text("plain text"), []][1],
        ["val", "001.png", "cannot decode image"],
    ),
    ("eql-with-retinanet", lambda r: ["--arch", "retinanet", "--eql"], ["libra.eql", "RetinaNet"]),
    (
        "iou-sampling-with-retinanet",
        lambda r: ["--arch", "retinanet", "--iou-sampling"],
        ["libra.iou_sampling"],
    ),
    ("ohem-with-iou-sampling", lambda r: ["--ohem", "--iou-sampling"], ["libra.iou_sampling", "libra.ohem"]),
    ("ohem-with-retinanet", lambda r: ["--arch", "retinanet", "--ohem"], ["libra.ohem", "retinanet"]),
    (
        "unknown-bad-sample-policy",
        lambda r: ["--on-bad-sample", "ignore"],
        ["data.on_bad_sample", "'ignore'"],
    ),
    ("zero-batch", lambda r: ["--batch-size", "0"], ["data.batch_size (--batch-size)", "must be >= 1; got 0"]),
    ("negative-rpn-cap", lambda r: ["--rpn-neg-pos-ub", "-2"], ["--rpn-neg-pos-ub", "got -2"]),
    ("unknown-bfp-init", lambda r: ["--bfp-init", "zeros"], ["--bfp-init", "'zeros'"]),
    ("unknown-eql-freq", lambda r: ["--eql-freq", "boxes"], ["--eql-freq", "'boxes'"]),
    ("unknown-device", lambda r: ["--device", "tpu"], ["train.device", "'tpu'"]),
    ("resume-without-run", lambda r: ["--resume"], ["nothing to resume"]),
    (
        "foreign-detector-weights",
        lambda r: [
            torch.save(torch.nn.Linear(3, 2).state_dict(), r / "foreign.pt"),
            ["--weights", str(r / "foreign.pt"), "--image-size", "64"],
        ][1],
        ["foreign.pt", "does not match the configured detector"],
    ),
]


@pytest.mark.parametrize(("breakage", "words"), [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_before_any_work(tmp_path, breakage, words):
    root = tmp_path / "data"
    write_split(root, "train", 2)
    write_split(root, "val", 2)
    extra = breakage(root)
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", *dataset_flags(root), "--out", str(out), *extra])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert "Traceback" not in result.output
    assert not out.exists()


def test_a_trainer_given_incomplete_data_flags_says_which_are_missing(tmp_path):
    result = runner.invoke(app, ["train", "--train-ann", str(tmp_path / "a.json"), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "--train-ann and --train-images must be given together" in result.stderr
