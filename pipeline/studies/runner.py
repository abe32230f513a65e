"""Running a study: the corpora its grid needs, its first run, then every grid point, here one after
another or printed as `accelerate launch` lines. Finished runs are skipped and interrupted ones resumed,
since each run resumes from its output_dir."""

from __future__ import annotations

import hashlib
import json
import shlex
from pathlib import Path

from common.recipe import parse_recipe, to_flags
from data_gen.builder import build
from data_gen.config import CorpusConfig
from data_gen.folders import exclusive
from data_gen.layout import MANIFEST

from ..finetune import main as finetune_main
from ..pretrain import main as pretrain_main
from ..run_folder import FINETUNE, PRETRAIN, STUDY_CORPORA, STUDY_LOGS, RunFolder
from ..toy_memory import main as toy_memory_main
from .parallel import Job, Pool
from .schema import CORPUS_KEYS, STAGE_ARGUMENTS, TOY_MEMORY, GridPoint, Study

STAGE_MAINS = {PRETRAIN: pretrain_main, FINETUNE: finetune_main, TOY_MEMORY: toy_memory_main}


def corpus_for(point: GridPoint, study: Study) -> tuple[Path | None, list[str]]:
    """The corpus folder a grid point trains on (named by its corpus keys) and the flags building it."""
    corpus_values = {k: v for k, v in point.values.items() if k in CORPUS_KEYS}
    if study.data is None or not corpus_values:
        return None, []
    key = hashlib.sha256(json.dumps(corpus_values, sort_keys=True).encode()).hexdigest()[:10]
    folder = Path(study.output_dir) / STUDY_CORPORA / key
    return folder, ["--config", study.data, "--output_dir", str(folder), *to_flags(corpus_values)]


def first_run_flags(study: Study) -> list[str]:
    """The flags of the study's first (pretraining) run."""
    return ["--config", study.pretrain.recipe, "--output_dir", study.pretrain.output_dir,
            *to_flags(study.pretrain.overrides)]


def first_run_stage(study: Study) -> str:
    """The stage of the study's first run: pretraining, or for a toy-memory study the toy memory."""
    return TOY_MEMORY if study.stage == TOY_MEMORY else PRETRAIN


def first_run_final_checkpoint(study: Study) -> Path:
    """The final permanent checkpoint of the study's first run."""
    parsed = parse_recipe(STAGE_ARGUMENTS[first_run_stage(study)], first_run_flags(study))
    args = next(config for config in parsed if hasattr(config, "output_dir"))  # the training section
    return RunFolder(args.output_dir).checkpoint(args.max_steps)


def run_flags(point: GridPoint, study: Study) -> list[str]:
    """The flags of a grid point's run: the base recipe, its folder, its corpus, the first run, its values."""
    corpus, _ = corpus_for(point, study)
    extra = ["--corpus", str(corpus)] if corpus else []
    if study.pretrain is not None:
        extra += (["--init_from", str(first_run_final_checkpoint(study))] if study.fine_tunes
                  else ["--reference_run", study.pretrain.output_dir])
    values = {k: v for k, v in point.values.items() if k in study.run_keys}
    return ["--config", study.base, "--output_dir", str(study.run_folder(point)), *extra, *to_flags(values)]


def build_corpora(study: Study, dry_run: bool = False) -> list[str]:
    """The commands building every corpus the grid needs (once each); unless `dry_run`, build the missing ones."""
    commands = {}
    for point in study.points():
        corpus, build_flags = corpus_for(point, study)
        if corpus and str(corpus) not in commands:
            commands[str(corpus)] = "python -m data_gen build " + shlex.join(build_flags)
            if not dry_run and not (corpus / MANIFEST).is_file():
                (config,) = parse_recipe([CorpusConfig], build_flags)
                build(config)
    return list(commands.values())


def study_jobs(study: Study, prefix: str = "") -> list[Job]:
    """The study's runs as jobs of a pool (named `prefix` + the run's name), its first run (named by its
    folder's path: studies may share it) first and awaited by the others."""
    logs = Path(study.output_dir) / STUDY_LOGS
    first = []
    if study.pretrain is not None:
        folder = Path(study.pretrain.output_dir)
        first = [Job(str(folder), ["-m", f"pipeline.{first_run_stage(study)}", *first_run_flags(study)],
                     logs / f"{folder.name}.log")]
    return first + [Job(prefix + study.name(point), ["-m", f"pipeline.{study.stage}", *run_flags(point, study)],
                        logs / f"{study.name(point)}.log", after=tuple(job.name for job in first))
                    for point in study.points()]


def run_study(study: Study, pool: Pool | None = None) -> dict[str, str]:
    """Build the corpora (all of them, before any run), run the first run, then every grid point: one
    after another here, or as subprocesses on `pool`'s slots. Holds the study's folder (each run holds its
    own). Returns the runs that failed, with the last line of their log."""
    with exclusive(Path(study.output_dir), "study"):
        build_corpora(study)
        if pool is None:
            if study.pretrain is not None:
                STAGE_MAINS[first_run_stage(study)](first_run_flags(study))
            for point in study.points():
                STAGE_MAINS[study.stage](run_flags(point, study))
            return {}
        return {job.name: job.last_line for job in pool.run(study_jobs(study)) if job.state == "failed"}


def launcher(accelerate_config: str | None) -> str:
    return "accelerate launch " + (f"--config_file {shlex.quote(accelerate_config)} " if accelerate_config else "")


def launch_lines(study: Study, accelerate_config: str | None = None) -> list[str]:
    """One `accelerate launch` line per grid point."""
    module = f"-m pipeline.{study.stage} "
    return [launcher(accelerate_config) + module + shlex.join(run_flags(point, study)) for point in study.points()]


def print_commands(study: Study, accelerate_config: str | None = None) -> None:
    module = f"-m pipeline.{first_run_stage(study)} "
    first = [launcher(accelerate_config) + module + shlex.join(first_run_flags(study))
             ] if study.pretrain is not None else []
    print("\n".join(build_corpora(study, dry_run=True) + first + launch_lines(study, accelerate_config)))
