"""The run folder: claiming it safely and saving the resolved recipe in it."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from data_gen.recipe import RecipeError

RUN_CONFIG = "run_config.yaml"


def check_output_dir(path: Path, overwrite: bool) -> None:
    """Refuse a folder holding anything, unless it is a previous run and `overwrite` is set."""
    if not path.exists() or not any(path.iterdir()):
        return
    if not (path / RUN_CONFIG).is_file():
        raise RecipeError(f"output_dir '{path}' holds files that are not a run of this pipeline: choose an empty "
                          f"or new folder")
    if not overwrite:
        raise RecipeError(f"output_dir '{path}' already holds a run: choose another folder or pass "
                          f"--overwrite_output_dir true to replace it")


def claim_output_dir(path: Path, recipe: dict) -> None:
    """Empty a previous run's folder (already checked) and save the resolved recipe in it."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / RUN_CONFIG).write_text(yaml.safe_dump(recipe, sort_keys=False))


def load_recipe(path: Path) -> dict:
    file = path / RUN_CONFIG
    if not file.is_file():
        raise RecipeError(f"'{path}' is not a run folder (no {RUN_CONFIG}): point --run at a pretraining output_dir")
    return yaml.safe_load(file.read_text())
