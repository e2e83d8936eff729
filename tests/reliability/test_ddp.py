"""Item 5: data parallelism on PyTorch's own engine (torchrun, DistributedDataParallel, gloo on CPU).

The main test trains the same config twice — once in one process with a global batch of 2, once as two
processes launched by ``torchrun`` with one image each — and requires the same logged losses, weights,
detections and metrics.

Why the two can agree to rounding. DDP averages the ranks' gradients, i.e. it minimises the mean of the
ranks' losses; the single process minimises the loss of the whole batch. torchvision normalises each loss
term by the number of samples in the batch (RPN: sampled anchors; box head: sampled RoIs), so the two are
equal exactly when every image contributes the same number of samples. The test config makes that so:

- every image has the same box layout and nothing is flipped, so the same anchors are positive, negative
  or ignored in every image;
- ``rpn_batch_size_per_image`` and ``roi_batch_size_per_image`` (100000) exceed the candidates, so the
  samplers take every candidate — no randomness is left, and each image contributes all its non-ignored
  anchors and all of its proposals plus its GT boxes;
- ``rpn_post_nms_top_n_train`` (32) is far below the proposals that survive NMS, so every image keeps 32.

GroupNorm normalises each image on its own: there are no batch statistics, so no SyncBatchNorm is needed.
What differs is the order of floating-point sums, hence a relative tolerance of 1e-5.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from libra_cli.data.coco import DetectionDataset
from libra_cli.engine import setup as training_setup
from libra_cli.engine import train as train_module
from libra_cli.engine.checkpoint import load_checkpoint
from libra_cli.engine.distributed import DistributedContext
from libra_cli.engine.evaluate import merge_in_dataset_order
from libra_cli.errors import LibraError
from tests.conftest import tiny_config
from tests.reliability.helpers import (
    REPO_ROOT,
    read_log,
    subprocess_env,
    train_losses,
    write_preset,
    write_split,
)

TAKE_EVERY_CANDIDATE = {
    "data__hflip_prob": 0.0,
    "model__rpn_batch_size_per_image": 100000,
    "model__roi_batch_size_per_image": 100000,
    "model__rpn_post_nms_top_n_train": 32,
    "model__score_thresh": 0.0,
    "train__max_iters": 4,
    "train__checkpoint_interval": 2,
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def torchrun(args: list[str], nproc: int, log_file: Path) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc_per_node",
        str(nproc),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        "-m",
        "libra_cli",
        *args,
    ]
    env = subprocess_env(OMP_NUM_THREADS="1")
    if Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"  # gloo's own address: the loopback device, not the host name
    with open(log_file, "w") as out:
        return subprocess.run(command, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=300)


@pytest.mark.slow
def test_two_gloo_processes_train_what_one_process_trains_with_the_same_global_batch(tmp_path):
    data = tmp_path / "data"
    write_split(data, "train", 4, size=96, boxes=[[10, 12, 30, 26], [52, 40, 36, 44]])
    write_split(data, "val", 3, size=96, boxes=[[10, 12, 30, 26], [52, 40, 36, 44]])
    single_dir, ddp_dir = tmp_path / "single", tmp_path / "ddp"
    train_module.train(tiny_config(data, single_dir, **TAKE_EVERY_CANDIDATE))
    preset = write_preset(tmp_path / "ddp.yaml", data, **TAKE_EVERY_CANDIDATE)
    out = tmp_path / "torchrun.txt"
    result = torchrun(["train", str(preset), "--out", str(ddp_dir)], 2, out)
    assert result.returncode == 0, out.read_text()[-4000:]

    # Rank 0 alone logs and prints: one start record, one final summary line.
    starts = [record for record in read_log(ddp_dir) if record["type"] == "start"]
    assert len(starts) == 1 and starts[0]["world_size"] == 2
    assert out.read_text().count("trained 4 iterations") == 1

    # The logged losses are the global batch's: equal to the single process's up to summation order.
    single, ddp = train_losses(single_dir), train_losses(ddp_dir)
    assert [r["iter"] for r in ddp] == [1, 2, 3, 4]
    for a, b in zip(single, ddp, strict=True):
        assert a.keys() == b.keys() and a["lr"] == b["lr"]
        for name in a:
            assert b[name] == pytest.approx(a[name], rel=1e-5, abs=1e-7), (a["iter"], name)

    # Checkpoints hold the unwrapped module's weights (no "module." prefix) and every rank's RNG state.
    ddp_state = load_checkpoint(ddp_dir / "checkpoints" / "last.pt")
    single_state = load_checkpoint(single_dir / "checkpoints" / "last.pt")
    assert ddp_state["world_size"] == 2 and len(ddp_state["per_rank"]) == 2
    assert ddp_state["model"].keys() == single_state["model"].keys()
    for key, value in single_state["model"].items():
        # Four SGD steps apart from summation order: absolute 1e-5 on weights of order 1e-2 to 1.
        torch.testing.assert_close(ddp_state["model"][key], value, rtol=1e-4, atol=1e-5)

    # Evaluation is sharded over the ranks and gathered on rank 0 in the dataset's order.
    single_dets, ddp_dets = (json.loads((d / "eval" / "detections.json").read_text()) for d in (single_dir, ddp_dir))
    assert len(ddp_dets) == len(single_dets) > 0
    assert [(d["image_id"], d["category_id"]) for d in ddp_dets] == [
        (d["image_id"], d["category_id"]) for d in single_dets
    ]
    for a, b in zip(single_dets, ddp_dets, strict=True):
        assert b["score"] == pytest.approx(a["score"], abs=1e-4)
        assert b["bbox"] == pytest.approx(a["bbox"], abs=0.02)
    single_metrics, ddp_metrics = (json.loads((d / "eval" / "metrics.json").read_text()) for d in (single_dir, ddp_dir))
    assert ddp_metrics["num_images"] == 3
    for name, value in single_metrics["summary"].items():
        assert ddp_metrics["summary"][name] == pytest.approx(value, abs=1e-6), name


def test_a_global_batch_that_does_not_split_over_the_processes_is_refused(tiny_benchmark, tmp_path, monkeypatch):
    two_ranks = DistributedContext(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"))
    monkeypatch.setattr(training_setup, "init_distributed", lambda device: two_ranks)
    config = tiny_config(tiny_benchmark, tmp_path / "run", data__batch_size=3)
    with pytest.raises(LibraError, match="global batch of 3 images does not split evenly over 2 processes"):
        train_module.train(config)
    assert not (tmp_path / "run").exists()


def test_gathered_detections_follow_the_dataset_order_and_keep_each_images_order(tmp_path):
    # Rank 0 predicted images 1 and 3, rank 1 image 2 (every second image of [1, 2, 3]).
    ann, folder = write_split(tmp_path, "val", 3)
    dataset = DetectionDataset(ann, folder)
    rank0 = [
        {"image_id": 1, "score": 0.2},
        {"image_id": 1, "score": 0.9},
        {"image_id": 3, "score": 0.5},
    ]
    rank1 = [{"image_id": 2, "score": 0.7}, {"image_id": 2, "score": 0.1}]
    merged = merge_in_dataset_order([rank0, rank1], dataset)
    assert [(d["image_id"], d["score"]) for d in merged] == [(1, 0.2), (1, 0.9), (2, 0.7), (2, 0.1), (3, 0.5)]
