"""Ctrl-C and SIGTERM during training, held back while a step's update and bookkeeping are under way."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


class StepBoundaryInterrupts:
    """Ctrl-C (SIGINT) and SIGTERM raise KeyboardInterrupt, but never in the middle of a step's bookkeeping.

    Inside ``with interrupts.atomic():`` a signal is only noted and raised when the block ends, so the
    checkpoint written on the way out holds whole steps: its iteration k comes with all of step k's
    update, loss terms and log record, never half of them. Outside the block (data loading, forward,
    backward, evaluation) a signal interrupts at once. SIGTERM is what schedulers and torchrun send before
    they kill a job. ``install`` replaces the handlers in the main thread only (where Python runs them).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.in_update = False
        self.pending = False
        self.previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.in_update:
            self.pending = True
        else:
            raise KeyboardInterrupt

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self.previous = {signum: signal.signal(signum, self._handle) for signum in self.SIGNALS}

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        self.in_update = True
        try:
            yield
        finally:
            self.in_update = False
        if self.pending:
            raise KeyboardInterrupt
