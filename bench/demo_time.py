"""`make demo`'s pretraining, timed on this tree against the tree at `--baseline_rev` (a git worktree),
one after the other on the same corpus and machine. Prints both wall times and the ratio.

    python bench/demo_time.py [--baseline_rev 9d8a6a1]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def wall(tree: Path, out: Path, corpus: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipeline.pretrain", "--config", "recipes/demo/pretrain.yaml", "--corpus",
                    str(corpus), "--output_dir", str(out)], cwd=tree, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline_rev", default="9d8a6a1")
    parser.add_argument("--corpus", type=Path, default=ROOT / "corpora/demo")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp())
    baseline = scratch / "baseline"
    subprocess.run(["git", "worktree", "add", "--detach", str(baseline), args.baseline_rev], cwd=ROOT, check=True,
                   capture_output=True)
    try:
        corpus = args.corpus.resolve()
        times = {f"baseline ({args.baseline_rev})": wall(baseline, scratch / "runs" / "baseline", corpus),
                 "this tree": wall(ROOT, scratch / "runs" / "this", corpus)}
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(baseline)], cwd=ROOT, check=True)
    for name, seconds in times.items():
        print(f"{name:<22}{seconds:>8.1f} s")
    baseline_s, ours = times.values()
    print(f"speed-up: {baseline_s / ours:.2f}x (the demo's pretraining, report included, corpus {args.corpus})")


if __name__ == "__main__":
    main()
