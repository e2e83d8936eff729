"""The Python API (libra_cli.api): the README's examples run as written, and every kind of image input gives
the same detections."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from libra_cli.api import Detector, build_model
from libra_cli.errors import LibraError
from tests.runs import untrained_run

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(tiny_benchmark, tmp_path_factory) -> Path:
    return untrained_run(tiny_benchmark, tmp_path_factory.mktemp("api") / "run", seed=2)


def readme_examples() -> list[str]:
    """The Python blocks of the README's "Use a trained model" section, in order."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("### Use a trained model", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_readme_prediction_example_runs(run, tiny_benchmark, tmp_path):
    detect_example, _ = readme_examples()
    # The files the example names: a run at runs/libra and an image street.jpg in the working folder.
    shutil.copytree(run, tmp_path / "runs" / "libra")
    with Image.open(tiny_benchmark / "images" / "val" / "000002.png") as image:
        image.convert("RGB").save(tmp_path / "street.jpg", quality=95)
    result = run_python(detect_example, tmp_path)
    assert result.returncode == 0, result.stderr
    (found,) = Detector.from_run(run, device="cpu").predict(tmp_path / "street.jpg", score_thr=0.2)
    lines = result.stdout.splitlines()
    # One line for the image (its 96 × 96 size and the count), then one per detection with score ≥ 0.2.
    assert lines[0] == f"(96, 96): {len(found.scores)} objects"
    assert len(found.scores) > 0 and len(lines) == 1 + len(found.scores)
    names = ["red circle", "blue square", "red triangle"]  # the tiny benchmark's categories
    assert all(line.strip().rsplit(" [", 1)[0].rsplit(" ", 1)[0] in names for line in lines[1:])


@pytest.mark.slow
def test_the_readme_training_loop_example_runs(tmp_path):
    _, loop_example = readme_examples()
    result = run_python(loop_example + "print(sorted(losses))\n", tmp_path)
    assert result.returncode == 0, result.stderr
    # torchvision's Faster R-CNN returns these four loss terms in train mode.
    assert result.stdout.strip() == "['loss_box_reg', 'loss_classifier', 'loss_objectness', 'loss_rpn_box_reg']"


def test_paths_pil_images_and_tensors_give_the_same_detections(run, tiny_benchmark):
    path = tiny_benchmark / "images" / "val" / "000001.png"
    detector = Detector.from_run(run, device="cpu")
    with Image.open(path) as image:
        pil = image.convert("RGB")
    uint8 = pil_to_tensor(pil)
    by_path, by_pil, by_uint8, by_float = detector.predict([path, pil, uint8, uint8.float() / 255], score_thr=0.0)
    assert len(by_path.scores) > 0
    for other in (by_pil, by_uint8, by_float):
        torch.testing.assert_close(other.boxes, by_path.boxes, rtol=0, atol=0)
        assert other.category_ids == by_path.category_ids
    # The tiny benchmark's ids are 1, 2, 3, in that order: label k is category k, named after the file.
    assert by_path.category_ids == by_path.labels.tolist()
    assert by_path.masks is None and by_path.size == (96, 96)


def test_bad_inputs_are_one_line_errors(run, tmp_path):
    with pytest.raises(LibraError, match="run directory not found"):
        Detector.from_run(tmp_path / "nope")
    with pytest.raises(LibraError, match="is a folder; Detector.from_file takes a weights file"):
        Detector.from_file(run)
    # A training checkpoint is not a weights file: the message says what to do.
    with pytest.raises(LibraError, match="not a libra weights file"):
        Detector.from_file(run / "checkpoints" / "last.pt")
    with pytest.raises(LibraError, match=r"image tensor: expected \[3, H, W\], got \[1, 8, 8\]"):
        Detector.from_run(run, device="cpu").predict(torch.zeros(1, 8, 8))


def test_build_model_takes_a_preset_and_overrides():
    model = build_model("libra", 5, {"model": {"fpn_channels": 32}})
    # libra.yaml switches the BFP on (the backbone wrapped by BackboneWithBFP); 5 classes + background make
    # the box predictor's 6 scores; the override sets the pyramid's channels.
    assert model.training and type(model.backbone).__name__ == "BackboneWithBFP"
    assert model.roi_heads.box_predictor.cls_score.out_features == 6
    assert model.backbone.out_channels == 32
