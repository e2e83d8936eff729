"""File I/O that every layer shares: atomic writes, JSON reading with one-line errors and safe loading of
tensor files.

Every file libra keeps is written to a temporary file in the same folder, flushed, fsync-ed and renamed
over the target, so a crash at any moment leaves either the old file or the new one, never a torn one.
Tensor files (checkpoints, weights) are read with ``torch.load(..., weights_only=True)``: loading never
executes code from the file. This module sits at the bottom: it imports nothing from libra but the error
type, so ``config.py``, ``models/build.py``, ``engine/checkpoint.py`` and ``rundir.py`` can all use it.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from libra_cli.errors import LibraError

HASH_DIGITS = 8  # hex digits of the SHA-256 put in an exported file's name


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates the file private (0600); give it the permissions a plain open() would.
        os.fchmod(fd, 0o666 & ~_umask())
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


def write_named_by_hash(out: Path, data: bytes, *, overwrite: bool = False) -> tuple[Path, str]:
    """Write ``data`` atomically beside ``out`` as ``<out's stem>-<first HASH_DIGITS hex digits of its
    SHA-256><out's suffix>`` (an exported weights or ONNX file); returns (that path, the SHA-256 in hex).
    A file already at that name is a one-line LibraError unless ``overwrite``."""
    digest = hashlib.sha256(data).hexdigest()
    path = out.with_name(f"{out.stem}-{digest[:HASH_DIGITS]}{out.suffix}")
    if path.exists() and not overwrite:
        raise LibraError(f"{path}: exists already (give --force to replace it)")
    atomic_write_bytes(path, data)
    return path, digest


def remove_stale_temporaries(folder: Path) -> int:
    """Delete temporary files a killed process left behind in ``folder``; returns how many."""
    stale = list(Path(folder).glob(".*.tmp")) if Path(folder).is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def load_tensors_safely(path: Path, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` with one-line LibraErrors.

    The weights-only unpickler accepts tensors, numbers, strings and containers only, so a file that
    would construct any other Python object — and could run code that way — is refused, not executed.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if found:
            raise LibraError(
                f"{path}: refused to load this {what}: it holds Python objects such as {found.group(1)} "
                "besides tensors, and unpickling it could run code"
            ) from exc
        reason = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(exc))
        detail = reason.group(1).strip() if reason else type(exc).__name__
        raise LibraError(
            f"{path}: corrupt {what} or not a PyTorch file (the safe weights-only loader stops at: {detail})"
        ) from exc
    except Exception as exc:  # truncated zip, not a torch file at all: unusable for the user
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
        first_sentence = text.splitlines()[0].split(". ")[0][:200] if text else ""
        raise LibraError(
            f"{path}: corrupt {what} or not a PyTorch file ({type(exc).__name__}: {first_sentence})"
        ) from exc


def read_json(path: Path, what: str = "file", expected: type | None = None) -> Any:
    """A JSON file's value, or LibraError in one line naming the file: ``what`` not found (e.g. "detections
    file"), unreadable, not valid JSON, or (with ``expected``) not a JSON object (dict) / list."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise LibraError(f"{path}: {what} not found") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        detail = f"{exc.msg} at line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise LibraError(f"{path}: not valid JSON ({detail})") from exc
    except OSError as exc:
        raise LibraError(f"{path}: cannot read ({exc.strerror})") from exc
    if expected is not None and not isinstance(data, expected):
        kind = "a JSON object" if expected is dict else f"a JSON {expected.__name__}"
        raise LibraError(f"{path}: expected {kind}, got {type(data).__name__}")
    return data
