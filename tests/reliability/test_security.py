"""Item 4: no code runs from a checkpoint, a YAML file or a shell; dataset strings cannot inject HTML."""

from __future__ import annotations

import ast
from pathlib import Path

from typer.testing import CliRunner

from libra_cli.cli import app
from libra_cli.report import build_report
from tests.report import coco_summary, make_run

PACKAGE = Path(__file__).resolve().parents[2] / "libra_cli"
runner = CliRunner()


def package_calls() -> list[tuple[str, ast.Call]]:
    """Every call expression in the package, with the file it is in."""
    calls = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Call):
                calls.append((str(path.relative_to(PACKAGE)), node))
    return calls


def dotted_name(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return f"{dotted_name(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else "?"


def keyword_is_true(call: ast.Call, name: str) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is True for k in call.keywords)


def test_every_torch_load_in_the_package_is_weights_only():
    loads = [(where, call) for where, call in package_calls() if dotted_name(call.func) == "torch.load"]
    assert loads, "the scan found no torch.load at all"
    unsafe = [where for where, call in loads if not keyword_is_true(call, "weights_only")]
    assert unsafe == []


def test_no_shell_no_eval_and_only_safe_yaml():
    forbidden = {"os.system", "os.popen", "eval", "exec", "yaml.load", "yaml.unsafe_load", "yaml.full_load"}
    found = [(where, dotted_name(call.func)) for where, call in package_calls() if dotted_name(call.func) in forbidden]
    shells = [where for where, call in package_calls() if keyword_is_true(call, "shell")]
    assert found == [] and shells == []


def test_a_yaml_preset_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "code-ran"
    preset = tmp_path / "evil.yaml"
    preset.write_text(f'train: !!python/object/apply:os.system ["touch {marker}"]\n')
    result = runner.invoke(app, ["train", str(preset), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "evil.yaml: not valid YAML at line 1" in result.stderr
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_category_and_run_names_from_the_data_are_escaped_in_html(tmp_path):
    name = '<img src=x onerror="alert(1)">'
    categories = [{"category_id": 1, "name": name, "AP": 0.5, "AP50": 0.6, "num_gt": 3}]
    run = make_run(tmp_path, "run<script>", summary=coco_summary(0.5), per_category=categories)
    page = (build_report([run], tmp_path / "out", html=True).parent / "report.html").read_text()
    assert name not in page and "<script>" not in page
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page
