"""Shared helpers: tiny datasets written by hand, and runs launched the way a user launches them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from libra_cli.config import save_config
from tests.conftest import tiny_config

REPO_ROOT = Path(__file__).resolve().parents[2]
CATEGORIES = [{"id": 1, "name": "square"}, {"id": 2, "name": "bar"}]


def write_split(root: Path, split: str, num_images: int, *, size: int = 32, boxes=None) -> tuple[Path, Path]:
    """``num_images`` PNGs of ``size``² with the same boxes (COCO xywh) in each; returns (ann, image folder).

    Every image holds the same box layout, its class alternating between images, drawn as flat colour on
    per-image noise so that images differ.
    """
    boxes = boxes or [[4, 4, 10, 10], [18, 6, 8, 20]]
    folder = root / "images" / split
    folder.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(num_images):
        pixels = np.random.default_rng(index).integers(0, 80, size=(size, size, 3), dtype=np.uint8)
        for k, (x, y, w, h) in enumerate(boxes):
            category = 1 + (index + k) % 2
            pixels[y : y + h, x : x + w] = (220, 40, 40) if category == 1 else (40, 60, 230)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index + 1,
                    "category_id": category,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
        name = f"{index:03d}.png"
        Image.fromarray(pixels).save(folder / name)
        images.append({"id": index + 1, "file_name": name, "width": size, "height": size})
    ann = root / "annotations" / f"{split}.json"
    ann.parent.mkdir(parents=True, exist_ok=True)
    ann.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    return ann, folder


def write_preset(path: Path, benchmark: Path, **overrides: Any) -> Path:
    """The tiny test config (``tests/conftest.py::tiny_config``) as a preset YAML file."""
    save_config(tiny_config(benchmark, path.parent / "unused-out", **overrides), path)
    return path


def read_log(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def train_losses(run_dir: Path) -> list[dict[str, Any]]:
    """The iteration, learning rate and loss terms of every logged training step."""
    return [
        {k: v for k, v in record.items() if k in ("iter", "lr") or k.startswith("loss")}
        for record in read_log(run_dir)
        if record["type"] == "train"
    ]


def subprocess_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "COLUMNS": "200", **extra}


def _ctrl_c_as_in_a_terminal() -> None:
    # A shell without job control starts background commands with SIGINT ignored, and a child inherits
    # that; the tests that press Ctrl-C mean a command run from a terminal, whatever started pytest.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_libra(args: list[str], log_file: Path, **env: str) -> subprocess.Popen:
    """``python -m libra_cli ARGS`` in a child process, its output going to ``log_file``, with Ctrl-C
    (SIGINT) handled as in a terminal."""
    with open(log_file, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "libra_cli", *args],
            cwd=REPO_ROOT,
            env=subprocess_env(**env),
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_ctrl_c_as_in_a_terminal,
        )


def run_libra(args: list[str], log_file: Path, timeout: float = 180) -> None:
    process = start_libra(args, log_file)
    assert process.wait(timeout=timeout) == 0, log_file.read_text()[-3000:]


def wait_until(condition: Callable[[], bool], process: subprocess.Popen, log_file: Path, timeout: float = 120) -> None:
    """Poll ``condition`` every 20 ms while ``process`` runs; fail if it ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"the process ended (rc {process.returncode}) first:\n{log_file.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("timed out waiting")
        time.sleep(0.02)
