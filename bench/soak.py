"""Soak: a long tiny run watched for leaks, and a study of many tiny points watched for points lost.

    python bench/soak.py [--steps 20000] [--points 100] [--jobs 2] [--out runs/soak]

1. A tiny pretraining run of --steps steps (an evaluation every 200 steps, a resume checkpoint every 500,
   20 permanent checkpoints), its process sampled every second: resident memory and open files. After
   the warm-up (the first 10% of the samples) each is flat when the median of the last quarter of the
   samples is within 5% of that of the first quarter; their range is printed beside.
2. A study of --points tiny runs (one per seed) with --jobs: its summary.csv must hold a row per point.

Prints both results and writes soak.json and soak.png (memory and open files against time) into --out.
Not a test: it takes about 15 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

if not __package__:  # run as `python bench/soak.py`: the repo root, whatever the cwd
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import psutil
import yaml

from pipeline.run_folder import SUMMARY, RunFolder

ROOT = Path(__file__).resolve().parents[1]
TINY = {"model_preset": "tiny", "batch_size": 16, "report_to": "none"}
CORPUS = ["--n_individuals", "500", "--n_heldout", "50", "--n_finetune", "50", "--n_first_names", "40",
          "--n_last_names", "40", "--n_cities", "30", "--n_universities", "20", "--n_majors", "10",
          "--n_companies", "30", "--seed", "0"]
FLAT = 0.05


def flags(values: dict) -> list[str]:
    return [word for key, value in values.items() for word in (f"--{key}", str(value))]


def watch(command: list[str], log: Path, every: float = 1.0) -> list[tuple[float, int, int]]:
    """Run `command`, sampling (seconds, resident bytes, open files) of its process every `every` seconds."""
    samples = []
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        watched, start = psutil.Process(process.pid), time.perf_counter()
        while process.poll() is None:
            try:
                samples.append((time.perf_counter() - start, watched.memory_info().rss, watched.num_fds()))
            except psutil.NoSuchProcess:
                break
            time.sleep(every)
    if process.returncode:
        sys.exit(f"soak: {' '.join(command[:4])} ... failed (exit {process.returncode}); see {log}")
    return samples


def flatness(values: np.ndarray) -> dict:
    """After the warm-up (the first 10%): the medians of the first and last quarters, their drift, the range."""
    settled = values[len(values) // 10:]
    quarter = max(len(settled) // 4, 1)
    first, last = float(np.median(settled[:quarter])), float(np.median(settled[-quarter:]))
    return {"first_quarter": first, "last_quarter": last, "drift": last / first - 1, "min": float(settled.min()),
            "max": float(settled.max()), "flat": abs(last / first - 1) <= FLAT}


def long_run(out: Path, corpus: Path, steps: int) -> dict:
    run = out / "long_run"
    command = [sys.executable, "-m", "pipeline.pretrain", "--corpus", str(corpus), "--output_dir", str(run),
               "--overwrite_output_dir", "true", *flags({**TINY, "max_steps": steps, "eval_points": 0,
                                                         "eval_steps": 200, "eval_individuals": 50,
                                                         "save_steps": 500, "checkpoint_points": 20,
                                                         "logging_steps": 100})]
    samples = np.array(watch(command, out / "long_run.log"))
    folder = RunFolder(run)
    return {"steps": steps, "seconds": float(samples[-1, 0]),
            "evaluations": len({r["step"] for r in folder.trajectory()}),
            "permanent_checkpoints": len(folder.complete_checkpoints()),
            "memory_bytes": flatness(samples[:, 1]), "open_files": flatness(samples[:, 2]),
            "samples": samples.tolist()}


def many_points(out: Path, corpus: Path, points: int, jobs: int) -> dict:
    folder = out / "study"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    base, study = folder / "base.yaml", folder / "study.yaml"
    base.write_text(yaml.safe_dump({**TINY, "corpus": str(corpus), "max_steps": 10, "eval_points": 2,
                                    "checkpoint_points": 1, "eval_individuals": 20, "save_steps": 0}))
    study.write_text(yaml.safe_dump({"base": str(base), "output_dir": str(folder / "runs"),
                                     "grid": {"seed": list(range(points))}}))
    start = time.perf_counter()
    with (out / "study.log").open("w") as log:
        code = subprocess.run([sys.executable, "-m", "pipeline.sweep", "--config", str(study), "--jobs", str(jobs)],
                              cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - start
    with (folder / "runs" / SUMMARY).open() as f:
        rows = list(csv.DictReader(f))
    return {"points": points, "jobs": jobs, "exit": code, "seconds": seconds, "summary_rows": len(rows),
            "done": sum(r["status"] == "done" for r in rows), "complete": code == 0 and len(rows) == points}


def figure(result: dict, path: Path) -> None:
    samples = np.array(result["samples"])
    fig, (memory, files) = plt.subplots(1, 2, figsize=(11, 3.5))
    memory.plot(samples[:, 0], samples[:, 1] / 2**20)
    memory.set(xlabel="seconds", ylabel="resident memory (MiB)", ylim=(0, samples[:, 1].max() / 2**20 * 1.1))
    files.plot(samples[:, 0], samples[:, 2])
    files.set(xlabel="seconds", ylabel="open files", ylim=(0, samples[:, 2].max() * 1.2))
    fig.suptitle(f"{result['steps']:,}-step tiny run: {result['evaluations']} evaluations, "
                 f"{result['permanent_checkpoints']} permanent checkpoints, a resume checkpoint every 500 steps",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--points", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "soak")
    args = parser.parse_args()
    out, corpus = args.out.resolve(), args.out.resolve() / "corpus"
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "data_gen", "build", "--output_dir", str(corpus), "--overwrite", "true",
                    *CORPUS], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    run = long_run(out, corpus, args.steps)
    study = many_points(out, corpus, args.points, args.jobs)
    figure(run, out / "soak.png")
    (out / "soak.json").write_text(json.dumps({"long_run": run, "study": study, "machine": machine()}, indent=1))
    print(f"machine: {machine()}")
    print(f"long run: {run['steps']:,} steps in {run['seconds']:.0f} s, {run['evaluations']} evaluations, "
          f"{run['permanent_checkpoints']} permanent checkpoints")
    print("| after warm-up | first quarter | last quarter | drift | range | flat (within 5%) |\n|---|---|---|---|---|---|")
    for name, scale, unit in (("memory_bytes", 2**20, " MiB"), ("open_files", 1, "")):
        f = run[name]
        print(f"| {name.replace('_', ' ')} | {f['first_quarter'] / scale:.1f}{unit} | {f['last_quarter'] / scale:.1f}"
              f"{unit} | {f['drift']:+.2%} | {f['min'] / scale:.1f}-{f['max'] / scale:.1f}{unit} | {f['flat']} |")
    print(f"study: {study['points']} points with --jobs {study['jobs']} in {study['seconds']:.0f} s: exit "
          f"{study['exit']}, {study['summary_rows']} rows in {SUMMARY} ({study['done']} done); complete: "
          f"{study['complete']}")
    print(f"figure: {out / 'soak.png'}")
    if not (run["memory_bytes"]["flat"] and run["open_files"]["flat"] and study["complete"]):
        sys.exit(1)


def machine() -> str:
    return f"{psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, {sys.platform}"


if __name__ == "__main__":
    main()
