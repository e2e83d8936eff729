"""Ablation grids: the plan, skipping and resuming with an injected trainer (no training), bad grid files."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from libra_cli.cli import app
from libra_cli.config import PRESET_DIR, save_config
from libra_cli.engine.ablate import load_grid, plan_runs, report_dirs
from libra_cli.errors import LibraError
from libra_cli.workflow import Display, run_state, train_grid
from tests.report import coco_summary, parse_table, write_checkpoint

TABLE2 = PRESET_DIR / "ablation_table2.yaml"
runner = CliRunner()


def write_grid(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return path


class FakeTrainer:
    """Stands in for `workflow.train_run`: records the call and leaves a finished run directory behind."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[tuple[str, bool]] = []
        self.fail_on = fail_on

    def __call__(self, config, *, resume: bool, hooks=None):
        run_dir = Path(config.train.out)
        name = f"{run_dir.parent.name}/{run_dir.name}"
        self.calls.append((name, resume))
        if name == self.fail_on:
            raise LibraError(f"non-finite loss at iteration 3 in {name}")
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.yaml")
        write_checkpoint(run_dir, config.train.max_iters)
        (run_dir / "eval").mkdir(exist_ok=True)
        metrics = {
            "format": "coco",
            "summary": coco_summary(0.3),
            "per_category": [],
            "iteration": config.train.max_iters,
        }
        (run_dir / "eval" / "metrics.json").write_text(json.dumps(metrics))
        return SimpleNamespace(metrics=metrics)


def run_status(run):
    return run_state(run.config)


def run_grid(planned, *, trainer, on_progress=None, monkeypatch):
    """``train_grid`` one run at a time with ``trainer`` in place of ``workflow.train_run``."""

    class Progress(Display):
        def next_run(self, done, total, name):
            if on_progress is not None:
                on_progress(done, total, name)

    monkeypatch.setattr("libra_cli.workflow.train_run", trainer)
    return train_grid(planned, jobs=1, display=Progress())


def test_table2_grid_with_three_seeds_plans_twelve_cumulative_runs(tmp_path):
    planned = plan_runs(load_grid(TABLE2), 3, tmp_path / "grid", {"train": {"max_iters": 7}})
    assert len(planned) == 12
    expected = {
        "baseline": [],
        "iou_sampling": ["iou_sampling"],
        "bfp": ["iou_sampling", "bfp"],
        "balanced_l1": ["iou_sampling", "bfp", "balanced_l1"],
    }
    assert {(run.label, run.seed) for run in planned} == {(label, seed) for label in expected for seed in range(3)}
    for run in planned:
        assert run.config.libra.enabled() == expected[run.label]
        assert run.run_dir == tmp_path / "grid" / run.label / f"seed{run.seed}"
        assert run.config.train.seed == run.seed
        assert run.config.train.max_iters == 7
        assert run.config.model.arch == "faster_rcnn"  # from the base preset
    # Seed-major: all four configurations of seed 0 come first.
    assert [(run.label, run.seed) for run in planned[:4]] == [(label, 0) for label in expected]


def test_finished_runs_are_skipped_and_interrupted_ones_resumed(tmp_path, monkeypatch):
    grid = load_grid(write_grid(tmp_path, "base: baseline\nruns:\n  a: {}\n  b:\n    libra: {bfp: true}\n"))
    planned = plan_runs(grid, 2, tmp_path / "runs", {"train": {"max_iters": 10}})
    by_name = {run.name: run for run in planned}
    # a/seed0 finished: checkpoint at max_iters and metrics written.
    FakeTrainer()(by_name["a/seed0"].config, resume=False)
    # b/seed0 stopped half-way: a checkpoint at iteration 5, no metrics.
    half = by_name["b/seed0"]
    half.run_dir.mkdir(parents=True)
    save_config(half.config, half.run_dir / "config.yaml")
    write_checkpoint(half.run_dir, 5)
    assert [run_status(run) for run in planned] == ["done", "resume", "new", "new"]

    trainer, progress = FakeTrainer(), []
    outcomes = run_grid(
        planned,
        trainer=trainer,
        on_progress=lambda d, t, name: progress.append((d, t, name)),
        monkeypatch=monkeypatch,
    )
    assert trainer.calls == [("b/seed0", True), ("a/seed1", False), ("b/seed1", False)]
    assert [(o.run.name, o.outcome) for o in outcomes] == [
        ("a/seed0", "skipped"),
        ("b/seed0", "resumed"),
        ("a/seed1", "trained"),
        ("b/seed1", "trained"),
    ]
    assert progress == [(1, 4, "b/seed0"), (2, 4, "a/seed1"), (3, 4, "b/seed1"), (4, 4, None)]
    # Everything is done now: a second pass trains nothing.
    again = FakeTrainer()
    assert {o.outcome for o in run_grid(planned, trainer=again, monkeypatch=monkeypatch)} == {"skipped"}
    assert again.calls == []
    # The report covers every run, grouped by label.
    assert report_dirs(planned) == [by_name[name].run_dir for name in ("a/seed0", "a/seed1", "b/seed0", "b/seed1")]


def test_a_checkpoint_at_the_end_without_metrics_is_resumed_to_evaluate(tmp_path):
    grid = load_grid(write_grid(tmp_path, "runs:\n  a: {}\n"))
    (run,) = plan_runs(grid, 1, tmp_path / "runs")
    run.run_dir.mkdir(parents=True)
    write_checkpoint(run.run_dir, run.config.train.max_iters)
    assert run_status(run) == "resume"


def test_a_failed_run_is_recorded_and_the_grid_goes_on(tmp_path, monkeypatch):
    grid = load_grid(write_grid(tmp_path, "runs:\n  a: {}\n  b: {libra: {bfp: true}}\n"))
    planned = plan_runs(grid, 1, tmp_path / "runs")
    trainer = FakeTrainer(fail_on="a/seed0")
    outcomes = run_grid(planned, trainer=trainer, monkeypatch=monkeypatch)
    assert [(o.outcome, o.error) for o in outcomes] == [
        ("failed", "non-finite loss at iteration 3 in a/seed0"),
        ("trained", None),
    ]


def test_a_folder_holding_other_settings_is_refused(tmp_path, monkeypatch):
    grid = load_grid(write_grid(tmp_path, "runs:\n  a: {}\n"))
    (run,) = plan_runs(grid, 1, tmp_path / "runs", {"train": {"max_iters": 10}})
    (old,) = plan_runs(grid, 1, tmp_path / "runs", {"train": {"max_iters": 20}})
    FakeTrainer()(old.config, resume=False)
    with pytest.raises(LibraError, match=r"holds a run with other settings \(train.max_iters: 20 → 10\)"):
        run_grid([run], trainer=FakeTrainer(), monkeypatch=monkeypatch)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("runs: [a, b]\n", "grid.yaml: runs: expected a non-empty mapping"),
        ("runs: {}\n", "grid.yaml: runs: expected a non-empty mapping"),
        ("base: nope\nruns: {a: {}}\n", "grid.yaml: base: unknown preset 'nope'"),
        ("base: 3\nruns: {a: {}}\n", "grid.yaml: base: expected a preset name or YAML path, got 3"),
        ("seeds: 3\nruns: {a: {}}\n", "grid.yaml: unknown key 'seeds' (known: base, runs)"),
        ("runs: {a: {libra: {bfpp: true}}}\n", "grid.yaml: runs.a: libra.bfpp is not a known setting"),
        ("runs: {a: {optics: {x: 1}}}\n", "grid.yaml: runs.a: unknown section 'optics'"),
        ("runs: {a: {libra: {bfp: 3}}}\n", "grid.yaml: runs.a: libra.bfp: expected true/false, got 3"),
        ("runs: {a: 3}\n", "grid.yaml: runs.a: expected a mapping of sections"),
        ("runs: {a: {train: {seed: 4}}}\n", "grid.yaml: runs.a.train.seed: set by `libra ablate`"),
        ("runs: {a: {train: {out: x}}}\n", "grid.yaml: runs.a.train.out: set by `libra ablate`"),
        ("runs: {'a/b': {}}\n", "grid.yaml: runs.a/b: a label must be a folder name"),
        (
            "runs: {r: {model: {arch: retinanet}, libra: {iou_sampling: true}}}\n",
            "grid.yaml: runs.r: libra.iou_sampling: RetinaNet has no RoI sampler",
        ),
        ("runs: [\n", "grid.yaml: not valid YAML at line 2"),
        ("- 1\n", "grid.yaml: expected a mapping with 'base' and 'runs'"),
    ],
)
def test_bad_grid_files_give_one_line_errors_naming_the_key(tmp_path, text, message):
    with pytest.raises(LibraError) as error:
        load_grid(write_grid(tmp_path, text))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_seeds_must_be_positive(tmp_path):
    grid = load_grid(write_grid(tmp_path, "runs: {a: {}}\n"))
    with pytest.raises(LibraError, match="--seeds: must be at least 1, got 0"):
        plan_runs(grid, 0, tmp_path)


def test_cli_dry_run_prints_the_plan_and_trains_nothing(tmp_path):
    out_root = tmp_path / "grid"
    result = runner.invoke(app, ["ablate", str(TABLE2), "--seeds", "3", "--out-root", str(out_root), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "ablation plan: 12 runs in" in result.output
    assert result.output.count(" new ") == 12
    assert "balanced_l1/seed2" in result.output
    assert not out_root.exists()


def test_cli_runs_the_grid_and_writes_the_report(tmp_path, monkeypatch):
    trainer = FakeTrainer()
    monkeypatch.setattr("libra_cli.workflow.train_run", trainer)
    grid = write_grid(tmp_path, "base: baseline\nruns:\n  baseline: {}\n  bfp: {libra: {bfp: true}}\n")
    report = tmp_path / "report"
    args = [
        "ablate",
        str(grid),
        "--out-root",
        str(tmp_path / "runs"),
        "--report",
        str(report),
        "--max-iters",
        "4",
        "--jobs",
        "1",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert trainer.calls == [("baseline/seed0", False), ("bfp/seed0", False)]
    assert "2 trained, 0 resumed, 0 skipped, 0 failed" in result.output
    markdown = (report / "report.md").read_text()
    rows = parse_table(markdown, "## Ablation (paper Table 2 layout)")
    # BFP without IoU sampling is not the paper's cumulative order, so the row is named by its component.
    assert [(row["setting"], row["run"], row["ΔAP"]) for row in rows] == [
        ("baseline (no components)", "baseline", "—"),
        ("BFP", "bfp", "+0.000"),  # the fake trainer gives every run AP 0.3
    ]


@pytest.mark.slow
def test_grid_side_by_side_trains_skips_and_reports_failures(tiny_benchmark, tmp_path):
    from tests.conftest import tiny_config

    base = tmp_path / "tiny.yaml"
    save_config(tiny_config(tiny_benchmark, tmp_path / "unused", train__max_iters=2), base)
    grid = write_grid(
        tmp_path,
        f"base: {base}\nruns:\n  baseline: {{}}\n  bfp: {{libra: {{bfp: true}}}}\n"
        f"  broken: {{data: {{train_ann: {tmp_path / 'missing.json'}}}}}\n",
    )
    planned = plan_runs(load_grid(grid), 1, tmp_path / "runs")
    outcomes = train_grid(planned, jobs=2, threads=1)
    assert [(o.run.name, o.outcome) for o in outcomes] == [
        ("baseline/seed0", "trained"),
        ("bfp/seed0", "trained"),
        ("broken/seed0", "failed"),
    ]
    assert "missing.json" in outcomes[2].error
    for name in ("baseline", "bfp"):
        metrics = json.loads((tmp_path / "runs" / name / "seed0" / "eval" / "metrics.json").read_text())
        assert metrics["iteration"] == 2
    again = train_grid(planned[:2], jobs=2, threads=1)
    assert [o.outcome for o in again] == ["skipped", "skipped"]


def test_cli_jobs_must_be_positive(tmp_path):
    grid = write_grid(tmp_path, "base: baseline\nruns:\n  baseline: {}\n")
    result = runner.invoke(app, ["ablate", str(grid), "--out-root", str(tmp_path / "runs"), "--jobs", "0"])
    assert result.exit_code == 2
    assert "--jobs: must be at least 1, got 0" in result.output
    assert not (tmp_path / "runs").exists()


def test_cli_bad_grid_is_one_line_and_exit_code_2(tmp_path):
    result = runner.invoke(app, ["ablate", str(write_grid(tmp_path, "runs: {a: {libra: {bfpp: 1}}}\n"))])
    assert result.exit_code == 2
    assert "runs.a: libra.bfpp is not a known setting" in result.output


def test_an_epoch_schedule_run_is_judged_by_the_iterations_its_epochs_came_to(tmp_path):
    from libra_cli.config import load_config

    planned = load_config(None, {"train": {"out": str(tmp_path / "run"), "epochs": 2}})
    assert planned.train.max_iters == 450  # the default: the epochs are turned into iterations at the start
    # What training saved: 2 epochs of 30 images in batches of 4 = 2 × 8 = 16 iterations.
    saved = load_config(None, {"train": {"out": str(tmp_path / "run"), "epochs": 2, "max_iters": 16}})
    FakeTrainer()(saved, resume=False)  # checkpoint at iteration 16, metrics written
    assert run_state(planned) == "done"
    halfway = tmp_path / "half"
    started = load_config(None, {"train": {"out": str(halfway), "epochs": 2, "max_iters": 16}})
    save_config(started, halfway / "config.yaml")
    write_checkpoint(halfway, 8)
    assert run_state(load_config(None, {"train": {"out": str(halfway), "epochs": 2}})) == "resume"
    # Other epochs are other settings.
    with pytest.raises(LibraError, match=r"train.epochs: 2 → 3"):
        run_state(load_config(None, {"train": {"out": str(tmp_path / "run"), "epochs": 3}}))
