"""The run folder: start it, resume it, or refuse it, without ever losing what it holds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from data_gen.recipe import RecipeError

from .callbacks import TRAJECTORY
from .checkpoints import CHECKPOINTS, complete_checkpoints, latest_resume_checkpoint, read_state, step_of

RUN_CONFIG = "run_config.yaml"
ATTENTION_TABLE = "attention.jsonl"
DRIFT_TABLE = "drift.jsonl"
UNCHECKED_KEYS = {"overwrite_output_dir"}


def load_recipe(path: Path) -> dict:
    file = path / RUN_CONFIG
    if not file.is_file():
        raise RecipeError(f"'{path}' is not a run folder (no {RUN_CONFIG}): point at a training output_dir")
    return yaml.safe_load(file.read_text())


def resolve_output_dir(path: Path, recipe: dict, overwrite: bool) -> tuple[str, Path | None]:
    """What to do with `path`: ("new", None), ("resume", checkpoint) or ("done", checkpoint).

    A folder holding the same recipe resumes from its latest complete resume checkpoint; one holding
    another recipe, or files that are not a run, is refused unless `overwrite` (runs only)."""
    if not path.exists() or not any(path.iterdir()):
        return "new", None
    if not (path / RUN_CONFIG).is_file():
        raise RecipeError(f"output_dir '{path}' holds files that are not a run of this pipeline: choose an empty "
                          f"or new folder")
    if overwrite:
        return "new", None
    saved = load_recipe(path)
    differing = sorted(k for k in set(saved) | set(recipe) if k not in UNCHECKED_KEYS and saved.get(k) != recipe.get(k))
    if differing:
        raise RecipeError(f"output_dir '{path}' holds another run (its recipe differs in {', '.join(differing[:4])}):"
                          f" choose another folder or pass --overwrite_output_dir true to replace it")
    checkpoint = latest_resume_checkpoint(path)
    if checkpoint is None:
        return "new", None
    return ("done" if read_state(checkpoint)["step"] >= recipe["max_steps"] else "resume"), checkpoint


def start_output_dir(path: Path, recipe: dict) -> None:
    """Empty a previous run's folder (already checked by resolve_output_dir) and save the recipe."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / RUN_CONFIG).write_text(yaml.safe_dump(recipe, sort_keys=False))


def rewind_output_dir(path: Path, step: int) -> None:
    """Drop what an interrupted run wrote after the checkpoint it resumes from, so the resumed run
    writes the same files as one that was never interrupted."""
    trajectory = path / TRAJECTORY
    if trajectory.is_file():
        rows = [line for line in trajectory.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        trajectory.write_text("".join(row + "\n" for row in rows))
    for checkpoint in complete_checkpoints(path / CHECKPOINTS):
        if step_of(checkpoint) > step:
            shutil.rmtree(checkpoint)
    for table in (ATTENTION_TABLE, DRIFT_TABLE):  # the report recomputes them over the final checkpoints
        (path / table).unlink(missing_ok=True)
