"""Training checkpoints: their format, atomic saving, safe loading, and the RNG states they carry.

A run keeps one full training state, ``last.pt`` (model, optimizer, scaler, RNG, data position: what
``--resume`` needs); ``best.pt`` holds the best weights only (:func:`weights_state`), since nothing resumes
from it — for a detector trained with SGD and momentum that is half of ``last.pt``'s size.

Checkpoints hold only tensors, numbers, strings and containers of them, so they load with
``torch.load(..., weights_only=True)``: loading never executes code from the file. The atomic write and
the safe load themselves are ``libra_cli.io``'s; where a run keeps its checkpoints is ``rundir.py``'s.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import torch

from libra_cli.errors import LibraError
from libra_cli.io import atomic_write_bytes, load_tensors_safely

CHECKPOINT_FORMAT = "libra-checkpoint-v1"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Serialise ``state`` (plus a format tag) in memory, then write it atomically."""
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **state}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a libra checkpoint safely; one-line errors for missing, corrupt, unsafe or foreign files."""
    path = Path(path)
    if not path.is_file():
        raise LibraError(f"{path}: checkpoint not found")
    state = load_tensors_safely(path, "checkpoint")
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise LibraError(f"{path}: not a libra checkpoint (missing format tag {CHECKPOINT_FORMAT!r})")
    for key in ("model", "iteration"):
        if key not in state:
            raise LibraError(f"{path}: checkpoint misses field {key!r}")
    return state


def weights_state(model: torch.nn.Module, iteration: int, **extra: Any) -> dict[str, Any]:
    """A checkpoint holding the model's weights and the iteration (and ``extra`` numbers), no training state."""
    return {"model": model.state_dict(), "iteration": iteration, **extra}


def rng_state() -> dict[str, Any]:
    """This process's random generators: torch (CPU and CUDA) and Python's ``random``."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
