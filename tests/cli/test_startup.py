"""`libra --help` lists the commands without importing them: no torch, no command module at start-up."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from libra_cli.cli import COMMANDS, app, load_command

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_help_imports_neither_torch_nor_any_command_module():
    probe = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from libra_cli.cli import app\n"
        "result = CliRunner().invoke(app, ['--help'])\n"
        "assert result.exit_code == 0, result.output\n"
        "heavy = sorted(m for m in sys.modules if m in ('torch', 'torchvision') or m.startswith('libra_cli.cli.'))\n"
        "print(' '.join(heavy) or 'none')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "none"


@pytest.mark.parametrize("entry", COMMANDS, ids=[entry.name for entry in COMMANDS])
def test_the_listed_help_line_is_the_commands_own(entry):
    # The table's line stands in for the command in `libra --help`: it must say what the command says.
    command = load_command(entry.name)
    assert " ".join((command.help or "").split()) == entry.help


@pytest.mark.parametrize("columns", [80, 100, 120])
@pytest.mark.parametrize("name", ["train", "config", "eval"])
def test_help_never_cuts_a_flag_name(name, columns):
    result = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    words = set(re.findall(r"--[a-z0-9-]+", result.output))
    flags = {flag for param in load_command(name).params for flag in (*param.opts, *param.secondary_opts)}
    flags = {flag for flag in flags if flag.startswith("--")}
    # Every flag shows whole (a cut one would show as a prefix followed by "…", never as the word itself).
    assert flags <= words, sorted(flags - words)
