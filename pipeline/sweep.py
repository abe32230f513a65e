"""Sweeps: a grid over any recipe keys (corpus keys too), run here one after another or printed as
launch lines for a cluster, then aggregated into one table and the study's figures.

    python -m pipeline.sweep --config recipes/studies/plateau_vs_population_cpu.yaml
    python -m pipeline.sweep --config ... --print_commands     # accelerate launch lines, run nothing
    python -m pipeline.sweep --config ... --slurm_array runs/study.sbatch [--accelerate_config zero2]
                                                             # build the corpora, write a slurm array job
    python -m pipeline.sweep --config ... --aggregate_only      # table and figures from finished runs

A study file holds `base` (a pretraining recipe), optional `data` (a corpus recipe, needed when the
grid varies corpus keys such as n_individuals; with it, a key of both, like seed, goes to both), `output_dir`,
`grid` (key: list of values), `fixed` (key: value) and `baselines` (a list of extra points, e.g.
uniform sampling beside a warm-up grid, which take the first grid point's values for the keys they
do not set). Finished runs are skipped and interrupted ones resumed, since each run resumes from
its output_dir.

A fine-tuning study sets `stage: finetune` (its base is a fine-tuning recipe) and may set
`pretrain: {recipe: ..., with: {key: value}, output_dir: ...}`: that pretraining run goes first (into
<output_dir>/pretrained unless named; studies may share it) and every fine-tuning run starts from
its final checkpoint.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import itertools
import json
import shlex
import sys
from pathlib import Path

import numpy as np

from data_gen.builder import MANIFEST, build
from data_gen.config import CorpusConfig
from data_gen.recipe import RecipeError, load_yaml, parse_recipe, run_cli

from .analyze import load_trajectory, run_phases
from .checkpoints import CHECKPOINTS, checkpoint_name
from .config import (
    DataArguments,
    FinetuneArguments,
    FinetuneTrainArguments,
    ModelArguments,
    PatchingArguments,
    TrainArguments,
)
from .finetune import main as finetune_main
from .forgetting import forgetting_summary
from .pretrain import main as pretrain_main

SUMMARY = "summary.csv"
CORPUS_KEYS = {f.name for f in dataclasses.fields(CorpusConfig)} - {"output_dir", "overwrite"}
PRETRAIN_ARGUMENTS = (ModelArguments, DataArguments, TrainArguments, PatchingArguments)
STAGES = {"pretrain": (pretrain_main, PRETRAIN_ARGUMENTS),
          "finetune": (finetune_main, (DataArguments, FinetuneTrainArguments, FinetuneArguments))}


def run_keys(study: dict) -> set[str]:
    return {f.name for t in STAGES[study.get("stage", "pretrain")][1] for f in dataclasses.fields(t)}


def load_study(path: str) -> dict:
    study = load_yaml(path)
    for key in ("base", "output_dir", "grid"):
        if key not in study:
            raise RecipeError(f"study '{path}' has no '{key}': it needs base, output_dir and grid")
    if study.get("stage", "pretrain") not in STAGES:
        raise RecipeError(f"study '{path}' has stage '{study['stage']}': use one of {', '.join(STAGES)}")
    if "pretrain" in study and ("recipe" not in study["pretrain"] or study.get("stage") != "finetune"):
        raise RecipeError(f"study '{path}': 'pretrain' needs stage: finetune and a 'recipe' (optional: 'with', "
                          f"'output_dir')")
    keys = set(study["grid"]) | set(study.get("fixed", {})) | {k for b in study.get("baselines", []) for k in b}
    unknown = sorted(keys - CORPUS_KEYS - run_keys(study))
    if unknown:
        raise RecipeError(f"study '{path}' varies unknown keys {unknown}: use {study.get('stage', 'pretrain')} or "
                          f"corpus recipe keys")
    if set(study["grid"]) & (CORPUS_KEYS - run_keys(study)) and "data" not in study:
        raise RecipeError(f"study '{path}' varies corpus keys but has no 'data' corpus recipe to build from")
    return study


def expand(study: dict) -> list[dict]:
    """Every combination of the grid, then every baseline point, with the fixed keys, as {key: value}."""
    keys = list(study["grid"])
    fixed = study.get("fixed", {})
    grid = [{**fixed, **dict(zip(keys, values))} for values in itertools.product(*(study["grid"][k] for k in keys))]
    return grid + [{**grid[0], **baseline, "_baseline": baseline} for baseline in study.get("baselines", [])]


def run_name(point: dict, study: dict) -> str:
    if "_baseline" in point:
        return "baseline_" + "_".join(f"{k}={v}" for k, v in point["_baseline"].items())
    return "_".join(f"{k}={point[k]}" for k in study["grid"])


def _flags(values: dict) -> list[str]:
    flags = []
    for key, value in values.items():
        flags += [f"--{key}", *(map(str, value) if isinstance(value, list) else [str(value)])]
    return flags


def corpus_for(point: dict, study: dict) -> tuple[Path | None, list[str]]:
    """The corpus folder a grid point trains on (named by its corpus keys) and the command building it."""
    corpus_values = {k: v for k, v in point.items() if k in CORPUS_KEYS}
    if "data" not in study or not corpus_values:
        return None, []
    key = hashlib.sha256(json.dumps(corpus_values, sort_keys=True).encode()).hexdigest()[:10]
    folder = Path(study["output_dir"]) / "corpora" / key
    return folder, ["--config", study["data"], "--output_dir", str(folder), *_flags(corpus_values)]


def pretrain_flags(study: dict) -> list[str]:
    """The flags of a fine-tuning study's pretraining run."""
    pretrain = study["pretrain"]
    out = pretrain.get("output_dir", str(Path(study["output_dir"]) / "pretrained"))
    return ["--config", pretrain["recipe"], "--output_dir", out,
            *_flags(pretrain.get("with", {}))]


def pretrained_checkpoint(study: dict) -> Path:
    """The final permanent checkpoint of a fine-tuning study's pretraining run."""
    args = parse_recipe(list(PRETRAIN_ARGUMENTS), pretrain_flags(study))[2]
    return Path(args.output_dir) / CHECKPOINTS / checkpoint_name(args.max_steps)


def run_flags(point: dict, study: dict) -> list[str]:
    corpus, _ = corpus_for(point, study)
    run_values = {k: v for k, v in point.items() if k in run_keys(study)}
    extra = ["--corpus", str(corpus)] if corpus else []
    if "pretrain" in study:
        extra += ["--init_from", str(pretrained_checkpoint(study))]
    return ["--config", study["base"], "--output_dir", str(Path(study["output_dir"]) / run_name(point, study)),
            *extra, *_flags(run_values)]


def run_sweep(study: dict) -> None:
    build_corpora(study)
    if "pretrain" in study:
        pretrain_main(pretrain_flags(study))
    train = STAGES[study.get("stage", "pretrain")][0]
    for point in expand(study):
        train(run_flags(point, study))


def build_corpora(study: dict, dry_run: bool = False) -> list[str]:
    """The commands building every corpus the grid needs (once each); unless `dry_run`, build the missing ones."""
    commands = {}
    for point in expand(study):
        corpus, build_flags = corpus_for(point, study)
        if corpus and str(corpus) not in commands:
            commands[str(corpus)] = "python -m data_gen build " + shlex.join(build_flags)
            if not dry_run and not (corpus / MANIFEST).is_file():
                (config,) = parse_recipe([CorpusConfig], build_flags)
                build(config)
    return list(commands.values())


def _launcher(accelerate_config: str | None) -> str:
    return "accelerate launch " + (f"--config_file {shlex.quote(accelerate_config)} " if accelerate_config else "")


def launch_lines(study: dict, accelerate_config: str | None = None) -> list[str]:
    module = f"-m pipeline.{study.get('stage', 'pretrain')} "
    return [_launcher(accelerate_config) + module + shlex.join(run_flags(point, study)) for point in expand(study)]


def print_commands(study: dict, accelerate_config: str | None = None) -> None:
    first = [_launcher(accelerate_config) + "-m pipeline.pretrain " + shlex.join(pretrain_flags(study))
             ] if "pretrain" in study else []
    print("\n".join(build_corpora(study, dry_run=True) + first + launch_lines(study, accelerate_config)))


SLURM_ARRAY = """#!/bin/bash
#SBATCH --job-name={name}
#SBATCH --array=0-{last}
#SBATCH --nodes=1
#SBATCH --gres=gpu:{gpus}
#SBATCH --output={logs}/%x-%A_%a.out
# Written by `python -m pipeline.sweep --config {config} --slurm_array ...`: task i runs grid point i.
# Submit from the repository root: sbatch {script}. Finished runs are skipped, interrupted ones resume.
set -euo pipefail
commands=(
{commands}
)
eval "${{commands[$SLURM_ARRAY_TASK_ID]}}"
"""


def write_slurm_array(study: dict, config: str, script: Path, accelerate_config: str | None, gpus: int) -> None:
    """Build the study's corpora here (seconds) and write a slurm array job with one task per grid point."""
    if script.exists():
        raise RecipeError(f"'{script}' already exists: remove it or choose another --slurm_array path")
    if "pretrain" in study and not pretrained_checkpoint(study).is_dir():
        raise RecipeError(f"the study's pretraining run has not finished ({pretrained_checkpoint(study)} is missing): "
                          f"run it first with accelerate launch -m pipeline.pretrain "
                          f"{shlex.join(pretrain_flags(study))}")
    build_corpora(study)
    lines = launch_lines(study, accelerate_config)
    logs = Path(study["output_dir"]) / "slurm"
    logs.mkdir(parents=True, exist_ok=True)
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(SLURM_ARRAY.format(name=Path(study["output_dir"]).name, last=len(lines) - 1, gpus=gpus, logs=logs,
                                         config=config, script=script,
                                         commands="\n".join(shlex.quote(line) for line in lines)))
    print(f"{len(lines)} array tasks in {script}: sbatch {script}")


def fit_power_law(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """y = a x^b fitted by least squares in log-log space: (a, b, R^2 in log space)."""
    lx, ly = np.log(x), np.log(y)
    b, log_a = np.polyfit(lx, ly, 1)
    residual = ly - (log_a + b * lx)
    r2 = 1 - (residual ** 2).sum() / ((ly - ly.mean()) ** 2).sum()
    return float(np.exp(log_a)), float(b), float(r2)


def aggregate(study: dict) -> list[dict]:
    """One row per finished run: its grid values, phases, and final seen and held-out metrics."""
    rows = []
    for point in expand(study):
        run = Path(study["output_dir"]) / run_name(point, study)
        if not (run / "trajectory.jsonl").is_file():
            continue
        trajectory = load_trajectory(run)
        values = {**{k: point.get(k) for k in study["grid"]}, "run": run.name, "baseline": "_baseline" in point}
        if study.get("stage") == "finetune":
            rows.append({**values, **forgetting_summary(trajectory)})
            continue
        phases = run_phases(trajectory)
        final = {r["split"]: r for r in trajectory if r["step"] == phases.max_step}
        rows.append({**values, "sampler": point.get("sampler"), "last_step": phases.max_step,
                     "plateau_start": phases.phase1_end, "plateau_end": phases.plateau_end,
                     "plateau_length": phases.plateau_length, "emergence": phases.emergence,
                     "final_accuracy": final["seen"]["attribute_accuracy"],
                     "final_loss": final["seen"]["attribute_loss"],
                     "heldout_loss": final["heldout"]["attribute_loss"], "baseline_loss": phases.baseline})
    out = Path(study["output_dir"]) / SUMMARY
    out.parent.mkdir(parents=True, exist_ok=True)
    if rows:
        with out.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return rows


def main(argv: list[str] | None = None) -> None:
    from .study_figures import draw_study_figures

    parser = argparse.ArgumentParser(description="Run, print or aggregate a grid of pretraining runs.")
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
        run_sweep(study)
    rows = aggregate(study)
    figures = draw_study_figures(rows, study)
    print(f"{len(rows)} runs in {Path(study['output_dir']) / SUMMARY}; figures: {', '.join(map(str, figures))}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
