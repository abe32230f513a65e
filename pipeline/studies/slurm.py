"""A study as a slurm array job: one task per grid point."""

from __future__ import annotations

import shlex
from pathlib import Path

from common.errors import RecipeError

from ..run_folder import STUDY_SLURM_LOGS
from .runner import build_corpora, first_run_final_checkpoint, first_run_flags, launch_lines
from .schema import Study

SLURM_ARRAY = """#!/bin/bash
#SBATCH --job-name={name}
#SBATCH --array=0-{last}
#SBATCH --nodes=1
#SBATCH --requeue
#SBATCH --open-mode=append
{gres}#SBATCH --output={logs}/%x-%A_%a.out
# Written by `python -m pipeline.sweep --config {config} --slurm_array ...`: task i runs grid point i.
# Submit from the repository root: sbatch {script}. Finished runs are skipped, interrupted (and requeued) ones
# resume; then `python -m pipeline.sweep --config {config} --aggregate_only` writes the study's summary.
set -euo pipefail
commands=(
{commands}
)
eval "${{commands[$SLURM_ARRAY_TASK_ID]}}"
"""


def write_slurm_array(study: Study, config: str, script: Path, accelerate_config: str | None, gpus: int) -> None:
    """Build the study's corpora here (seconds) and write a slurm array job with one task per grid point."""
    if script.exists():
        raise RecipeError(f"'{script}' already exists: remove it or choose another --slurm_array path")
    if study.pretrain is not None and not first_run_final_checkpoint(study).is_dir():
        raise RecipeError(f"the study's first run has not finished ({first_run_final_checkpoint(study)} is missing): "
                          f"run it first with accelerate launch -m pipeline.pretrain "
                          f"{shlex.join(first_run_flags(study))}")
    build_corpora(study)
    lines = launch_lines(study, accelerate_config)
    logs = Path(study.output_dir) / STUDY_SLURM_LOGS
    logs.mkdir(parents=True, exist_ok=True)
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(SLURM_ARRAY.format(name=Path(study.output_dir).name, last=len(lines) - 1, logs=logs,
                                         gres=f"#SBATCH --gres=gpu:{gpus}\n" if gpus else "",
                                         config=config, script=script,
                                         commands="\n".join(shlex.quote(line) for line in lines)))
    print(f"{len(lines)} array tasks in {script}: sbatch {script}")
