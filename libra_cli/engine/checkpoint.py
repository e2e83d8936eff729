"""Atomic files and training checkpoints.

Every file a run keeps is written to a temporary file in the same folder, flushed, fsync-ed and renamed
over the target, so a crash at any moment leaves either the old file or the new one, never a torn one.
Checkpoints hold only tensors, numbers, strings and containers of them, so they load with
``torch.load(..., weights_only=True)``: loading never executes code from the file.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from libra_cli.errors import LibraError

CHECKPOINT_FORMAT = "libra-checkpoint-v1"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Serialise ``state`` (plus a format tag) in memory, then write it atomically."""
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **state}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a libra checkpoint safely; one-line errors for missing, corrupt or foreign files."""
    path = Path(path)
    if not path.is_file():
        raise LibraError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle with code, wrong format: all unusable for the user
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LibraError(f"{path}: corrupt or unsafe checkpoint ({message[:200]})") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise LibraError(f"{path}: not a libra checkpoint (missing format tag {CHECKPOINT_FORMAT!r})")
    for key in ("model", "iteration"):
        if key not in state:
            raise LibraError(f"{path}: checkpoint misses field {key!r}")
    return state


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
