"""The run folder, defined once: every file and folder name a run or a study writes, which checkpoints
are complete, and how the trajectory and the recipe are read. Training writes through it; analysis,
reports, the Hub and studies read through it.

    runs/demo/
      run_config.yaml            the resolved recipe
      trajectory.jsonl           one line per evaluation and group of individuals
      checkpoints/step-*/        permanent checkpoints: Hugging Face weights, tokenizer, exposures.npy,
                                 manifest.json (each file's hashes, for the Hub),
                                 trainer_state.json (written last: a folder holding it is complete)
      resume/step-*/             the latest resume checkpoint: Accelerate state, trainer_state.json
      report.md                  the report, with pretraining's phases.json, phases.png,
                                 hallucinations.png, attention.png, attention.jsonl (sequence.png with a
                                 sequential sampler), or fine-tuning's
                                 finetune.json, forgetting.png, drift.jsonl
      hub_push.jsonl, .hub-main/ Hub pushes: their log, the files staged for `main`
    runs/studies/<study>/        one run folder per grid point, summary.csv, the study's figures,
                                 corpora/ (corpora the grid builds), pretrained/ (a first run)

Groups of individuals evaluated, named in the `split` field of each trajectory line (a name kept for the
files already written; in the code they are groups, and a split is one of the corpus's): pretraining
evaluates `seen` (trained on, the corpus's train split) and `heldout` (never trained on), and with a
sequential sampler each of its groups (`group_0`, ...); fine-tuning evaluates `old` (the pretraining
individuals), `new` (those fine-tuned on) and `heldout`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import yaml

from common.errors import RecipeError, RunError
from data_gen.folders import contents

RUN_CONFIG = "run_config.yaml"
TRAJECTORY = "trajectory.jsonl"
CHECKPOINTS = "checkpoints"
RESUME = "resume"
STATE = "trainer_state.json"
MANIFEST = "manifest.json"  # a permanent checkpoint's step, tokens, corpus and file hashes
EXPOSURES = "exposures.npy"  # times each training individual was drawn before the checkpoint
REPORT = "report.md"
PHASES = "phases.json"
PHASES_FIGURE = "phases.png"
HALLUCINATION_FIGURE = "hallucinations.png"
ATTENTION_FIGURE = "attention.png"
ATTENTION_TABLE = "attention.jsonl"
SEQUENCE_FIGURE = "sequence.png"  # each group's loss of a sequential sampler, its visits shaded
FINETUNE_SUMMARY = "finetune.json"
FORGETTING_FIGURE = "forgetting.png"
DRIFT_TABLE = "drift.jsonl"
TOY_WEIGHTS = "memory.pt"  # a toy-memory checkpoint's weights (torch.save of the state dict)
TOY_FIGURE = "memory.png"  # a toy-memory run's accuracy and loss of every group
HUB_LOG = "hub_push.jsonl"
HUB_STAGING = ".hub-main"
MODEL_CARD = "README.md"  # written into .hub-main/
REPORT_FILES = (REPORT, TRAJECTORY, PHASES, PHASES_FIGURE, HALLUCINATION_FIGURE, ATTENTION_FIGURE, SEQUENCE_FIGURE,
                FINETUNE_SUMMARY, FORGETTING_FIGURE, DRIFT_TABLE)  # what a run's Hub repository gets beside the weights

SEEN, HELDOUT, OLD, NEW = "seen", "heldout", "old", "new"
SEQUENCE_GROUP = "group_"  # + k: the k-th group of a sequential sampler, evaluated on its own


def sequence_group(index: int) -> str:
    return f"{SEQUENCE_GROUP}{index}"
PRETRAIN, FINETUNE = "pretrain", "finetune"  # the `stage` of trajectory lines

SUMMARY = "summary.csv"
STUDY_CORPORA = "corpora"
STUDY_PRETRAINED = "pretrained"
STUDY_REFERENCE = "reference"  # the unpatched run of an attention-patching study
STUDY_SLURM_LOGS = "slurm"
STUDY_LOGS = "logs"  # one log per run of a parallel study: logs/<run>.log
STUDY_REPORT = "study.md"
STUDY_FIGURE = "study.png"
STUDY_FIT = "fit.json"  # the power law of plateau length against N, with its exponent's interval
CAPACITY_FIGURE = "capacity.png"
CAPACITY_FIT = "capacity.json"  # bits stored per parameter, fitted over model sizes
PLATEAU_FIGURE = "plateau_vs_population.png"
ALPHA_FIGURE = "alpha.png"
WARMUP_FIGURE = "warmup.png"
PATCHING_GRID_FIGURE = "patching_grid.png"  # final loss and plateau length over start x reference steps

UNCHECKED_KEYS = {"overwrite_output_dir"}  # recipe keys a resumed run may change


def checkpoint_name(step: int) -> str:
    return f"step-{step:09d}"


def step_of(folder: Path) -> int:
    return int(folder.name.split("-")[1])


def staging_folder(final: Path) -> Path:
    """Where a checkpoint is written before it is renamed to `final`."""
    return final.parent / f".tmp-{final.name}"


def complete_checkpoints(folder: Path) -> list[Path]:
    """Checkpoint folders holding their state file, by step; temporary folders are ignored."""
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.glob("step-*") if (p / STATE).is_file()), key=step_of)


def read_state(checkpoint: Path) -> dict:
    try:
        return json.loads((checkpoint / STATE).read_text())
    except ValueError as err:
        raise RunError(f"checkpoint '{checkpoint}' is damaged ({STATE} is not JSON: {err}): delete that folder; a "
                       f"run then resumes from an earlier checkpoint, or restarts") from err


def publish_checkpoint(staging: Path, final: Path, state: dict) -> None:
    """Complete a checkpoint written in `staging`: its state file last, then the rename to `final`."""
    (staging / STATE).write_text(json.dumps(state, indent=1))
    shutil.rmtree(final, ignore_errors=True)  # a same-step leftover of an interrupted continuation
    staging.rename(final)


@contextmanager
def staged_checkpoint(final: Path, state: dict, owner: bool = True,
                      barrier: Callable[[], None] = lambda: None) -> Iterator[Path]:
    """Write the checkpoint `final` into a fresh staging folder (yielded), then publish it with `state`
    (`publish_checkpoint`). With several processes writing, only the `owner` clears and publishes, and
    `barrier` waits for all of them on both sides of the writes. A failed write (disk full) removes the
    staging folder and is raised as one RunError; the earlier checkpoints are untouched."""
    staging = staging_folder(final)
    try:
        if owner:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        barrier()
        yield staging
        barrier()
        if owner:
            publish_checkpoint(staging, final, state)
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise RunError(f"could not write checkpoint {final} ({err.strerror or err}): free disk space or choose another "
                       f"output_dir; the earlier checkpoints are intact and rerunning the command resumes from the "
                       f"last") from err


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSON-lines file; a torn last line (a process killed while appending) is left out."""
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            if number < len(lines):
                raise RecipeError(f"'{path}' line {number} is not JSON ({err.msg}): the file is damaged; rerun the "
                                  f"run into a new output_dir") from err
    return rows


def series(rows: list[dict], group: str, key: str, stage: str = PRETRAIN) -> tuple[np.ndarray, np.ndarray]:
    """Steps and values of one metric of one group of individuals, sorted by step."""
    points = sorted((r["step"], r[key]) for r in rows if r["split"] == group and r.get("stage", stage) == stage)
    steps, values = zip(*points) if points else ((), ())
    return np.array(steps, dtype=float), np.array(values, dtype=float)


class RunFolder:
    """A training run's output_dir."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def resume(self) -> Path:
        return self.path / RESUME

    def checkpoint(self, step: int) -> Path:
        """The permanent checkpoint of `step`."""
        return self.checkpoints / checkpoint_name(step)

    def complete_checkpoints(self) -> list[Path]:
        return complete_checkpoints(self.checkpoints)

    def latest_resume_checkpoint(self) -> Path | None:
        found = complete_checkpoints(self.resume)
        return found[-1] if found else None

    def is_run(self) -> bool:
        return (self.path / RUN_CONFIG).is_file()

    def recipe(self) -> dict:
        if not self.is_run():
            raise RecipeError(f"'{self.path}' is not a run folder (no {RUN_CONFIG}): point at a training output_dir")
        return yaml.safe_load((self.path / RUN_CONFIG).read_text())

    def trajectory(self) -> list[dict]:
        path = self.path / TRAJECTORY
        if not path.is_file():
            raise RecipeError(f"'{path}' does not exist: point at the output_dir of a run that has evaluated")
        return read_jsonl(path)

    def stage(self) -> str:
        """pretrain or finetune, as the run's trajectory says."""
        return self.trajectory()[0]["stage"]

    def append_trajectory(self, rows: list[dict]) -> None:
        with (self.path / TRAJECTORY).open("a") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)

    def resolve(self, recipe: dict, overwrite: bool, renamed: dict[str, str] | None = None,
                defaults: dict | None = None) -> tuple[str, Path | None]:
        """What to do with the folder: ("new", None), ("restart", None), ("resume", checkpoint) or ("done",
        checkpoint).

        A folder holding the same recipe (its keys `renamed` to their current names, and keys it was saved
        without taking their `defaults`) resumes from its latest complete resume checkpoint, or restarts in
        place when it has none (it is never deleted for that); one holding another recipe, or files that are
        not a run, is refused unless `overwrite` (runs only)."""
        if self.path.is_file():
            raise RecipeError(f"output_dir '{self.path}' is a file: choose a folder")
        if not self.path.exists() or not any(self.path.iterdir()):
            return "new", None
        if not self.is_run():
            raise RecipeError(f"output_dir '{self.path}' holds files that are not a run of this pipeline "
                              f"({contents(self.path)}): --overwrite_output_dir replaces only a run; choose an empty "
                              f"or new folder")
        if overwrite:
            return "new", None
        saved = {**(defaults or {}), **{(renamed or {}).get(key, key): value for key, value in self.recipe().items()}}
        differing = sorted(k for k in set(saved) | set(recipe)
                           if k not in UNCHECKED_KEYS and saved.get(k) != recipe.get(k))
        if differing:
            raise RecipeError(f"output_dir '{self.path}' holds another run (its recipe differs in "
                              f"{', '.join(differing[:4])}): choose another folder or pass --overwrite_output_dir true "
                              f"to replace it")
        checkpoint = self.latest_resume_checkpoint()
        if checkpoint is None:
            return "restart", None
        return ("done" if read_state(checkpoint)["step"] >= recipe["max_steps"] else "resume"), checkpoint

    def start(self, recipe: dict) -> None:
        """Empty a previous run's folder (already checked by `resolve`, and replaced only when asked to) and
        save the recipe."""
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True)
        (self.path / RUN_CONFIG).write_text(yaml.safe_dump(recipe, sort_keys=False))

    def rewind(self, step: int) -> None:
        """Drop what an interrupted run wrote after the checkpoint it resumes from (everything it computed, for
        step -1), so the resumed run writes the same files as one that was never interrupted."""
        if (self.path / TRAJECTORY).is_file():
            rows = [row for row in read_jsonl(self.path / TRAJECTORY) if row["step"] <= step]
            (self.path / TRAJECTORY).write_text("".join(json.dumps(row) + "\n" for row in rows))
        for checkpoint in self.complete_checkpoints():
            if step_of(checkpoint) > step:
                shutil.rmtree(checkpoint)
        for table in (ATTENTION_TABLE, DRIFT_TABLE):  # the report recomputes them over the final checkpoints
            (self.path / table).unlink(missing_ok=True)
