"""Studies: a grid over any recipe keys (corpus keys too), run here one after another or printed as
launch lines for a cluster, then aggregated into one table and the study's figures. The study file
is described in pipeline/studies/schema.py.

    python -m pipeline.sweep --config recipes/studies/plateau_vs_population_cpu.yaml
    python -m pipeline.sweep --config ... --print_commands     # accelerate launch lines, run nothing
    python -m pipeline.sweep --config ... --slurm_array runs/study.sbatch [--accelerate_config zero2]
                                                             # build the corpora, write a slurm array job
    python -m pipeline.sweep --config ... --aggregate_only      # table and figures from finished runs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data_gen.recipe import RecipeError, run_cli

from .run_folder import SUMMARY
from .studies.aggregate import aggregate
from .studies.figures import draw_study_figures
from .studies.runner import print_commands, run_study
from .studies.schema import load_study
from .studies.slurm import write_slurm_array


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.sweep",
                                     description="Run, print or aggregate a grid of runs.")
    parser.add_argument("--config", required=True, help="Study YAML (base, data, output_dir, grid, fixed).")
    parser.add_argument("--print_commands", action="store_true", help="Print the launch lines; run nothing.")
    parser.add_argument("--slurm_array", type=Path, help="Build the corpora and write a slurm array job here.")
    parser.add_argument("--accelerate_config", help="accelerate config file for the launch lines.")
    parser.add_argument("--gpus_per_task", type=int, default=1, help="GPUs per array task (default 1).")
    parser.add_argument("--aggregate_only", action="store_true", help="Only aggregate finished runs.")
    args = parser.parse_args(argv)
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
    if not args.aggregate_only:
        run_study(study)
    rows = aggregate(study)
    figures = draw_study_figures(rows, study)
    print(f"{len(rows)} runs in {Path(study.output_dir) / SUMMARY}; figures: {', '.join(map(str, figures))}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
