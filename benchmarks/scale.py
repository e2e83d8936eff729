"""libra at COCO's and LVIS' full sizes: time and peak memory of each command, next to its target.

Writes the full-size files of ``benchmarks/full_size.py`` (COCO train2017 / val2017, LVIS v1 train / val,
shared small images, results files of 100 / 300 detections per image) unless they are there, then runs
each command as a user runs it — ``python -m libra_cli …`` in a fresh process — and records its wall time
and its peak RSS (the process's and its children's high-water mark, ``wait4``):

- ``libra data stats`` of COCO train and LVIS v1 train (targets: ≤ 30 s and ≤ 3 GiB; ≤ 60 s and ≤ 5 GiB);
- ``libra score`` of the COCO val and LVIS v1 val results (LVIS target: ≤ 3 min and ≤ 8 GiB; COCO: no
  slower than the one-pass evaluation, measured here too by ``eval_scale.py``'s driver);
- ``libra train coco_libra_faster_rcnn_r50_fpn_1x`` and ``lvis_eql_faster_rcnn_r50_fpn_1x`` on the full
  training files, ``--max-iters 2`` on the CPU (LVIS with repeat-factor sampling, both with aspect-ratio
  grouping): the seconds to the first iteration (reading and checking the files, every image file's
  header, the sampler's plan, building the model) and the peak memory. Their val split is a 10-image
  file, so that the final evaluation (the full val set at 800 px on a CPU would take hours) stays short.

``--smoke`` does all of it on tiny fractions of the sets (a few seconds each) without checking targets.

    nice -n 19 python benchmarks/scale.py --data /tmp/full_size --out scale.md --json scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parents[1]
if str(REPOSITORY) not in sys.path:
    sys.path.insert(0, str(REPOSITORY))

from benchmarks.full_size import SETS, write_set  # noqa: E402
from libra_cli.io import atomic_write_text  # noqa: E402

GIB = 1024**3
SMOKE_FRACTION = 0.0004  # 47 COCO train images, 40 LVIS train, 8 LVIS val
STEPS = ("stats", "score", "train")
TRAIN_PRESETS = {"coco_train": "coco_libra_faster_rcnn_r50_fpn_1x", "lvis_train": "lvis_eql_faster_rcnn_r50_fpn_1x"}


def measure(command: list[str], log: Path, timeout: float, watch: Path | None = None) -> dict[str, Any]:
    """Run ``command`` in a fresh process (output to ``log``): wall seconds, peak RSS in GiB, exit code and,
    with ``watch``, the seconds until that file appeared."""
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY), "COLUMNS": "160"}
    start = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=REPOSITORY, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = start + timeout
        appeared = None
        while True:
            if watch is not None and appeared is None and watch.exists():
                appeared = time.perf_counter() - start
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                process.kill()
                pid, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.2)
    seconds = time.perf_counter() - start
    # ru_maxrss of wait4 is the largest of the process and its waited-for descendants, in KiB on Linux.
    return {
        "command": " ".join(command),
        "seconds": round(seconds, 1),
        # CPU seconds (user + system, the process and its children): steadier than wall time on a busy machine.
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_gib": round(usage.ru_maxrss * 1024 / GIB, 2),
        "returncode": os.waitstatus_to_exitcode(status),
        "log": str(log),
        **({"appeared_s": None if appeared is None else round(appeared, 1)} if watch is not None else {}),
    }


def libra(*args: str) -> list[str]:
    return [sys.executable, "-m", "libra_cli", *args]


def ensure_files(data: Path, fraction: float) -> dict[str, dict]:
    """The full-size files (or a fraction of them), written unless present; a 10-image val file per format."""
    written = {}
    for name in SETS:
        path = data / "annotations" / f"{name}.json"
        results = name.endswith("_val")
        if not path.is_file() or (results and not (data / "results" / f"{name}.json").is_file()):
            print(f"[scale] writing {name} ...", file=sys.stderr, flush=True)
            written[name] = write_set(data, name, fraction=fraction, results=results)
    for name in ("coco_val", "lvis_val"):
        small = data / "annotations" / f"{name}_10.json"
        if not small.is_file():
            dataset = json.loads(path_of(data, name).read_text())
            kept = {image["id"] for image in dataset["images"][:10]}
            dataset["images"] = dataset["images"][:10]
            dataset["annotations"] = [ann for ann in dataset["annotations"] if ann["image_id"] in kept]
            atomic_write_text(small, json.dumps(dataset))
    return written


def path_of(data: Path, name: str) -> Path:
    return data / "annotations" / f"{name}.json"


def run_steps(data: Path, work: Path, steps: tuple[str, ...], timeout: float, smoke: bool) -> dict[str, dict]:
    images = data / "images"
    figures: dict[str, dict] = {}

    def record(key: str, command: list[str], watch: Path | None = None) -> None:
        print(f"[scale] {key}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
        figures[key] = measure(command, work / f"{key}.log", timeout, watch)
        print(f"[scale]   {figures[key]['seconds']} s, {figures[key]['peak_rss_gib']} GiB", file=sys.stderr)

    if "stats" in steps:
        for name in ("coco_train", "lvis_train"):
            record(f"stats_{name}", libra("data", "stats", str(path_of(data, name)), "--images", str(images),
                                          "--out", str(work / f"stats_{name}")))  # fmt: skip
    if "score" in steps:
        for name in ("coco_val", "lvis_val"):
            results = data / "results" / f"{name}.json"
            record(f"score_{name}", libra("score", str(path_of(data, name)), str(results),
                                          "--out", str(work / f"score_{name}")))  # fmt: skip
        # Today's one-pass evaluation of COCO val (eval_scale.py's driver of faster-coco-eval), for comparison.
        worker = [sys.executable, str(REPOSITORY / "benchmarks" / "eval_scale.py"), "--worker", "coco", "faster"]
        worker += [str(path_of(data, "coco_val")), str(data / "results" / "coco_val.json"), str(work / "one_pass.json")]
        record("one_pass_coco_val", worker)
    if "train" in steps:
        for name, preset in TRAIN_PRESETS.items():
            val = path_of(data, name.replace("train", "val") + "_10")
            out = work / f"train_{name}"
            command = libra(
                "train", preset, "--train-ann", str(path_of(data, name)), "--train-images", str(images),
                "--val-ann", str(val), "--val-images", str(images), "--device", "cpu", "--batch-size", "2",
                "--max-iters", "2", "--out", str(out), "--set", "train.epochs=null",
                "--set", "train.lr_milestones_epochs=null", "--set", "model.backbone_weights=null",
                "--set", "data.num_workers=0", "--set", "train.log_interval=1",
            )  # fmt: skip
            if name == "lvis_train":
                command += ["--set", "data.repeat_factor_thr=0.001"]
            if smoke:  # the preset's model at 64 px: seconds, not minutes
                command += ["--image-size", "64"]
            # The run's log.jsonl is created once the data are read and checked and the model is built.
            record(f"train_{name}", command, watch=out / "log.jsonl")
            figures[f"train_{name}"].update(first_iteration(out))
    return figures


def first_iteration(run_dir: Path) -> dict[str, Any]:
    """From the run's log: its start record and first training record (seconds and memory of the step)."""
    log = run_dir / "log.jsonl"
    if not log.is_file():
        return {}
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    found: dict[str, Any] = {}
    start = next((r for r in records if r.get("type") == "start"), None)
    first = next((r for r in records if r.get("type") == "train"), None)
    if start is not None:
        found["start_record"] = {k: v for k, v in start.items() if not isinstance(v, dict | list)}
    if first is not None:
        found["first_train_record"] = {k: v for k, v in first.items() if not isinstance(v, dict | list)}
    return found


TARGETS = {  # key: (what, seconds limit, GiB limit)
    "stats_coco_train": ("`libra data stats` COCO train2017 size", 30, 3),
    "stats_lvis_train": ("`libra data stats` LVIS v1 train size", 60, 5),
    "score_lvis_val": ("`libra score` LVIS v1 val size (19,809 × 300)", 180, 8),
    "score_coco_val": ("`libra score` COCO val size (5,000 × 100)", None, None),
    "one_pass_coco_val": ("one-pass COCO val evaluation (before chunking)", None, None),
    "train_coco_train": ("`libra train coco_libra_faster_rcnn_r50_fpn_1x`, 2 iterations", None, None),
    "train_lvis_train": ("`libra train lvis_eql_faster_rcnn_r50_fpn_1x`, 2 iterations", None, None),
}


def render_markdown(report: dict) -> str:
    lines = [
        f"Command: `{report['command']}`",
        "",
        f"Machine: {report['machine']}; Python {report['python']}; load average before / after "
        f"{report['load_before']} / {report['load_after']}",
        "",
        "| what | wall s | CPU s | peak RSS GiB | target | verdict |",
        "|---|---:|---:|---:|---|---|",
    ]
    for key, figure in report["figures"].items():
        what, seconds, gib = TARGETS[key]
        target = "—" if seconds is None else f"≤ {seconds} s, ≤ {gib} GiB"
        if figure["returncode"] != 0:
            verdict = f"failed (exit {figure['returncode']}, see {Path(figure['log']).name})"
        elif seconds is None or report["smoke"]:
            verdict = "—"
        else:
            verdict = "met" if figure["seconds"] <= seconds and figure["peak_rss_gib"] <= gib else "not met"
        cells = f"{figure['seconds']} | {figure['cpu_s']} | {figure['peak_rss_gib']}"
        lines.append(f"| {what} | {cells} | {target} | {verdict} |")
    lines.append("")
    for key, figure in report["figures"].items():
        lines.append(f"- {key}: `{figure['command'].replace(str(REPOSITORY) + '/', '')}`")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of the full-size files (written if absent)")
    parser.add_argument("--work", type=Path, help="folder for the commands' outputs and logs (default DATA/scale)")
    parser.add_argument("--out", type=Path, help="write the markdown table here")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    parser.add_argument("--timeout-s", type=float, default=1800, help="limit for each command")
    parser.add_argument("--smoke", action="store_true", help="tiny fractions of the sets, no targets checked")
    args = parser.parse_args(argv)
    work = args.work or args.data / "scale"
    work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    written = ensure_files(args.data, SMOKE_FRACTION if args.smoke else 1.0)
    report = {
        "command": "python benchmarks/scale.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": f"{os.cpu_count()} CPU cores ({platform.machine()}), {platform.system()}",
        "python": platform.python_version(),
        "smoke": args.smoke,
        "written": written,
        "figures": run_steps(args.data, work, tuple(args.steps), args.timeout_s, args.smoke),
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
    }
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
    if args.out:
        atomic_write_text(args.out, render_markdown(report))
    return report


if __name__ == "__main__":
    main()
