"""A trained detector as an ONNX graph (``libra export --format onnx``), checked against the eager model.

The graph is torch's TorchScript-based ONNX exporter (opset 17) applied to the whole torchvision detector:
its input ``image`` is one float32 [3, H, W] picture in [0, 1] of any size (what ``libra_cli.images``
gives, see ``libra_cli/api.py``), resized and normalised inside the graph; its outputs are the detector's,
named as torchvision names them: ``boxes`` float32 [N, 4] xyxy in the input's pixels, ``labels`` int64 [N]
(1 … C) and ``scores`` float32 [N], and for Mask R-CNN ``masks`` float32 [N, 1, H, W] probabilities. The
categories (``category_ids``, ``category_names``: label k is entry k − 1) and the run's config travel in
the model's metadata as JSON.

What exports, checked against the eager model with onnxruntime (tests/engine/test_onnx_export.py): Faster
R-CNN (with IoU-balanced sampling and balanced L1, which act in training only), Mask R-CNN and RetinaNet,
on images of any size. EQL's sigmoid classifier exports too, but was compared only on an untrained
detector, whose many equal scores leave the order of its boxes arbitrary. RoIAlign is exported as
torchvision's operator (the CPU's ``grid_sample`` form computes the same values to float rounding but uses
``bincount``, which ONNX lacks). The BFP neck does not export: it resizes the pyramid with adaptive max
pooling to sizes known only when an image arrives, which the exporter cannot write. Needs the ``onnx``
package (the ``onnx`` extra); with ``onnxruntime`` installed too, the export runs both models on check
images and reports the largest differences.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from libra_cli.engine.run import detector_with_state, load_trained_model
from libra_cli.errors import LibraError
from libra_cli.io import write_named_by_hash

OPSET = 17


def exportable_model(run_dir: str | Path, checkpoint: str) -> tuple[nn.Module, dict[str, Any], Any]:
    """(the run's detector on the CPU in eval mode, built with torchvision's RoIAlign, dataset info, config);
    a LibraError when a part of it cannot be exported."""
    config, model, info, _ = load_trained_model(run_dir, checkpoint, "cpu")
    if config.libra.bfp:
        raise LibraError(
            f"{run_dir}: ONNX export: the BFP neck resizes the pyramid with adaptive max pooling to sizes known "
            "only at run time, which torch's ONNX exporter cannot write; export the weights (.pt) instead"
        )
    config.model.roi_align = "torchvision"
    exportable = detector_with_state(config, info, model.state_dict(), f"{run_dir}: ONNX export")
    return exportable.eval(), info, config


def export_onnx(
    run_dir: str | Path,
    out: str | Path,
    checkpoint: str = "best",
    check_images: Sequence[torch.Tensor] = (),
    overwrite: bool = False,
) -> tuple[Path, dict[str, Any]]:
    """Write the run's detector as ONNX next to ``out`` (``NAME.onnx`` → ``NAME-<sha256 prefix>.onnx``).

    ``check_images`` (float [3, H, W] in [0, 1]; the first also traces the graph, else a grey 3 × 320 × 320
    image does) are run through the eager model and, when onnxruntime is installed, through the graph: the
    summary then holds the largest box and score differences and whether the detection counts agreed.
    """
    out = Path(out)
    if out.suffix != ".onnx":
        raise LibraError(f"--out {out}: an ONNX file name must end in .onnx")
    try:
        import onnx
    except ImportError as exc:
        raise LibraError("ONNX export needs the onnx package: pip install 'libra-cli[onnx]'") from exc
    model, info, config = exportable_model(run_dir, checkpoint)
    sample = check_images[0] if check_images else torch.full((3, 320, 320), 0.5)
    with torch.no_grad():
        names = list(model([sample])[0])
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the tracer's notes on torchvision's Python control flow, expected here
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            ([sample],),
            buffer,
            opset_version=OPSET,
            dynamo=False,
            input_names=["image"],
            output_names=names,
            dynamic_axes={"image": [1, 2], **{name: [0] for name in names}},
        )
    graph = onnx.load_from_string(buffer.getvalue())
    metadata = {
        "category_ids": json.dumps(info["category_ids"]),
        "category_names": json.dumps(info["category_names"]),
        "libra_config": json.dumps(config.to_dict()),
    }
    for key, value in metadata.items():
        graph.metadata_props.add(key=key, value=value)
    data = graph.SerializeToString()
    path, digest = write_named_by_hash(out, data, overwrite=overwrite)
    summary: dict[str, Any] = {"bytes": len(data), "sha256": digest, "outputs": names}
    if check_images:
        summary["check"] = compare_with_eager(model, data, check_images)
    return path, summary


def compare_with_eager(model: nn.Module, graph: bytes, images: Sequence[torch.Tensor]) -> dict[str, Any] | None:
    """Largest |difference| of boxes and scores between the eager model and the ONNX graph (run by
    onnxruntime on the CPU) over ``images``, and whether every image got the same number of detections;
    None without onnxruntime."""
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    box_diff = score_diff = 0.0
    same_counts = True
    for image in images:
        with torch.no_grad():
            eager = model([image])[0]
        exported = dict(zip(names, session.run(None, {"image": image.numpy()}), strict=True))
        if len(exported["boxes"]) != len(eager["boxes"]):
            same_counts = False
            continue
        if len(exported["boxes"]):
            box_diff = max(box_diff, float((torch.from_numpy(exported["boxes"]) - eager["boxes"]).abs().max()))
            score_diff = max(score_diff, float((torch.from_numpy(exported["scores"]) - eager["scores"]).abs().max()))
    return {"images": len(images), "same_counts": same_counts, "max_box_diff": box_diff, "max_score_diff": score_diff}
