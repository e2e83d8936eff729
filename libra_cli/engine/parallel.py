"""Several training runs side by side on one CPU machine, each in its own process with a share of the cores.

A detector step at the demo's size does not keep two cores busy: part of it (NMS, box matching, index
bookkeeping, small layers) runs on one thread. Two single-thread runs side by side therefore finish
sooner than the same two runs one after the other with two threads each (measured in
``benchmarks/RESULTS.md``). ``libra demo`` trains its baseline and Libra runs this way and ``libra ablate
--jobs N`` trains N runs of a grid at once.

Each job runs :func:`libra_cli.engine.train.train` in a fresh (spawned) process with
``torch.set_num_threads(threads)`` and reports its progress through a queue; the parent shows one
progress bar per job. A job that fails with a :class:`LibraError` is reported and the others go on.
Ctrl-C (or SIGTERM) in the parent is passed on to the running jobs, which write their checkpoint as
a single run does, so the same command resumes them later.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue as queue_module
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from libra_cli.config import RunConfig
from libra_cli.errors import LibraError

EventKind = Literal["start", "update", "done", "failed", "interrupted"]
POLL_S = 0.5  # how often the parent checks its jobs while no message arrives
STOP_WAIT_S = 120.0  # how long stopped jobs may take to write their checkpoint before they are killed


@dataclass(frozen=True)
class TrainJob:
    name: str  # shown on the progress bar, e.g. "baseline" or "bfp/seed1"
    config: RunConfig
    resume: bool = False


@dataclass(frozen=True)
class JobOutcome:
    job: TrainJob
    status: Literal["done", "failed", "interrupted"]
    result: Any = None  # the TrainResult of a finished job
    error: str | None = None


def cpu_cores() -> int:
    """Cores this process may use (the affinity mask where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - platforms without sched_getaffinity
        return os.cpu_count() or 1


def default_parallel_jobs(device: str, cores: int | None = None) -> int:
    """Runs to train at once: two on a CPU with at least two cores, one on a GPU (it is shared)."""
    cores = cpu_cores() if cores is None else cores
    return 2 if device == "cpu" and cores >= 2 else 1


def threads_per_job(jobs: int, cores: int | None = None) -> int:
    """Intra-op threads for each of ``jobs`` simultaneous runs: the cores shared out, at least one."""
    cores = cpu_cores() if cores is None else cores
    return max(1, cores // max(1, jobs))


class _QueueProgress:
    """The ``progress`` protocol of :func:`train`, forwarded to the parent through a queue."""

    def __init__(self, index: int, events: Any) -> None:
        self.index = index
        self.events = events

    def start(self, total: int, completed: int) -> None:
        self.events.put(("start", self.index, {"total": total, "completed": completed}))

    def update(self, iteration: int, record: dict[str, Any] | None) -> None:
        fields = None
        if record is not None:
            fields = {k: v for k, v in record.items() if k == "loss" or k == "lr" or k.startswith("loss_")}
        self.events.put(("update", self.index, {"iteration": iteration, "record": fields}))

    def stop(self) -> None:
        pass


def _run_job(index: int, job: TrainJob, threads: int, events: Any) -> None:
    """Body of a job process: train, then post exactly one final message (done, failed or interrupted)."""
    import torch

    from libra_cli.engine.train import train

    os.setpgrp()  # the parent forwards Ctrl-C once; a terminal's SIGINT to the whole group would be a second
    torch.set_num_threads(threads)
    try:
        result = train(job.config, resume=job.resume, progress=_QueueProgress(index, events))
    except LibraError as exc:
        events.put(("failed", index, str(exc)))
    except KeyboardInterrupt:
        events.put(("interrupted", index, None))
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line, the other jobs go on
        events.put(("failed", index, f"{type(exc).__name__}: {exc}"))
    else:
        events.put(("done", index, result))


def train_parallel(
    jobs: list[TrainJob],
    *,
    max_parallel: int,
    threads: int | None = None,
    on_event: Callable[[EventKind, TrainJob, Any], None] | None = None,
) -> list[JobOutcome]:
    """Train ``jobs`` with at most ``max_parallel`` processes at a time, in the given order.

    ``threads`` is each process's intra-op thread count (default: the cores shared out).
    ``on_event(kind, job, payload)`` sees ``start`` ({total, completed}), ``update`` ({iteration,
    record}), and the job's end: ``done`` (TrainResult), ``failed`` (message), ``interrupted``.
    Returns one outcome per job, in the order of ``jobs``. KeyboardInterrupt is re-raised after the
    running jobs have stopped and saved their checkpoints.
    """
    if max_parallel < 1:
        raise LibraError(f"--jobs: must be at least 1, got {max_parallel}")
    if not jobs:
        return []
    max_parallel = min(max_parallel, len(jobs))
    threads = threads or threads_per_job(max_parallel)
    context = multiprocessing.get_context("spawn")
    events = context.Queue()
    pending = list(range(len(jobs)))
    running: dict[int, Any] = {}
    outcomes: dict[int, JobOutcome] = {}

    def notify(kind: EventKind, index: int, payload: Any) -> None:
        if on_event is not None:
            on_event(kind, jobs[index], payload)

    def finish(index: int, outcome: JobOutcome) -> None:
        outcomes[index] = outcome
        process = running.pop(index, None)
        if process is not None:
            process.join()
        notify(outcome.status, index, outcome.result if outcome.status == "done" else outcome.error)

    def handle(message: tuple[str, int, Any]) -> None:
        kind, index, payload = message
        if kind in ("start", "update"):
            notify(kind, index, payload)  # type: ignore[arg-type]
        elif kind == "done":
            finish(index, JobOutcome(jobs[index], "done", result=payload))
        elif kind == "failed":
            finish(index, JobOutcome(jobs[index], "failed", error=payload))
        else:
            finish(index, JobOutcome(jobs[index], "interrupted"))

    def drain(timeout: float) -> None:
        try:
            handle(events.get(timeout=timeout))
            while True:
                handle(events.get_nowait())
        except queue_module.Empty:
            pass

    def reap_silent_exits() -> None:
        """A job process that died without a final message (killed, out of memory) is a failure."""
        for index, process in list(running.items()):
            if not process.is_alive() and index not in outcomes:
                drain(0.2)  # its last messages may still be in the pipe
                if index not in outcomes:
                    message = f"process exited with code {process.exitcode}"
                    finish(index, JobOutcome(jobs[index], "failed", error=message))

    previous_term = None
    if threading.current_thread() is threading.main_thread():
        previous_term = signal.signal(signal.SIGTERM, _raise_interrupt)  # a scheduler's SIGTERM stops jobs cleanly
    try:
        while pending or running:
            while pending and len(running) < max_parallel:
                index = pending.pop(0)
                process = context.Process(target=_run_job, args=(index, jobs[index], threads, events), daemon=False)
                process.start()
                running[index] = process
            drain(POLL_S)
            reap_silent_exits()
    except KeyboardInterrupt:
        # Pass the interrupt on once (the jobs run in their own process groups, so a Ctrl-C in the
        # terminal reaches only this process), then keep reading messages while they save checkpoints.
        for process in running.values():
            if process.is_alive() and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGINT)
        deadline = time.monotonic() + STOP_WAIT_S
        while any(process.is_alive() for process in running.values()) and time.monotonic() < deadline:
            drain(POLL_S)
        drain(0.2)
        for index, process in list(running.items()):
            if process.is_alive():
                process.kill()
            if index not in outcomes:
                finish(index, JobOutcome(jobs[index], "interrupted"))
        raise
    finally:
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)
    return [outcomes[index] for index in range(len(jobs)) if index in outcomes]


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
