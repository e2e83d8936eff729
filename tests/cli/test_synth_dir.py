"""A benchmark made by `libra data synth` with its own settings is never replaced by `libra train --synth-dir`,
and `libra data synth` says how to train on what it made."""

from __future__ import annotations

import hashlib
import shlex
from pathlib import Path

import yaml
from typer.testing import CliRunner

from libra_cli.cli import app

runner = CliRunner()
SMALL = ["--num-train", "3", "--num-val", "2", "--image-size", "64"]


def folder_digest(root: Path) -> str:
    """SHA-256 over every file's relative path and bytes: equal digests, untouched folder."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def test_train_refuses_a_custom_benchmark_in_its_synth_dir_and_leaves_it_untouched(tmp_path):
    bench = tmp_path / "bench"
    made = runner.invoke(app, ["data", "synth", str(bench), *SMALL])
    assert made.exit_code == 0, made.output
    before = folder_digest(bench)
    result = runner.invoke(app, ["train", "--synth-dir", str(bench), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1
    # The default benchmark is 500 + 100 images of 256 px: the three settings given above differ from it.
    assert f"{bench}: holds a synthetic benchmark made with other settings" in lines[0]
    assert "num_train 3, not 500" in lines[0] and "num_val 2, not 100" in lines[0]
    assert "image_size 64, not 256" in lines[0]
    assert f"--train-ann {bench}/annotations/train.json" in lines[0]
    assert folder_digest(bench) == before
    assert not (tmp_path / "run").exists()


def test_data_synth_ends_with_the_flags_that_train_on_it(tmp_path):
    bench = tmp_path / "bench"
    result = runner.invoke(app, ["data", "synth", str(bench), *SMALL])
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    # The benchmark's layout: annotations/{train,val}.json and images/{train,val}/.
    assert last == (
        f"train on it: libra train --train-ann {bench}/annotations/train.json --train-images {bench}/images/train "
        f"--val-ann {bench}/annotations/val.json --val-images {bench}/images/val"
    )
    # Those flags make a valid config that reads exactly these files.
    flags = shlex.split(last.removeprefix("train on it: libra train "))
    config = runner.invoke(app, ["config", *flags])
    assert config.exit_code == 0, config.output
    data = yaml.safe_load(config.output)["data"]
    assert data["train_ann"] == str(bench / "annotations" / "train.json")
    assert data["val_images"] == str(bench / "images" / "val")


def test_data_synth_refuses_to_replace_a_benchmark_with_other_settings_unless_forced(tmp_path):
    bench = tmp_path / "bench"
    assert runner.invoke(app, ["data", "synth", str(bench), *SMALL]).exit_code == 0
    before = folder_digest(bench)
    # Same folder, one setting changed (4 training images instead of 3): one line, exit 2, files untouched.
    other = ["--num-train", "4", "--num-val", "2", "--image-size", "64"]
    refused = runner.invoke(app, ["data", "synth", str(bench), *other])
    assert refused.exit_code == 2
    assert refused.output.strip() == (
        f"error: {bench}: holds a synthetic benchmark made with other settings (num_train 3, not 4); "
        "pass --force to replace it, or choose another folder"
    )
    assert folder_digest(bench) == before
    # The same settings again write the same bytes (same seed, same bytes), so nothing is lost by allowing it.
    assert runner.invoke(app, ["data", "synth", str(bench), *SMALL]).exit_code == 0
    assert folder_digest(bench) == before
    # --force replaces it: 4 training images now (000000.png … 000003.png).
    forced = runner.invoke(app, ["data", "synth", str(bench), *other, "--force"])
    assert forced.exit_code == 0, forced.output
    assert sorted(p.name for p in (bench / "images" / "train").iterdir()) == [f"{i:06d}.png" for i in range(4)]
