"""The study file, typed: one schema for grids of pretraining runs, fine-tuning studies and attention
patching.

A study file holds `base` (a recipe of its stage), optional `data` (a corpus recipe, needed when the
grid varies corpus keys such as n_individuals; with it, a key of both, like seed, goes to both),
`output_dir`, `grid` (key: list of values), `paired` (keys whose lists of equal length vary together, as
one more axis of the grid: batch_size [16, 32] with max_steps [3000, 1500] gives two points, not four),
`fixed` (key: value) and `baselines` (a list of extra points, e.g. uniform sampling beside a warm-up grid,
which take the first grid point's values for the keys they do not set).

A study may set `pretrain: {recipe: ..., with: {key: value}, output_dir: ...}`, a first run that goes
before the grid (into <output_dir>/pretrained unless named; studies may share it): a fine-tuning
study (`stage: finetune`) starts every run from its final checkpoint (`init_from`), a pretraining
study patches every run with its attention (`reference_run`). `run_name` names run folders from the
point's values (a format string such as "patched-{reference_checkpoint}"; default "key=value_...").
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.errors import RecipeError
from common.recipe import load_yaml, rename_keys, renamed_keys
from data_gen.config import CorpusConfig

from ..config import field_names
from ..finetune import ARGUMENTS as FINETUNE_ARGUMENTS
from ..pretrain import ARGUMENTS as PRETRAIN_ARGUMENTS
from ..run_folder import FINETUNE, PRETRAIN, STUDY_PRETRAINED
from ..toy_memory import ARGUMENTS as TOY_MEMORY_ARGUMENTS

TOY_MEMORY = "toy_memory"  # a study of the toy associative memory (claim C22), not of a language model
STAGE_ARGUMENTS = {PRETRAIN: PRETRAIN_ARGUMENTS, FINETUNE: FINETUNE_ARGUMENTS, TOY_MEMORY: TOY_MEMORY_ARGUMENTS}
CORPUS_KEYS = {f.name for f in dataclasses.fields(CorpusConfig)} - {"output_dir", "overwrite"}
STUDY_KEYS = ("base", "output_dir", "grid", "paired", "stage", "data", "fixed", "baselines", "pretrain", "run_name")


@dataclass
class FirstRun:
    """A pretraining run that goes before the grid, from `recipe` with the keys of `overrides`."""

    recipe: str
    output_dir: str
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GridPoint:
    """One run of a study: its keys and values; `baseline` holds the keys a baseline point sets."""

    values: dict[str, Any]
    baseline: dict[str, Any] | None = None


@dataclass
class Study:
    base: str
    output_dir: str
    grid: dict[str, list]
    stage: str = PRETRAIN
    data: str | None = None
    fixed: dict[str, Any] = field(default_factory=dict)
    baselines: list[dict[str, Any]] = field(default_factory=list)
    pretrain: FirstRun | None = None
    run_name: str | None = None
    paired: dict[str, list] = field(default_factory=dict)

    @property
    def axes(self) -> list[str]:
        """The keys the study varies: the grid's, then the paired ones."""
        return list(self.grid) + list(self.paired)

    @property
    def fine_tunes(self) -> bool:
        """Whether its runs fine-tune its first run: a fine-tuning study, or a toy-memory one with a first run."""
        return self.stage == FINETUNE or (self.stage == TOY_MEMORY and self.pretrain is not None)

    @property
    def patches(self) -> bool:
        """Whether it is an attention-patching study: a pretraining study with a first run (the reference)."""
        return self.stage == PRETRAIN and self.pretrain is not None

    @property
    def run_keys(self) -> set[str]:
        """The recipe keys of the study's stage."""
        return field_names(*STAGE_ARGUMENTS[self.stage])

    def points(self) -> list[GridPoint]:
        """Every combination of the grid, then every baseline point, with the fixed keys."""
        keys = list(self.grid)
        paired = [dict(zip(self.paired, values)) for values in zip(*self.paired.values())] or [{}]
        grid = [GridPoint({**self.fixed, **dict(zip(keys, values)), **together})
                for values in itertools.product(*(self.grid[k] for k in keys)) for together in paired]
        return grid + [GridPoint({**grid[0].values, **baseline}, baseline) for baseline in self.baselines]

    def name(self, point: GridPoint) -> str:
        """The folder name of a point's run."""
        if point.baseline is not None:
            return "baseline_" + "_".join(f"{k}={v}" for k, v in point.baseline.items())
        if self.run_name:
            return self.run_name.format(**point.values)
        return "_".join(f"{k}={point.values[k]}" for k in self.axes)

    def run_folder(self, point: GridPoint) -> Path:
        return Path(self.output_dir) / self.name(point)


def _mapping(value, what: str, path: str) -> dict:
    if not isinstance(value, dict):
        raise RecipeError(f"study '{path}': '{what}' must be a mapping of keys to values")
    return value


def parse_study(values: dict, path: str) -> Study:
    """A study from the mapping of a study file at `path`, with clear errors for what is wrong."""
    unknown = sorted(set(values) - set(STUDY_KEYS))
    if unknown:
        raise RecipeError(f"study '{path}' has unknown entries {unknown}: use {', '.join(STUDY_KEYS)}")
    for key in ("base", "output_dir", "grid"):
        if key not in values:
            raise RecipeError(f"study '{path}' has no '{key}': it needs base, output_dir and grid")
    renames = renamed_keys(PRETRAIN_ARGUMENTS + FINETUNE_ARGUMENTS)
    grid, paired = _axes(values, path, renames)
    study = Study(base=values["base"], output_dir=str(values["output_dir"]), grid=grid,
                  stage=values.get("stage", PRETRAIN), data=values.get("data"),
                  fixed=rename_keys(_mapping(values.get("fixed", {}), "fixed", path), renames),
                  baselines=[rename_keys(_mapping(b, "baselines", path), renames) for b in values.get("baselines", [])],
                  pretrain=_first_run(values, path, renames), run_name=values.get("run_name"), paired=paired)
    _check_keys(study, path)
    _check_distinct_points(study, path)
    return study


def _axes(values: dict, path: str, renames: dict[str, str]) -> tuple[dict, dict]:
    """The study's grid and paired keys, each a non-empty list (the paired ones of one length, none in the grid)."""
    grid = rename_keys(_mapping(values["grid"], "grid", path), renames)
    paired = rename_keys(_mapping(values.get("paired", {}), "paired", path), renames)
    if any(not isinstance(v, list) or not v for v in [*grid.values(), *paired.values()]):
        raise RecipeError(f"study '{path}': every grid and paired key needs a non-empty list of values")
    if len({len(v) for v in paired.values()}) > 1 or set(paired) & set(grid):
        raise RecipeError(f"study '{path}': the paired keys need lists of one length, and none of them in the grid")
    return grid, paired


def _first_run(values: dict, path: str, renames: dict[str, str]) -> FirstRun | None:
    """The run a fine-tuning or patching study trains first (`pretrain`), if it names one."""
    first = values.get("pretrain")
    if first is None:
        return None
    first = _mapping(first, "pretrain", path)
    if "recipe" not in first or set(first) - {"recipe", "with", "output_dir"}:
        raise RecipeError(f"study '{path}': 'pretrain' needs a 'recipe' (optional: 'with', 'output_dir')")
    return FirstRun(first["recipe"], first.get("output_dir", str(Path(values["output_dir"]) / STUDY_PRETRAINED)),
                    rename_keys(_mapping(first.get("with", {}), "pretrain: with", path), renames))


def _check_keys(study: Study, path: str) -> None:
    """The stage is known, every key varied is a recipe key of it or of the corpus (these need `data`), and
    `run_name` names keys the grid sets."""
    if study.stage not in STAGE_ARGUMENTS:
        raise RecipeError(f"study '{path}' has stage '{study.stage}': use one of {', '.join(STAGE_ARGUMENTS)}")
    keys = set(study.axes) | set(study.fixed) | {k for b in study.baselines for k in b}
    unknown = sorted(keys - CORPUS_KEYS - study.run_keys)
    if unknown:
        raise RecipeError(f"study '{path}' varies unknown keys {unknown}: use {study.stage} or corpus recipe keys")
    if keys & (CORPUS_KEYS - study.run_keys) and study.data is None:
        raise RecipeError(f"study '{path}' varies corpus keys but has no 'data' corpus recipe to build from")
    if study.run_name:
        try:
            study.name(study.points()[0])
        except (KeyError, IndexError, ValueError) as err:
            raise RecipeError(f"study '{path}': run_name '{study.run_name}' names a key the grid does not set "
                              f"({err})") from err


def _check_distinct_points(study: Study, path: str) -> None:
    """Every grid point its own run: no value given twice, no two points sharing a run folder."""
    for key, values in study.grid.items():
        repeated = sorted(str(v) for v, n in Counter(map(repr, values)).items() if n > 1)
        if repeated:
            raise RecipeError(f"study '{path}': grid key '{key}' gives {', '.join(repeated)} more than once: give each "
                              f"value once (seeds are a grid key: add seed: [0, 1, 2] for repeats)")
    names = Counter(study.name(point) for point in study.points())
    shared = sorted(name for name, n in names.items() if n > 1)
    if shared:
        raise RecipeError(f"study '{path}' has {names.total() - len(names)} grid points that repeat another's run "
                          f"folder ({', '.join(shared[:3])}): give each combination once"
                          + (", and name every key the grid varies in run_name" if study.run_name else ""))


def load_study(path: str) -> Study:
    return parse_study(load_yaml(path), path)
