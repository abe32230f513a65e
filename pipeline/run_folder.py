"""The run folder, defined once: every file and folder name a run or a study writes, which checkpoints
are complete, and how the trajectory and the recipe are read. Training writes through it; analysis,
reports, the Hub and studies read through it.

    runs/demo/
      run_config.yaml            the resolved recipe
      run_start.json             the code commit the run first started from, and when (kept across resumes)
      trajectory.jsonl           one line per evaluation and group of individuals
      facts/queries/step-*.parquet    each evaluated query's result at each evaluation (every fact's history)
      facts/exposures/step-*.parquet  each training individual's exposures and last step drawn, at each one
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
evaluates `seen` (trained on, the corpus's train split) and `heldout` (never trained on), with a
sequential sampler each of its groups (`group_0`, ...), and each block of `eval_ranges` (`individuals_0-99`,
...); fine-tuning evaluates `old` (the pretraining individuals), `new` (those fine-tuned on) and `heldout`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from common.errors import FULL_DISK, RecipeError, RunError
from data_gen.folders import contents

RUN_CONFIG = "run_config.yaml"
RUN_START = "run_start.json"  # RunStart: not in run_config.yaml, so that it is no part of the run's identity
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
FACTS = "facts"  # facts/<table>/step-000000100.parquet: one file per evaluation, written whole
QUERY_FACTS, EXPOSURE_FACTS = "queries", "exposures"  # the tables of facts/
FACTS_FIGURE = "facts.png"  # acquisition and forgetting of facts, from facts/
TOY_WEIGHTS = "memory.pt"  # a toy-memory checkpoint's weights (torch.save of the state dict)
TOY_FIGURE = "memory.png"  # a toy-memory run's accuracy and loss of every group
HUB_LOG = "hub_push.jsonl"
HUB_STAGING = ".hub-main"
MODEL_CARD = "README.md"  # written into .hub-main/
REPORT_FILES = (REPORT, TRAJECTORY, PHASES, PHASES_FIGURE, HALLUCINATION_FIGURE, ATTENTION_FIGURE, SEQUENCE_FIGURE,
                FACTS_FIGURE, FINETUNE_SUMMARY, FORGETTING_FIGURE, DRIFT_TABLE)  # what a run's Hub repository gets beside the weights

SEEN, HELDOUT, OLD, NEW = "seen", "heldout", "old", "new"
SEQUENCE_GROUP = "group_"  # + k: the k-th group of a sequential sampler, evaluated on its own


def sequence_group(index: int) -> str:
    return f"{SEQUENCE_GROUP}{index}"


RANGE_GROUP = "individuals_"  # + first-last: a block of `eval_ranges`, evaluated whole


def range_group(first: int, end: int) -> str:
    """The group of training individuals first, ..., end - 1 that a recipe's `eval_ranges` names."""
    return f"{RANGE_GROUP}{first}-{end - 1}"
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

EXTENDED_FROM = "extended_from"  # run_config.yaml: the max_steps a run had before each --extend_to
EXECUTION_CHANGES = "execution_changes"  # run_config.yaml: 'step S: key old -> new', each resume that changed one
UNCHECKED_KEYS = {"overwrite_output_dir", "extend_to", EXTENDED_FROM, EXECUTION_CHANGES}  # a resume may change them


def git(folder: Path, *args: str) -> str | None:
    """git's output for `args` run in `folder`, stripped; None where git is missing or fails (outside a checkout)."""
    try:
        done = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_commit(folder: Path = Path(__file__).parent) -> str | None:
    """The git HEAD of the source tree holding `folder` (this code's), with `+dirty` where its tracked files
    differ from HEAD (or git cannot tell); None outside a git checkout."""
    head = git(folder, "rev-parse", "HEAD")
    if head is None:
        return None
    changes = git(folder, "--no-optional-locks", "status", "--porcelain", "--untracked-files=no")  # takes no lock
    return head + ("" if changes == "" else "+dirty")


@dataclass(frozen=True)
class RunStart:
    """When a run first started (UTC, ISO) and from which code commit (`code_commit`); None where not recorded
    (a run from before they were, or outside a git checkout)."""

    code_commit: str | None = None
    started_at: str | None = None

    @classmethod
    def now(cls) -> RunStart:
        return cls(code_commit(), datetime.now(timezone.utc).isoformat(timespec="seconds"))


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


def sync(path: Path) -> None:
    """Flush a file or a folder (its entries: names created, renamed, removed) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_tree(folder: Path) -> None:
    """Flush every file under `folder` and every folder below it, deepest first (not `folder` itself)."""
    for root, _, files in os.walk(folder, topdown=False):
        for name in files:
            sync(Path(root) / name)
        if root != str(folder):
            sync(Path(root))


@contextmanager
def replacing(path: Path, durably: bool = False) -> Iterator[Path]:
    """A temporary name beside `path` (same suffix) for the block to write; renamed over `path` when the block
    ends, removed if it fails (a full disk), so `path` holds its old contents or the new ones, never a part.
    `durably`: flushed to disk before and after the rename, so a crash of the machine does the same."""
    temporary = path.with_name(f".tmp-{path.name}")
    try:
        yield temporary
        if durably:
            sync(temporary)
        temporary.replace(path)
    except OSError as err:
        if err.errno not in FULL_DISK:
            raise
        kept = "its previous version is kept" if path.exists() else "nothing was left there"
        raise RunError(f"no space left on the device to write '{path}' ({kept}): free space there, then rerun the "
                       f"same command") from err
    finally:
        temporary.unlink(missing_ok=True)
    if durably:
        sync(path.parent)


def write_atomically(path: Path, text: str, durably: bool = False) -> Path:
    """Replace `path` by `text` through `replacing`."""
    with replacing(path, durably) as temporary:
        temporary.write_text(text)
    return path


def write_durably(path: Path, text: str) -> None:
    """Replace `path` by `text` so that a crash of the machine leaves either the old file or the new one."""
    write_atomically(path, text, durably=True)


def publish_checkpoint(staging: Path, final: Path, state: dict) -> None:
    """Complete a checkpoint written in `staging`: its files flushed to disk, its state file written and
    flushed last, then the rename to `final`, flushed in turn, so that after a crash of the machine a folder
    with a checkpoint's name is complete."""
    sync_tree(staging)
    (staging / STATE).write_text(json.dumps(state, indent=1))
    sync(staging / STATE)
    sync(staging)
    shutil.rmtree(final, ignore_errors=True)  # a same-step leftover of an interrupted continuation
    staging.rename(final)
    sync(final.parent)
    sync(final.parent.parent)  # the first checkpoint created its parent folder


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


@dataclass(frozen=True)
class Resolution:
    """What a run does with its output_dir: `action` new, restart (in place, from step 0), resume (from
    `checkpoint`) or done (complete at `checkpoint`); for a run that goes on changed, `moved_from`, the path
    its corpus had before it moved, `extended_from`, the max_steps it had before --extend_to, and `execution`,
    the execution keys it goes on with changed: (key, old value, new value) each, from `step`."""

    action: str
    checkpoint: Path | None = None
    moved_from: str | None = None
    extended_from: int | None = None
    execution: tuple[tuple[str, Any, Any], ...] = ()
    step: int = 0  # the step it goes on from: its checkpoint's

    @property
    def changed(self) -> bool:
        return self.moved_from is not None or self.extended_from is not None or bool(self.execution)


def describe_change(key: str, old, new) -> str:
    """One execution change, 'key old -> new', as the resume message says it and run_config.yaml records it
    (after 'step S: ')."""
    return f"{key} {old} -> {new}"


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
        path = self.path / RUN_CONFIG
        try:
            recipe = yaml.safe_load(path.read_text())
        except yaml.YAMLError:
            recipe = None
        if not isinstance(recipe, dict):
            raise RecipeError(f"'{path}' is empty or damaged (not a YAML mapping of recipe keys): write it again from "
                              f"the run's command (python -m pipeline.pretrain --help lists its keys), or rerun the "
                              f"run into a new output_dir")
        return recipe

    def run_start(self) -> RunStart:
        """When and from which code commit the run first started (`RunStart`)."""
        path = self.path / RUN_START
        return RunStart(**json.loads(path.read_text())) if path.is_file() else RunStart()

    def trajectory(self) -> list[dict]:
        """The run's evaluations; a missing or empty trajectory is one clear error."""
        path = self.path / TRAJECTORY
        if not path.is_file():
            raise RecipeError(f"'{path}' does not exist: point at the output_dir of a run that has evaluated")
        rows = read_jsonl(path)
        if not rows:
            raise RecipeError(f"'{path}' holds no evaluation yet: wait for the run's first evaluation (step 0), or "
                              f"rerun the run's command to resume it")
        return rows

    def stage(self) -> str:
        """pretrain or finetune, as the run's trajectory says."""
        return self.trajectory()[0]["stage"]

    def facts_file(self, table: str, step: int) -> Path:
        """Where one evaluation's rows of a facts table (`QUERY_FACTS`, `EXPOSURE_FACTS`) go."""
        return self.path / FACTS / table / f"{checkpoint_name(step)}.parquet"

    def append_trajectory(self, rows: list[dict]) -> None:
        """Append evaluation rows, flushed to disk before any checkpoint written after them."""
        created = not (self.path / TRAJECTORY).exists()
        with (self.path / TRAJECTORY).open("a") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
            f.flush()
            os.fsync(f.fileno())
        if created:
            sync(self.path)

    def trained_corpus(self) -> dict | None:
        """The corpus the run's latest complete checkpoint (resume, else permanent) was trained on: its path,
        fingerprints and seed; None before any checkpoint."""
        latest = self.latest_resume_checkpoint() or next(reversed(self.complete_checkpoints()), None)
        return read_state(latest).get("corpus") if latest else None

    def resolve(self, recipe: dict, overwrite: bool, renamed: dict[str, str] | None = None,
                defaults: dict | None = None, fingerprint: str | None = None,
                execution: frozenset[str] = frozenset()) -> Resolution:
        """What to do with the folder: new, restart, resume or done (`Resolution`).

        A folder holding the same recipe (its keys `renamed` to their current names, and keys it was saved
        without taking their `defaults`), or one that differs only in `execution` keys (how the run is computed,
        not what it learns), resumes from its latest complete resume checkpoint, or restarts in
        place when it has none (it is never deleted for that). A run is its recipe and the corpus it learned
        from, not the corpus's path: one whose corpus moved (the `fingerprint` of `recipe`'s corpus is the one
        its checkpoints record) resumes, and so does one whose recipe's `extend_to` trains it past its
        max_steps from its last resume checkpoint; the Resolution says which. A folder holding another recipe, or
        files that are not a run, is refused unless `overwrite` (runs only), with the ways that keep it first."""
        if self._holds_nothing(recipe) or overwrite:
            return Resolution("new")
        saved = {**(defaults or {}), **{(renamed or {}).get(key, key): value for key, value in self.recipe().items()}}
        differing, trained_on = sorted(k for k in set(saved) | set(recipe)
                                       if k not in UNCHECKED_KEYS and saved.get(k) != recipe.get(k)), None
        moved_from = extended_from = None
        if "corpus" in differing and (trained_on := self.trained_corpus()) and fingerprint == trained_on["fingerprint"]:
            differing.remove("corpus")
            moved_from = saved["corpus"]
        if recipe.get("extend_to") and "max_steps" in differing:
            extended_from = self._extended_from(saved["max_steps"], recipe["max_steps"])
            differing.remove("max_steps")
        if identity := [k for k in differing if k not in execution]:
            raise RecipeError(self._another_run(saved, recipe, identity, trained_on))
        changes = tuple((k, saved.get(k), recipe.get(k)) for k in differing)
        return self._resumption(recipe["max_steps"], moved_from, extended_from, changes)

    def _holds_nothing(self, recipe: dict) -> bool:
        """Whether output_dir is free for a new run (missing or empty); an error for a file, a folder of other
        files, or nothing to extend."""
        if self.path.is_file():
            raise RecipeError(f"output_dir '{self.path}' is a file: choose a folder")
        if not self.path.exists() or not any(self.path.iterdir()):
            if recipe.get("extend_to"):
                raise RecipeError(f"extend_to {recipe['extend_to']}: output_dir '{self.path}' holds no run to extend: "
                                  f"point --output_dir at a run, or drop --extend_to and set --max_steps")
            return True
        if not self.is_run():
            raise RecipeError(f"output_dir '{self.path}' holds files that are not a run of this pipeline "
                              f"({contents(self.path)}): --overwrite_output_dir replaces only a run; choose an empty "
                              f"or new folder")
        return False

    def _extended_from(self, saved_steps: int, steps: int) -> int:
        """The max_steps an extension to `steps` starts from (an error unless it is past them)."""
        if steps < saved_steps:
            raise RecipeError(f"extend_to {steps} is not past the {saved_steps} steps of the run in '{self.path}': "
                              f"extend it to more steps, or drop --extend_to")
        return saved_steps

    def _resumption(self, max_steps: int, moved_from: str | None, extended_from: int | None,
                    changes: tuple) -> Resolution:
        """Resume from the latest complete resume checkpoint, restart in place without one, or done."""
        checkpoint = self.latest_resume_checkpoint()
        if checkpoint is None:
            if extended_from is not None:
                raise RecipeError(f"'{self.path}' holds no resume checkpoint to extend from (it ran with save_steps "
                                  f"0): rerun it with --save_steps set, or start the longer run in another output_dir")
            return Resolution("restart", moved_from=moved_from, execution=changes)
        step = read_state(checkpoint)["step"]
        if step >= max_steps:  # nothing runs, so nothing changes
            return Resolution("done", checkpoint, moved_from, extended_from, step=step)
        return Resolution("resume", checkpoint, moved_from, extended_from, changes, step)

    def _another_run(self, saved: dict, recipe: dict, differing: list[str], trained_on: dict | None) -> str:
        """The refusal of a folder holding another run: what differs, the ways that keep the run, then the
        flag that deletes it."""
        def shown(value) -> str:  # a path in full, a long list cut
            text = repr(value)
            return text if isinstance(value, str) or len(text) <= 40 else text[:37] + "..."

        what = ", ".join(f"{k} ({shown(saved.get(k))} there, {shown(recipe.get(k))} here)" for k in differing[:4])
        ways = ["run this recipe in another --output_dir"]
        if "corpus" in differing:
            other = " (the corpus given holds other individuals)" if trained_on else ""
            ways.append(f"point --corpus at the corpus it was trained on{other}")
        if "max_steps" in differing and recipe["max_steps"] > saved["max_steps"]:
            ways.append(f"train it on with --extend_to {recipe['max_steps']} (its other keys unchanged)")
        if permanent := self.complete_checkpoints():
            ways.append(f"start from its weights with --init_from {permanent[-1]} (fine-tuning)")
        return (f"output_dir '{self.path}' holds another run (its recipe differs in {what}"
                f"{f' and {len(differing) - 4} more' if len(differing) > 4 else ''}): " + "; or ".join(ways)
                + "; --overwrite_output_dir true deletes it and starts over")

    def record(self, recipe: dict, resolution: Resolution) -> dict:
        """Save (and return) the recipe of a run going on changed (`resolution`: its corpus moved, extended, or
        with execution keys changed): the steps it was extended from, each execution change with the step it
        took effect at, and extend_to cleared, so that the saved recipe run into another folder trains that long
        from the start."""
        earlier = self.recipe()
        extended = earlier.get(EXTENDED_FROM, [])
        if resolution.extended_from is not None:
            extended = [*extended, resolution.extended_from]
        changes = [*earlier.get(EXECUTION_CHANGES, []),
                   *(f"step {resolution.step}: {describe_change(*change)}" for change in resolution.execution)]
        saved = {**recipe, "extend_to": 0, EXTENDED_FROM: extended, EXECUTION_CHANGES: changes}
        write_durably(self.path / RUN_CONFIG, yaml.safe_dump(saved, sort_keys=False))
        return saved

    def start(self, recipe: dict) -> None:
        """Empty a previous run's folder (already checked by `resolve`, and replaced only when asked to), save
        the recipe and record the start (`RunStart`: a resume or an extension keeps it)."""
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True)
        fresh = {**recipe, **{key: [] for key in (EXTENDED_FROM, EXECUTION_CHANGES) if key in recipe}}  # run anew
        write_durably(self.path / RUN_CONFIG, yaml.safe_dump(fresh, sort_keys=False))
        write_durably(self.path / RUN_START, json.dumps(asdict(RunStart.now()), indent=1))

    def rewind(self, step: int) -> None:
        """Drop what an interrupted run wrote after the checkpoint it resumes from (everything it computed, for
        step -1), so the resumed run writes the same files as one that was never interrupted."""
        if (self.path / TRAJECTORY).is_file():
            rows = [row for row in read_jsonl(self.path / TRAJECTORY) if row["step"] <= step]
            write_durably(self.path / TRAJECTORY, "".join(json.dumps(row) + "\n" for row in rows))
        for checkpoint in self.complete_checkpoints():
            if step_of(checkpoint) > step:
                shutil.rmtree(checkpoint)
        for table in (ATTENTION_TABLE, DRIFT_TABLE):  # the report recomputes them over the final checkpoints
            (self.path / table).unlink(missing_ok=True)
