"""Items 2 and 4: checkpoints are written atomically and load without ever running code from the file."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from libra_cli import io as io_module
from libra_cli.cli import app
from libra_cli.config import save_config
from libra_cli.engine.checkpoint import load_checkpoint, save_checkpoint
from libra_cli.errors import LibraError
from libra_cli.io import remove_stale_temporaries
from tests.conftest import tiny_config

runner = CliRunner()


class CreatesAFile:
    """Unpickling this object calls ``open(marker, "w")``: a stand-in for any code a file could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def code_checkpoint(path: Path, marker: Path, container: str) -> Path:
    payload = {"format": "libra-checkpoint-v1", "model": CreatesAFile(marker), "iteration": 1}
    if container == "torch":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    return path


@pytest.mark.parametrize("container", ["torch", "pickle"])
def test_a_checkpoint_holding_code_is_refused_without_running_it(tmp_path, container):
    marker = tmp_path / "code-ran"
    path = code_checkpoint(tmp_path / "evil.pt", marker, container)
    with pytest.raises(LibraError, match="refused to load this checkpoint") as error:
        load_checkpoint(path)
    assert "\n" not in str(error.value) and str(path) in str(error.value)
    assert not marker.exists()
    # The control: loading the same file the unsafe way does run the code, so the test would notice.
    with open(path, "rb") as handle:
        torch.load(handle, weights_only=False) if container == "torch" else pickle.load(handle)
    assert marker.exists()


def write_run_dir(run_dir: Path, benchmark: Path) -> None:
    """A run directory's config and dataset files, enough for `libra eval` to reach the checkpoint."""
    run_dir.mkdir(parents=True)
    save_config(tiny_config(benchmark, run_dir), run_dir / "config.yaml")
    (run_dir / "dataset.json").write_text(
        json.dumps({"category_ids": [1, 2, 3], "images_per_class": [2, 2, 2], "num_images": 8})
    )


def foreign_state_dict(path: Path, marker: Path) -> None:
    torch.save(torch.nn.Linear(4, 2).state_dict(), path)


def truncated_checkpoint(path: Path, marker: Path) -> None:
    save_checkpoint(path, {"model": {"w": torch.ones(1000)}, "iteration": 3})
    path.write_bytes(path.read_bytes()[:300])


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p, m: code_checkpoint(p, m, "torch"), "refused to load this checkpoint"),
        (foreign_state_dict, "not a libra checkpoint"),
        (truncated_checkpoint, "corrupt checkpoint"),
        (lambda p, m: p.write_text("not a checkpoint"), "corrupt checkpoint"),
    ],
    ids=["code", "foreign-state-dict", "truncated", "text"],
)
def test_bad_checkpoints_are_one_line_errors_in_eval_and_resume(tmp_path, tiny_benchmark, make, words):
    marker = tmp_path / "code-ran"
    run_dir = tmp_path / "run"
    write_run_dir(run_dir, tiny_benchmark)
    bad = run_dir / "checkpoints" / "last.pt"
    bad.parent.mkdir()
    make(bad, marker)
    for args in (
        ["eval", str(run_dir), "--checkpoint", str(bad)],
        ["train", "--out", str(run_dir), "--resume"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and words in lines[0] and "last.pt" in lines[0], result.stderr
    assert not marker.exists()
    assert not (run_dir / "eval").exists()


def test_a_crash_while_writing_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.zeros(3)}, "iteration": 1})

    def power_cut(*args, **kwargs):
        raise OSError("disk vanished")

    monkeypatch.setattr(io_module.os, "replace", power_cut)
    with pytest.raises(OSError, match="disk vanished"):
        save_checkpoint(path, {"model": {"w": torch.ones(3)}, "iteration": 2})
    state = load_checkpoint(path)
    assert state["iteration"] == 1 and state["model"]["w"].tolist() == [0.0, 0.0, 0.0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # the temporary file is gone


def test_temporaries_left_by_a_killed_writer_are_removed_on_resume(tmp_path):
    (tmp_path / ".last.pt.k3j2.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / "last.pt").write_bytes(b"kept")
    assert remove_stale_temporaries(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    assert os.path.getsize(tmp_path / "last.pt") == 4
