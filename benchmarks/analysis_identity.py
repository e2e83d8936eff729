"""Same outputs from two versions of the code: every ``libra analyze`` command and ``libra report`` of tiny runs.

A check for a change that should not change behaviour (a refactor of the analyses, their commands or the
report's renderers). It makes tiny runs once, then runs every analysis command and a report with one version
of ``libra_cli`` and again with another, on the same run folders (the JSON records the run's path), and
compares the files and the commands' printed output byte for byte::

    python -m benchmarks.analysis_identity make /tmp/identity/runs
    python -m benchmarks.analysis_identity outputs /tmp/identity/runs /tmp/identity/before --code OLD_CHECKOUT
    python -m benchmarks.analysis_identity outputs /tmp/identity/runs /tmp/identity/after --code .
    python -m benchmarks.analysis_identity compare /tmp/identity/before /tmp/identity/after

The runs: Faster R-CNN trained for 6 iterations with the tests' tiny config (checkpoints at 3 and 6, so the
tail analysis measures over training), and two untrained runs of the tests' analysis fixtures, every Libra
component with EQL and RetinaNet with BFP and balanced L1. The error analysis reads the trained run's
detections. Outputs are compared as files; ``outputs`` removes each run's ``analysis`` folder after copying it.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

# (run, analysis, extra arguments): every command of `libra analyze` on the runs it accepts.
COMMANDS = (
    ("trained", "sampling", ()),
    ("trained", "sampling", ("--reading", "paper")),
    ("trained", "features", ()),
    ("trained", "gradients", ()),
    ("trained", "tail", ()),
    ("trained", "errors", ()),
    ("libra", "sampling", ()),
    ("libra", "features", ()),
    ("libra", "gradients", ()),
    ("libra", "tail", ("--no-over-training",)),
    ("retinanet", "features", ()),
    ("retinanet", "gradients", ()),
    ("retinanet", "sampling", ()),  # refused: one line, exit 2
)
MODEL_OPTIONS = ("--images", "3", "--batch-size", "2", "--threads", "1")


def make_runs(root: Path) -> None:
    """The tiny benchmark and the three runs under ``root``."""
    from libra_cli.data.synth import generate_benchmark
    from libra_cli.engine.train import train
    from tests.analysis.conftest import make_fresh_run
    from tests.conftest import TINY_SPEC, tiny_config

    generate_benchmark(root / "bench", TINY_SPEC)
    trained = root / "trained"
    train(tiny_config(root / "bench", trained, train__seed=0))
    libra = {"libra": {"iou_sampling": True, "bfp": True, "balanced_l1": True, "eql": True, "bl1_alpha": 0.2}}
    make_fresh_run(trained, root / "libra", libra)
    make_fresh_run(
        trained, root / "retinanet", {"model": {"arch": "retinanet"}, "libra": {"bfp": True, "balanced_l1": True}}
    )


def libra(code: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m libra_cli ARGS`` of the checkout ``code`` (run there: ``-m`` puts the working folder first)."""
    env = {**os.environ, "PYTHONPATH": str(code.resolve()), "COLUMNS": "100", "TERM": "dumb"}
    command = [sys.executable, "-m", "libra_cli", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=code.resolve())


def write_outputs(root: Path, out: Path, code: Path) -> None:
    """Every command's printed output and files, and a report of the two Faster R-CNN runs, in ``out``."""
    out.mkdir(parents=True)
    for index, (run, name, extra) in enumerate(COMMANDS):
        options = () if name == "errors" else MODEL_OPTIONS
        done = libra(code, "analyze", name, str(root / run), *options, *extra)
        (out / f"{index:02d}_{run}_{name}.out").write_text(f"exit {done.returncode}\n{done.stdout}")
        if done.returncode != 0:
            (out / f"{index:02d}_{run}_{name}.err").write_text(done.stderr)
        folder = root / run / "analysis"
        if folder.is_dir():
            shutil.copytree(folder, out / f"{index:02d}_{run}_{name}")
            shutil.rmtree(folder)
    for name in ("sampling", "features", "gradients", "tail"):  # what the report reads
        extra = ("--no-over-training",) if name == "tail" else ()
        for run in ("trained", "libra"):
            libra(code, "analyze", name, str(root / run), *MODEL_OPTIONS, *extra)
    libra(code, "analyze", "errors", str(root / "trained"))
    report = out / "report"
    done = libra(code, "report", str(root / "trained"), str(root / "libra"), "--out", str(report), "--html")
    (out / "report.out").write_text(f"exit {done.returncode}\n{done.stdout.replace(str(report), 'REPORT')}")
    for run in ("trained", "libra"):
        shutil.rmtree(root / run / "analysis", ignore_errors=True)


def compare(before: Path, after: Path) -> int:
    """Print every file that differs or exists on one side only; 0 when none does."""
    differences = 0
    names = sorted({path.relative_to(before) for path in before.rglob("*") if path.is_file()}
                   | {path.relative_to(after) for path in after.rglob("*") if path.is_file()})  # fmt: skip
    for name in names:
        first, second = before / name, after / name
        if not (first.is_file() and second.is_file() and filecmp.cmp(first, second, shallow=False)):
            differences += 1
            print(f"differs: {name}")
    print(f"{len(names)} files compared, {differences} differ")
    return 1 if differences else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("make").add_argument("root", type=Path)
    outputs = commands.add_parser("outputs")
    outputs.add_argument("root", type=Path)
    outputs.add_argument("out", type=Path)
    outputs.add_argument("--code", type=Path, default=Path("."), help="The checkout whose libra_cli runs.")
    pair = commands.add_parser("compare")
    pair.add_argument("before", type=Path)
    pair.add_argument("after", type=Path)
    args = parser.parse_args()
    if args.command == "make":
        make_runs(args.root)
        return 0
    if args.command == "outputs":
        write_outputs(args.root.resolve(), args.out.resolve(), args.code)
        return 0
    return compare(args.before, args.after)


if __name__ == "__main__":
    sys.exit(main())
