"""``libra export --format onnx``: the graph's detections equal the eager model's on a few images (needs the
``onnx`` extra: onnx and onnxruntime; skipped without them, like the CUDA tests without a GPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from libra_cli.engine.onnx_export import export_onnx
from libra_cli.errors import LibraError
from libra_cli.images import image_tensor, open_rgb
from tests.runs import untrained_run

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

ARCHS = {
    "faster_rcnn": {"libra__iou_sampling": True, "libra__balanced_l1": True},
    "mask_rcnn": {"model__arch": "mask_rcnn"},
    # 64 channels: with the tiny config's 32 (one per GroupNorm group) the tracer rejects P7's 1 × 1 map.
    "retinanet": {"model__arch": "retinanet", "model__score_thresh": 0.0, "model__fpn_channels": 64},
}


@pytest.mark.slow
@pytest.mark.parametrize("arch", list(ARCHS))
def test_the_graph_detects_what_the_eager_model_detects(tiny_benchmark, tmp_path, arch):
    run = untrained_run(tiny_benchmark, tmp_path / "run", seed=4, **ARCHS[arch])
    val = tiny_benchmark / "images" / "val"
    # A 96 × 96 validation image, and the same picture at 70 × 120: the graph takes any image size.
    first = image_tensor(open_rgb(val / "000000.png"))
    other = torch.nn.functional.interpolate(image_tensor(open_rgb(val / "000001.png"))[None], size=(70, 120))[0]
    path, summary = export_onnx(run, tmp_path / "model.onnx", check_images=[first, other])
    assert path.parent == tmp_path and path.name.startswith("model-") and path.suffix == ".onnx"
    check = summary["check"]
    assert check["same_counts"]
    # float32 arithmetic in another order: boxes of ~100 px agree to well under a thousandth of a pixel.
    assert check["max_box_diff"] < 1e-3 and check["max_score_diff"] < 1e-4
    metadata = {prop.key: prop.value for prop in onnx.load(path).metadata_props}
    assert json.loads(metadata["category_names"]) == ["red circle", "blue square", "red triangle"]


def test_the_bfp_neck_is_refused_in_one_line(tiny_benchmark, tmp_path):
    run = untrained_run(tiny_benchmark, tmp_path / "run", libra__bfp=True)
    with pytest.raises(LibraError, match="ONNX export: the BFP neck resizes the pyramid with adaptive max pooling"):
        export_onnx(run, tmp_path / "model.onnx")
    assert list(tmp_path.glob("*.onnx")) == []


def test_the_name_must_end_in_onnx(tmp_path):
    with pytest.raises(LibraError, match="an ONNX file name must end in .onnx"):
        export_onnx(Path("unused"), tmp_path / "model.pt")
