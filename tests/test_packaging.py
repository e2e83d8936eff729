"""The built wheel carries the presets and grids, and an installed copy finds them from any folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from libra_cli.config import PRESET_DIR

REPO = Path(__file__).resolve().parents[1]


def _build_wheel(tmp_path: Path) -> Path:
    """``pip wheel --no-deps`` of a copy of the source (so the build leaves nothing in the tree), offline."""
    source = tmp_path / "src"
    shutil.copytree(REPO / "libra_cli", source / "libra_cli", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    wheels = tmp_path / "wheels"
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run([*command, "-q", "-w", str(wheels), str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("*.whl")
    return wheel


@pytest.mark.slow
def test_the_wheel_holds_the_presets_and_an_unpacked_copy_loads_one_from_another_folder(tmp_path):
    wheel = _build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    # Every YAML file of the source's preset folder, at the same place inside the package.
    shipped = sorted(f"libra_cli/presets/{path.name}" for path in PRESET_DIR.glob("*.yaml"))
    assert len(shipped) > 20
    assert sorted(name for name in names if name.startswith("libra_cli/presets/")) == shipped

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = (
        "import json, sys, libra_cli\n"
        "from libra_cli.config import load_config, shipped_presets\n"
        "config = load_config('libra')\n"
        "print(json.dumps({'file': libra_cli.__file__, 'path': sys.path, 'bfp': config.libra.bfp,\n"
        "    'grids': sorted(p.name for p in shipped_presets() if p.is_grid)}))\n"
    )
    # -P: the working folder is not put on sys.path; PYTHONPATH holds only the unpacked wheel.
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run(
        [sys.executable, "-P", "-c", probe], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert Path(found["file"]).resolve() == (site / "libra_cli" / "__init__.py").resolve()
    assert str(REPO) not in found["path"] and "" not in found["path"]
    # libra.yaml switches the BFP on (the default is off), so the value came from the shipped file.
    assert found["bfp"] is True
    assert "ablation_table2" in found["grids"]
