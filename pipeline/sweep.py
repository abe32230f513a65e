"""Studies: a grid over any recipe keys (corpus keys too), run here one after another or printed as
launch lines for a cluster, then aggregated into one table and the study's figures. The study file
is described in pipeline/studies/schema.py.

    python -m pipeline.sweep --config recipes/studies/plateau_vs_population_cpu.yaml
    python -m pipeline.sweep --config ... --print_commands     # accelerate launch lines, run nothing
    python -m pipeline.sweep --config ... --slurm_array runs/study.sbatch [--accelerate_config zero2]
                                                             # build the corpora, write a slurm array job
    python -m pipeline.sweep --config ... --aggregate_only      # table and figures from finished runs
    python -m pipeline.sweep --config ... --jobs 2             # two runs at once, the CPU cores split
    python -m pipeline.sweep --config ... --devices 0,1,2,3 --runs_per_device 2   # eight runs on four GPUs

With --jobs or --devices, runs are subprocesses with a log each (<study>/logs/<run>.log) and a live
progress table; a failed run is retried once, then reported (in summary.csv too) without stopping the
others; SIGTERM or Ctrl-C stops them all, each saving a resume checkpoint, and rerunning continues.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.errors import RecipeError, RunError, run_cli

from .run_folder import STUDY_LOGS, SUMMARY
from .studies.figures import summarize_study
from .studies.parallel import add_pool_arguments, pool_from
from .studies.runner import print_commands, run_study
from .studies.schema import load_study
from .studies.slurm import write_slurm_array


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline.sweep",
                                     description="Run, print or aggregate a grid of runs.")
    parser.add_argument("--config", required=True, help="Study YAML (base, data, output_dir, grid, fixed).")
    parser.add_argument("--print_commands", action="store_true", help="Print the launch lines; run nothing.")
    parser.add_argument("--slurm_array", type=Path, help="Build the corpora and write a slurm array job here.")
    parser.add_argument("--accelerate_config", help="accelerate config file for the launch lines.")
    parser.add_argument("--gpus_per_task", type=int, default=1, help="GPUs per array task (default 1; 0 on CPU nodes: no --gres).")
    parser.add_argument("--aggregate_only", action="store_true", help="Only aggregate finished runs.")
    add_pool_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    study = load_study(args.config)
    if args.accelerate_config and not Path(args.accelerate_config).is_file():
        raise RecipeError(f"accelerate config '{args.accelerate_config}' does not exist: pass a file such as "
                          "recipes/accelerate_configs/ddp.yaml")
    if args.print_commands:
        print_commands(study, args.accelerate_config)
        return
    if args.slurm_array:
        write_slurm_array(study, args.config, args.slurm_array, args.accelerate_config, args.gpus_per_task)
        return
    pool = pool_from(args)
    failed = {} if args.aggregate_only else run_study(study, pool)
    rows, figures = summarize_study(study, failed)
    print(f"{len(rows)} runs in {Path(study.output_dir) / SUMMARY}; figures: {', '.join(map(str, figures))}")
    if failed:
        reasons = "; ".join(f"{name}: {line}" for name, line in failed.items())
        raise RunError(f"{len(failed)} runs failed after a retry ({reasons}); their logs are in "
                       f"{Path(study.output_dir) / STUDY_LOGS}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
