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


class _Jobs:
    """The jobs of one :func:`train_parallel` call: which processes run, how each job ended, and the messages
    that tell it, passed on to ``on_event``."""

    def __init__(
        self, jobs: list[TrainJob], context: Any, on_event: Callable[[EventKind, TrainJob, Any], None] | None
    ) -> None:
        self.jobs = jobs
        self.context = context
        self.on_event = on_event
        self.events = context.Queue()
        self.pending = list(range(len(jobs)))
        self.running: dict[int, Any] = {}
        self.outcomes: dict[int, JobOutcome] = {}

    def start_next(self, threads: int) -> None:
        index = self.pending.pop(0)
        process = self.context.Process(
            target=_run_job, args=(index, self.jobs[index], threads, self.events), daemon=False
        )
        process.start()
        self.running[index] = process

    def notify(self, kind: EventKind, index: int, payload: Any) -> None:
        if self.on_event is not None:
            self.on_event(kind, self.jobs[index], payload)

    def finish(self, index: int, status: Literal["done", "failed", "interrupted"], payload: Any = None) -> None:
        """Record job ``index``'s end (``payload``: the TrainResult when done, the message when failed)."""
        outcome = JobOutcome(
            self.jobs[index],
            status,
            result=payload if status == "done" else None,
            error=payload if status == "failed" else None,
        )
        self.outcomes[index] = outcome
        process = self.running.pop(index, None)
        if process is not None:
            process.join()
        self.notify(status, index, outcome.result if status == "done" else outcome.error)

    def handle(self, message: tuple[str, int, Any]) -> None:
        kind, index, payload = message
        if kind in ("start", "update"):
            self.notify(kind, index, payload)  # type: ignore[arg-type]
        else:
            self.finish(index, kind, payload if kind in ("done", "failed") else None)  # type: ignore[arg-type]

    def drain(self, timeout: float) -> None:
        """Handle the next message (waiting up to ``timeout`` seconds for it) and every one already queued."""
        try:
            self.handle(self.events.get(timeout=timeout))
            while True:
                self.handle(self.events.get_nowait())
        except queue_module.Empty:
            pass

    def reap_silent_exits(self) -> None:
        """A job process that died without a final message (killed, out of memory) is a failure."""
        for index, process in list(self.running.items()):
            if not process.is_alive() and index not in self.outcomes:
                self.drain(0.2)  # its last messages may still be in the pipe
                if index not in self.outcomes:
                    self.finish(index, "failed", f"process exited with code {process.exitcode}")

    def stop(self) -> None:
        """Pass an interrupt on once (the jobs run in their own process groups, so a Ctrl-C in the terminal
        reaches only this process), then keep reading messages while the jobs save their checkpoints; a
        job still running after ``STOP_WAIT_S`` is killed. Every unfinished job ends as interrupted."""
        for process in self.running.values():
            if process.is_alive() and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGINT)
        deadline = time.monotonic() + STOP_WAIT_S
        while any(process.is_alive() for process in self.running.values()) and time.monotonic() < deadline:
            self.drain(POLL_S)
        self.drain(0.2)
        for index, process in list(self.running.items()):
            if process.is_alive():
                process.kill()
            if index not in self.outcomes:
                self.finish(index, "interrupted")


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
    table = _Jobs(jobs, multiprocessing.get_context("spawn"), on_event)
    previous_term = None
    if threading.current_thread() is threading.main_thread():
        previous_term = signal.signal(signal.SIGTERM, _raise_interrupt)  # a scheduler's SIGTERM stops jobs cleanly
    try:
        while table.pending or table.running:
            while table.pending and len(table.running) < max_parallel:
                table.start_next(threads)
            table.drain(POLL_S)
            table.reap_silent_exits()
    except KeyboardInterrupt:
        table.stop()
        raise
    finally:
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)
    return [table.outcomes[index] for index in range(len(jobs)) if index in table.outcomes]


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
