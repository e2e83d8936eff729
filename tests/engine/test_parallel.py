"""Runs trained side by side in their own processes: same results as alone, failures kept apart."""

from __future__ import annotations

import json

import pytest
import torch

from libra_cli.engine.parallel import TrainJob, default_parallel_jobs, threads_per_job, train_parallel
from libra_cli.engine.train import train
from tests.conftest import tiny_config


def test_sharing_out_the_cores():
    assert default_parallel_jobs("cpu", cores=2) == 2
    assert default_parallel_jobs("cpu", cores=1) == 1
    assert default_parallel_jobs("cuda", cores=16) == 1
    assert threads_per_job(2, cores=2) == 1
    assert threads_per_job(2, cores=16) == 8
    assert threads_per_job(3, cores=2) == 1  # never below one thread


def losses(run_dir) -> list[float]:
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    values = [record["loss"] for record in map(json.loads, lines) if record["type"] == "train"]
    assert len(values) == 3  # log_interval 1, three iterations
    return values


@pytest.mark.slow
def test_side_by_side_equals_alone_and_a_failure_stays_apart(tiny_benchmark, tmp_path):
    baseline = tiny_config(tiny_benchmark, tmp_path / "par" / "baseline", train__max_iters=3)
    libra = tiny_config(
        tiny_benchmark, tmp_path / "par" / "libra", train__max_iters=3, libra__iou_sampling=True, libra__bfp=True
    )
    broken = tiny_config(tiny_benchmark, tmp_path / "par" / "broken", data__train_ann=str(tmp_path / "missing.json"))
    events: list[tuple[str, str]] = []
    outcomes = train_parallel(
        [TrainJob("baseline", baseline), TrainJob("broken", broken), TrainJob("libra", libra)],
        max_parallel=2,
        threads=1,
        on_event=lambda kind, job, payload: events.append((kind, job.name)),
    )
    assert [(o.job.name, o.status) for o in outcomes] == [("baseline", "done"), ("broken", "failed"), ("libra", "done")]
    assert "missing.json" in outcomes[1].error and "\n" not in outcomes[1].error
    assert ("done", "baseline") in events and ("failed", "broken") in events and ("update", "libra") in events

    # The same two runs trained here, one after the other, with the same single thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, config in (("baseline", baseline), ("libra", libra)):
            alone_dir = tmp_path / "alone" / name
            config = tiny_config(
                tiny_benchmark,
                alone_dir,
                train__max_iters=3,
                libra__iou_sampling=name == "libra",
                libra__bfp=name == "libra",
            )
            result = train(config)
            parallel_result = next(o.result for o in outcomes if o.job.name == name)
            assert losses(tmp_path / "par" / name) == losses(alone_dir)
            assert parallel_result.metrics["summary"] == result.metrics["summary"]
            assert parallel_result.iterations == 3
    finally:
        torch.set_num_threads(threads)


def test_refuses_zero_jobs(tmp_path):
    from libra_cli.errors import LibraError

    with pytest.raises(LibraError, match="--jobs"):
        train_parallel([TrainJob("a", tiny_config(tmp_path, tmp_path / "a"))], max_parallel=0)
