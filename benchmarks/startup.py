"""How long `libra --help` takes to print: a fresh ``python -m libra_cli --help`` process, timed from start
to exit, several times; the median and the quartiles. ``--compare DIR`` also times the source tree in DIR
(e.g. an older version exported with ``git archive``), so that a change is measured against what it changes.
The result is written as the section "Start-up: libra --help" of ``benchmarks/RESULTS.md``.

    python benchmarks/startup.py --repeats 7
    python benchmarks/startup.py --repeats 7 --compare /tmp/libra-before --compare-label "before"
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

# Run as a script (python benchmarks/startup.py), only this folder is on the path: make the package importable.
REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.profiling import markdown_table, summarize, update_section_file  # noqa: E402
from benchmarks.render import RESULTS_HEADER  # noqa: E402

SECTION = "Start-up: libra --help"


def time_help(source: Path, repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` runs of ``python -m libra_cli --help`` importing libra from ``source``."""
    env = {**os.environ, "PYTHONPATH": str(source), "COLUMNS": "100"}
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "libra_cli", "--help"], env=env, cwd=source, check=True, capture_output=True
        )
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="processes timed per source tree (default 7)")
    parser.add_argument("--compare", type=Path, default=None, help="another source tree to time too")
    parser.add_argument("--compare-label", default="--compare tree", help="its name in the table")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "RESULTS.md")
    args = parser.parse_args(argv)
    trees = [("this tree", REPO_ROOT)] + ([(args.compare_label, args.compare.resolve())] if args.compare else [])
    time_help(REPO_ROOT, 1)  # warm the file cache, not counted
    rows = []
    for label, source in trees:
        summary = summarize(time_help(source, args.repeats))
        rows.append((label, f"{summary.median:.2f}", f"{summary.q1:.2f}–{summary.q3:.2f}", summary.count))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    command = "python benchmarks/startup.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    body = "\n".join(
        [
            f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load average {load:.2f}, {os.cpu_count()} logical "
            f"cores, Python {platform.python_version()}.",
            "",
            "```",
            command.strip(),
            "```",
            "",
            "A new `python -m libra_cli --help` process each time, from start to exit.",
            "",
            markdown_table(("source", "median s", "IQR s", "runs"), rows),
        ]
    )
    update_section_file(args.out, SECTION, body, header=RESULTS_HEADER)
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
