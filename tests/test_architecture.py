"""The import contract: libra_cli's layers point down (pyproject.toml's [tool.importlinter]) and no module
imports itself back through others.

The layers are checked by import-linter, as `lint-imports` in the repository root does; the cycles by
grimp, which import-linter builds on (a layers contract does not look inside one layer, where
``engine.metrics`` and ``engine.voc_eval`` could still import each other).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp

REPO_ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")  # installed beside python by the dev extra


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """`lint-imports` on the package in ``root`` with the contract in ``root``'s pyproject.toml."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )


def import_cycles(package: str) -> list[list[str]]:
    """Every chain of imports that leads from a module of ``package`` back to it, one per module pair:
    ``[a, b, …, a]`` where ``a`` imports ``b`` directly and ``b`` reaches ``a``."""
    graph = grimp.build_graph(package, cache_dir=None)
    cycles, seen = [], set()
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back and frozenset(back) not in seen:
                seen.add(frozenset(back))
                cycles.append([module, *back])
    return cycles


def test_the_layers_contract_is_kept():
    done = lint_imports(REPO_ROOT)
    # A broken contract prints the offending import chains ("x is not allowed to import y: - x.a -> y.b").
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Contracts: 1 kept, 0 broken." in done.stdout


def test_the_contract_names_a_deliberate_upward_import(tmp_path):
    # A copy of the package where the models layer imports the workflow (four layers up) must fail the same
    # contract, naming the two layers and the importing line.
    shutil.copytree(REPO_ROOT / "libra_cli", tmp_path / "libra_cli", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    bfp = tmp_path / "libra_cli" / "models" / "bfp.py"
    bfp.write_text(bfp.read_text() + "\nimport libra_cli.workflow  # noqa: E402\n")
    done = lint_imports(tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Contracts: 0 kept, 1 broken." in done.stdout
    assert "libra_cli.models is not allowed to import libra_cli.workflow" in done.stdout
    assert "libra_cli.models.bfp -> libra_cli.workflow" in done.stdout


def test_no_module_imports_itself_through_others():
    assert import_cycles("libra_cli") == []


def test_the_cycle_check_finds_a_cycle_inside_one_layer(tmp_path, monkeypatch):
    # pkg.a → pkg.b → pkg.c → pkg.a is one cycle; pkg.d only imports pkg.a and is in none.
    package = tmp_path / "cyclic_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from cyclic_pkg import b\n")
    (package / "b.py").write_text("import cyclic_pkg.c\n")
    (package / "c.py").write_text("from cyclic_pkg.a import *\n")
    (package / "d.py").write_text("import cyclic_pkg.a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cycles = import_cycles("cyclic_pkg")
    assert [sorted(set(cycle)) for cycle in cycles] == [["cyclic_pkg.a", "cyclic_pkg.b", "cyclic_pkg.c"]]
    assert cycles[0] == ["cyclic_pkg.a", "cyclic_pkg.b", "cyclic_pkg.c", "cyclic_pkg.a"]
