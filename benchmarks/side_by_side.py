"""Two training runs one after the other with every core, against the same two runs side by side with a
share of the cores each — the choice ``libra demo`` and ``libra ablate --jobs`` make on a CPU.

Both ways go through ``libra_cli.engine.parallel.train_parallel`` (one process per run), so they differ
only in how many runs share the machine at once and in each run's thread count. The runs are the demo's
baseline and full Libra configurations, shortened to ``--iters`` iterations, each including its final
evaluation on the val split. The result is written as the section "CPU: runs side by side" of
``benchmarks/RESULTS.md``.

    python benchmarks/side_by_side.py --synth-dir data/synth --iters 60
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

# Run as a script (python benchmarks/side_by_side.py), only this folder is on the path: make the package importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.profiling import machine_description, markdown_table, summarize, update_section_file
from benchmarks.render import RESULTS_HEADER
from libra_cli.config import load_config
from libra_cli.data.build import default_synth_spec, ensure_benchmark
from libra_cli.engine.parallel import TrainJob, cpu_cores, train_parallel
from libra_cli.rundir import RunLayout

SECTION = "CPU: runs side by side"
PRESETS = ("baseline", "libra")


def time_pair(root: Path, synth_dir: str, iters: int, *, parallel: int, threads: int) -> tuple[float, list[float]]:
    """Wall seconds for both runs, and each run's median seconds per iteration from its log."""
    jobs = [
        TrainJob(
            preset,
            load_config(
                preset,
                {
                    "data": {"synth_dir": synth_dir},
                    "train": {"out": str(root / preset), "max_iters": iters, "log_interval": 10},
                },
            ),
        )
        for preset in PRESETS
    ]
    start = time.perf_counter()
    outcomes = train_parallel(jobs, max_parallel=parallel, threads=threads)
    wall = time.perf_counter() - start
    for outcome in outcomes:
        if outcome.status != "done":
            raise SystemExit(f"{outcome.job.name}: {outcome.error or outcome.status}")
    per_iter = []
    for preset in PRESETS:
        records = RunLayout(root / preset).read_log()
        times = [r["time_per_iter"] for r in records if r.get("type") == "train" and r["iter"] > 10]
        per_iter.append(summarize(times).median if times else float("nan"))
    return wall, per_iter


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synth-dir", default="data/synth", help="the demo benchmark (generated if absent)")
    parser.add_argument("--iters", type=int, default=60, help="iterations per run (default 60)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "RESULTS.md")
    args = parser.parse_args(argv)
    ensure_benchmark(Path(args.synth_dir), default_synth_spec(), None)
    cores = cpu_cores()
    if cores < 2:
        raise SystemExit("side_by_side.py: needs at least 2 cores")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        print("[side-by-side] one after the other …", file=sys.stderr, flush=True)
        seq_wall, seq_iter = time_pair(Path(tmp) / "seq", args.synth_dir, args.iters, parallel=1, threads=cores)
        print("[side-by-side] side by side …", file=sys.stderr, flush=True)
        par_threads = max(1, cores // 2)
        par_wall, par_iter = time_pair(Path(tmp) / "par", args.synth_dir, args.iters, parallel=2, threads=par_threads)
    rows.append(
        (f"one after the other, {cores} threads each", f"{seq_wall:.1f}", f"{seq_iter[0]:.3f}", f"{seq_iter[1]:.3f}")
    )
    rows.append(
        (f"side by side, {par_threads} thread(s) each", f"{par_wall:.1f}", f"{par_iter[0]:.3f}", f"{par_iter[1]:.3f}")
    )
    command = "python benchmarks/side_by_side.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    body = "\n".join(
        [
            f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
            "",
            *(f"- {line}" for line in machine_description(torch.device("cpu"))),
            "",
            "```",
            command.strip(),
            "```",
            "",
            f"The demo's baseline and full Libra runs, {args.iters} iterations each plus the final evaluation, "
            "each in its own process (`train_parallel`).",
            "",
            markdown_table(("how", "wall s for both runs", "baseline s/iter (median)", "libra s/iter (median)"), rows),
            "",
            f"Side by side: **{seq_wall / par_wall:.2f}×** the throughput of one after the other.",
        ]
    )
    update_section_file(args.out, SECTION, body, header=RESULTS_HEADER)
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
