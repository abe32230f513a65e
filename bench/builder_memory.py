"""Peak resident memory and time of `python -m data_gen build` against the corpus size: each size is built by
its own process (so that its peak is its own), beside a 1,000-individual build, the fixed cost of the
interpreter and its libraries, measured in the same run.

    python bench/builder_memory.py --sizes 100000 1000000 [--out /tmp/corpora] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if not __package__:  # run as `python bench/builder_memory.py`: the repo root, whatever the cwd
    sys.path.insert(0, str(ROOT))

from data_gen.layout import MANIFEST  # noqa: E402


def measure(n_individuals: int, out: Path) -> dict:
    """Build a corpus of `n_individuals` (and the default held-out and fine-tuning sets) in a child process."""
    folder = out / f"corpus-{n_individuals}"
    command = [sys.executable, "-m", "data_gen", "build", "--config", str(ROOT / "recipes/paper/data.yaml"),
               "--n_individuals", str(n_individuals), "--output_dir", str(folder), "--overwrite", "true"]
    start = time.perf_counter()
    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"the build of {n_individuals:,} individuals failed")
    manifest = json.loads((folder / MANIFEST).read_text())
    disk = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    shutil.rmtree(folder)
    return {"n_individuals": n_individuals, "individuals": sum(manifest["num_rows"][s] for s in
                                                               ("train", "heldout", "finetune")),
            "seconds": round(seconds, 1), "peak_rss_mib": round(usage.ru_maxrss / 1024), "disk_mib": round(disk / 2**20)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--out", default="runs/bench_builder", help="Scratch folder (each corpus is deleted after).")
    parser.add_argument("--json", default=None, help="Also write the rows to this file.")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [measure(n, out) for n in [1_000, *args.sizes]]
    print("| individuals | seconds | peak RSS (MiB) | on disk (MiB) | peak RSS above the 1k build (MiB) |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['individuals']:,} | {row['seconds']} | {row['peak_rss_mib']:,} | {row['disk_mib']:,} | "
              f"{row['peak_rss_mib'] - rows[0]['peak_rss_mib']:,} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
