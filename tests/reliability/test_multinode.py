"""Two nodes: two ``torchrun`` launchers on this machine, joined by the c10d rendezvous (gloo on CPU).

Each launcher is one node with one process (``--nnodes 2 --nproc-per-node 1``), so both processes have
``LOCAL_RANK`` 0 and only their global ``RANK`` tells them apart — what differs from the single-node test
(``test_ddp.py``), which this one follows: with the config that makes every image contribute the same
samples, the two processes train what one process trains with the same global batch. The run stops at a
checkpoint (``--max-iters 2``) and is trained on by two new launchers to 4 iterations (``--resume --extend``);
the schedule has no milestone (warm-up, then a constant rate), so the learning rates are those of the
uninterrupted run, and the logged losses and the weights must match one process's 4 iterations.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from libra_cli.engine import train as train_module
from libra_cli.engine.checkpoint import load_checkpoint
from tests.conftest import tiny_config
from tests.reliability.helpers import REPO_ROOT, read_log, subprocess_env, train_losses, write_preset, write_split
from tests.reliability.test_ddp import TAKE_EVERY_CANDIDATE, free_port

SETTINGS = {**TAKE_EVERY_CANDIDATE, "train__lr_milestones": []}


def two_nodes(args: list[str], log_dir: Path, name: str) -> list[int]:
    """Start two launchers, one per node, on one c10d rendezvous endpoint; their exit codes."""
    endpoint = f"127.0.0.1:{free_port()}"
    env = subprocess_env(OMP_NUM_THREADS="1")
    if Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"
    launchers = []
    for node in range(2):
        command = [
            sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
            "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", name,
            "-m", "libra_cli", *args,
        ]  # fmt: skip
        log = open(log_dir / f"{name}-node{node}.txt", "w")  # noqa: SIM115 (closed below)
        launchers.append((subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    codes = []
    for process, log in launchers:
        try:
            codes.append(process.wait(timeout=300))
        finally:
            log.close()
    return codes


def node_logs(log_dir: Path, name: str) -> str:
    return "\n".join((log_dir / f"{name}-node{node}.txt").read_text()[-3000:] for node in range(2))


@pytest.mark.slow
def test_two_nodes_train_checkpoint_and_resume_like_one_process(tmp_path):
    data = tmp_path / "data"
    write_split(data, "train", 4, size=96, boxes=[[10, 12, 30, 26], [52, 40, 36, 44]])
    write_split(data, "val", 3, size=96, boxes=[[10, 12, 30, 26], [52, 40, 36, 44]])
    single_dir, nodes_dir = tmp_path / "single", tmp_path / "nodes"
    train_module.train(tiny_config(data, single_dir, **SETTINGS))  # 4 iterations in one process
    preset = write_preset(tmp_path / "nodes.yaml", data, **SETTINGS)

    first = two_nodes(["train", str(preset), "--out", str(nodes_dir), "--max-iters", "2"], tmp_path, "first")
    assert first == [0, 0], node_logs(tmp_path, "first")
    stopped = load_checkpoint(nodes_dir / "checkpoints" / "last.pt")
    assert stopped["iteration"] == 2 and stopped["world_size"] == 2 and len(stopped["per_rank"]) == 2

    resumed = two_nodes(
        ["train", str(preset), "--out", str(nodes_dir), "--max-iters", "4", "--resume", "--extend"], tmp_path, "resumed"
    )
    assert resumed == [0, 0], node_logs(tmp_path, "resumed")

    # One start record per launch, written by global rank 0 only, each seeing a world of two.
    starts = [record for record in read_log(nodes_dir) if record["type"] == "start"]
    assert [start["world_size"] for start in starts] == [2, 2]

    # Iterations 1-2 from the first launch and 3-4 from the resumed one: the single process's losses.
    single, nodes = train_losses(single_dir), train_losses(nodes_dir)
    assert [record["iter"] for record in nodes] == [1, 2, 3, 4]
    for a, b in zip(single, nodes, strict=True):
        assert a.keys() == b.keys() and a["lr"] == b["lr"]
        for name in a:
            assert b[name] == pytest.approx(a[name], rel=1e-5, abs=1e-7), (a["iter"], name)
    final, reference = (load_checkpoint(d / "checkpoints" / "last.pt") for d in (nodes_dir, single_dir))
    assert final["iteration"] == reference["iteration"] == 4
    for key, value in reference["model"].items():
        # As in test_ddp: four SGD steps apart from summation order.
        torch.testing.assert_close(final["model"][key], value, rtol=1e-4, atol=1e-5)
